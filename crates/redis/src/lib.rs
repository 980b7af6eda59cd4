//! The Redis engine: a gateway's durable membership kept in Redis instead of Raft voters.
//!
//! Teams that already run Redis should not need store voters. With `--redis URL` every gateway
//! is stateless and Redis holds what the Raft store holds: the gateways' leases and the
//! user-group entries (TTL, the 100-group cap, the LRU order). Everything else is unchanged —
//! connection presence stays soft state on the gateway that holds the socket, and gateways still
//! ask each other and fan out over their cluster plane — because this crate implements the same
//! [`switchboard_store::MembershipStore`] the Raft store does.
//!
//! **Redis as the log.** Writes are appended to one Redis stream; every gateway reads the stream
//! and applies each entry, in stream order, with the same deterministic state machine
//! (`Membership::apply`) the Raft voters run. So the semantics are the Raft store's exactly, by
//! construction, not by a second implementation of them in Lua:
//! - order: the stream orders all writes from all gateways; there is no read-modify-write
//!   between gateways, so the cap and the LRU order cannot race;
//! - time: an entry's batch time is its id's milliseconds, the Redis server's clock (which Redis
//!   keeps from going backwards in a stream), as the Raft leader stamps its own;
//! - index: `ms << 20 | seq` of the entry id orders writes like a Raft log index ([`ids`]);
//! - read-your-writes: a write returns once this gateway applied its entry, with its outcome;
//! - expiry: any gateway appends a `Tick` when a lease or a TTL is due.
//!
//! **Gaps.** Each entry carries its predecessor's id, written atomically by the append script.
//! A replica that reads an entry whose predecessor is not the entry it applied last missed
//! something (the stream was trimmed behind it, or Redis lost data): it reloads the snapshot and
//! reads on from there, so replicas never diverge silently.
//!
//! **Snapshots.** When the stream holds `snapshot_every` entries, one gateway (under a lock)
//! stores its state with the id it covers and trims the stream before that id. A gateway
//! starting up loads the snapshot and reads the stream after it.
//!
//! **Keys** share the hash tag `{prefix}`, so on Redis Cluster they sit in one slot. The log is
//! one stream: its write rate is one Redis shard's, which is far above what membership changes
//! need (connects and disconnects write nothing).
//!
//! **Fan-out** ([`RedisFanout`]): messages for connections on other gateways go over Redis
//! pub/sub, one channel per gateway (sharded pub/sub on Redis Cluster), behind the same
//! `PeerTransport` the gRPC links implement: the gateway's routing by hub interest decides which
//! gateways get an envelope, the transport keeps per-sender order and bounded queues.

mod fanout;
pub mod ids;
mod metrics;
mod store;

pub use fanout::{FanoutSettings, RedisFanout, MAX_FRAME_BYTES};
pub use store::{redact, RedisConfig, RedisStore};
