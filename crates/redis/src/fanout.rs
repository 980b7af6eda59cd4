//! [`RedisFanout`]: envelopes between gateways over Redis pub/sub (the Redis engine's fan-out).
//!
//! Each gateway subscribes to its own channel, `{prefix}:fanout:{NODE}` (the node id is the hash
//! tag, so on Redis Cluster the channels spread over the slots and sharded pub/sub —
//! `SPUBLISH`/`SSUBSCRIBE` — carries each one on the shard that owns it). The gateway's routing is
//! unchanged: an envelope is queued only for the gateways that serve its hub; here each queue is
//! drained by one task that publishes to that gateway's channel.
//!
//! - **Bounded**: each peer's queue holds at most `queue_capacity` envelopes and `queue_bytes`
//!   encoded bytes; past that, new envelopes are dropped and counted (never blocking the caller).
//! - **Order**: one task per peer publishes one frame at a time and waits for Redis to take it, so
//!   frames from one gateway reach another in the order they were queued; the receiver handles
//!   them one at a time. A frame carries every envelope queued meanwhile (up to
//!   [`MAX_FRAME_BYTES`]), so a busy peer costs one `PUBLISH` per round trip, not per message.
//! - **Incarnations**: a frame names its sender and the sender's incarnation; frames from an
//!   older incarnation than one already heard from are dropped (a restarted gateway's old
//!   process cannot inject stale messages).
//! - **Losing Redis**: publishes fail; the peer task retries the same frame with backoff (so order
//!   holds) while its queue fills and then drops. Pub/sub is at most once: what Redis did not
//!   deliver while a subscriber was reconnecting is lost, as with a broken gRPC link.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::Value;
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use switchboard_cluster::proto::Envelope;
use switchboard_cluster::{Inbound, PeerInfo, PeerTransport};
use switchboard_core::throttle::{now_ms, Throttle};
use switchboard_core::NodeId;
use switchboard_store::StoreError;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;
use crate::store::{connect_clients, redact};

/// Largest frame one `PUBLISH` carries (envelopes are added while it stays below).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Frames received and not yet handled, at most (in number, and in bytes).
const RECEIVE_FRAMES: usize = 4096;
const RECEIVE_BYTES: usize = 64 * 1024 * 1024;
/// A frame's header: sender node id and incarnation.
const HEADER: usize = 16;

static PUBLISH_FAILED_LOG: Throttle = Throttle::new(10_000);
static DROPPED_LOG: Throttle = Throttle::new(10_000);

/// Settings of a [`RedisFanout`].
#[derive(Debug, Clone)]
pub struct FanoutSettings {
    pub url: String,
    pub prefix: String,
    pub node_id: NodeId,
    pub incarnation: u64,
    /// Envelopes queued per peer before new ones are dropped.
    pub queue_capacity: usize,
    /// Encoded bytes queued per peer before new envelopes are dropped.
    pub queue_bytes: usize,
    /// How long a peer no longer listed is kept.
    pub forget_after: Duration,
}

impl FanoutSettings {
    pub fn new(url: impl Into<String>, node_id: NodeId, incarnation: u64) -> FanoutSettings {
        FanoutSettings {
            url: url.into(),
            prefix: "switchboard".to_owned(),
            node_id,
            incarnation,
            queue_capacity: 65_536,
            queue_bytes: 64 * 1024 * 1024,
            forget_after: Duration::from_secs(30),
        }
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The channel gateway `node` listens on.
fn channel(prefix: &str, node: NodeId) -> String {
    format!("{prefix}:fanout:{{{node}}}")
}

/// Encodes a frame: the header, then each envelope as a 4-byte length and its bytes.
fn encode_frame(node: NodeId, incarnation: u64, envelopes: &[Vec<u8>]) -> Vec<u8> {
    let size = HEADER + envelopes.iter().map(|e| 4 + e.len()).sum::<usize>();
    let mut frame = Vec::with_capacity(size);
    frame.extend_from_slice(&node.to_be_bytes());
    frame.extend_from_slice(&incarnation.to_be_bytes());
    for envelope in envelopes {
        frame.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
        frame.extend_from_slice(envelope);
    }
    frame
}

/// A decoded frame: sender, incarnation, encoded envelopes.
type Frame<'a> = (NodeId, u64, Vec<&'a [u8]>);

/// Splits a frame; `None` if it is malformed.
fn decode_frame(bytes: &[u8]) -> Option<Frame<'_>> {
    let node = u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
    let incarnation = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    let mut rest = bytes.get(HEADER..)?;
    let mut envelopes = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
        envelopes.push(rest.get(4..4 + len)?);
        rest = &rest[4 + len..];
    }
    Some((node, incarnation, envelopes))
}

struct Peer {
    tx: mpsc::Sender<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    listed_at: Mutex<Instant>,
    cancel: CancellationToken,
}

struct Inner {
    settings: FanoutSettings,
    publisher: Client,
    subscriber: SubscriberClient,
    sharded: bool,
    peers: RwLock<HashMap<NodeId, Arc<Peer>>>,
    inbound: OnceLock<Arc<dyn Inbound>>,
    bound: watch::Sender<bool>,
    /// The latest incarnation heard from each sender.
    incarnations: Mutex<HashMap<NodeId, u64>>,
    subscribed: AtomicBool,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// See the module docs.
#[derive(Clone)]
pub struct RedisFanout {
    inner: Arc<Inner>,
}

impl RedisFanout {
    /// Connects, subscribes to this gateway's channel and starts receiving (envelopes wait until
    /// [`PeerTransport::bind`]).
    pub async fn connect(settings: FanoutSettings) -> Result<RedisFanout, StoreError> {
        let (publisher, subscriber) = connect_clients(&settings.url)?;
        for (what, connect) in [
            (
                "publisher",
                Box::pin(publisher.init())
                    as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
            ),
            ("subscriber", Box::pin(subscriber.init())),
        ] {
            match tokio::time::timeout(Duration::from_secs(10), connect).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(StoreError::Unavailable(format!(
                        "redis fan-out {what}: connect to {}: {e}",
                        redact(&settings.url)
                    )))
                }
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "redis fan-out {what}: no connection to {} within 10 s",
                        redact(&settings.url)
                    )))
                }
            }
        }
        let sharded = publisher.is_clustered();
        let mine = channel(&settings.prefix, settings.node_id);
        // Listening before subscribing: a frame published right after the subscription is
        // already in this receiver's buffer.
        let messages = subscriber.message_rx();
        let subscribed = if sharded {
            subscriber.ssubscribe(mine.as_str()).await
        } else {
            subscriber.subscribe(mine.as_str()).await
        };
        subscribed
            .map_err(|e| StoreError::Unavailable(format!("redis fan-out: subscribe: {e}")))?;
        // SUBSCRIBE may be answered before Redis counts it: wait until it does, so that nothing
        // published to this gateway from now on is missed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let counts: Result<Vec<Value>, _> = if sharded {
                publisher.pubsub_shardnumsub(mine.as_str()).await
            } else {
                publisher.pubsub_numsub(mine.as_str()).await
            };
            let confirmed = counts
                .ok()
                .and_then(|v| v.get(1).and_then(Value::as_i64))
                .is_some_and(|n| n > 0);
            if confirmed {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable(
                    "redis fan-out: the subscription was not confirmed within 10 s".to_owned(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Subscriptions are restored after a reconnection.
        drop(subscriber.manage_subscriptions());
        let inner = Arc::new(Inner {
            settings,
            publisher,
            subscriber,
            sharded,
            peers: RwLock::new(HashMap::new()),
            inbound: OnceLock::new(),
            bound: watch::Sender::new(false),
            incarnations: Mutex::new(HashMap::new()),
            subscribed: AtomicBool::new(true),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        inner.tasks.spawn(inner.clone().receive(mine, messages));
        tracing::info!(sharded, "fan-out over redis pub/sub");
        Ok(RedisFanout { inner })
    }
}

impl Inner {
    /// Moves every frame on this gateway's channel out of the client's small broadcast buffer
    /// into a queue bounded in frames and bytes (what does not fit is dropped and counted), and
    /// hands the queued frames to the inbound handler one at a time.
    async fn receive(
        self: Arc<Self>,
        mine: String,
        mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(RECEIVE_FRAMES);
        let queued = Arc::new(AtomicUsize::new(0));
        let pump = {
            let (cancel, queued) = (self.cancel.clone(), queued.clone());
            async move {
                loop {
                    let message = tokio::select! {
                        _ = cancel.cancelled() => return,
                        message = messages.recv() => message,
                    };
                    let message = match message {
                        Ok(message) => message,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            metrics::fanout_dropped(missed);
                            tracing::warn!(
                                missed,
                                "redis fan-out: the subscriber fell behind; frames lost"
                            );
                            continue;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    if *message.channel != *mine {
                        continue;
                    }
                    let Some(bytes) = message.value.as_bytes() else {
                        continue;
                    };
                    let size = bytes.len();
                    if queued.fetch_add(size, Ordering::AcqRel) + size > RECEIVE_BYTES
                        || tx.try_send(bytes.to_vec()).is_err()
                    {
                        queued.fetch_sub(size, Ordering::AcqRel);
                        metrics::fanout_dropped(1);
                        if let Some(suppressed) = DROPPED_LOG.allow(now_ms()) {
                            tracing::warn!(
                                suppressed,
                                "redis fan-out: the receive queue is full; a frame was dropped"
                            );
                        }
                    }
                }
            }
        };
        self.tasks.spawn(pump);
        let mut bound = self.bound.subscribe();
        if bound.wait_for(|b| *b).await.is_err() {
            return;
        }
        let Some(inbound) = self.inbound.get().cloned() else {
            return;
        };
        loop {
            let frame = tokio::select! {
                _ = self.cancel.cancelled() => return,
                frame = rx.recv() => match frame { Some(frame) => frame, None => return },
            };
            queued.fetch_sub(frame.len(), Ordering::AcqRel);
            let Some((from, incarnation, envelopes)) = decode_frame(&frame) else {
                tracing::warn!("redis fan-out: a malformed frame was dropped");
                continue;
            };
            {
                let mut seen = self.incarnations.lock();
                let latest = seen.entry(from).or_insert(incarnation);
                if incarnation < *latest {
                    continue;
                }
                *latest = incarnation;
            }
            for bytes in envelopes {
                match Envelope::decode(bytes) {
                    Ok(envelope) => {
                        metrics::fanout_received(envelope.sent_at_micros);
                        inbound.deliver(from, envelope).await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "redis fan-out: an undecodable envelope was dropped")
                    }
                }
            }
        }
    }

    fn peer(self: &Arc<Self>, node: NodeId) -> Arc<Peer> {
        if let Some(peer) = self.peers.read().get(&node) {
            return peer.clone();
        }
        let mut peers = self.peers.write();
        peers
            .entry(node)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.settings.queue_capacity.max(1));
                let peer = Arc::new(Peer {
                    tx,
                    queued_bytes: Arc::new(AtomicUsize::new(0)),
                    listed_at: Mutex::new(Instant::now()),
                    cancel: self.cancel.child_token(),
                });
                self.tasks
                    .spawn(self.clone().publish(node, rx, peer.clone()));
                peer
            })
            .clone()
    }

    /// Publishes what is queued for `node`, a frame at a time, in order.
    async fn publish(
        self: Arc<Self>,
        node: NodeId,
        mut rx: mpsc::Receiver<Vec<u8>>,
        peer: Arc<Peer>,
    ) {
        let target = channel(&self.settings.prefix, node);
        let mut batch: Vec<Vec<u8>> = Vec::new();
        loop {
            let first = tokio::select! {
                _ = peer.cancel.cancelled() => return,
                first = rx.recv() => match first { Some(first) => first, None => return },
            };
            let mut size = HEADER + 4 + first.len();
            batch.push(first);
            while size < MAX_FRAME_BYTES {
                match rx.try_recv() {
                    Ok(next) => {
                        size += 4 + next.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            let taken: usize = batch.iter().map(Vec::len).sum();
            let frame = encode_frame(self.settings.node_id, self.settings.incarnation, &batch);
            let count = batch.len() as u64;
            batch.clear();
            let mut backoff = Duration::from_millis(20);
            loop {
                let payload = Value::Bytes(frame.clone().into());
                let publish = async {
                    if self.sharded {
                        self.publisher
                            .spublish::<i64, _, _>(target.as_str(), payload)
                            .await
                    } else {
                        self.publisher
                            .publish::<i64, _, _>(target.as_str(), payload)
                            .await
                    }
                };
                let published = tokio::select! {
                    _ = peer.cancel.cancelled() => return,
                    published = publish => published,
                };
                match published {
                    Ok(_) => {
                        metrics::fanout_published(count);
                        break;
                    }
                    Err(error) => {
                        metrics::fanout_publish_failed();
                        if let Some(suppressed) = PUBLISH_FAILED_LOG.allow(now_ms()) {
                            tracing::warn!(peer = node, %error, suppressed, "redis fan-out: publish failed; retrying");
                        }
                        tokio::select! {
                            _ = peer.cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
            peer.queued_bytes.fetch_sub(taken, Ordering::AcqRel);
        }
    }
}

#[async_trait]
impl PeerTransport for RedisFanout {
    fn send(&self, to: &PeerInfo, mut envelope: Envelope) -> bool {
        if to.node == self.inner.settings.node_id {
            return false;
        }
        if envelope.sent_at_micros == 0 {
            envelope.sent_at_micros = now_micros();
        }
        let bytes = envelope.encode_to_vec();
        let size = bytes.len();
        let peer = self.inner.peer(to.node);
        let within = peer.queued_bytes.fetch_add(size, Ordering::AcqRel) + size
            <= self.inner.settings.queue_bytes;
        if within && peer.tx.try_send(bytes).is_ok() {
            return true;
        }
        peer.queued_bytes.fetch_sub(size, Ordering::AcqRel);
        metrics::fanout_dropped(1);
        if let Some(suppressed) = DROPPED_LOG.allow(now_ms()) {
            tracing::warn!(
                peer = to.node,
                suppressed,
                "redis fan-out queue to a peer gateway is full: messages dropped"
            );
        }
        false
    }

    fn set_peers(&self, listed: &[PeerInfo]) {
        let inner = &self.inner;
        for info in listed.iter().filter(|p| p.node != inner.settings.node_id) {
            *inner.peer(info.node).listed_at.lock() = Instant::now();
        }
        let forget_after = inner.settings.forget_after;
        inner.peers.write().retain(|node, peer| {
            let keep = listed.iter().any(|p| p.node == *node)
                || peer.listed_at.lock().elapsed() < forget_after;
            if !keep {
                peer.cancel.cancel();
            }
            keep
        });
    }

    fn is_connected(&self, node: NodeId) -> bool {
        self.inner.peers.read().contains_key(&node)
            && self.inner.publisher.is_connected()
            && self.inner.subscribed.load(Ordering::Acquire)
    }

    fn bind(&self, inbound: Arc<dyn Inbound>) {
        if self.inner.inbound.set(inbound).is_ok() {
            self.inner.bound.send_replace(true);
        }
    }

    async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.tasks.wait()).await;
        // Without Redis, QUIT would wait for a reconnection.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.subscriber.quit()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.publisher.quit()).await;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn frames_round_trip(node: u64, incarnation: u64, envelopes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let frame = encode_frame(node, incarnation, &envelopes);
            let (n, i, got) = decode_frame(&frame).unwrap();
            prop_assert_eq!((n, i), (node, incarnation));
            prop_assert_eq!(got, envelopes.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_frame(&bytes);
        }
    }

    #[test]
    fn truncated_frames_are_refused() {
        let frame = encode_frame(1, 2, &[vec![1, 2, 3]]);
        for cut in [0, 8, 15, HEADER + 2, frame.len() - 1] {
            assert!(decode_frame(&frame[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn channels_spread_by_node() {
        assert_eq!(channel("sb", 7), "sb:fanout:{7}");
    }
}
