//! The read side of [`Membership`]: what gateways ask on every send and what the REST API lists.
//!
//! Each query walks only the index entries that make up its answer (a group's members on one
//! node, a user's connections, ...), never the whole state. Iteration order is unspecified unless
//! a query says otherwise. Queries that take `now_ms` hide user-group entries whose expiry has
//! passed but that no batch has purged yet.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::ops::Bound;

use crate::state::{Group, Hub};
use crate::{ConnectionInfo, HubCounts, Membership, Name, NodeId, NodeInfo, Stats, UserGroupInfo};

impl Membership {
    /// State time: the largest batch time applied so far (milliseconds since the Unix epoch).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The cluster's id, once its first leader named it.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// The earliest time at which something expires (a node lease or a user-group entry), if any:
    /// when to propose a [`Command::Tick`](crate::Command::Tick).
    pub fn next_deadline(&self) -> Option<u64> {
        let node = self.node_deadlines.first().map(|(at, _)| *at);
        let entry = self.entry_deadlines.first().map(|(at, ..)| *at);
        match (node, entry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Registered nodes, by id. A node whose lease has passed stays listed until a batch expires
    /// it: compare `lease_until_ms` with the clock to tell.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> + '_ {
        self.nodes.values().map(|n| &n.info)
    }

    pub fn node(&self, node: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(&node).map(|n| &n.info)
    }

    pub fn connection(&self, hub: &str, connection: &str) -> Option<ConnectionInfo> {
        let c = self.hub(hub)?.connections.get(connection)?;
        Some(ConnectionInfo {
            user: c.user.clone(),
            node: c.node,
        })
    }

    /// `(hub, connection)` for every connection the node holds.
    pub fn connections_on_node(&self, node: NodeId) -> impl Iterator<Item = (&Name, &Name)> + '_ {
        self.nodes
            .get(&node)
            .into_iter()
            .flat_map(|n| n.connections.iter())
            .flat_map(|(hub, conns)| conns.iter().map(move |(c, ())| (hub, c)))
    }

    /// The groups the connection is in.
    pub fn connection_groups(
        &self,
        hub: &str,
        connection: &str,
    ) -> impl Iterator<Item = &Name> + '_ {
        self.hub(hub)
            .and_then(|h| h.connections.get(connection))
            .into_iter()
            .flat_map(|c| c.groups.iter())
    }

    pub fn user_has_connections(&self, hub: &str, user: &str) -> bool {
        self.hub(hub)
            .and_then(|h| h.users.get(user))
            .is_some_and(|u| !u.connections.is_empty())
    }

    /// The user's connections with the node holding each.
    pub fn user_connections(
        &self,
        hub: &str,
        user: &str,
    ) -> impl Iterator<Item = (&Name, NodeId)> + '_ {
        let found = self
            .hub(hub)
            .and_then(|h| h.users.get(user).map(|u| (h, u)));
        found.into_iter().flat_map(|(h, u)| {
            u.connections
                .iter()
                .filter_map(move |c| h.connections.get(c).map(|conn| (c, conn.node)))
        })
    }

    /// The distinct nodes holding at least one connection of the user, ascending.
    pub fn user_nodes(&self, hub: &str, user: &str) -> impl Iterator<Item = NodeId> {
        let mut nodes: Vec<NodeId> = self.user_connections(hub, user).map(|(_, n)| n).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.into_iter()
    }

    /// The user's connections held by `node`.
    pub fn user_connections_on_node(
        &self,
        hub: &str,
        user: &str,
        node: NodeId,
    ) -> impl Iterator<Item = &Name> + '_ {
        self.user_connections(hub, user)
            .filter(move |(_, n)| *n == node)
            .map(|(c, _)| c)
    }

    pub fn group_has_connections(&self, hub: &str, group: &str) -> bool {
        self.group(hub, group).is_some()
    }

    /// The distinct nodes holding at least one connection of the hub, ascending (where a hub
    /// broadcast must go).
    pub fn hub_nodes<'a>(&'a self, hub: &'a str) -> impl Iterator<Item = NodeId> + 'a {
        self.nodes
            .iter()
            .filter(move |(_, n)| n.connections.contains_key(hub))
            .map(|(id, _)| *id)
    }

    /// The distinct nodes holding at least one member of the group, ascending.
    pub fn group_nodes(&self, hub: &str, group: &str) -> impl Iterator<Item = NodeId> + '_ {
        self.group(hub, group)
            .into_iter()
            .flat_map(|g| g.by_node.iter().map(|(n, _)| *n))
    }

    /// The group's members held by `node`, ascending by id.
    pub fn group_connections_on_node(
        &self,
        hub: &str,
        group: &str,
        node: NodeId,
    ) -> impl Iterator<Item = &Name> + '_ {
        self.group(hub, group)
            .and_then(|g| g.members_on(node))
            .into_iter()
            .flat_map(|members| members.iter())
    }

    /// Members ordered by connection id, starting strictly after `after`, at most `limit`
    /// (for the paged REST listing): `(connection, user)`.
    pub fn group_connections_page(
        &self,
        hub: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<(Name, Option<Name>)> {
        let (Some(h), Some(g)) = (self.hub(hub), self.group(hub, group)) else {
            return Vec::new();
        };
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        // Merge the per-node sorted sets: a heap of each node's next member.
        let mut cursors: Vec<std::collections::btree_set::Range<'_, Name>> = g
            .by_node
            .iter()
            .map(|(_, members)| range_after(members, start))
            .collect();
        let mut heap = BinaryHeap::with_capacity(cursors.len());
        for (i, cursor) in cursors.iter_mut().enumerate() {
            if let Some(c) = cursor.next() {
                heap.push(Reverse((c, i)));
            }
        }
        let mut page = Vec::with_capacity(limit.min(g.by_node.iter().map(|(_, m)| m.len()).sum()));
        while page.len() < limit {
            let Some(Reverse((c, i))) = heap.pop() else {
                break;
            };
            let user = h.connections.get(c).and_then(|conn| conn.user.clone());
            page.push((c.clone(), user));
            if let Some(next) = cursors.get_mut(i).and_then(|cursor| cursor.next()) {
                heap.push(Reverse((next, i)));
            }
        }
        page
    }

    /// The hub's connections ordered by id, strictly after `after`, at most `limit`:
    /// `(connection, user)`, from the hub's ordered index.
    pub fn hub_connections_page(
        &self,
        hub: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<(Name, Option<Name>)> {
        let Some(h) = self.hub(hub) else {
            return Vec::new();
        };
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        range_after(&h.ordered, start)
            .take(limit)
            .map(|c| {
                let user = h.connections.get(c).and_then(|conn| conn.user.clone());
                (c.clone(), user)
            })
            .collect()
    }

    /// The user's connections ordered by id, strictly after `after`, at most `limit`.
    pub fn user_connections_page(
        &self,
        hub: &str,
        user: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Name> {
        let Some(u) = self.hub(hub).and_then(|h| h.users.get(user)) else {
            return Vec::new();
        };
        smallest_after(u.connections.iter(), after, limit)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The connection's groups ordered by name, strictly after `after`, at most `limit`.
    pub fn connection_groups_page(
        &self,
        hub: &str,
        connection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Name> {
        smallest_after(self.connection_groups(hub, connection), after, limit)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The hub's groups (those with a connection) ordered by name, strictly after `after`, at
    /// most `limit`, each with its member count.
    pub fn hub_groups_page(
        &self,
        hub: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<(Name, usize)> {
        let Some(h) = self.hub(hub) else {
            return Vec::new();
        };
        smallest_after(h.groups.keys(), after, limit)
            .into_iter()
            .map(|g| {
                let members = h
                    .groups
                    .get(g)
                    .map_or(0, |g| g.by_node.iter().map(|(_, m)| m.len()).sum());
                (g.clone(), members)
            })
            .collect()
    }

    /// Every hub with a connection or a stored entry, by name, with its sizes.
    pub fn hub_counts(&self) -> Vec<HubCounts> {
        let mut hubs: Vec<HubCounts> = self
            .hubs
            .iter()
            .map(|(name, h)| HubCounts {
                hub: name.clone(),
                connections: h.connections.len(),
                users: h
                    .users
                    .iter()
                    .filter(|(_, u)| !u.connections.is_empty())
                    .count(),
                groups: h.groups.len(),
                user_group_entries: h.entry_count,
            })
            .collect();
        hubs.sort_unstable_by(|a, b| a.hub.cmp(&b.hub));
        hubs
    }

    /// Whether the user has a live stored entry for the group (`expires_at > now_ms`), as Azure's
    /// emulator answers: a connection of the user that joined the group (through an entry since
    /// expired, a `ttl=0` add, or a connection-group add) does not make the user a member.
    pub fn user_in_group(&self, hub: &str, user: &str, group: &str, now_ms: u64) -> bool {
        self.hub(hub)
            .and_then(|h| h.users.get(user))
            .and_then(|u| u.entries.as_ref())
            .and_then(|e| e.by_group.get(group))
            .is_some_and(|e| e.expires_at_ms > now_ms)
    }

    /// The user's live stored entries (`expires_at > now_ms`), sorted by group.
    pub fn user_groups(&self, hub: &str, user: &str, now_ms: u64) -> Vec<UserGroupInfo> {
        self.hub(hub)
            .and_then(|h| h.users.get(user))
            .and_then(|u| u.entries.as_ref())
            .map(|e| {
                e.by_group
                    .iter()
                    .filter(|(_, e)| e.expires_at_ms > now_ms)
                    .map(|(g, e)| UserGroupInfo {
                        group: g.clone(),
                        expires_at_ms: e.expires_at_ms,
                        counts_toward_cap: e.counts,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sizes of the state. Walks the hubs (not their contents).
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            nodes: self.nodes.len(),
            ..Stats::default()
        };
        for h in self.hubs.values() {
            stats.connections += h.connections.len();
            stats.groups += h.groups.len();
            stats.user_group_entries += h.entry_count;
        }
        stats
    }

    fn hub(&self, hub: &str) -> Option<&Hub> {
        self.hubs.get(hub)
    }

    fn group(&self, hub: &str, group: &str) -> Option<&Group> {
        self.hub(hub)?.groups.get(group)
    }
}

fn range_after<'a>(
    members: &'a BTreeSet<Name>,
    start: Bound<&str>,
) -> std::collections::btree_set::Range<'a, Name> {
    members.range::<str, _>((start, Bound::Unbounded))
}

/// The `limit` smallest names strictly after `after`, ascending: one pass with a bounded
/// max-heap, O(n log limit) for n names, whatever order they come in.
fn smallest_after<'a>(
    names: impl Iterator<Item = &'a Name>,
    after: Option<&str>,
    limit: usize,
) -> Vec<&'a Name> {
    if limit == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<&'a Name> = BinaryHeap::with_capacity(limit.min(1024) + 1);
    for name in names {
        if after.is_some_and(|a| &**name <= a) {
            continue;
        }
        if heap.len() < limit {
            heap.push(name);
        } else if heap.peek().is_some_and(|largest| name < *largest) {
            heap.pop();
            heap.push(name);
        }
    }
    heap.into_sorted_vec()
}
