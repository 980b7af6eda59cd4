//! The membership state machine: which connections exist, on which node, in which groups, and
//! which users belong to which groups until when.
//!
//! Two instances of it run: the Raft store replicates one holding the gateways' leases and the
//! user-group entries (durable), and each gateway keeps one of its own connections, their users
//! and groups (soft, never logged; see `switchboard_gateway::local`). It is deterministic: it
//! does no I/O and never reads a clock. Time arrives inside each [`Batch`] (stamped by the Raft
//! leader), so every replica and every replay computes the same expiries; nothing that replicas
//! must agree on depends on hash iteration order.
//!
//! # Rules
//!
//! - **Time.** A batch moves state time to `max(now, batch.time_ms)` (a new leader whose clock is
//!   behind cannot move it back), then every lease whose deadline is at or before that time
//!   ends and up to [`MAX_EXPIRED_PER_BATCH`] such user-group entries expire (oldest first; the
//!   rest with the next batches, and every query already treats them as gone), then the
//!   commands apply in order, each with one [`Outcome`].
//! - **Nodes.** A heartbeat from an unknown node, or with a higher incarnation, registers it
//!   (a higher incarnation first drops every connection of the older one); the same incarnation
//!   renews the lease; a lower one is stale. When a lease ends, or the node leaves, the node and
//!   all its connections go; its next heartbeat registers it afresh, which tells the gateway that
//!   its connections were dropped.
//! - **Connections** open only on the live registration of their node and join every live group
//!   of their user; opening one that exists changes nothing (and answers
//!   [`Outcome::ConnectionExists`] when it exists on another node: a connection token used twice). Connection↔group is many-to-many
//!   and ends with the connection.
//! - **User groups.** An entry without TTL lasts a year and counts toward a per-(hub, user) cap
//!   of [`MAX_GROUPS_WITHOUT_TTL`]: one more evicts the least recently updated (by a sequence
//!   number kept in the state, never by time). An entry with a TTL does not count. `ttl = 0`
//!   stores nothing and removes any stored entry. Every add also joins the user's current
//!   connections. Expiry and eviction remove only the entry: connections that joined stay.
//!   Removing a user from a group (or all groups) also takes the user's current connections out.
//! - **Hubs** scope everything: equal names in two hubs are unrelated.
//!
//! Layout:
//! - this file: the replicated vocabulary ([`Command`], [`Batch`], [`Outcome`]) and the small
//!   records queries hand out ([`NodeInfo`], [`ConnectionInfo`], [`UserGroupInfo`], [`Stats`]);
//! - `state`: [`Membership`] itself, its indexes and [`Membership::apply`];
//! - `query`: the read side, every query answering in time proportional to its answer;
//! - `snapshot`: the serde form of the state (a compact, sorted list of facts; the indexes are
//!   rebuilt on load) and [`SnapshotError`];
//! - `name_set`: a set of names that stays a small vector until it grows, so an idle connection
//!   or a user with one connection costs a few words, not a hash table.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
pub use switchboard_core::NodeId;

mod name_set;
mod query;
mod sharded;
mod snapshot;
mod state;

#[cfg(test)]
mod model_tests;

pub use snapshot::SnapshotError;
pub use state::{Membership, MAX_EXPIRED_PER_BATCH};

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
    NodeHeartbeat {
        node: NodeId,
        incarnation: u64,
        address: String,
        lease_ms: u64,
    },
    /// A gateway leaves cleanly: its connections end now.
    NodeLeft { node: NodeId, incarnation: u64 },
    /// Names the cluster, once: the first leader proposes a random id and every later one is
    /// ignored. Voters stamp it on their Raft calls and refuse calls from another cluster.
    SetClusterId { id: String },
    /// A client connection completed its handshake on `node`.
    ConnectionOpened {
        hub: Name,
        connection: Name,
        user: Option<Name>,
        node: NodeId,
        incarnation: u64,
    },
    /// A client connection ended.
    ConnectionClosed { hub: Name, connection: Name },
    /// The connection joins the group (until it leaves it or ends).
    AddConnectionToGroup {
        hub: Name,
        group: Name,
        connection: Name,
    },
    /// The connection leaves the group; `Ok` even if it was not in it.
    RemoveConnectionFromGroup {
        hub: Name,
        group: Name,
        connection: Name,
    },
    /// The connection leaves every group it is in.
    RemoveConnectionFromAllGroups { hub: Name, connection: Name },
    /// `ttl_secs`: `None` = one year and counts toward the 100-group cap; `Some(0)` = only the
    /// user's current connections join, nothing is stored (an existing entry is removed);
    /// `Some(n)` = expires `n` s from now. In every case the user's current connections join.
    AddUserToGroup {
        hub: Name,
        user: Name,
        group: Name,
        ttl_secs: Option<u32>,
    },
    /// Removes the user-group entry and takes the user's current connections out of the group.
    RemoveUserFromGroup { hub: Name, user: Name, group: Name },
    /// Removes every entry of the user and takes the user's current connections out of every
    /// group they are in.
    RemoveUserFromAllGroups { hub: Name, user: Name },
    /// Advances time only (expiry without traffic).
    Tick,
}

impl Command {
    /// An upper bound on the bytes this command takes encoded (its strings plus room for the
    /// numbers and tags), so batches can be kept below a message size without encoding them.
    pub fn size_bound(&self) -> usize {
        const FIXED: usize = 64;
        let strings = match self {
            Command::NodeHeartbeat { address, .. } => address.len(),
            Command::SetClusterId { id } => id.len(),
            Command::NodeLeft { .. } | Command::Tick => 0,
            Command::ConnectionOpened {
                hub,
                connection,
                user,
                ..
            } => hub.len() + connection.len() + user.as_ref().map_or(0, |u| u.len()),
            Command::ConnectionClosed { hub, connection }
            | Command::RemoveConnectionFromAllGroups { hub, connection } => {
                hub.len() + connection.len()
            }
            Command::AddConnectionToGroup {
                hub,
                group,
                connection,
            }
            | Command::RemoveConnectionFromGroup {
                hub,
                group,
                connection,
            } => hub.len() + group.len() + connection.len(),
            Command::AddUserToGroup {
                hub, user, group, ..
            }
            | Command::RemoveUserFromGroup { hub, user, group } => {
                hub.len() + user.len() + group.len()
            }
            Command::RemoveUserFromAllGroups { hub, user } => hub.len() + user.len(),
        };
        // Each string carries a length prefix of at most 5 bytes.
        FIXED + strings + 15
    }

    /// Whether the store keeps this command: gateways' leases and user-group entries. The
    /// connection commands are the soft state each gateway applies to its own connections (the
    /// same state machine, another instance) and are never written to the log.
    pub fn is_durable(&self) -> bool {
        matches!(
            self,
            Command::NodeHeartbeat { .. }
                | Command::NodeLeft { .. }
                | Command::SetClusterId { .. }
                | Command::AddUserToGroup { .. }
                | Command::RemoveUserFromGroup { .. }
                | Command::RemoveUserFromAllGroups { .. }
                | Command::Tick
        )
    }

    /// The node (and incarnation) this command speaks for, if it is one only that node may
    /// send: its lease, its leaving, a connection opening on it. The store refuses such a
    /// command from a caller with another identity.
    pub fn acts_for(&self) -> Option<(NodeId, u64)> {
        match self {
            Command::NodeHeartbeat {
                node, incarnation, ..
            }
            | Command::NodeLeft { node, incarnation }
            | Command::ConnectionOpened {
                node, incarnation, ..
            } => Some((*node, *incarnation)),
            _ => None,
        }
    }
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
    /// `ConnectionOpened` for a connection id that is open on another node: the first keeps it.
    ConnectionExists,
}

/// A registered gateway node, as the last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: NodeId,
    /// Generation of the node's process; a restart announces a higher one.
    pub incarnation: u64,
    /// Where peers reach the node (as the node advertised it).
    pub address: String,
    /// The registration ends when state time reaches this (milliseconds since the Unix epoch).
    pub lease_until_ms: u64,
}

/// Where a connection lives and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub user: Option<Name>,
    pub node: NodeId,
}

/// One stored user-group entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserGroupInfo {
    pub group: Name,
    /// New connections of the user join the group while state time is below this.
    pub expires_at_ms: u64,
    /// Added without TTL: one of the (at most [`MAX_GROUPS_WITHOUT_TTL`]) capped entries.
    pub counts_toward_cap: bool,
}

/// Sizes of one hub ([`Membership::hub_counts`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubCounts {
    pub hub: Name,
    /// Open connections.
    pub connections: usize,
    /// Users with at least one open connection.
    pub users: usize,
    /// Groups with at least one connection.
    pub groups: usize,
    /// Stored user-group entries.
    pub user_group_entries: usize,
}

/// Sizes of the state, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Registered nodes.
    pub nodes: usize,
    /// Open connections, all hubs.
    pub connections: usize,
    /// Groups with at least one connection, all hubs.
    pub groups: usize,
    /// Stored user-group entries, all hubs.
    pub user_group_entries: usize,
}
