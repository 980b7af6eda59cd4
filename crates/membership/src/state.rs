//! [`Membership`]: the state, its indexes, and how a [`Batch`] changes it.
//!
//! The state is kept as a few maps that each answer one family of queries directly:
//!
//! - `nodes`: registered nodes, each with the connections it holds (per hub), so a lease expiry
//!   or a restart drops exactly that node's connections;
//! - `hubs`: per hub, the connections (user, node, groups), the users (their connections and
//!   their stored user-group entries with the LRU order of the capped ones) and the groups (their
//!   members per node, sorted, for routing and paging);
//! - two deadline queues (node leases, user-group expiries) ordered by time, so expiry touches
//!   only what expires.
//!
//! Every index is a function of the facts (nodes, connections with their groups, user-group
//! entries, the clock and the sequence counter), so two replicas that applied the same batches
//! compare equal, and a state rebuilt from a snapshot compares equal to the original. Containers
//! that become empty are removed at once, so churn leaves nothing behind.
//!
//! Names are [`Name`] (`Arc<str>`): an index stores a clone of the key the primary map already
//! holds rather than another copy of the string.

use std::collections::{BTreeMap, BTreeSet, HashMap};

#[cfg(test)]
mod tests;

use crate::name_set::NameSet;
use crate::sharded::Sharded;
use crate::{
    Batch, Command, Name, NodeId, NodeInfo, Outcome, DEFAULT_USER_GROUP_TTL_SECS,
    MAX_GROUPS_WITHOUT_TTL,
};

/// User-group entries one batch expires at most: a burst of entries added with one TTL expires
/// over several batches (a few milliseconds of the state's write lock each) instead of in one
/// apply that holds it for as long as the burst is large.
pub const MAX_EXPIRED_PER_BATCH: usize = 4096;

/// The replicated membership state. See the [crate docs](crate) for the rules it implements.
///
/// Equality compares content (two replicas that applied the same batches are equal, whatever
/// order their hash tables hold things in); the serde form is described in `snapshot`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// State time: the largest batch time seen.
    pub(crate) now_ms: u64,
    /// Next user-group update sequence number (orders the capped entries for eviction).
    pub(crate) next_seq: u64,
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) hubs: HashMap<Name, Hub>,
    /// `(lease_until_ms, node)` for every registered node.
    pub(crate) node_deadlines: BTreeSet<(u64, NodeId)>,
    /// `(expires_at_ms, hub, user, group)` for every stored user-group entry.
    pub(crate) entry_deadlines: BTreeSet<(u64, Name, Name, Name)>,
    /// The cluster's id, once its first leader named it (`Command::SetClusterId`).
    pub(crate) cluster_id: Option<String>,
}

/// A registered node and the connections it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) info: NodeInfo,
    /// Hub → connection ids on this node (sharded alike: one node may hold a million). No empty
    /// sets.
    pub(crate) connections: HashMap<Name, Sharded<()>>,
}

/// Everything in one hub. Removed from `Membership::hubs` as soon as it holds nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Hub {
    /// Split over shards: a growth rehash stays small (see `sharded`).
    pub(crate) connections: Sharded<Conn>,
    /// The same connection ids in order, for the paged listing of a hub's connections (a page
    /// costs O(log n + page), not a scan of the hub; about 29 bytes a connection).
    pub(crate) ordered: BTreeSet<Name>,
    /// Users with at least one connection or one stored entry (sharded alike).
    pub(crate) users: Sharded<User>,
    /// Groups with at least one connection.
    pub(crate) groups: HashMap<Name, Group>,
    /// Stored user-group entries in this hub.
    pub(crate) entry_count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conn {
    pub(crate) user: Option<Name>,
    pub(crate) node: NodeId,
    pub(crate) groups: NameSet,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct User {
    /// Ids of the user's current connections.
    pub(crate) connections: NameSet,
    /// `None` when the user has no stored entry (boxed: most users have none).
    pub(crate) entries: Option<Box<UserEntries>>,
}

/// The stored user-group entries of one user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UserEntries {
    pub(crate) by_group: BTreeMap<Name, Entry>,
    /// The entries that count toward the cap, by update sequence (oldest first).
    pub(crate) capped: BTreeMap<u64, Name>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) expires_at_ms: u64,
    pub(crate) counts: bool,
    pub(crate) seq: u64,
}

/// The members of one group, per node (sorted by node; few nodes), each set sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) by_node: Vec<(NodeId, BTreeSet<Name>)>,
}

impl Group {
    pub(crate) fn members_on(&self, node: NodeId) -> Option<&BTreeSet<Name>> {
        self.by_node
            .binary_search_by_key(&node, |(n, _)| *n)
            .ok()
            .and_then(|i| self.by_node.get(i))
            .map(|(_, set)| set)
    }

    pub(crate) fn insert(&mut self, node: NodeId, connection: Name) -> bool {
        match self.by_node.binary_search_by_key(&node, |(n, _)| *n) {
            Ok(i) => match self.by_node.get_mut(i) {
                Some((_, set)) => set.insert(connection),
                None => false,
            },
            Err(i) => {
                if self.by_node.capacity() == 0 {
                    self.by_node.reserve_exact(1);
                }
                self.by_node.insert(i, (node, BTreeSet::from([connection])));
                true
            }
        }
    }

    fn remove(&mut self, node: NodeId, connection: &str) -> bool {
        let Ok(i) = self.by_node.binary_search_by_key(&node, |(n, _)| *n) else {
            return false;
        };
        let Some((_, set)) = self.by_node.get_mut(i) else {
            return false;
        };
        let removed = set.remove(connection);
        if set.is_empty() {
            self.by_node.remove(i);
        }
        removed
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }
}

impl User {
    pub(crate) fn is_empty(&self) -> bool {
        self.connections.is_empty() && self.entries.is_none()
    }
}

/// The canonical copy of `name` if `map` has it as a key, else `name` itself.
fn canonical<V>(map: &HashMap<Name, V>, name: &Name) -> Name {
    map.get_key_value(&**name)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| name.clone())
}

/// [`canonical`] for a sharded table.
fn canonical_in<V>(map: &Sharded<V>, name: &Name) -> Name {
    map.get_key_value(name)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| name.clone())
}

fn ms_from_secs(secs: u64) -> u64 {
    secs.saturating_mul(1000)
}

impl Hub {
    pub(crate) fn is_empty(&self) -> bool {
        self.connections.is_empty() && self.users.is_empty() && self.groups.is_empty()
    }

    /// Adds a connection (which must not exist yet), joins it to its user's live groups, and
    /// returns its canonical id.
    fn open(&mut self, connection: &Name, user: Option<&Name>, node: NodeId, now: u64) -> Name {
        let user = user.map(|u| canonical_in(&self.users, u));
        self.ordered.insert(connection.clone());
        self.connections.insert(
            connection.clone(),
            Conn {
                user: user.clone(),
                node,
                groups: NameSet::default(),
            },
        );
        if let Some(user) = user {
            let record = self.users.entry(user).or_default();
            record.connections.insert(connection.clone());
            let live: Vec<Name> = record
                .entries
                .iter()
                .flat_map(|e| e.by_group.iter())
                .filter(|(_, e)| e.expires_at_ms > now)
                .map(|(g, _)| g.clone())
                .collect();
            for group in &live {
                self.join(connection, group);
            }
        }
        connection.clone()
    }

    /// Removes a connection from every index of the hub (not from its node's index).
    fn remove_connection(&mut self, connection: &str) -> Option<Conn> {
        let mut conn = self.connections.remove(connection)?;
        self.ordered.remove(connection);
        if let Some(user) = &conn.user {
            if let Some(record) = self.users.get_mut(user) {
                record.connections.remove(connection);
                if record.is_empty() {
                    self.users.remove(user);
                }
            }
        }
        for group in conn.groups.take() {
            self.group_remove(&group, conn.node, connection);
        }
        Some(conn)
    }

    /// Adds the connection to the group; false if the connection does not exist.
    fn join(&mut self, connection: &str, group: &Name) -> bool {
        let Some((conn_key, _)) = self.connections.get_key_value(connection) else {
            return false;
        };
        let conn_key = conn_key.clone();
        let group = canonical(&self.groups, group);
        let Some(conn) = self.connections.get_mut(connection) else {
            return false;
        };
        if conn.groups.insert(group.clone()) {
            let node = conn.node;
            self.groups.entry(group).or_default().insert(node, conn_key);
        }
        true
    }

    /// Takes the connection out of the group; false if the connection does not exist.
    fn leave(&mut self, connection: &str, group: &str) -> bool {
        let Some(conn) = self.connections.get_mut(connection) else {
            return false;
        };
        if conn.groups.remove(group) {
            let node = conn.node;
            self.group_remove(group, node, connection);
        }
        true
    }

    /// Takes the connection out of every group; false if the connection does not exist.
    fn leave_all(&mut self, connection: &str) -> bool {
        let Some(conn) = self.connections.get_mut(connection) else {
            return false;
        };
        let node = conn.node;
        for group in conn.groups.take() {
            self.group_remove(&group, node, connection);
        }
        true
    }

    fn group_remove(&mut self, group: &str, node: NodeId, connection: &str) {
        if let Some(g) = self.groups.get_mut(group) {
            g.remove(node, connection);
            if g.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// The user's current connections (cloned ids, so the hub can be changed while walking them).
    fn user_connections(&self, user: &str) -> Vec<Name> {
        self.users
            .get(user)
            .map(|u| u.connections.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Removes the stored (user, group) entry; the caller drops its deadline.
    fn take_entry(&mut self, user: &str, group: &str) -> Option<(Name, Name, Entry)> {
        let (user_key, _) = self.users.get_key_value(user)?;
        let user_key = user_key.clone();
        let record = self.users.get_mut(user)?;
        let entries = record.entries.as_mut()?;
        let (group_key, entry) = entries.by_group.remove_entry(group)?;
        if entry.counts {
            entries.capped.remove(&entry.seq);
        }
        if entries.by_group.is_empty() {
            record.entries = None;
        }
        if record.is_empty() {
            self.users.remove(user);
        }
        self.entry_count -= 1;
        Some((user_key, group_key, entry))
    }

    /// The canonical name of `group` for a new entry of `user`: the group's key if it has
    /// members, the user's entry key if one exists, else `group`.
    fn canonical_group(&self, user: &str, group: &Name) -> Name {
        if let Some((k, _)) = self.groups.get_key_value(&**group) {
            return k.clone();
        }
        self.users
            .get(user)
            .and_then(|u| u.entries.as_ref())
            .and_then(|e| e.by_group.get_key_value(&**group))
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| group.clone())
    }
}

impl Membership {
    /// An empty state at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one replicated batch: advances time to `max(now, batch.time_ms)`, expires every
    /// lease and up to [`MAX_EXPIRED_PER_BATCH`] user-group entries whose deadline is at or
    /// before that time (the oldest first; the rest go with the next batches, and queries
    /// already treat them as gone), then applies the commands in order. Returns one outcome per
    /// command, in the same order.
    pub fn apply(&mut self, batch: &Batch) -> Vec<Outcome> {
        self.now_ms = self.now_ms.max(batch.time_ms);
        self.expire();
        batch
            .commands
            .iter()
            .map(|c| self.apply_command(c))
            .collect()
    }

    fn expire(&mut self) {
        let now = self.now_ms;
        while self
            .node_deadlines
            .first()
            .is_some_and(|(at, _)| *at <= now)
        {
            if let Some((_, node)) = self.node_deadlines.pop_first() {
                self.drop_node(node);
            }
        }
        let mut expired = 0;
        while expired < MAX_EXPIRED_PER_BATCH
            && self
                .entry_deadlines
                .first()
                .is_some_and(|(at, ..)| *at <= now)
        {
            expired += 1;
            if let Some((_, hub, user, group)) = self.entry_deadlines.pop_first() {
                if let Some(h) = self.hubs.get_mut(&hub) {
                    h.take_entry(&user, &group);
                    if h.is_empty() {
                        self.hubs.remove(&hub);
                    }
                }
            }
        }
    }

    fn apply_command(&mut self, command: &Command) -> Outcome {
        match command {
            Command::NodeHeartbeat {
                node,
                incarnation,
                address,
                lease_ms,
            } => self.heartbeat(*node, *incarnation, address, *lease_ms),
            Command::NodeLeft { node, incarnation } => self.node_left(*node, *incarnation),
            Command::SetClusterId { id } => {
                if self.cluster_id.is_none() && !id.is_empty() {
                    self.cluster_id = Some(id.clone());
                }
                Outcome::Ok
            }
            Command::ConnectionOpened {
                hub,
                connection,
                user,
                node,
                incarnation,
            } => self.connection_opened(hub, connection, user.as_ref(), *node, *incarnation),
            Command::ConnectionClosed { hub, connection } => {
                self.connection_closed(hub, connection)
            }
            Command::AddConnectionToGroup {
                hub,
                group,
                connection,
            } => self.with_connection(hub, |h| h.join(connection, group)),
            Command::RemoveConnectionFromGroup {
                hub,
                group,
                connection,
            } => self.with_connection(hub, |h| h.leave(connection, group)),
            Command::RemoveConnectionFromAllGroups { hub, connection } => {
                self.with_connection(hub, |h| h.leave_all(connection))
            }
            Command::AddUserToGroup {
                hub,
                user,
                group,
                ttl_secs,
            } => {
                self.add_user_to_group(hub, user, group, *ttl_secs);
                Outcome::Ok
            }
            Command::RemoveUserFromGroup { hub, user, group } => {
                self.remove_user_from_group(hub, user, group);
                Outcome::Ok
            }
            Command::RemoveUserFromAllGroups { hub, user } => {
                self.remove_user_from_all_groups(hub, user);
                Outcome::Ok
            }
            Command::Tick => Outcome::Ok,
        }
    }

    fn heartbeat(
        &mut self,
        node: NodeId,
        incarnation: u64,
        address: &str,
        lease_ms: u64,
    ) -> Outcome {
        let lease_until_ms = self.now_ms.saturating_add(lease_ms);
        let (outcome, old_lease) = match self.nodes.get(&node) {
            None => (Outcome::Registered, None),
            Some(n) if incarnation > n.info.incarnation => {
                (Outcome::Registered, Some(n.info.lease_until_ms))
            }
            Some(n) if incarnation == n.info.incarnation => {
                (Outcome::Renewed, Some(n.info.lease_until_ms))
            }
            Some(_) => return Outcome::StaleIncarnation,
        };
        if let Some(old) = old_lease {
            self.node_deadlines.remove(&(old, node));
        }
        if outcome == Outcome::Registered {
            // A restarted node's connections died with the old process.
            self.drop_node_connections(node);
        }
        let info = NodeInfo {
            node,
            incarnation,
            address: address.to_owned(),
            lease_until_ms,
        };
        match self.nodes.get_mut(&node) {
            Some(n) => n.info = info,
            None => {
                self.nodes.insert(
                    node,
                    Node {
                        info,
                        connections: HashMap::new(),
                    },
                );
            }
        }
        self.node_deadlines.insert((lease_until_ms, node));
        outcome
    }

    /// A node that leaves with its registered (or a newer) incarnation is removed with its
    /// connections; an unknown node has nothing left to remove (`Ok`); an older incarnation is
    /// refused.
    fn node_left(&mut self, node: NodeId, incarnation: u64) -> Outcome {
        match self.nodes.get(&node) {
            None => Outcome::Ok,
            Some(n) if incarnation < n.info.incarnation => Outcome::StaleIncarnation,
            Some(n) => {
                let lease = n.info.lease_until_ms;
                self.node_deadlines.remove(&(lease, node));
                self.drop_node(node);
                Outcome::Ok
            }
        }
    }

    /// Removes the node record and all its connections (the caller handles its deadline).
    fn drop_node(&mut self, node: NodeId) {
        self.drop_node_connections(node);
        self.nodes.remove(&node);
    }

    /// Removes every connection of the node, keeping the node record.
    fn drop_node_connections(&mut self, node: NodeId) {
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        for (hub, connections) in std::mem::take(&mut n.connections) {
            if let Some(h) = self.hubs.get_mut(&hub) {
                for (connection, ()) in connections.iter() {
                    h.remove_connection(connection);
                }
                if h.is_empty() {
                    self.hubs.remove(&hub);
                }
            }
        }
    }

    fn connection_opened(
        &mut self,
        hub: &Name,
        connection: &Name,
        user: Option<&Name>,
        node: NodeId,
        incarnation: u64,
    ) -> Outcome {
        match self.nodes.get(&node) {
            Some(n) if n.info.incarnation == incarnation => {}
            _ => return Outcome::StaleIncarnation,
        }
        if let Some(existing) = self
            .hubs
            .get(&**hub)
            .and_then(|h| h.connections.get(connection))
        {
            return if existing.node == node {
                Outcome::Ok
            } else {
                Outcome::ConnectionExists
            };
        }
        let hub_key = canonical(&self.hubs, hub);
        let now = self.now_ms;
        let connection = self
            .hubs
            .entry(hub_key.clone())
            .or_default()
            .open(connection, user, node, now);
        if let Some(n) = self.nodes.get_mut(&node) {
            n.connections
                .entry(hub_key)
                .or_default()
                .insert(connection, ());
        }
        Outcome::Ok
    }

    fn connection_closed(&mut self, hub: &Name, connection: &Name) -> Outcome {
        let Some(h) = self.hubs.get_mut(&**hub) else {
            return Outcome::ConnectionNotFound;
        };
        let Some(conn) = h.remove_connection(connection) else {
            return Outcome::ConnectionNotFound;
        };
        if h.is_empty() {
            self.hubs.remove(&**hub);
        }
        if let Some(n) = self.nodes.get_mut(&conn.node) {
            if let Some(set) = n.connections.get_mut(&**hub) {
                set.remove(connection);
                if set.is_empty() {
                    n.connections.remove(&**hub);
                }
            }
        }
        Outcome::Ok
    }

    /// Runs a connection-group operation in `hub`; `ConnectionNotFound` if it reports the
    /// connection missing.
    fn with_connection(&mut self, hub: &Name, op: impl FnOnce(&mut Hub) -> bool) -> Outcome {
        let found = match self.hubs.get_mut(&**hub) {
            Some(h) => op(h),
            None => false,
        };
        if found {
            Outcome::Ok
        } else {
            Outcome::ConnectionNotFound
        }
    }

    fn add_user_to_group(&mut self, hub: &Name, user: &Name, group: &Name, ttl_secs: Option<u32>) {
        let now = self.now_ms;
        let hub_key = canonical(&self.hubs, hub);
        let h = self.hubs.entry(hub_key.clone()).or_default();
        let group_key = h.canonical_group(user, group);
        let (expires_at_ms, counts) = match ttl_secs {
            Some(0) => {
                if let Some((user_key, group_key, old)) = h.take_entry(user, group) {
                    self.entry_deadlines.remove(&(
                        old.expires_at_ms,
                        hub_key.clone(),
                        user_key,
                        group_key,
                    ));
                }
                (None, false)
            }
            None => (
                Some(now.saturating_add(ms_from_secs(DEFAULT_USER_GROUP_TTL_SECS))),
                true,
            ),
            Some(n) => (Some(now.saturating_add(ms_from_secs(u64::from(n)))), false),
        };
        if let Some(expires_at_ms) = expires_at_ms {
            let seq = self.next_seq;
            self.next_seq += 1;
            let user_key = canonical_in(&h.users, user);
            let record = h.users.entry(user_key.clone()).or_default();
            let entries = record.entries.get_or_insert_with(Box::default);
            let entry = Entry {
                expires_at_ms,
                counts,
                seq,
            };
            match entries.by_group.insert(group_key.clone(), entry) {
                Some(old) => {
                    if old.counts {
                        entries.capped.remove(&old.seq);
                    }
                    self.entry_deadlines.remove(&(
                        old.expires_at_ms,
                        hub_key.clone(),
                        user_key.clone(),
                        group_key.clone(),
                    ));
                }
                None => h.entry_count += 1,
            }
            self.entry_deadlines.insert((
                expires_at_ms,
                hub_key.clone(),
                user_key.clone(),
                group_key.clone(),
            ));
            if counts {
                entries.capped.insert(seq, group_key.clone());
                if entries.capped.len() > MAX_GROUPS_WITHOUT_TTL {
                    if let Some((_, evicted)) = entries.capped.pop_first() {
                        if let Some(old) = entries.by_group.remove(&evicted) {
                            h.entry_count -= 1;
                            self.entry_deadlines.remove(&(
                                old.expires_at_ms,
                                hub_key.clone(),
                                user_key,
                                evicted,
                            ));
                        }
                    }
                }
            }
        }
        for connection in h.user_connections(user) {
            h.join(&connection, &group_key);
        }
        if h.is_empty() {
            self.hubs.remove(&hub_key);
        }
    }

    fn remove_user_from_group(&mut self, hub: &Name, user: &Name, group: &Name) {
        let Some((hub_key, h)) = self.hubs.get_key_value(&**hub) else {
            return;
        };
        let hub_key = hub_key.clone();
        let connections = h.user_connections(user);
        let Some(h) = self.hubs.get_mut(&**hub) else {
            return;
        };
        if let Some((user_key, group_key, old)) = h.take_entry(user, group) {
            self.entry_deadlines
                .remove(&(old.expires_at_ms, hub_key.clone(), user_key, group_key));
        }
        for connection in &connections {
            h.leave(connection, group);
        }
        if h.is_empty() {
            self.hubs.remove(&hub_key);
        }
    }

    fn remove_user_from_all_groups(&mut self, hub: &Name, user: &Name) {
        let Some((hub_key, h)) = self.hubs.get_key_value(&**hub) else {
            return;
        };
        let hub_key = hub_key.clone();
        let Some((user_key, _)) = h.users.get_key_value(user) else {
            return;
        };
        let user_key = user_key.clone();
        let Some(h) = self.hubs.get_mut(&**hub) else {
            return;
        };
        let connections = h.user_connections(user);
        if let Some(record) = h.users.get_mut(user) {
            if let Some(entries) = record.entries.take() {
                h.entry_count -= entries.by_group.len();
                for (group, old) in entries.by_group {
                    self.entry_deadlines.remove(&(
                        old.expires_at_ms,
                        hub_key.clone(),
                        user_key.clone(),
                        group,
                    ));
                }
            }
            if record.is_empty() {
                h.users.remove(user);
            }
        }
        for connection in &connections {
            h.leave_all(connection);
        }
        if h.is_empty() {
            self.hubs.remove(&hub_key);
        }
    }

    /// Panics if an index disagrees with the facts or a container is left empty.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut node_deadlines = BTreeSet::new();
        for (id, n) in &self.nodes {
            assert_eq!(*id, n.info.node);
            node_deadlines.insert((n.info.lease_until_ms, *id));
            for (hub, conns) in &n.connections {
                assert!(!conns.is_empty(), "empty node hub set");
                let h = self.hubs.get(hub).expect("node names a missing hub");
                for (c, ()) in conns.iter() {
                    assert_eq!(
                        h.connections
                            .get(c)
                            .expect("node names a missing connection")
                            .node,
                        *id
                    );
                }
            }
        }
        assert_eq!(node_deadlines, self.node_deadlines);
        let mut entry_deadlines = BTreeSet::new();
        for (hub_name, h) in &self.hubs {
            assert!(!h.is_empty(), "empty hub {hub_name}");
            let ids: BTreeSet<&Name> = h.connections.iter().map(|(c, _)| c).collect();
            assert!(
                ids.iter().copied().eq(h.ordered.iter()),
                "the ordered index of {hub_name} is not its connections"
            );
            let mut entry_count = 0;
            for (cid, c) in h.connections.iter() {
                let n = self.nodes.get(&c.node).expect("connection on missing node");
                assert!(n
                    .connections
                    .get(hub_name)
                    .is_some_and(|s| s.contains_key(cid)));
                if let Some(u) = &c.user {
                    assert!(h.users.get(u).is_some_and(|u| u.connections.contains(cid)));
                }
                for g in c.groups.iter() {
                    let group = h.groups.get(g).expect("connection names a missing group");
                    assert!(group.members_on(c.node).is_some_and(|s| s.contains(cid)));
                }
            }
            for (uname, u) in h.users.iter() {
                assert!(!u.is_empty(), "empty user");
                for cid in u.connections.iter() {
                    let c = h
                        .connections
                        .get(cid)
                        .expect("user names a missing connection");
                    assert_eq!(c.user.as_deref(), Some(&**uname));
                }
                if let Some(e) = &u.entries {
                    assert!(!e.by_group.is_empty(), "empty entries");
                    assert!(e.capped.len() <= MAX_GROUPS_WITHOUT_TTL);
                    let mut capped = BTreeMap::new();
                    for (g, entry) in &e.by_group {
                        assert!(entry.seq < self.next_seq);
                        if entry.counts {
                            capped.insert(entry.seq, g.clone());
                        }
                        entry_deadlines.insert((
                            entry.expires_at_ms,
                            hub_name.clone(),
                            uname.clone(),
                            g.clone(),
                        ));
                        entry_count += 1;
                    }
                    assert_eq!(capped, e.capped);
                }
            }
            assert_eq!(entry_count, h.entry_count);
            for (gname, g) in &h.groups {
                assert!(!g.is_empty(), "empty group");
                assert!(g.by_node.windows(2).all(|w| w[0].0 < w[1].0));
                for (node, members) in &g.by_node {
                    assert!(!members.is_empty(), "empty group node set");
                    for cid in members {
                        let c = h
                            .connections
                            .get(cid)
                            .expect("group names a missing connection");
                        assert_eq!(c.node, *node);
                        assert!(c.groups.contains(gname));
                    }
                }
            }
        }
        assert_eq!(entry_deadlines, self.entry_deadlines);
    }
}
