//! The peer table, sending, the `Fanout` gRPC service and the link loops.
//!
//! A [`Peer`] exists for every other gateway this node knows (from the membership view through
//! [`Fanout::set_peers`], from a message addressed to it, or from an incoming link). It owns one
//! bounded outbound queue. At most one link drains that queue at a time: the link holds the
//! queue's receiver for its lifetime and gives it back when it ends, so queued frames survive a
//! reconnect (frames already taken by a dying link are lost: delivery is at most once).
//!
//! Who dials: the node with the lower id dials the higher (one stream per pair, both directions
//! on it). A newer link from the same peer replaces an older one. A peer whose known incarnation
//! is newer than the one a link announces is refused (a stale process).
//!
//! Links run over the process's authenticated [`Channels`]: a link is accepted only from the
//! node its cluster credentials prove (the Hello must name that node and incarnation, so no one
//! can take over another gateway's traffic), and a dialed link only if the answering node is the
//! peer that was dialed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use parking_lot::{Mutex, RwLock};
use switchboard_core::NodeId;
use switchboard_net::{peer_identity, refuse_identity, reply_identity, Channels, ClusterChannel};
use switchboard_proto::v1::fanout_client::FanoutClient;
use switchboard_proto::v1::fanout_server::{Fanout as FanoutRpc, FanoutServer};
use switchboard_proto::v1::{peer_frame, Envelope, Hello, PeerFrame};
use tokio::sync::{mpsc, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::{self, PeerMetrics};

static REFUSED_LOG: switchboard_core::Throttle = switchboard_core::Throttle::new(10_000);

/// Settings of the fan-out.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub node_id: NodeId,
    pub incarnation: u64,
    /// Envelopes queued per peer before new ones are dropped.
    pub queue_capacity: usize,
    /// Encoded bytes queued per peer before new envelopes are dropped.
    pub queue_bytes: usize,
    /// Longest wait between two dial attempts.
    pub max_backoff: Duration,
    /// How long a peer no longer listed by the membership view is kept (its messages may still
    /// be in flight, or the view may lag behind the peer's registration).
    pub forget_after: Duration,
}

impl FanoutConfig {
    pub fn new(node_id: NodeId, incarnation: u64) -> Self {
        FanoutConfig {
            node_id,
            incarnation,
            queue_capacity: 65_536,
            queue_bytes: 64 * 1024 * 1024,
            max_backoff: Duration::from_secs(2),
            forget_after: Duration::from_secs(30),
        }
    }
}

/// A gateway as the membership view lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub node: NodeId,
    pub incarnation: u64,
    /// The gateway's cluster address, `host:port`.
    pub address: String,
}

/// What the gateway does with envelopes from other nodes.
#[async_trait]
pub trait Inbound: Send + Sync + 'static {
    /// Handles one envelope from `from`. Called once at a time per peer, in the order the peer
    /// sent them; it may wait briefly (e.g. for the local view to catch up).
    async fn deliver(&self, from: NodeId, envelope: Envelope);
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// How envelopes reach other gateways: the gRPC links of [`Fanout`], or another transport (the
/// Redis engine's pub/sub). The gateway only queues envelopes for peers and keeps the peer table
/// in step with its view; ordering per sender and bounded queues are the transport's duty.
#[async_trait]
pub trait PeerTransport: Send + Sync + 'static {
    /// Queues `envelope` for `to` without waiting; false if it was dropped (queue full).
    fn send(&self, to: &PeerInfo, envelope: Envelope) -> bool;
    /// The gateways the membership view lists now (this node among them, to be skipped).
    fn set_peers(&self, listed: &[PeerInfo]);
    /// Whether envelopes can reach `node` now.
    fn is_connected(&self, node: NodeId) -> bool;
    /// Where envelopes from other gateways go; called once, before any arrives (a transport
    /// that starts receiving earlier holds them until then).
    fn bind(&self, inbound: Arc<dyn Inbound>);
    /// Stops sending and receiving.
    async fn shutdown(&self);
}

#[async_trait]
impl PeerTransport for Fanout {
    fn send(&self, to: &PeerInfo, envelope: Envelope) -> bool {
        Fanout::send(self, to, envelope)
    }

    fn set_peers(&self, listed: &[PeerInfo]) {
        Fanout::set_peers(self, listed);
    }

    fn is_connected(&self, node: NodeId) -> bool {
        Fanout::is_connected(self, node)
    }

    fn bind(&self, _inbound: Arc<dyn Inbound>) {
        // Bound at construction.
    }

    async fn shutdown(&self) {
        Fanout::shutdown(self).await;
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

struct Inner {
    config: FanoutConfig,
    inbound: Arc<dyn Inbound>,
    channels: Channels,
    peers: RwLock<HashMap<NodeId, Arc<Peer>>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// A queued frame and its encoded size (for the byte bound).
type Queued = (PeerFrame, usize);

struct Peer {
    node: NodeId,
    info: Mutex<PeerState>,
    tx: mpsc::Sender<Queued>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
    /// Encoded bytes in the queue.
    queued_bytes: Arc<AtomicUsize>,
    /// Envelopes dropped so far (to log the first and then every thousandth).
    drops: AtomicU64,
    /// Held by the link currently reading from this peer, so a replaced link finishes its
    /// delivery before the new one starts (one reader at a time keeps the order).
    reading: Arc<tokio::sync::Mutex<()>>,
    /// Ends the dial loop and every link of this peer.
    cancel: CancellationToken,
    /// Ends the current link (replaced by a newer one).
    link: Mutex<Option<CancellationToken>>,
    connected: AtomicBool,
    metrics: PeerMetrics,
}

struct PeerState {
    incarnation: u64,
    address: String,
    /// When the membership view last listed this peer (or when it was created).
    listed_at: Instant,
    dialing: bool,
}

impl Peer {
    fn new(
        node: NodeId,
        incarnation: u64,
        address: String,
        capacity: usize,
        parent: &CancellationToken,
    ) -> Peer {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Peer {
            node,
            info: Mutex::new(PeerState {
                incarnation,
                address,
                listed_at: Instant::now(),
                dialing: false,
            }),
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            drops: AtomicU64::new(0),
            reading: Arc::new(tokio::sync::Mutex::new(())),
            cancel: parent.child_token(),
            link: Mutex::new(None),
            connected: AtomicBool::new(false),
            metrics: PeerMetrics::new(),
        }
    }

    /// Ends the current link, if any, and returns the token of the new one.
    fn replace_link(&self) -> CancellationToken {
        let token = self.cancel.child_token();
        if let Some(old) = self.link.lock().replace(token.clone()) {
            old.cancel();
        }
        token
    }

    /// Takes the outbound queue for a link (waits for the previous link to give it back).
    async fn take_queue(&self) -> Result<OwnedMutexGuard<mpsc::Receiver<Queued>>, Status> {
        tokio::time::timeout(Duration::from_secs(5), self.rx.clone().lock_owned())
            .await
            .map_err(|_| Status::unavailable("the previous link to this peer did not end"))
    }
}

fn hello_frame(config: &FanoutConfig, target: NodeId) -> PeerFrame {
    PeerFrame {
        frame: Some(peer_frame::Frame::Hello(Hello {
            node_id: config.node_id,
            incarnation: config.incarnation,
            target_node_id: target,
        })),
    }
}

/// The frames a link sends: its Hello, then the peer's queue until the link is cancelled. With
/// a `gate`, queued frames wait until it opens (the link's other end proved who it is); a gate
/// dropped unopened ends the stream after the Hello, with the queue untouched.
fn outbound(
    first: PeerFrame,
    queue: OwnedMutexGuard<mpsc::Receiver<Queued>>,
    queued_bytes: Arc<AtomicUsize>,
    until: CancellationToken,
    gate: Option<tokio::sync::oneshot::Receiver<()>>,
) -> impl Stream<Item = PeerFrame> + Send + 'static {
    let queued = futures::stream::unfold((queue, gate), move |(mut queue, gate)| {
        let queued_bytes = queued_bytes.clone();
        async move {
            if let Some(gate) = gate {
                gate.await.ok()?;
            }
            let (frame, bytes) = queue.recv().await?;
            queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            Some((frame, (queue, None)))
        }
    });
    futures::stream::once(async move { first })
        .chain(queued)
        .take_until(until.cancelled_owned())
}

impl Fanout {
    /// The fan-out of this node, dialing peers through `channels` (whose credentials must be
    /// this node's: `config.node_id` and `config.incarnation`).
    pub fn new(config: FanoutConfig, inbound: Arc<dyn Inbound>, channels: Channels) -> Fanout {
        metrics::describe();
        Fanout {
            inner: Arc::new(Inner {
                config,
                inbound,
                channels,
                peers: RwLock::new(HashMap::new()),
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The gRPC service to mount on this node's cluster listener (behind its authentication
    /// layer).
    pub fn service(&self) -> FanoutServer<FanoutService> {
        let max = self.inner.channels.max_message_bytes();
        FanoutServer::new(FanoutService {
            inner: self.inner.clone(),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max)
    }

    /// Queues `envelope` for `to` without waiting; false if it was dropped (queue full).
    pub fn send(&self, to: &PeerInfo, mut envelope: Envelope) -> bool {
        if envelope.sent_at_micros == 0 {
            envelope.sent_at_micros = now_micros();
        }
        let peer = self.inner.peer(to);
        let frame = PeerFrame {
            frame: Some(peer_frame::Frame::Envelope(envelope)),
        };
        let bytes = prost::Message::encoded_len(&frame);
        let within_bytes = peer.queued_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes
            <= self.inner.config.queue_bytes;
        if within_bytes && peer.tx.try_send((frame, bytes)).is_ok() {
            peer.metrics.forwarded.increment(1);
            return true;
        }
        peer.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        peer.metrics.dropped.increment(1);
        let drops = peer.drops.fetch_add(1, Ordering::Relaxed) + 1;
        if drops == 1 || drops % 1000 == 0 {
            tracing::warn!(
                peer = to.node,
                drops,
                "fan-out queue to a peer gateway is full: messages dropped"
            );
        }
        false
    }

    /// Reconciles the peer table with the gateways the membership view lists (this node is
    /// skipped). Peers no longer listed are forgotten after `forget_after`.
    pub fn set_peers(&self, listed: &[PeerInfo]) {
        let inner = &self.inner;
        for info in listed.iter().filter(|p| p.node != inner.config.node_id) {
            let peer = inner.peer(info);
            peer.info.lock().listed_at = Instant::now();
        }
        let forget_after = inner.config.forget_after;
        let mut gone = Vec::new();
        inner.peers.write().retain(|node, peer| {
            let keep = listed.iter().any(|p| p.node == *node)
                || peer.info.lock().listed_at.elapsed() < forget_after;
            if !keep {
                gone.push(peer.clone());
            }
            keep
        });
        for peer in gone {
            tracing::info!(peer = peer.node, "forgetting a gateway that left");
            peer.cancel.cancel();
        }
        self.publish_states();
    }

    /// Whether the link to `node` is up.
    pub fn is_connected(&self, node: NodeId) -> bool {
        self.inner
            .peers
            .read()
            .get(&node)
            .is_some_and(|p| p.connected.load(Ordering::Acquire))
    }

    fn publish_states(&self) {
        let peers = self.inner.peers.read();
        let connected = peers
            .values()
            .filter(|p| p.connected.load(Ordering::Acquire))
            .count();
        metrics::peer_states(connected, peers.len() - connected);
    }

    /// Ends every link and dial loop.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.tasks.wait()).await;
    }
}

impl Inner {
    /// The peer for `info`, created (and dialed, if this node dials it) when new; a newer
    /// incarnation or address resets it.
    fn peer(self: &Arc<Self>, info: &PeerInfo) -> Arc<Peer> {
        if let Some(peer) = self.peers.read().get(&info.node) {
            let mut state = peer.info.lock();
            if state.incarnation >= info.incarnation
                && (info.address.is_empty() || state.address == info.address)
            {
                return peer.clone();
            }
            if info.incarnation > state.incarnation {
                // A new process: whatever link we have belongs to the old one.
                if let Some(link) = peer.link.lock().take() {
                    link.cancel();
                }
            }
            state.incarnation = state.incarnation.max(info.incarnation);
            if !info.address.is_empty() {
                state.address = info.address.clone();
            }
            return peer.clone();
        }
        let mut peers = self.peers.write();
        let peer = peers
            .entry(info.node)
            .or_insert_with(|| {
                Arc::new(Peer::new(
                    info.node,
                    info.incarnation,
                    info.address.clone(),
                    self.config.queue_capacity,
                    &self.cancel,
                ))
            })
            .clone();
        drop(peers);
        self.ensure_dialing(&peer);
        peer
    }

    fn ensure_dialing(self: &Arc<Self>, peer: &Arc<Peer>) {
        if self.config.node_id >= peer.node {
            return; // the peer dials us
        }
        {
            let mut state = peer.info.lock();
            if state.dialing || state.address.is_empty() {
                return;
            }
            state.dialing = true;
        }
        let (inner, peer) = (self.clone(), peer.clone());
        self.tasks.spawn(async move { inner.dial_loop(peer).await });
    }

    async fn dial_loop(self: Arc<Self>, peer: Arc<Peer>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if peer.cancel.is_cancelled() {
                return;
            }
            let address = peer.info.lock().address.clone();
            let started = Instant::now();
            match self.channels.get(&address) {
                Ok(c) => {
                    if let Err(status) = self.run_dialed_link(&peer, c).await {
                        peer.metrics.link_failures.increment(1);
                        if matches!(
                            status.code(),
                            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                        ) {
                            if let Some(suppressed) =
                                REFUSED_LOG.allow(switchboard_core::throttle::now_ms())
                            {
                                tracing::error!(peer = peer.node, %address, error = %status.message(), suppressed, "a fan-out link was refused: every node needs the same --cluster-key (or --access-key)");
                            }
                        } else {
                            tracing::debug!(peer = peer.node, %address, error = %status.message(), "fan-out link ended");
                        }
                    }
                }
                Err(error) => {
                    peer.metrics.link_failures.increment(1);
                    tracing::debug!(peer = peer.node, %address, %error, "cannot reach peer gateway");
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(50);
            }
            tokio::select! {
                _ = peer.cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// One link, dialed by this node: runs until it breaks or is replaced.
    async fn run_dialed_link(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        channel: ClusterChannel,
    ) -> Result<(), Status> {
        let token = peer.replace_link();
        let queue = peer.take_queue().await?;
        // Nothing queued leaves before the other end has proved it is the peer.
        let (open, gate) = tokio::sync::oneshot::channel();
        let frames = outbound(
            hello_frame(&self.config, peer.node),
            queue,
            peer.queued_bytes.clone(),
            token.clone(),
            Some(gate),
        );
        let max = self.channels.max_message_bytes();
        let mut client = FanoutClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let response = client.link(Request::new(frames)).await?;
        if reply_identity(&response).map(|id| id.node) != Some(peer.node) {
            token.cancel();
            return Err(Status::permission_denied(format!(
                "the node at this address is not node {}",
                peer.node
            )));
        }
        let mut inbound = response.into_inner();
        match inbound.message().await? {
            Some(PeerFrame {
                frame: Some(peer_frame::Frame::Hello(h)),
            }) if h.node_id == peer.node => {}
            other => {
                token.cancel();
                return Err(Status::failed_precondition(format!(
                    "unexpected first frame from peer: {other:?}"
                )));
            }
        }
        let _ = open.send(());
        self.receive(peer, inbound, token).await
    }

    /// Reads a link's incoming frames until it ends; marks the peer connected meanwhile.
    async fn receive(
        &self,
        peer: &Arc<Peer>,
        mut inbound: Streaming<PeerFrame>,
        token: CancellationToken,
    ) -> Result<(), Status> {
        // A link that replaced another waits until the old one's delivery has finished.
        let _reading = peer.reading.clone().lock_owned().await;
        if token.is_cancelled() {
            return Ok(());
        }
        peer.connected.store(true, Ordering::Release);
        tracing::info!(peer = peer.node, "fan-out link up");
        let latency = metrics::delivery_latency();
        let result = loop {
            let frame = tokio::select! {
                _ = token.cancelled() => break Ok(()),
                frame = inbound.message() => frame,
            };
            match frame {
                Ok(Some(PeerFrame {
                    frame: Some(peer_frame::Frame::Envelope(envelope)),
                })) => {
                    peer.metrics.received.increment(1);
                    let sent_at = envelope.sent_at_micros;
                    self.inbound.deliver(peer.node, envelope).await;
                    if sent_at > 0 {
                        latency.record(now_micros().saturating_sub(sent_at) as f64 / 1e6);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(status) => break Err(status),
            }
        };
        token.cancel();
        peer.connected.store(false, Ordering::Release);
        tracing::info!(peer = peer.node, "fan-out link down");
        result
    }
}

/// The `Fanout` gRPC service (the accepting side of links).
pub struct FanoutService {
    inner: Arc<Inner>,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<PeerFrame, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FanoutRpc for FanoutService {
    type LinkStream = FrameStream;

    async fn link(
        &self,
        request: Request<Streaming<PeerFrame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let inner = &self.inner;
        let caller = peer_identity(&request)?;
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(PeerFrame {
                frame: Some(peer_frame::Frame::Hello(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("a link starts with a Hello frame")),
        };
        if (hello.node_id, hello.incarnation) != (caller.node, caller.incarnation) {
            return Err(refuse_identity(
                "fanout",
                caller,
                &format!(
                    "link as node {} (incarnation {})",
                    hello.node_id, hello.incarnation
                ),
            ));
        }
        if hello.node_id == inner.config.node_id {
            return Err(Status::invalid_argument(
                "a node cannot link to itself (duplicate --node-id?)",
            ));
        }
        if hello.target_node_id != 0 && hello.target_node_id != inner.config.node_id {
            // An address that changed hands: refuse before touching our link to the caller.
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {}",
                inner.config.node_id, hello.target_node_id
            )));
        }
        let known = inner
            .peers
            .read()
            .get(&hello.node_id)
            .map(|p| p.info.lock().incarnation);
        if known.is_some_and(|k| k > hello.incarnation) {
            return Err(Status::failed_precondition(
                "stale incarnation: that node has restarted since",
            ));
        }
        let peer = inner.peer(&PeerInfo {
            node: hello.node_id,
            incarnation: hello.incarnation,
            address: String::new(),
        });
        let token = peer.replace_link();
        let queue = peer.take_queue().await?;
        let reader = {
            let (inner, peer, token) = (inner.clone(), peer.clone(), token.clone());
            async move {
                if let Err(status) = inner.receive(&peer, inbound, token).await {
                    peer.metrics.link_failures.increment(1);
                    tracing::debug!(peer = peer.node, error = %status.message(), "fan-out link ended");
                }
            }
        };
        inner.tasks.spawn(reader);
        let frames = outbound(
            hello_frame(&inner.config, hello.node_id),
            queue,
            peer.queued_bytes.clone(),
            token,
            None,
        )
        .map(Ok);
        Ok(Response::new(Box::pin(frames)))
    }
}
