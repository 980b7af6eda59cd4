//! The serde form of [`Membership`], used for Raft snapshots.
//!
//! Only the facts are written: the clock, the sequence counter, the nodes, and per hub the
//! connections (with their user, node and groups) and the users' stored entries. Everything is
//! sorted, so two replicas with equal states write identical bytes. Loading validates the facts
//! (a snapshot comes from disk or from a peer) and rebuilds every index, interning names so the
//! indexes share one copy of each string again.

use std::collections::{btree_map, HashMap, HashSet};

use serde::de::Error as _;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::name_set::NameSet;
use crate::state::{Conn, Entry, Group, Hub, Node, User, UserEntries};
use crate::{Membership, Name, NodeId, NodeInfo, MAX_GROUPS_WITHOUT_TTL};

/// Why a snapshot could not be loaded: its facts contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("node {0} appears twice")]
    DuplicateNode(NodeId),
    #[error("hub {0:?} appears twice")]
    DuplicateHub(String),
    #[error("connection {connection:?} appears twice in hub {hub:?}")]
    DuplicateConnection { hub: String, connection: String },
    #[error("connection {connection:?} in hub {hub:?} is on node {node}, which is not registered")]
    UnknownNode {
        hub: String,
        connection: String,
        node: NodeId,
    },
    #[error("user {user:?} in hub {hub:?} appears twice")]
    DuplicateUser { hub: String, user: String },
    #[error("user {user:?} in hub {hub:?} has group {group:?} twice")]
    DuplicateEntry {
        hub: String,
        user: String,
        group: String,
    },
    #[error("user-group sequence number {seq} is not below the next one, {next}")]
    SequenceOutOfRange { seq: u64, next: u64 },
    #[error("user {user:?} in hub {hub:?} has two capped entries with sequence number {seq}")]
    DuplicateSequence { hub: String, user: String, seq: u64 },
    #[error(
        "user {user:?} in hub {hub:?} has more than {MAX_GROUPS_WITHOUT_TTL} groups without TTL"
    )]
    TooManyCapped { hub: String, user: String },
}

/// Field names of the written form (shared by the writer and the reader).
const STATE_FIELDS: [&str; 4] = ["now_ms", "next_seq", "nodes", "hubs"];

impl Serialize for Membership {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut hubs: Vec<(&Name, &Hub)> = self.hubs.iter().collect();
        hubs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut s = serializer.serialize_struct("Membership", STATE_FIELDS.len())?;
        s.serialize_field("now_ms", &self.now_ms)?;
        s.serialize_field("next_seq", &self.next_seq)?;
        s.serialize_field("nodes", &Seq(self.nodes.values().map(|n| &n.info)))?;
        s.serialize_field(
            "hubs",
            &Seq(hubs.into_iter().map(|(name, hub)| HubView { name, hub })),
        )?;
        s.end()
    }
}

/// Serializes an iterator as a sequence (once; the iterator is cloned to stay `&self`).
struct Seq<I>(I);

impl<I> Serialize for Seq<I>
where
    I: Iterator + Clone,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

struct HubView<'a> {
    name: &'a Name,
    hub: &'a Hub,
}

impl Serialize for HubView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut connections: Vec<(&Name, &Conn)> = self.hub.connections.iter().collect();
        connections.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut users: Vec<(&Name, &UserEntries)> = self
            .hub
            .users
            .iter()
            .filter_map(|(name, u)| u.entries.as_deref().map(|e| (name, e)))
            .collect();
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut s = serializer.serialize_struct("Hub", 3)?;
        s.serialize_field("name", self.name)?;
        s.serialize_field(
            "connections",
            &Seq(connections.into_iter().map(|(id, c)| {
                let mut groups: Vec<&Name> = c.groups.iter().collect();
                groups.sort_unstable();
                ConnView {
                    id,
                    user: c.user.as_ref(),
                    node: c.node,
                    groups,
                }
            })),
        )?;
        s.serialize_field(
            "users",
            &Seq(users
                .into_iter()
                .map(|(user, entries)| UserView { user, entries })),
        )?;
        s.end()
    }
}

#[derive(Serialize)]
struct ConnView<'a> {
    id: &'a Name,
    user: Option<&'a Name>,
    node: NodeId,
    groups: Vec<&'a Name>,
}

struct UserView<'a> {
    user: &'a Name,
    entries: &'a UserEntries,
}

impl Serialize for UserView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let groups = self.entries.by_group.iter().map(|(group, e)| EntryView {
            group,
            expires_at_ms: e.expires_at_ms,
            counts_toward_cap: e.counts,
            seq: e.seq,
        });
        let mut s = serializer.serialize_struct("User", 2)?;
        s.serialize_field("user", self.user)?;
        s.serialize_field("groups", &Seq(groups))?;
        s.end()
    }
}

#[derive(Serialize)]
struct EntryView<'a> {
    group: &'a Name,
    expires_at_ms: u64,
    counts_toward_cap: bool,
    seq: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    now_ms: u64,
    next_seq: u64,
    nodes: Vec<NodeInfo>,
    hubs: Vec<HubState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HubState {
    name: Name,
    connections: Vec<ConnState>,
    users: Vec<UserState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnState {
    id: Name,
    user: Option<Name>,
    node: NodeId,
    groups: Vec<Name>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserState {
    user: Name,
    groups: Vec<EntryState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryState {
    group: Name,
    expires_at_ms: u64,
    counts_toward_cap: bool,
    seq: u64,
}

impl<'de> Deserialize<'de> for Membership {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = State::deserialize(deserializer)?;
        Membership::from_state(state).map_err(D::Error::custom)
    }
}

/// Hands out one shared copy of each distinct name.
#[derive(Default)]
struct Interner(HashSet<Name>);

impl Interner {
    fn intern(&mut self, name: Name) -> Name {
        match self.0.get(&*name) {
            Some(known) => known.clone(),
            None => {
                self.0.insert(name.clone());
                name
            }
        }
    }
}

impl Membership {
    fn from_state(state: State) -> Result<Membership, SnapshotError> {
        let mut m = Membership {
            now_ms: state.now_ms,
            next_seq: state.next_seq,
            ..Membership::default()
        };
        for info in state.nodes {
            let node = info.node;
            m.node_deadlines.insert((info.lease_until_ms, node));
            let record = Node {
                info,
                connections: HashMap::new(),
            };
            if m.nodes.insert(node, record).is_some() {
                return Err(SnapshotError::DuplicateNode(node));
            }
        }
        let mut interner = Interner::default();
        for hub_state in state.hubs {
            let hub_name = interner.intern(hub_state.name);
            if m.hubs.contains_key(&hub_name) {
                return Err(SnapshotError::DuplicateHub(hub_name.to_string()));
            }
            let mut hub = Hub::default();
            for c in hub_state.connections {
                let id = interner.intern(c.id);
                let node = m
                    .nodes
                    .get_mut(&c.node)
                    .ok_or_else(|| SnapshotError::UnknownNode {
                        hub: hub_name.to_string(),
                        connection: id.to_string(),
                        node: c.node,
                    })?;
                if hub.connections.contains_key(&id) {
                    return Err(SnapshotError::DuplicateConnection {
                        hub: hub_name.to_string(),
                        connection: id.to_string(),
                    });
                }
                node.connections
                    .entry(hub_name.clone())
                    .or_default()
                    .insert(id.clone());
                let user = c.user.map(|u| interner.intern(u));
                if let Some(user) = &user {
                    hub.users
                        .entry(user.clone())
                        .or_default()
                        .connections
                        .insert(id.clone());
                }
                let mut groups = NameSet::default();
                for group in c.groups {
                    let group = interner.intern(group);
                    if groups.insert(group.clone()) {
                        hub.groups
                            .entry(group)
                            .or_insert_with(Group::default)
                            .insert(c.node, id.clone());
                    }
                }
                hub.connections.insert(
                    id,
                    Conn {
                        user,
                        node: c.node,
                        groups,
                    },
                );
            }
            for u in hub_state.users {
                let user = interner.intern(u.user);
                let record = hub.users.entry(user.clone()).or_insert_with(User::default);
                if record.entries.is_some() {
                    return Err(SnapshotError::DuplicateUser {
                        hub: hub_name.to_string(),
                        user: user.to_string(),
                    });
                }
                let mut entries = UserEntries::default();
                for e in u.groups {
                    if e.seq >= state.next_seq {
                        return Err(SnapshotError::SequenceOutOfRange {
                            seq: e.seq,
                            next: state.next_seq,
                        });
                    }
                    let group = interner.intern(e.group);
                    let entry = Entry {
                        expires_at_ms: e.expires_at_ms,
                        counts: e.counts_toward_cap,
                        seq: e.seq,
                    };
                    match entries.by_group.entry(group.clone()) {
                        btree_map::Entry::Occupied(_) => {
                            return Err(SnapshotError::DuplicateEntry {
                                hub: hub_name.to_string(),
                                user: user.to_string(),
                                group: group.to_string(),
                            })
                        }
                        btree_map::Entry::Vacant(v) => {
                            v.insert(entry);
                        }
                    }
                    if entry.counts && entries.capped.insert(entry.seq, group.clone()).is_some() {
                        return Err(SnapshotError::DuplicateSequence {
                            hub: hub_name.to_string(),
                            user: user.to_string(),
                            seq: entry.seq,
                        });
                    }
                    m.entry_deadlines.insert((
                        entry.expires_at_ms,
                        hub_name.clone(),
                        user.clone(),
                        group,
                    ));
                }
                if entries.capped.len() > MAX_GROUPS_WITHOUT_TTL {
                    return Err(SnapshotError::TooManyCapped {
                        hub: hub_name.to_string(),
                        user: user.to_string(),
                    });
                }
                hub.entry_count += entries.by_group.len();
                if !entries.by_group.is_empty() {
                    record.entries = Some(Box::new(entries));
                }
                if record.is_empty() {
                    hub.users.remove(&user);
                }
            }
            if !hub.is_empty() {
                m.hubs.insert(hub_name, hub);
            }
        }
        Ok(m)
    }
}
