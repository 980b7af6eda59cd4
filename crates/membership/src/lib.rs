//! The membership state machine: which connections exist, on which node, in which groups, and
//! which users belong to which groups until when.
//!
//! This is the state the Raft store replicates. It is deterministic: it does no I/O and never
//! reads a clock. Time arrives inside each [`Batch`] (stamped by the Raft leader), so every replica
//! and every replay computes the same expiries.
//!
//! (API skeleton: the implementation is being filled in.)

use std::sync::Arc;

use serde::{Deserialize, Serialize};
pub use switchboard_core::NodeId;

/// Hub, group, user and connection names. Cheap to clone; shared between indexes.
pub type Name = Arc<str>;

/// Seconds in the default user-group lifetime (no `ttl` given): one year.
pub const DEFAULT_USER_GROUP_TTL_SECS: u64 = 365 * 24 * 3600;
/// Groups without TTL kept per user; adding one more evicts the least recently updated.
pub const MAX_GROUPS_WITHOUT_TTL: usize = 100;

/// One change to the membership state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A gateway announces itself or renews its lease until `time + lease_ms`.
    NodeHeartbeat { node: NodeId, incarnation: u64, address: String, lease_ms: u64 },
    /// A gateway leaves cleanly: its connections end now.
    NodeLeft { node: NodeId, incarnation: u64 },
    /// A client connection completed its handshake on `node`.
    ConnectionOpened { hub: Name, connection: Name, user: Option<Name>, node: NodeId, incarnation: u64 },
    /// A client connection ended.
    ConnectionClosed { hub: Name, connection: Name },
    AddConnectionToGroup { hub: Name, group: Name, connection: Name },
    RemoveConnectionFromGroup { hub: Name, group: Name, connection: Name },
    RemoveConnectionFromAllGroups { hub: Name, connection: Name },
    /// `ttl_secs`: `None` = one year and counts toward the 100-group cap; `Some(0)` = only the
    /// user's current connections join, nothing is stored; `Some(n)` = expires `n` s from now.
    AddUserToGroup { hub: Name, user: Name, group: Name, ttl_secs: Option<u32> },
    RemoveUserFromGroup { hub: Name, user: Name, group: Name },
    RemoveUserFromAllGroups { hub: Name, user: Name },
    /// Advances time only (expiry without traffic).
    Tick,
}

/// The unit of replication: commands applied together at one leader-stamped time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Milliseconds since the Unix epoch, from the leader's clock.
    pub time_ms: u64,
    pub commands: Vec<Command>,
}

/// The result of one command, in the order of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok,
    /// The connection named by the command does not exist (in that hub).
    ConnectionNotFound,
    /// Heartbeat of a node (or incarnation) the state did not know: a fresh registration.
    Registered,
    /// Heartbeat renewed an existing lease.
    Renewed,
    /// The command names an incarnation older than the one registered, or one whose lease ended.
    StaleIncarnation,
}
