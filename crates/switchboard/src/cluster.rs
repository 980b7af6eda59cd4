//! `switchboard cluster`: the store's status and voter changes, over the authenticated cluster
//! plane (the `Admin` service every voter serves). Status asks the first voter that answers,
//! then the leader for replication; changes go to the leader.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::json;
use switchboard_net::{ClusterIdentity, ClusterSecurity};
use switchboard_proto::v1::admin_client::AdminClient;
use switchboard_proto::v1::{
    AddVoterRequest, AdminStatusRequest, ClusterStatus, RemoveVoterRequest, TransferLeaderRequest,
};
use switchboard_store::grpc::Channels;

use crate::cli::{ClusterAction, ClusterArgs, ClusterConn};
use crate::security;

/// How long a change may take (adding a voter waits until it has caught up).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(600);
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(args: ClusterArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchboard cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("switchboard cluster: {e:#}");
            ExitCode::from(64)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("switchboard cluster: {e:#}");
            ExitCode::FAILURE
        }
        Err(Failure::Rejected(e)) => {
            eprintln!("switchboard cluster: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Retry(e)) => {
            eprintln!("switchboard cluster: {e}; try again");
            ExitCode::from(75)
        }
    }
}

/// Why the command failed, as its exit code says.
enum Failure {
    /// Bad flags or keys (exit 64).
    Usage(anyhow::Error),
    /// The store refused the change as asked: not a voter, the last voter, a bad address
    /// (exit 2).
    Rejected(String),
    /// The store could not do it now: no leader, a timeout (exit 75, EX_TEMPFAIL).
    Retry(String),
    /// Anything else (exit 1).
    Failed(anyhow::Error),
}

/// The exit a refused call gets.
fn refused(what: &str, status: &tonic::Status) -> Failure {
    let message = format!("{what}: {}", status.message());
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
            Failure::Rejected(message)
        }
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => Failure::Retry(message),
        _ => Failure::Failed(anyhow::anyhow!(message)),
    }
}

/// The leader's address a not-the-leader answer names, if any.
fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(switchboard_store::grpc::LEADER_ADDR_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
}

async fn execute(args: ClusterArgs) -> Result<(), Failure> {
    let conn = match &args.action {
        ClusterAction::Status(conn)
        | ClusterAction::AddVoter { conn, .. }
        | ClusterAction::RemoveVoter { conn, .. }
        | ClusterAction::TransferLeader { conn, .. } => conn.clone(),
    };
    let channels = channels(&conn).map_err(Failure::Usage)?;
    let status = first_answer(&channels, &conn.store.0)
        .await
        .map_err(Failure::Failed)?;
    let status = match args.action {
        ClusterAction::Status(_) => leader_status(&channels, status).await,
        ClusterAction::AddVoter { member, .. } => {
            let request = AddVoterRequest {
                node_id: member.id,
                address: member.address,
            };
            change(&channels, &status, "adding the voter", |mut admin| {
                let request = request.clone();
                async move {
                    let mut request = tonic::Request::new(request);
                    request.set_timeout(CHANGE_TIMEOUT);
                    admin
                        .add_voter(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?
        }
        ClusterAction::RemoveVoter { id, .. } => {
            change(
                &channels,
                &status,
                "removing the voter",
                |mut admin| async move {
                    let mut request = tonic::Request::new(RemoveVoterRequest { node_id: id });
                    request.set_timeout(CHANGE_TIMEOUT);
                    admin
                        .remove_voter(request)
                        .await
                        .map(tonic::Response::into_inner)
                },
            )
            .await?
        }
        ClusterAction::TransferLeader { id, .. } => {
            change(
                &channels,
                &status,
                "moving the leadership",
                |mut admin| async move {
                    let mut request = tonic::Request::new(TransferLeaderRequest { node_id: id });
                    request.set_timeout(CHANGE_TIMEOUT);
                    admin
                        .transfer_leader(request)
                        .await
                        .map(tonic::Response::into_inner)
                },
            )
            .await?
        }
    };
    if conn.json {
        println!("{}", to_json(&status));
    } else {
        print!("{}", table(&status));
    }
    Ok(())
}

/// Makes a change on the leader `status` names, once more on the leader a not-the-leader answer
/// names (the leadership moved in between).
async fn change<F, Fut>(
    channels: &Channels,
    status: &ClusterStatus,
    what: &str,
    call: F,
) -> Result<ClusterStatus, Failure>
where
    F: Fn(AdminClient<switchboard_store::grpc::ClusterChannel>) -> Fut,
    Fut: std::future::Future<Output = Result<ClusterStatus, tonic::Status>>,
{
    let mut address = leader(status)?;
    for attempt in 0..2 {
        let client = admin(channels, &address).map_err(Failure::Failed)?;
        match call(client).await {
            Ok(status) => return Ok(status),
            Err(status) => match leader_hint(&status) {
                Some(next) if attempt == 0 && next != address => address = next,
                _ => return Err(refused(what, &status)),
            },
        }
    }
    Err(Failure::Retry(format!(
        "{what}: the leadership keeps moving"
    )))
}

fn channels(conn: &ClusterConn) -> anyhow::Result<Channels> {
    let secrets = security::read(&conn.keys, Some(&conn.cluster), None)?;
    if !secrets.has_cluster_key() {
        bail!("the cluster's key is needed: --cluster-key, or --access-key when the cluster uses the access keys");
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // An operator, not a node: an id no node uses.
    let identity = ClusterIdentity {
        node: u64::MAX,
        incarnation: now_ms,
    };
    let security: ClusterSecurity = secrets.cluster_security(&secrets.access_keys, identity)?;
    Ok(Channels::new(security))
}

fn admin(
    channels: &Channels,
    address: &str,
) -> anyhow::Result<AdminClient<switchboard_store::grpc::ClusterChannel>> {
    let channel = channels
        .get(address)
        .with_context(|| format!("dialing {address}"))?;
    let max = channels.max_message_bytes();
    Ok(AdminClient::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}

async fn status_of(channels: &Channels, address: &str) -> anyhow::Result<ClusterStatus> {
    let mut admin = admin(channels, address)?;
    let mut request = tonic::Request::new(AdminStatusRequest {});
    request.set_timeout(STATUS_TIMEOUT);
    Ok(admin.status(request).await?.into_inner())
}

/// The status from the first of `voters` that answers and knows a leader (one that does not,
/// such as a voter removed from the cluster, is passed over), else from the first that answers.
async fn first_answer(channels: &Channels, voters: &[String]) -> anyhow::Result<ClusterStatus> {
    let mut errors = Vec::new();
    let mut leaderless = None;
    for address in voters {
        match status_of(channels, address).await {
            Ok(status) if status.leader_id != 0 => return Ok(status),
            Ok(status) => {
                leaderless.get_or_insert(status);
            }
            Err(e) => errors.push(format!("{address}: {e:#}")),
        }
    }
    match leaderless {
        Some(status) => Ok(status),
        None => bail!("no store voter answered ({})", errors.join("; ")),
    }
}

/// The leader's status (which knows replication), or `status` when the leader does not answer.
async fn leader_status(channels: &Channels, status: ClusterStatus) -> ClusterStatus {
    if status.leader_id == 0 || status.leader_id == status.node_id {
        return status;
    }
    match status_of(channels, &status.leader_address).await {
        Ok(leader) => leader,
        Err(_) => status,
    }
}

fn leader(status: &ClusterStatus) -> Result<String, Failure> {
    if status.leader_id == 0 || status.leader_address.is_empty() {
        return Err(Failure::Retry(
            "the store has no leader right now".to_owned(),
        ));
    }
    Ok(status.leader_address.clone())
}

fn to_json(status: &ClusterStatus) -> serde_json::Value {
    let nodes: Vec<_> = status
        .nodes
        .iter()
        .map(|n| {
            json!({
                "nodeId": n.node_id,
                "address": n.address,
                "role": n.role,
                "leader": n.node_id == status.leader_id,
                "matchedIndex": n.has_replication.then_some(n.matched_index),
                "lag": n.has_replication.then_some(n.lag),
                "lastContactMs": n.has_last_contact.then_some(n.last_contact_ms),
            })
        })
        .collect();
    json!({
        "answeredBy": status.node_id,
        "leaderId": (status.leader_id != 0).then_some(status.leader_id),
        "leaderAddress": (!status.leader_address.is_empty()).then_some(&status.leader_address),
        "term": status.term,
        "lastLogIndex": status.last_log_index,
        "appliedIndex": status.applied_index,
        "clusterId": (!status.cluster_id.is_empty()).then_some(&status.cluster_id),
        "diskFailing": status.disk_failing,
        "nodes": nodes,
    })
}

fn table(status: &ClusterStatus) -> String {
    let leader = if status.leader_id == 0 {
        "none".to_owned()
    } else {
        format!("{} at {}", status.leader_id, status.leader_address)
    };
    let cluster = if status.cluster_id.is_empty() {
        "not named yet"
    } else {
        status.cluster_id.as_str()
    };
    let mut out = format!(
        "cluster {cluster}, leader {leader}, term {}, last log index {}, applied {} (as node {} sees it{})\n",
        status.term,
        status.last_log_index,
        status.applied_index,
        status.node_id,
        if status.disk_failing {
            "; its disk is failing"
        } else {
            ""
        }
    );
    out.push_str(&format!(
        "{:>8}  {:<24} {:<8} {:>10} {:>8} {:>14}\n",
        "NODE", "ADDRESS", "ROLE", "MATCHED", "LAG", "LAST CONTACT"
    ));
    let dash = || "-".to_owned();
    for n in &status.nodes {
        let role = if n.node_id == status.leader_id {
            format!("{}*", n.role)
        } else {
            n.role.clone()
        };
        out.push_str(&format!(
            "{:>8}  {:<24} {:<8} {:>10} {:>8} {:>14}\n",
            n.node_id,
            n.address,
            role,
            if n.has_replication {
                n.matched_index.to_string()
            } else {
                dash()
            },
            if n.has_replication {
                n.lag.to_string()
            } else {
                dash()
            },
            if n.has_last_contact {
                format!("{} ms ago", n.last_contact_ms)
            } else {
                dash()
            },
        ));
    }
    out
}
