//! Voter lifecycle on a real cluster of processes: voters join a running store with `--join`
//! (as learners that catch up, then voters), voters are removed with `switchboard cluster
//! remove-voter` (the leader among them), and `switchboard cluster status` is checked against
//! the cluster; a writer keeps writing through a stateless gateway all along, and every write
//! it saw acknowledged is there at the end.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const V: &str = "api-version=2022-06-01";

/// The longest a writer may go without an acknowledged write while voters join, leave or hand
/// over the leadership: a write caught in a change times out after the store's write timeout
/// (5 s), then the next one finds the new leader. Generous for a loaded machine; it catches a
/// write path that stalls, not a slow one.
const FAILOVER_BOUND: Duration = Duration::from_secs(15);

/// A writer through `gateway`: one user-group entry (`{prefix}{n}` in `g`) after another until
/// `stop`; returns the acknowledged `n`s and the longest time without an acknowledgement.
fn spawn_writer(
    gateway: Arc<Server>,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<u64>, Duration)> {
    tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let path = format!("/api/hubs/chat/users/{prefix}{i}/groups/g?{V}");
            if let Ok(r) = gateway.rest("PUT", &path, None).await {
                if r.status == 200 {
                    acknowledged.push(i);
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
            }
        }
        (acknowledged, longest)
    })
}

/// Every write `spawn_writer` saw acknowledged is there.
async fn all_acknowledged_there(
    gateway: &Server,
    prefix: &str,
    acknowledged: Vec<u64>,
) -> anyhow::Result<()> {
    for i in acknowledged {
        let path = format!("/api/hubs/chat/users/{prefix}{i}/groups/g?{V}");
        let r = gateway.rest("HEAD", &path, None).await?;
        anyhow::ensure!(
            r.status == 200,
            "acknowledged write {prefix}{i} lost ({})",
            r.status
        );
    }
    Ok(())
}

/// Runs `switchboard cluster ARGS --store STORE --access-key KEY [--json]`.
fn cluster_cli(store: &str, args: &[&str], json: bool) -> anyhow::Result<(i32, String, String)> {
    let mut command = std::process::Command::new(bin());
    command
        .arg("cluster")
        .args(args)
        .args(["--store", store, "--access-key", TEST_KEY]);
    if json {
        command.arg("--json");
    }
    let out = command.output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn status(store: &str) -> anyhow::Result<Value> {
    let (code, out, err) = cluster_cli(store, &["status"], true)?;
    anyhow::ensure!(code == 0, "cluster status failed ({code}): {err}");
    Ok(serde_json::from_str(&out)?)
}

/// The voter ids the status lists, sorted.
fn voters(status: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["role"] == "voter")
        .filter_map(|n| n["nodeId"].as_u64())
        .collect();
    ids.sort_unstable();
    ids
}

// Two runtime threads: the command line runs as a blocking child process, and the writer must
// keep writing meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_join_and_leave_a_running_store_without_losing_a_write() -> anyhow::Result<()> {
    let mut cluster = Cluster::stores(bin(), 3, &[]).await?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    cluster.add_gateway(&[]).await?;
    let gateway = Arc::new(cluster.gateways.remove(0));

    // A writer: one user-group entry after another through the gateway, each acknowledged one
    // recorded, and the longest time without an acknowledgement.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(gateway.clone(), "u", stop.clone());

    // Grow 3 -> 5 with --join.
    let seeds = cluster.store_list();
    for _ in 0..2 {
        cluster.join_voter(Role::Store, &[]).await?;
    }
    let grown = eventually(Duration::from_secs(30), "five voters", || async {
        let s = status(&seeds).ok()?;
        (voters(&s) == vec![1, 2, 3, 4, 5]).then_some(s)
    })
    .await?;
    // The status agrees with the cluster: the leader it names is the one that says it leads,
    // and the leader's view has every node's replication.
    let leader = cluster.wait_leader(Duration::from_secs(20)).await? as u64 + 1;
    let named = grown["leaderId"].as_u64();
    anyhow::ensure!(
        named == Some(leader) || cluster.leader().await.map(|l| l as u64 + 1) == named,
        "status names leader {named:?}, the cluster's is {leader}: {grown}"
    );
    for node in grown["nodes"].as_array().into_iter().flatten() {
        anyhow::ensure!(
            node["lag"].is_u64() && node["matchedIndex"].is_u64(),
            "no replication in {grown}"
        );
    }
    let (code, table, err) = cluster_cli(&seeds, &["status"], false)?;
    anyhow::ensure!(
        code == 0 && table.contains("voter*") && table.lines().count() == 7,
        "table ({code}): {table}{err}"
    );

    // Shrink 5 -> 3, the leader first.
    let leader = status(&seeds)?["leaderId"].as_u64().expect("a leader");
    let (code, _, err) = cluster_cli(&seeds, &["remove-voter", &leader.to_string()], true)?;
    anyhow::ensure!(code == 0, "removing the leader failed: {err}");
    let after = eventually(
        Duration::from_secs(30),
        "a new leader among four voters",
        || async {
            let s = status(&seeds).ok()?;
            let l = s["leaderId"].as_u64()?;
            (voters(&s).len() == 4 && l != leader && voters(&s).contains(&l)).then_some(s)
        },
    )
    .await?;
    let another = voters(&after)
        .into_iter()
        .find(|v| Some(*v) != after["leaderId"].as_u64())
        .expect("a follower");
    let (code, _, err) = cluster_cli(&seeds, &["remove-voter", &another.to_string()], true)?;
    anyhow::ensure!(code == 0, "removing voter {another} failed: {err}");
    eventually(Duration::from_secs(30), "three voters", || async {
        let s = status(&seeds).ok()?;
        (voters(&s).len() == 3).then_some(())
    })
    .await?;
    // Refusals: a node that is not a voter, no key.
    let (code, _, err) = cluster_cli(&seeds, &["remove-voter", "99"], false)?;
    anyhow::ensure!(
        code == 2 && err.contains("neither a voter nor a learner"),
        "({code}) {err}"
    );
    let out = std::process::Command::new(bin())
        .args(["cluster", "status", "--store", &seeds])
        .output()?;
    anyhow::ensure!(
        out.status.code() == Some(64),
        "status without a key: {out:?}"
    );

    // A few more writes on the three voters left, then every acknowledged write is there.
    let count_before = {
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while n < 20 && Instant::now() < deadline {
            let path = format!("/api/hubs/chat/users/late{n}/groups/g?{V}");
            if matches!(
                gateway.rest("PUT", &path, None).await.map(|r| r.status),
                Ok(200)
            ) {
                n += 1;
            }
        }
        n
    };
    anyhow::ensure!(
        count_before == 20,
        "writes after the shrink: {count_before} of 20"
    );
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, longest) = writer.await?;
    eprintln!(
        "{} writes acknowledged while the store grew and shrank; longest wait {longest:?}",
        acknowledged.len()
    );
    anyhow::ensure!(longest < FAILOVER_BOUND, "writes stopped for {longest:?}");
    anyhow::ensure!(!acknowledged.is_empty(), "the writer wrote nothing");
    all_acknowledged_there(&gateway, "u", acknowledged).await?;
    Ok(())
}

#[tokio::test]
async fn a_serve_node_joins_with_its_gateway() -> anyhow::Result<()> {
    let mut cluster = Cluster::serve(bin(), 3, &[]).await?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    let seeds = cluster.store_list();
    // As the Helm chart starts a voter past the initial ones: --peers lists the initial voters
    // (not this one), --join says where to join.
    let peers = cluster
        .cluster_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let joined = cluster
        .join_voter(Role::Serve, &["--peers", &peers])
        .await?;
    eventually(Duration::from_secs(30), "four voters", || async {
        let s = status(&seeds).ok()?;
        (voters(&s) == vec![1, 2, 3, 4]).then_some(())
    })
    .await?;
    // Its gateway is one of the cluster's: a client on it gets a send made through node 1.
    let mut js = JsClients::start().await?;
    js.connect("late", &cluster.voters[joined], ConnectOptions::default())
        .await?;
    send_ok(
        &cluster.voters[0],
        &format!("/api/hubs/chat/:send?{V}"),
        serde_json::json!(["hello"]),
    )
    .await?;
    assert_eq!(
        js.next_message("late").await?.args,
        vec![serde_json::json!("hello")]
    );
    Ok(())
}

/// The count of Raft RPCs a node refused for `reason`.
async fn refusals(server: &Server, reason: &str) -> f64 {
    let Ok(response) = reqwest::get(server.url("/metrics")).await else {
        return 0.0;
    };
    let body = response.text().await.unwrap_or_default();
    let prefix = format!("switchboard_raft_rpcs_refused_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_voter_that_lost_its_disk_votes_only_once_it_caught_up() -> anyhow::Result<()> {
    // The worst schedule: writes acknowledged by the leader and C while B is cut off, so B
    // lacks them; then C loses its disk and the leader dies. Had C voted with its empty log, B
    // would lead without those writes.
    let mut cluster = Cluster::serve_partitionable(bin(), 3, &[]).await?;
    let l = cluster.wait_leader(Duration::from_secs(20)).await?;
    let (b, c) = ((l + 1) % 3, (l + 2) % 3);
    cluster.isolate(b);
    let mut written = Vec::new();
    for i in 0..20 {
        let path = format!("/api/hubs/chat/users/w{i}/groups/g?{V}");
        let r = cluster.voters[l].rest("PUT", &path, None).await?;
        anyhow::ensure!(
            r.status == 200,
            "write {i} with B cut off: {} {}",
            r.status,
            r.body
        );
        written.push(i);
    }
    cluster.voters[c].kill().await?;
    let dir = cluster.voters[c].data_dir().to_path_buf();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    cluster.voters[l].kill().await?;
    cluster.heal();
    // C comes back empty under its old id: B campaigns, C refuses, nobody leads.
    cluster.voters[c].relaunch().await?;
    eventually(
        Duration::from_secs(30),
        "C refusing B's votes while it recovers",
        || async { (refusals(&cluster.voters[c], "recovering").await > 0.0).then_some(()) },
    )
    .await?;
    anyhow::ensure!(
        cluster.leader().await.is_none(),
        "a leader was elected with a voter that lost its disk"
    );
    let ready = reqwest::get(cluster.voters[c].url("/readyz")).await?;
    let (code, why) = (ready.status(), ready.text().await?);
    anyhow::ensure!(
        code == 503 && why.contains("catching up"),
        "a recovering node reports {code}: {why}"
    );
    // The old leader returns: it has every acknowledged write; C catches up from it.
    cluster.voters[l].relaunch().await?;
    cluster.wait_leader(Duration::from_secs(30)).await?;
    for node in [b, c, l] {
        let server = &cluster.voters[node];
        eventually(
            Duration::from_secs(30),
            "every acknowledged write",
            || async {
                for i in &written {
                    let path = format!("/api/hubs/chat/users/w{i}/groups/g?{V}");
                    if server.rest("HEAD", &path, None).await.ok()?.status != 200 {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await?;
    }
    Ok(())
}

/// What `/readyz` of `server` answers: status and body.
async fn readiness(server: &Server) -> Option<(u16, String)> {
    let response = reqwest::get(server.url("/readyz")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

#[tokio::test]
async fn a_voter_whose_disk_fills_is_not_ready_and_recovers_by_itself() -> anyhow::Result<()> {
    let mut cluster = Cluster::serve(bin(), 3, &[]).await?;
    let c = cluster.wait_leader(Duration::from_secs(20)).await?;
    // The leader's data directory moves onto a small tmpfs (data kept: this is not a lost disk).
    cluster.voters[c].kill().await?;
    let dir = cluster.voters[c].data_dir().to_path_buf();
    let saved = tempfile::tempdir()?;
    let copy = |from: &std::path::Path, to: &std::path::Path| -> anyhow::Result<()> {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(from.join("."))
            .arg(to)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "cp -a {} {}",
            from.display(),
            to.display()
        );
        Ok(())
    };
    copy(&dir, saved.path())?;
    let _tmpfs = match mount::tmpfs(&dir, 32) {
        Ok(mount) => mount,
        Err(why) => {
            mount::skip(&why);
            return Ok(());
        }
    };
    copy(saved.path(), &dir)?;
    cluster.voters[c].restart().await?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    let other = (c + 1) % 3;

    // Writes through another node, with bulky user ids so the log grows quickly, until the
    // node whose disk is full says it is not ready.
    let filler = mount::fill(&dir);
    let pad = "p".repeat(100);
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0u64;
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the node whose disk is full never reported not ready"
        );
        i += 1;
        let user = format!("u{i}-{pad}");
        let path = format!("/api/hubs/chat/users/{user}/groups/g?{V}");
        if matches!(
            cluster.voters[other]
                .rest("PUT", &path, None)
                .await
                .map(|r| r.status),
            Ok(200)
        ) {
            acknowledged.push(user);
        }
        if i % 10 == 0 {
            if let Some((503, why)) = readiness(&cluster.voters[c]).await {
                anyhow::ensure!(why.contains("data directory"), "not ready because: {why}");
                break;
            }
        }
    }
    anyhow::ensure!(
        cluster.voters[c]
            .metric("switchboard_store_disk_failing")
            .await
            == Some(1.0),
        "the failing gauge is not 1"
    );
    anyhow::ensure!(
        cluster.voters[c]
            .metric("switchboard_store_disk_errors_total")
            .await
            .unwrap_or(0.0)
            > 0.0,
        "no disk error counted"
    );
    // A write through it is refused with an ErrorDetail that names no path.
    let refused = cluster.voters[c]
        .rest("PUT", &format!("/api/hubs/chat/users/x/groups/g?{V}"), None)
        .await?;
    anyhow::ensure!(
        refused.status == 503 && !refused.body.contains('/'),
        "a write through the failing node: {} {}",
        refused.status,
        refused.body
    );
    // The two healthy voters keep taking writes.
    for i in 0..20 {
        let path = format!("/api/hubs/chat/users/during{i}/groups/g?{V}");
        eventually(
            Duration::from_secs(30),
            "a write during the fault",
            || async {
                let r = cluster.voters[other].rest("PUT", &path, None).await.ok()?;
                (r.status == 200).then_some(())
            },
        )
        .await?;
        acknowledged.push(format!("during{i}"));
    }

    std::fs::remove_file(&filler)?;
    eventually(
        Duration::from_secs(60),
        "the node ready again without a restart",
        || async {
            let (status, _) = readiness(&cluster.voters[c]).await?;
            (status == 200).then_some(())
        },
    )
    .await?;
    anyhow::ensure!(
        cluster.voters[c]
            .metric("switchboard_store_disk_failing")
            .await
            == Some(0.0),
        "the failing gauge is not back to 0"
    );
    eventually(Duration::from_secs(30), "a write through it", || async {
        let path = format!("/api/hubs/chat/users/after/groups/g?{V}");
        let r = cluster.voters[c].rest("PUT", &path, None).await.ok()?;
        (r.status == 200).then_some(())
    })
    .await?;
    eprintln!(
        "{} writes acknowledged around the fault",
        acknowledged.len()
    );
    // Every acknowledged write is on the recovered node too.
    let server = &cluster.voters[c];
    eventually(
        Duration::from_secs(30),
        "every acknowledged write",
        || async {
            for user in acknowledged.iter().map(String::as_str).chain(["after"]) {
                let path = format!("/api/hubs/chat/users/{user}/groups/g?{V}");
                if server.rest("HEAD", &path, None).await.ok()?.status != 200 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    Ok(())
}

/// The cluster id the voters of `store` report, once named.
async fn cluster_id(store: &str) -> anyhow::Result<String> {
    eventually(Duration::from_secs(20), "the cluster named", || async {
        status(store).ok()?["clusterId"].as_str().map(str::to_owned)
    })
    .await
}

#[tokio::test]
async fn a_node_started_on_another_clusters_data_is_refused() -> anyhow::Result<()> {
    let mut a = Cluster::serve(bin(), 3, &[]).await?;
    let mut b = Cluster::serve(bin(), 3, &[]).await?;
    let leader = a.wait_leader(Duration::from_secs(20)).await?;
    b.wait_leader(Duration::from_secs(20)).await?;
    let (id_a, id_b) = (
        cluster_id(&a.store_list()).await?,
        cluster_id(&b.store_list()).await?,
    );
    anyhow::ensure!(
        id_a != id_b && id_a.len() == 32,
        "cluster ids {id_a} and {id_b}"
    );
    let (code, table, err) = cluster_cli(&a.store_list(), &["status"], false)?;
    anyhow::ensure!(
        code == 0 && table.contains(&format!("cluster {id_a}")),
        "table ({code}): {table}{err}"
    );

    // A follower of A is restarted on the data directory of B's node with the same id, as a
    // mixed-up volume would do.
    let v = (leader + 1) % 3;
    a.voters[v].kill().await?;
    b.voters[v].kill().await?;
    let (to, from) = (a.voters[v].data_dir(), b.voters[v].data_dir());
    for entry in std::fs::read_dir(to)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(to)
        .status()?;
    anyhow::ensure!(copied.success(), "copy the data directory");
    a.voters[v].relaunch().await?;

    // Its calls and A's calls to it are refused as another cluster's, and A goes on.
    eventually(
        Duration::from_secs(30),
        "raft calls refused as another cluster's",
        || async {
            let mut refused = 0.0;
            for server in &a.voters {
                refused += refusals(server, "other_cluster").await;
            }
            (refused > 0.0).then_some(())
        },
    )
    .await?;
    for i in 0..10 {
        let path = format!("/api/hubs/chat/users/after{i}/groups/g?{V}");
        let r = eventually(Duration::from_secs(30), "a write on A", || async {
            let r = a.voters[leader].rest("PUT", &path, None).await.ok()?;
            (r.status == 200).then_some(r)
        })
        .await?;
        anyhow::ensure!(r.status == 200);
    }
    let now = status(&a.store_list())?;
    anyhow::ensure!(
        now["clusterId"].as_str() == Some(id_a.as_str())
            && now["leaderId"].as_u64() != Some(v as u64 + 1),
        "A after the mix-up: {now}"
    );
    // The node kept B's state: nothing of A was written into it.
    let path = format!("/api/hubs/chat/users/after0/groups/g?{V}");
    let r = a.voters[v].rest("HEAD", &path, None).await?;
    anyhow::ensure!(r.status != 200, "A's write reached the mixed-up node");
    Ok(())
}

// Two runtime threads: the command line runs as a blocking child process, and the writer must
// keep writing meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leadership_moves_to_a_chosen_voter_under_writes() -> anyhow::Result<()> {
    let mut cluster = Cluster::stores(bin(), 3, &[]).await?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    cluster.add_gateway(&[]).await?;
    let gateway = Arc::new(cluster.gateways.remove(0));
    let seeds = cluster.store_list();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(gateway.clone(), "t", stop.clone());

    for _ in 0..2 {
        let before = status(&seeds)?;
        let leader = before["leaderId"].as_u64().expect("a leader");
        let target = voters(&before)
            .into_iter()
            .find(|v| *v != leader)
            .expect("a follower");
        let (code, out, err) =
            cluster_cli(&seeds, &["transfer-leader", &target.to_string()], true)?;
        anyhow::ensure!(code == 0, "transfer to {target} failed ({code}): {err}");
        let answered: Value = serde_json::from_str(&out)?;
        anyhow::ensure!(
            answered["leaderId"].as_u64() == Some(target),
            "the answer names another leader: {answered}"
        );
        eventually(Duration::from_secs(10), "the status agreeing", || async {
            (status(&seeds).ok()?["leaderId"].as_u64() == Some(target)).then_some(())
        })
        .await?;
    }
    // To the leader itself: nothing to do. To a node that is not a voter: refused.
    let leader = status(&seeds)?["leaderId"].as_u64().expect("a leader");
    let (code, _, err) = cluster_cli(&seeds, &["transfer-leader", &leader.to_string()], true)?;
    anyhow::ensure!(code == 0, "transfer to the leader itself ({code}): {err}");
    let (code, _, err) = cluster_cli(&seeds, &["transfer-leader", "9"], false)?;
    anyhow::ensure!(code == 2 && err.contains("not a voter"), "({code}) {err}");

    // Writes went on; every acknowledged one is there.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let path = format!("/api/hubs/chat/users/after/groups/g?{V}");
        if matches!(
            gateway.rest("PUT", &path, None).await.map(|r| r.status),
            Ok(200)
        ) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, longest) = writer.await?;
    eprintln!(
        "{} writes acknowledged across two leadership transfers; longest wait {longest:?}",
        acknowledged.len()
    );
    anyhow::ensure!(longest < FAILOVER_BOUND, "writes stopped for {longest:?}");
    anyhow::ensure!(!acknowledged.is_empty(), "the writer wrote nothing");
    all_acknowledged_there(&gateway, "t", acknowledged).await?;
    Ok(())
}
