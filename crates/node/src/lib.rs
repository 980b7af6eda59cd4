//! One Switchboard process, any role, from listeners it is handed.
//!
//! `switchboard serve` (a gateway and a voter), `switchboard gateway` (stateless, on a remote
//! store) and `switchboard store` (a voter) are compositions of the same parts: a membership
//! store, optionally a gateway, the cluster's gRPC services on a cluster listener, and a public
//! HTTP listener (clients and REST for a gateway; health and metrics for a voter alone). This
//! crate starts them in the right order and, above all, stops them in the right order, written
//! once ([`Node::wait`]):
//! 1. the gateway drains: not ready, stop accepting, Close every client (`allowReconnect`),
//!    wait for them within the shutdown grace, leave the store;
//! 2. the public listener of a voter without a gateway stops;
//! 3. the cluster listener stops (peers' links and Raft calls end here, not before the gateway
//!    has said goodbye);
//! 4. the store shuts down last (a voter flushes its log; a replica closes its watch).
//!
//! Listeners come bound, so a test picks free ports, starts whole clusters in one process and
//! knows every address before anything runs; the binary binds its flags' addresses and hands
//! them over the same way (like mini-redis's `server::run`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_auth::KeySet;
use switchboard_edge::EdgeConfig;
use switchboard_gateway::ClusterServices;
use switchboard_gateway::{observability, Gateway, GatewayConfig, Shared};
use switchboard_net::{ClusterSecurity, ListenerLimits};
use switchboard_store::admin::Contacts;
use switchboard_store::grpc::{
    AdminGrpcService, Channels, GrpcForwarder, GrpcNetwork, RaftGrpcService, StoreGrpcService,
};
use switchboard_store::remote::{RemoteStore, RemoteStoreConfig};
use switchboard_store::{MembershipStore, RaftStore, StoreConfig, StoreError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long each listener may take to stop once told to.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Opening, initializing or joining the store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The gateway could not be built (its upstream client).
    #[error("gateway: {0}")]
    Gateway(#[from] switchboard_upstream::ClientError),
    /// The parts do not fit together (e.g. a cluster listener without credentials).
    #[error("configuration: {0}")]
    Config(String),
    /// Serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// The listeners a node serves on, already bound.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Clients and REST for a gateway; health and metrics for a voter alone.
    pub public: Option<TcpListener>,
    /// The cluster's gRPC services (Raft, Store, Fanout, Relay).
    pub cluster: Option<TcpListener>,
}

/// Where this node's membership lives.
pub enum StoreSpec {
    /// A voter in this process: a single-voter store without `peers`, a member of the cluster
    /// of `peers` (node id → cluster address, this node included) with them.
    Voter {
        config: StoreConfig,
        peers: Option<BTreeMap<u64, String>>,
    },
    /// A voter that joins the running cluster of the voters at `join` (their cluster addresses):
    /// it starts with no membership, asks the leader to add it, and votes once it has caught up.
    Joining {
        config: StoreConfig,
        join: Vec<String>,
    },
    /// A stateless gateway's replica of the voters at `voters`.
    Remote {
        voters: Vec<String>,
        config: RemoteStoreConfig,
    },
    /// A stateless gateway whose durable membership lives in Redis (the Redis engine).
    Redis(switchboard_redis::RedisConfig),
}

/// A gateway: its configuration, the access keys that sign tokens, its public edge.
pub struct GatewaySpec {
    pub config: GatewayConfig,
    pub keys: KeySet,
    pub edge: EdgeConfig,
}

/// Everything a node is made of.
pub struct NodeConfig {
    pub store: StoreSpec,
    /// Serve clients and REST; `None`: a voter only.
    pub gateway: Option<GatewaySpec>,
    /// The cluster's credentials: needed for a cluster listener, peers or a remote store.
    pub security: Option<ClusterSecurity>,
    /// The public edge of a voter without a gateway (health and metrics).
    pub health_edge: Option<EdgeConfig>,
    /// `/metrics` (the recorder is the process's; install it before starting).
    pub prometheus: Option<PrometheusHandle>,
}

/// The membership store this node runs on.
#[derive(Clone)]
enum Store {
    Voter(Arc<RaftStore>),
    Remote(Arc<RemoteStore>),
    Redis(Arc<switchboard_redis::RedisStore>),
}

impl Store {
    fn as_membership(&self) -> Arc<dyn MembershipStore> {
        match self {
            Store::Voter(s) => s.clone(),
            Store::Remote(s) => s.clone(),
            Store::Redis(s) => s.clone(),
        }
    }

    async fn shutdown(&self) {
        match self {
            Store::Voter(s) => s.shutdown().await,
            Store::Remote(s) => s.shutdown().await,
            Store::Redis(s) => s.shutdown().await,
        }
    }
}

/// A started node; [`Node::wait`] runs it until the shutdown token, then stops it in order.
pub struct Node {
    store: Store,
    gateway: Option<Arc<Shared>>,
    /// The gateway's run (it drains on shutdown) or a voter's health listener.
    public: Option<JoinHandle<std::io::Result<()>>>,
    cluster: Option<JoinHandle<()>>,
    stop_cluster: CancellationToken,
    shutdown: CancellationToken,
}

impl Node {
    /// Opens the store (initializing a voter, joining its peers), builds the gateway, and
    /// starts serving on `listeners`. Returns once everything is serving; a voter of a cluster
    /// returns before a leader is elected.
    pub async fn start(
        listeners: Listeners,
        config: NodeConfig,
        shutdown: CancellationToken,
    ) -> Result<Node, NodeError> {
        let NodeConfig {
            store,
            gateway,
            security,
            health_edge,
            prometheus,
        } = config;
        let redis_fanout = match (&store, &gateway) {
            (StoreSpec::Redis(redis), Some(spec)) => {
                let mut settings = switchboard_redis::FanoutSettings::new(
                    redis.url.clone(),
                    spec.config.node_id,
                    spec.config.incarnation,
                );
                settings.prefix = redis.prefix.clone();
                Some(switchboard_redis::RedisFanout::connect(settings).await?)
            }
            _ => None,
        };
        let (store, contacts, joining) = open_store(store, security.as_ref()).await?;
        let gateway = match gateway {
            Some(mut spec) => {
                if let Some(fanout) = redis_fanout {
                    // On the Redis engine messages between gateways travel over pub/sub.
                    spec.config.transport =
                        Some(switchboard_gateway::ExternalTransport(Arc::new(fanout)));
                }
                Some((
                    Gateway::new(
                        spec.config,
                        spec.keys,
                        store.as_membership(),
                        prometheus.clone(),
                    )?,
                    spec.edge,
                ))
            }
            None => None,
        };
        let stop_cluster = CancellationToken::new();
        // A start that fails below stops the cluster listener it already started.
        let stop_on_error = stop_cluster.clone().drop_guard();
        let cluster = match (listeners.cluster, &security) {
            (Some(listener), Some(security)) => {
                let voter = match &store {
                    Store::Voter(s) => Some((s, contacts)),
                    Store::Remote(_) | Store::Redis(_) => None,
                };
                let services = gateway.as_ref().and_then(|(g, _)| g.cluster_services());
                Some(spawn_cluster_server(
                    listener,
                    security,
                    voter,
                    services,
                    stop_cluster.clone(),
                ))
            }
            (Some(_), None) => {
                return Err(NodeError::Config(
                    "a cluster listener needs cluster credentials".to_owned(),
                ))
            }
            (None, _) => None,
        };
        // A voter of a cluster starts (forms, rejoins, recovers or joins) once its Raft service
        // listens.
        if let (Some(starting), Store::Voter(voter)) = (joining, &store) {
            let voter = voter.clone();
            let cancel = stop_cluster.clone();
            match starting {
                Starting::Peers {
                    channels,
                    peers,
                    data_dir,
                } => {
                    tokio::spawn(switchboard_store::admin::start_voter(
                        voter, channels, peers, data_dir, cancel,
                    ));
                }
                Starting::Join {
                    channels,
                    node,
                    address,
                    seeds,
                    data_dir,
                } => {
                    tokio::spawn(switchboard_store::admin::join(
                        voter, channels, node, address, seeds, data_dir, cancel,
                    ));
                }
            }
        }
        let shared = gateway.as_ref().map(|(g, _)| g.shared().clone());
        let public = match (listeners.public, gateway) {
            (Some(listener), Some((gateway, edge))) => {
                let shutdown = shutdown.clone();
                Some(tokio::spawn(async move {
                    gateway.run(listener, edge, shutdown).await
                }))
            }
            (Some(listener), None) => {
                let Store::Voter(voter) = &store else {
                    return Err(NodeError::Config(
                        "a node with neither a gateway nor a voter has nothing to serve".to_owned(),
                    ));
                };
                let edge = health_edge.ok_or_else(|| {
                    NodeError::Config("a voter's public listener needs its edge".to_owned())
                })?;
                let app = health_router(voter.clone(), prometheus);
                let shutdown = shutdown.clone();
                Some(tokio::spawn(async move {
                    switchboard_edge::serve(listener, app, edge, shutdown, Duration::from_secs(2))
                        .await;
                    Ok(())
                }))
            }
            (None, Some(_)) => {
                return Err(NodeError::Config(
                    "a gateway needs a public listener".to_owned(),
                ))
            }
            (None, None) => None,
        };
        stop_on_error.disarm();
        Ok(Node {
            store,
            gateway: shared,
            public,
            cluster,
            stop_cluster,
            shutdown,
        })
    }

    /// The gateway's shared state, if this node has one (its configuration, registry, store).
    pub fn gateway(&self) -> Option<&Arc<Shared>> {
        self.gateway.as_ref()
    }

    /// The voter's store, if this node has one.
    pub fn voter(&self) -> Option<&Arc<RaftStore>> {
        match &self.store {
            Store::Voter(s) => Some(s),
            Store::Remote(_) | Store::Redis(_) => None,
        }
    }

    /// Serves until the shutdown token is cancelled, then stops in order (see the module docs).
    pub async fn wait(self) -> Result<(), NodeError> {
        let mut result = Ok(());
        match self.public {
            Some(public) => match public.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => result = Err(NodeError::Io(error)),
                Err(error) => result = Err(NodeError::Io(std::io::Error::other(error))),
            },
            None => self.shutdown.cancelled().await,
        }
        self.stop_cluster.cancel();
        if let Some(cluster) = self.cluster {
            if tokio::time::timeout(STOP_WAIT, cluster).await.is_err() {
                tracing::debug!("the cluster listener did not stop in time");
            }
        }
        self.store.shutdown().await;
        result
    }
}

/// Opens the store: a voter (single, or joining its peers), or a remote replica.
/// What a voter does once its Raft service listens.
enum Starting {
    /// Form, rejoin or recover the cluster of `peers` (store::admin::start_voter).
    Peers {
        channels: Channels,
        peers: BTreeMap<u64, String>,
        data_dir: std::path::PathBuf,
    },
    /// Ask the cluster the voters at `seeds` belong to to add this node (store::admin::join).
    Join {
        channels: Channels,
        node: u64,
        address: String,
        seeds: Vec<String>,
        data_dir: std::path::PathBuf,
    },
}

/// Opens the store; for a voter, also when its peers last answered it, and whether it must
/// join a running cluster.
async fn open_store(
    spec: StoreSpec,
    security: Option<&ClusterSecurity>,
) -> Result<(Store, Contacts, Option<Starting>), NodeError> {
    match spec {
        StoreSpec::Voter {
            config,
            peers: None,
        } => {
            let store =
                RaftStore::open(config, switchboard_store::network::SingleNodeNetwork).await?;
            store.initialize_single().await?;
            Ok((Store::Voter(store), Contacts::default(), None))
        }
        StoreSpec::Voter {
            config,
            peers: Some(peers),
        } => {
            let security = security.ok_or_else(|| {
                NodeError::Config("a cluster store needs cluster credentials".to_owned())
            })?;
            let channels = Channels::new(security.clone());
            let network =
                GrpcNetwork::new(config.node_id, channels.clone()).with_addresses(peers.clone());
            let contacts = network.contacts();
            let forwarder =
                Arc::new(GrpcForwarder::new(channels.clone()).with_addresses(peers.clone()));
            let data_dir = config.data_dir.clone();
            let store = RaftStore::open_with_forwarder(config, network.clone(), forwarder).await?;
            network.attach(store.cluster_name());
            // Decided once the Raft service listens (see store::admin::start_voter).
            let starting = Starting::Peers {
                channels,
                peers,
                data_dir,
            };
            Ok((Store::Voter(store), contacts, Some(starting)))
        }
        StoreSpec::Joining { config, join } => {
            let security = security.ok_or_else(|| {
                NodeError::Config("a joining store needs cluster credentials".to_owned())
            })?;
            let channels = Channels::new(security.clone());
            let network = GrpcNetwork::new(config.node_id, channels.clone());
            let contacts = network.contacts();
            let forwarder = Arc::new(GrpcForwarder::new(channels.clone()));
            let (node, address) = (config.node_id, config.advertise_addr.clone());
            let data_dir = config.data_dir.clone();
            let store = RaftStore::open_with_forwarder(config, network.clone(), forwarder).await?;
            network.attach(store.cluster_name());
            let joining = Starting::Join {
                channels,
                node,
                address,
                seeds: join,
                data_dir,
            };
            Ok((Store::Voter(store), contacts, Some(joining)))
        }
        StoreSpec::Remote { voters, config } => {
            let security = security.ok_or_else(|| {
                NodeError::Config("a remote store needs cluster credentials".to_owned())
            })?;
            Ok((
                Store::Remote(RemoteStore::connect(voters, config, security.clone())),
                Contacts::default(),
                None,
            ))
        }
        StoreSpec::Redis(config) => Ok((
            Store::Redis(switchboard_redis::RedisStore::open(config).await?),
            Contacts::default(),
            None,
        )),
    }
}

/// Serves the cluster gRPC services on `listener` until `stop`, every call authenticated.
fn spawn_cluster_server(
    listener: TcpListener,
    security: &ClusterSecurity,
    store: Option<(&Arc<RaftStore>, Contacts)>,
    gateway: Option<ClusterServices>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let (fanout, relay, presence) = match gateway {
        Some(g) => (Some(g.fanout), Some(g.relay), Some(g.presence)),
        None => (None, None, None),
    };
    let max = security.max_message_bytes();
    let router = switchboard_net::server_builder()
        .layer(security.server_layer())
        .add_optional_service(
            store
                .as_ref()
                .map(|(s, _)| RaftGrpcService::new((*s).clone()).into_server(max)),
        )
        .add_optional_service(store.as_ref().map(|(s, _)| {
            StoreGrpcService::new((*s).clone())
                .with_shutdown(stop.clone())
                .into_server(max)
        }))
        .add_optional_service(store.map(|(s, contacts)| {
            AdminGrpcService::new(s.clone(), contacts, Channels::new(security.clone()))
                .into_server(max)
        }))
        .add_optional_service(fanout)
        .add_optional_service(relay)
        .add_optional_service(presence);
    let incoming =
        switchboard_net::incoming(listener, security, ListenerLimits::default(), stop.clone());
    tokio::spawn(async move {
        if let Err(error) = router
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
        {
            tracing::error!(%error, "cluster listener failed");
        }
    })
}

/// `/api/health`, `/readyz` and `/metrics` for a voter without a gateway.
fn health_router(store: Arc<RaftStore>, prometheus: Option<PrometheusHandle>) -> axum::Router {
    let ready: observability::ReadyCheck = Arc::new(move || {
        if store.disk().failing() {
            // Its disk operations are being retried (see store::disk); the log says why.
            Err("not ready: the data directory cannot be written or read; see the log")
        } else if !store.may_vote() {
            // Not a full voter yet: lost its disk and is catching up (see store::admin::recover);
            // a disruption budget then counts it as down.
            Err("not ready: catching up after losing its data; not voting yet")
        } else if store.status().leader_known() {
            Ok(())
        } else {
            Err("not ready: no raft leader known")
        }
    });
    observability::router(ready, prometheus)
}
