//! The Switchboard gateway: everything a client or an app server talks to over HTTP.
//!
//! A gateway terminates client WebSockets (negotiate, handshake, the hub protocol in JSON and
//! MessagePack), serves the data-plane REST API (the legacy `/api/v1/...` paths and the
//! `/api/hubs/...?api-version=` paths), `/api/health`, `/readyz` and `/metrics`. It holds no
//! durable state: user-group membership and the gateways' leases live in the store behind
//! [`MembershipStore`], which this gateway reads through a replicated view and writes through the
//! store API; its own connections' presence is soft state it holds itself and answers for to the
//! other gateways, so any gateway can take any request.
//!
//! Layout:
//! - [`client`]: negotiate and the per-connection task.
//! - [`rest`]: the REST routes, request extraction (auth, names, api-version) and handlers.
//! - [`dispatch`]: payloads serialized once per protocol, and delivery to local connections.
//! - [`registry`] and [`outbound`]: local connection handles and their bounded queues.
//! - [`local`]: presence of this gateway's own connections (their users and groups), soft
//!   state never written to the store; [`scatter`]: asking and changing it on other gateways.
//! - [`presence`]: the node's lease in the store, and the fan-out's peers.
//! - [`upstream`]: client events sent to the serverless upstream, one ordered queue per
//!   connection.
//! - [`cors`]: which browser origins get CORS headers (`--cors-allowed-origins`).
//! - [`error`]: the single mapping from error codes to HTTP responses.

pub mod admin;
pub mod client;
pub mod cors;
pub mod dispatch;
pub mod error;
pub mod interest;
pub mod local;
pub mod metrics;
pub mod observability;
pub mod outbound;
mod peers;
pub mod presence;
pub mod registry;
pub mod rest;
pub mod scatter;
pub mod upstream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_auth::KeySet;
use switchboard_cluster::fanout::FanoutService;
use switchboard_cluster::proto::fanout_server::FanoutServer;
use switchboard_cluster::{Fanout, FanoutConfig};
use switchboard_core::NodeId;
use switchboard_membership::Command;
use switchboard_store::MembershipStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::{Envelope, LocalDelivery};
use crate::metrics::{CloseReason, GatewayMetrics};
use crate::outbound::{CloseRequest, QueueLimits};
use crate::registry::Registry;

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim())
}

/// How long a request waits for its view to catch up before using it as it is.
const SYNC_TIMEOUT: Duration = Duration::from_secs(1);

/// Seconds since the Unix epoch from the wall clock (token expiry checks).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch from the wall clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fan-out transport given to the gateway (see [`GatewayConfig::transport`]).
#[derive(Clone)]
pub struct ExternalTransport(pub Arc<dyn switchboard_cluster::PeerTransport>);

impl std::fmt::Debug for ExternalTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExternalTransport")
    }
}

/// Everything tunable about a gateway. [`GatewayConfig::new`] gives the service's defaults.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub node_id: NodeId,
    /// Distinguishes this process from earlier ones with the same node id (ms since epoch at start).
    pub incarnation: u64,
    /// The address other nodes use to reach this gateway (published in the store).
    pub advertise: String,
    pub handshake_timeout: Duration,
    pub keep_alive_interval: Duration,
    pub client_timeout: Duration,
    /// Largest hub message a client may send.
    pub max_message_size: usize,
    pub ws_read_buffer: usize,
    pub ws_write_buffer: usize,
    pub queue_limits: QueueLimits,
    /// How long a negotiated connection token stays valid for connecting.
    pub connection_token_lifetime: Duration,
    /// Largest accepted REST body.
    pub max_body_bytes: usize,
    /// Lease of this node in the store; renewed every third of it.
    pub lease: Duration,
    /// A backstop for a store that does not answer at all: above the store's own write
    /// deadline (5 s), which answers first with the same 504.
    pub store_timeout: Duration,
    /// How long shutdown waits for connections to drain.
    pub shutdown_grace: Duration,
    /// Client connections this gateway holds at most (negotiate and connect answer 429 beyond).
    pub max_connections: usize,
    /// Forward messages to other gateways (a cluster) over these channels, which carry this
    /// node's cluster credentials; `advertise` must then be this node's cluster (gRPC) address.
    pub cluster: Option<switchboard_net::Channels>,
    /// Carry envelopes to other gateways over this transport instead of the gRPC links (the
    /// Redis engine's pub/sub); the gRPC fan-out service is still mounted but idle.
    pub transport: Option<ExternalTransport>,
    /// Send client events (connected, invocations, disconnected) to the app's upstream.
    pub upstream: Option<upstream::UpstreamConfig>,
    /// Browser origins that get CORS headers.
    pub cors: cors::CorsOrigins,
    /// Stateful reconnect: how long a connection whose WebSocket dropped waits for its client
    /// (zero: stateful reconnect is not offered).
    pub stateful_reconnect_window: Duration,
    /// Stateful reconnect: bytes of unacknowledged messages kept per connection (ASP.NET Core's
    /// default, 100,000); beyond, sending waits for the client's acks.
    pub stateful_reconnect_buffer: usize,
    /// Serve the admin page and its API at `/admin/` (`--admin`).
    pub admin: bool,
}

impl GatewayConfig {
    pub fn new(node_id: NodeId, advertise: String) -> Self {
        GatewayConfig {
            node_id,
            incarnation: now_ms(),
            advertise,
            handshake_timeout: Duration::from_secs(15),
            keep_alive_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            max_message_size: 1024 * 1024,
            ws_read_buffer: 256,
            ws_write_buffer: 4096,
            queue_limits: QueueLimits::default(),
            connection_token_lifetime: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            lease: Duration::from_secs(10),
            store_timeout: Duration::from_secs(6),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 10_000,
            cluster: None,
            transport: None,
            upstream: None,
            cors: cors::CorsOrigins::Any,
            stateful_reconnect_window: Duration::from_secs(15),
            stateful_reconnect_buffer: 100_000,
            admin: false,
        }
    }
}

/// State shared by every request and connection of one gateway.
pub struct Shared {
    pub config: GatewayConfig,
    pub keys: KeySet,
    pub store: Arc<dyn MembershipStore>,
    pub registry: Arc<Registry>,
    /// This gateway's connections: their users and groups (soft state; see `local`).
    pub local: Arc<local::LocalPresence>,
    /// Which hubs the other gateways serve, and which this one announced (see `interest`).
    pub(crate) interest: interest::Interest,
    /// Connection tokens this gateway issued that opened a connection (see `scatter::claim`).
    pub(crate) claims: scatter::Claims,
    pub delivery: LocalDelivery,
    pub metrics: Arc<GatewayMetrics>,
    pub prometheus: Option<PrometheusHandle>,
    /// Links to the other gateways, in a cluster.
    pub fanout: Option<Fanout>,
    /// Where envelopes for other gateways go: `fanout`, or the configured transport.
    pub transport: Option<Arc<dyn switchboard_cluster::PeerTransport>>,
    /// The serverless upstream, when one is configured.
    pub upstream: Option<Arc<upstream::Upstream>>,
    pub(crate) tracker: TaskTracker,
    /// The admin page's live trace of this gateway (records nothing without `--admin`).
    pub trace: Arc<admin::trace::Trace>,
    /// One permit per client connection this gateway may still take (`max_connections`).
    pub(crate) connection_slots: Arc<tokio::sync::Semaphore>,
    /// Open Server-Sent Events and Long Polling connections, by the `id` their client presents.
    pub(crate) pipes: Arc<client::http::Pipes>,
    /// Connections a reconnecting client can resume (stateful reconnect), by token.
    pub(crate) resumable: client::resume::Resumable,
    /// Which gateway answered relayed requests for a token last.
    pub(crate) relay_holders: client::relay::HolderCache,
    /// The node holds a live lease in the store.
    registered: AtomicBool,
    /// Shutdown has begun: not ready, no new connections.
    draining: AtomicBool,
}

impl Shared {
    /// Whether new client connections are accepted now: not draining, and registered with the
    /// store (without a lease a connection could not be registered anyway).
    pub fn is_accepting(&self) -> bool {
        !self.is_draining() && self.registered.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Ready for traffic (registered with the store, a store leader known, not draining), or
    /// why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.is_draining() {
            Err("draining")
        } else if self.store.disk_failing() {
            Err("not ready: this node's store cannot use its data directory; see the log")
        } else if !self.store.voting() {
            // A serve node whose voter lost its data and catches up: counted as down by a
            // disruption budget, so no other voter is taken meanwhile.
            Err("not ready: this node's voter is catching up after losing its data")
        } else if !self.registered.load(Ordering::Acquire) || !self.store.status().leader_known() {
            Err("not ready: no store leader or no lease yet")
        } else {
            Ok(())
        }
    }

    pub(crate) fn set_registered(&self, registered: bool) {
        self.registered.store(registered, Ordering::Release);
    }

    /// Writes one command through the store, bounded by the store timeout (a timeout is
    /// `ErrorCode::Timeout`: the change may or may not have been applied).
    pub async fn write(
        &self,
        command: Command,
    ) -> Result<switchboard_membership::Outcome, switchboard_core::Error> {
        self.bounded(self.store.write(command)).await
    }

    /// A store call under the store timeout (a timeout is `ErrorCode::Timeout`).
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, switchboard_store::StoreError>>,
    ) -> Result<T, switchboard_core::Error> {
        match tokio::time::timeout(self.config.store_timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(switchboard_core::Error::new(
                switchboard_core::ErrorCode::Timeout,
                "The membership store did not answer in time; the change may or may not have been applied.",
            )),
        }
    }

    /// [`Shared::write`], with the index of the log entry that carried the command.
    pub async fn write_indexed(
        &self,
        command: Command,
    ) -> Result<(switchboard_membership::Outcome, u64), switchboard_core::Error> {
        self.bounded(self.store.write_indexed(command)).await
    }

    /// Brings this gateway's membership view up to every write acknowledged anywhere before
    /// now, so routing and existence checks see a join made through another node a moment ago.
    /// Best effort: without a reachable store leader the current view is used as it is.
    pub async fn sync_view(&self) {
        if !self.store.status().leader_known() {
            return;
        }
        match tokio::time::timeout(SYNC_TIMEOUT, self.store.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "view sync failed; using the current view"),
            Err(_) => tracing::debug!("view sync timed out; using the current view"),
        }
    }

    /// Routes an envelope to its recipients: queued for every local one, and sent to every other
    /// gateway that may hold one (every gateway the store lists that serves the hub, but none
    /// for a connection held here). The message has been accepted when this returns.
    pub fn dispatch(&self, envelope: Envelope) {
        let received = Instant::now();
        self.trace.emit(|| dispatch::describe(&envelope));
        if let Some(fanout) = &self.transport {
            let peers = peers::route(self, &envelope);
            if !peers.is_empty() {
                let wire = peers::to_wire(&envelope);
                for peer in &peers {
                    fanout.send(peer, wire.clone());
                }
            }
        }
        self.delivery.deliver(&envelope, received);
    }

    /// Closes every local connection with `reason`.
    pub fn close_all(&self, reason: CloseReason, error: &str) {
        self.registry.for_each(|h| {
            h.close(CloseRequest {
                reason,
                error: Some(error.to_string()),
                allow_reconnect: true,
            });
        });
    }
}

/// The gateway's services on the cluster listener.
pub struct ClusterServices {
    pub fanout: FanoutServer<FanoutService>,
    pub relay: switchboard_cluster::proto::relay_server::RelayServer<client::relay::RelayService>,
    pub presence:
        switchboard_cluster::proto::presence_server::PresenceServer<scatter::PresenceService>,
}

/// A gateway ready to serve; see the crate docs.
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    pub fn new(
        config: GatewayConfig,
        keys: KeySet,
        store: Arc<dyn MembershipStore>,
        prometheus: Option<PrometheusHandle>,
    ) -> Result<Self, switchboard_upstream::ClientError> {
        let tracker = TaskTracker::new();
        let upstream = match &config.upstream {
            Some(settings) => Some(Arc::new(upstream::Upstream::new(
                settings.clone(),
                keys.keys().to_vec(),
                tracker.clone(),
            )?)),
            None => None,
        };
        let metrics = Arc::new(GatewayMetrics::new());
        let registry = Arc::new(Registry::new());
        let local = Arc::new(local::LocalPresence::new(config.node_id));
        let delivery = LocalDelivery {
            node: config.node_id,
            registry: registry.clone(),
            local: local.clone(),
            metrics: metrics.clone(),
            limits: config.queue_limits,
        };
        let (config_admin, config_node) = (config.admin, config.node_id);
        let shared = Arc::new_cyclic(|me: &std::sync::Weak<Shared>| {
            let fanout = config.cluster.clone().map(|channels| {
                let inbound = Arc::new(peers::PeerInbound::new(me.clone()));
                Fanout::new(
                    FanoutConfig::new(config.node_id, config.incarnation),
                    inbound,
                    channels,
                )
            });
            let transport: Option<Arc<dyn switchboard_cluster::PeerTransport>> =
                match &config.transport {
                    Some(ExternalTransport(transport)) => {
                        transport.bind(Arc::new(peers::PeerInbound::new(me.clone())));
                        Some(transport.clone())
                    }
                    None => fanout
                        .clone()
                        .map(|f| Arc::new(f) as Arc<dyn switchboard_cluster::PeerTransport>),
                };
            let connection_slots = Arc::new(tokio::sync::Semaphore::new(
                config
                    .max_connections
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            ));
            Shared {
                config,
                keys,
                store,
                registry,
                local,
                claims: scatter::Claims::default(),
                interest: interest::Interest::default(),
                delivery,
                metrics,
                prometheus,
                fanout,
                transport,
                upstream,
                tracker,
                connection_slots,
                pipes: Arc::default(),
                resumable: Default::default(),
                relay_holders: Default::default(),
                registered: AtomicBool::new(false),
                trace: Arc::new(admin::trace::Trace::new(config_admin, config_node)),
                draining: AtomicBool::new(false),
            }
        });
        Ok(Gateway { shared })
    }

    /// The gRPC services other gateways call (mount them on the cluster listener), in a
    /// cluster: the fan-out links, the relay of SSE and Long Polling requests (and stateful
    /// reconnects' WebSockets), and presence.
    pub fn cluster_services(&self) -> Option<ClusterServices> {
        let channels = self.shared.config.cluster.as_ref()?;
        let fanout = self.shared.fanout.as_ref()?;
        let max = channels.max_message_bytes();
        Some(ClusterServices {
            fanout: fanout.service(),
            relay: client::relay::RelayService::server(self.shared.clone(), max),
            presence: scatter::PresenceService::server(self.shared.clone(), max),
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Every HTTP route of the gateway.
    pub fn router(&self) -> Router {
        let shared = self.shared.clone();
        let ready: observability::ReadyCheck = Arc::new(move || shared.readiness());
        let mut router = Router::new()
            .without_v07_checks()
            .merge(observability::router(ready, self.shared.prometheus.clone()))
            .merge(rest::routes())
            .merge(client::routes());
        if self.shared.config.admin {
            router = router.merge(admin::routes());
        }
        let trace = self.shared.config.admin.then(|| self.shared.trace.clone());
        router
            .fallback(rest::not_found)
            .method_not_allowed_fallback(rest::method_not_allowed)
            .layer(rest::TrackHttpLayer { trace })
            .layer(self.shared.config.cors.layer())
            .with_state(self.shared.clone())
    }

    /// Serves on `listener` until `shutdown` is cancelled, then drains in order: not ready, stop
    /// accepting, Close every client (`allowReconnect: true`), wait for them (bounded by
    /// `shutdown_grace`), leave the store.
    pub async fn run(
        self,
        listener: TcpListener,
        edge: switchboard_edge::EdgeConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let shared = self.shared.clone();
        let background = CancellationToken::new();
        let presence = tokio::spawn(presence::run(shared.clone(), background.clone()));

        let stop_accepting = CancellationToken::new();
        let mut edge = edge;
        edge.detach_paths = client::LONG_LIVED_PATHS
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        let server = tokio::spawn(switchboard_edge::serve(
            listener,
            self.router(),
            edge,
            stop_accepting.clone(),
            Duration::from_secs(5),
        ));

        shutdown.cancelled().await;
        tracing::info!(
            connections = shared.registry.len(),
            "shutting down: draining connections"
        );
        shared.draining.store(true, Ordering::Release);
        shared.trace.close();
        stop_accepting.cancel();
        shared.close_all(CloseReason::Shutdown, client::SHUTDOWN_MESSAGE);
        shared.tracker.close();
        if tokio::time::timeout(shared.config.shutdown_grace, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = shared.registry.len(),
                "shutdown grace elapsed with connections still open"
            );
        }
        background.cancel();
        let _ = presence.await;
        if let Some(transport) = &shared.transport {
            transport.shutdown().await;
        }
        let leave = Command::NodeLeft {
            node: shared.config.node_id,
            incarnation: shared.config.incarnation,
        };
        if let Err(error) = shared.write(leave).await {
            tracing::info!(%error, "could not leave the store cleanly; the lease will expire");
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        Ok(())
    }
}
