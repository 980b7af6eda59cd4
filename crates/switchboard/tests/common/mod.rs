//! Shared set-up for the end-to-end tests: the binary under test and small helpers.
#![allow(dead_code)]

use std::time::Duration;

pub use switchboard_testkit::*;

/// The `switchboard` binary built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

pub async fn server() -> anyhow::Result<Server> {
    Server::start(bin(), ServerOptions::default()).await
}

pub async fn server_with(args: &[&str]) -> anyhow::Result<Server> {
    Server::start(
        bin(),
        ServerOptions {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    )
    .await
}

/// A JSON send body in the .NET SDK's casing.
pub fn body(target: &str, args: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "Target": target, "Arguments": args })
}

/// Asserts a response status, printing the body on failure.
#[track_caller]
pub fn assert_status(resp: &RestResponse, status: u16) {
    assert_eq!(
        resp.status, status,
        "unexpected status; body: {}",
        resp.body
    );
}

/// Asserts an error response: status, an ErrorDetail body, and the x-ms-error-code header.
#[track_caller]
pub fn assert_error(resp: &RestResponse, status: u16, x_ms_error_code: Option<&str>) {
    assert_eq!(
        resp.status, status,
        "unexpected status; body: {}",
        resp.body
    );
    assert_eq!(
        resp.error_code(),
        x_ms_error_code,
        "x-ms-error-code; body: {}",
        resp.body
    );
    if !resp.body.is_empty() {
        let detail: serde_json::Value = serde_json::from_str(&resp.body)
            .unwrap_or_else(|_| panic!("ErrorDetail JSON, got {:?}", resp.body));
        assert!(detail["code"].is_string(), "ErrorDetail.code in {detail}");
        assert!(
            detail["message"].is_string(),
            "ErrorDetail.message in {detail}"
        );
    }
}

pub const SHORT: Duration = Duration::from_millis(300);

/// Repeats a REST call (with a valid token) until it answers `status`, for at most `within`.
pub async fn until_status(
    server: &Server,
    method: &str,
    path: &str,
    status: u16,
    within: Duration,
    what: &str,
) -> anyhow::Result<()> {
    eventually(within, what, || async {
        let r = server.rest(method, path, None).await.ok()?;
        (r.status == status).then_some(())
    })
    .await
}

/// A REST call without a body (with a valid token) that must answer `status`.
pub async fn expect_status(
    server: &Server,
    method: &str,
    path: &str,
    status: u16,
) -> anyhow::Result<()> {
    let r = server.rest(method, path, None).await?;
    anyhow::ensure!(
        r.status == status,
        "{method} {path} answered {} (expected {status}): {}",
        r.status,
        r.body
    );
    Ok(())
}

/// Sends a message with target "message" and these arguments; expects 202.
pub async fn send_ok(server: &Server, path: &str, args: serde_json::Value) -> anyhow::Result<()> {
    let r = server
        .rest("POST", path, Some(body("message", args)))
        .await?;
    anyhow::ensure!(
        r.status == 202,
        "POST {path} answered {}: {}",
        r.status,
        r.body
    );
    Ok(())
}

// ----- the cluster plane, as a gRPC client generated from `proto/` -----

use std::net::SocketAddr;
use switchboard_auth::{ClusterIdentity, ClusterKeys};
use tonic::transport::Channel;
use tonic::Request;

/// What the attacker sends as credentials.
#[derive(Clone)]
pub enum Credentials {
    None,
    /// A token minted with `key` for `identity`.
    Token {
        key: String,
        identity: ClusterIdentity,
    },
}

impl Credentials {
    pub fn key(key: &str, node: u64, incarnation: u64) -> Credentials {
        Credentials::Token {
            key: key.to_owned(),
            identity: ClusterIdentity { node, incarnation },
        }
    }

    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(Duration::from_secs(10));
        if let Credentials::Token { key, identity } = self {
            let token = ClusterKeys::new(&[key.as_str()])
                .expect("a key")
                .mint(*identity, now_ms());
            request
                .metadata_mut()
                .insert("x-switchboard-cluster-auth", token.parse().expect("ascii"));
        }
        request
    }
}

pub fn now_ms() -> u64 {
    now_secs() * 1000
}

/// A plain (h2c) channel to a cluster address, as anyone on the network can open.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// The membership state a voter's store holds, read over `Store.Watch` with the cluster key
/// (as a stateless gateway reads it).
pub async fn store_state(addr: SocketAddr) -> anyhow::Result<switchboard_membership::Membership> {
    use switchboard_proto::v1::store_client::StoreClient;
    use switchboard_proto::v1::{watch_event, WatchRequest};
    let mut store = StoreClient::new(channel(addr).await);
    let mut stream = store
        .watch(Credentials::key(TEST_KEY, 98, 1).request(WatchRequest {}))
        .await?
        .into_inner();
    let mut state = Vec::new();
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(watch_event::Event::Snapshot(s)) => {
                state = s.state;
                break;
            }
            Some(watch_event::Event::Chunk(c)) => {
                state.extend_from_slice(&c.data);
                if c.last {
                    break;
                }
            }
            _ => {}
        }
    }
    Ok(rmp_serde::from_slice(&state)?)
}

/// Where a test that runs on either engine runs: on the Raft engine one all-in-one node; on the
/// Redis engine two gateways on one Redis, with the clients on the first and the REST calls on
/// the second, so every change and every message crosses gateways.
pub struct Deployment {
    nodes: Vec<Server>,
    _cluster: Option<Cluster>,
}

impl Deployment {
    pub async fn start(engine: Engine) -> anyhow::Result<Deployment> {
        match engine {
            Engine::Raft => Ok(Deployment {
                nodes: vec![server().await?],
                _cluster: None,
            }),
            Engine::Redis => {
                let mut cluster = Cluster::on_redis(bin(), 2, &[]).await?;
                let nodes = std::mem::take(&mut cluster.gateways);
                Ok(Deployment {
                    nodes,
                    _cluster: Some(cluster),
                })
            }
        }
    }

    /// Where clients connect.
    pub fn clients(&self) -> &Server {
        &self.nodes[0]
    }

    /// Where REST calls go.
    pub fn rest(&self) -> &Server {
        self.nodes.last().expect("a node")
    }
}

/// Runs each named `async fn NAME(engine: Engine) -> anyhow::Result<()>` as two tests,
/// `NAME::raft` and `NAME::redis`.
#[allow(unused_macros)]
macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn raft() -> anyhow::Result<()> {
                    super::$name(super::Engine::Raft).await
                }
                #[tokio::test]
                async fn redis() -> anyhow::Result<()> {
                    super::$name(super::Engine::Redis).await
                }
            }
        )*
    };
}
