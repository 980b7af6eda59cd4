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
const STATE_FIELDS: [&str; 5] = ["now_ms", "next_seq", "nodes", "hubs", "cluster_id"];

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
            &Seq(hubs.iter().map(|&(name, hub)| HubView { name, hub })),
        )?;
        s.serialize_field("cluster_id", &self.cluster_id)?;
        s.end()
    }
}

/// Serializes an iterator as a sequence. `serialize` takes `&self`, so it walks a clone of the
/// iterator: keep the iterators cheap to clone (slice and map iterators, not `vec::IntoIter`).
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
            &Seq(connections.iter().map(|&(id, c)| {
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
                .iter()
                .map(|&(user, entries)| UserView { user, entries })),
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
    /// Absent in snapshots written before clusters had ids.
    #[serde(default)]
    cluster_id: Option<String>,
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
            cluster_id: state.cluster_id.filter(|id| !id.is_empty()),
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
                    .insert(id.clone(), ());
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
                hub.ordered.insert(id.clone());
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Batch, Command, Outcome};

    fn n(s: &str) -> Name {
        Name::from(s)
    }

    fn open(conn: &str, user: Option<&str>, node: NodeId) -> Command {
        Command::ConnectionOpened {
            hub: n("hub"),
            connection: n(conn),
            user: user.map(n),
            node,
            incarnation: 1,
        }
    }

    fn hb(node: NodeId) -> Command {
        Command::NodeHeartbeat {
            node,
            incarnation: 1,
            address: format!("n{node}:1"),
            lease_ms: 10_000,
        }
    }

    fn populated(order_flipped: bool) -> Membership {
        let mut m = Membership::new();
        let mut cmds = vec![
            hb(1),
            hb(2),
            open("a", Some("u"), 1),
            open("b", Some("v"), 2),
            open("c", None, 2),
            Command::AddConnectionToGroup {
                hub: n("hub"),
                group: n("g"),
                connection: n("a"),
            },
            Command::AddConnectionToGroup {
                hub: n("hub"),
                group: n("g"),
                connection: n("c"),
            },
        ];
        if order_flipped {
            cmds[2..5].reverse();
            cmds.swap(5, 6);
        }
        cmds.push(Command::AddUserToGroup {
            hub: n("hub"),
            user: n("u"),
            group: n("ug"),
            ttl_secs: None,
        });
        cmds.push(Command::AddUserToGroup {
            hub: n("hub"),
            user: n("w"),
            group: n("g"),
            ttl_secs: Some(5),
        });
        cmds.push(Command::AddUserToGroup {
            hub: n("hub2"),
            user: n("w"),
            group: n("x"),
            ttl_secs: Some(7),
        });
        let out = m.apply(&Batch {
            time_ms: 1_000,
            commands: cmds,
        });
        assert!(out
            .iter()
            .all(|o| matches!(o, Outcome::Ok | Outcome::Registered)));
        m
    }

    #[test]
    fn round_trip_gives_an_equal_state_with_shared_names() {
        let m = populated(false);
        let json = serde_json::to_string(&m).expect("serialize");
        let back: Membership = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, m);
        back.check_invariants();
        let h = back.hubs.get("hub").expect("hub");
        let (key, _) = h.connections.get_key_value("a").expect("a");
        let member = h.groups["g"]
            .members_on(1)
            .and_then(|s| s.get("a"))
            .expect("member");
        assert!(Arc::ptr_eq(key, member));
        let (hub_key, _) = back.hubs.get_key_value("hub").expect("hub");
        assert!(Arc::ptr_eq(
            hub_key,
            back.nodes[&1]
                .connections
                .get_key_value("hub")
                .expect("node index")
                .0
        ));
    }

    #[test]
    fn equal_states_write_identical_bytes() {
        let a = populated(false);
        let b = populated(true);
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a).expect("a"),
            serde_json::to_string(&b).expect("b")
        );
    }

    #[test]
    fn the_written_form_lists_facts_only() {
        let mut m = Membership::new();
        m.apply(&Batch {
            time_ms: 5,
            commands: vec![
                hb(1),
                open("a", Some("u"), 1),
                Command::AddConnectionToGroup {
                    hub: n("hub"),
                    group: n("g"),
                    connection: n("a"),
                },
                Command::AddUserToGroup {
                    hub: n("hub"),
                    user: n("u"),
                    group: n("g"),
                    ttl_secs: Some(1),
                },
                Command::SetClusterId { id: "c-1".into() },
                // A cluster is named once: a later id is ignored.
                Command::SetClusterId { id: "c-2".into() },
            ],
        });
        assert_eq!(m.cluster_id(), Some("c-1"));
        let json = serde_json::to_value(&m).expect("serialize");
        let expected = serde_json::json!({
            "now_ms": 5,
            "next_seq": 1,
            "nodes": [{"node": 1, "incarnation": 1, "address": "n1:1", "lease_until_ms": 10_005}],
            "hubs": [{
                "name": "hub",
                "connections": [{"id": "a", "user": "u", "node": 1, "groups": ["g"]}],
                "users": [{"user": "u", "groups": [
                    {"group": "g", "expires_at_ms": 1_005, "counts_toward_cap": false, "seq": 0}
                ]}]
            }],
            "cluster_id": "c-1"
        });
        assert_eq!(json, expected);
        assert_eq!(
            serde_json::from_value::<Membership>(json).expect("deserialize"),
            m
        );
    }

    fn load(value: serde_json::Value) -> Result<Membership, String> {
        serde_json::from_value::<Membership>(value).map_err(|e| e.to_string())
    }

    fn snapshot(nodes: serde_json::Value, hubs: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"now_ms": 0, "next_seq": 3, "nodes": nodes, "hubs": hubs})
    }

    #[test]
    fn a_snapshot_from_before_cluster_ids_loads_without_one() {
        let m = load(snapshot(serde_json::json!([]), serde_json::json!([]))).expect("load");
        assert_eq!(m.cluster_id(), None);
    }

    #[test]
    fn contradictory_snapshots_are_refused() {
        let node =
            serde_json::json!([{"node": 1, "incarnation": 1, "address": "x", "lease_until_ms": 9}]);
        let conn = |id: &str, node: u64| serde_json::json!({"id": id, "user": null, "node": node, "groups": []});
        let entry = |group: &str, seq: u64, counts: bool| serde_json::json!({"group": group, "expires_at_ms": 100, "counts_toward_cap": counts, "seq": seq});
        let cases = [
            (
                snapshot(serde_json::json!([node[0], node[0]]), serde_json::json!([])),
                "node 1 appears twice",
            ),
            (
                snapshot(
                    node.clone(),
                    serde_json::json!([{"name": "h", "connections": [conn("a", 2)], "users": []}]),
                ),
                "not registered",
            ),
            (
                snapshot(
                    node.clone(),
                    serde_json::json!([{"name": "h", "connections": [conn("a", 1), conn("a", 1)], "users": []}]),
                ),
                "appears twice in hub",
            ),
            (
                snapshot(
                    node.clone(),
                    serde_json::json!([
                        {"name": "h", "connections": [conn("a", 1)], "users": []},
                        {"name": "h", "connections": [], "users": []}
                    ]),
                ),
                "hub \"h\" appears twice",
            ),
            (
                snapshot(
                    node.clone(),
                    serde_json::json!([{"name": "h", "connections": [], "users": [
                        {"user": "u", "groups": [entry("g", 0, true), entry("g", 1, true)]}
                    ]}]),
                ),
                "group \"g\" twice",
            ),
            (
                snapshot(
                    node.clone(),
                    serde_json::json!([{"name": "h", "connections": [], "users": [
                        {"user": "u", "groups": [entry("g", 0, true), entry("k", 0, true)]}
                    ]}]),
                ),
                "sequence number 0",
            ),
            (
                snapshot(
                    node.clone(),
                    serde_json::json!([{"name": "h", "connections": [], "users": [
                        {"user": "u", "groups": [entry("g", 3, false)]}
                    ]}]),
                ),
                "not below the next one",
            ),
            (
                snapshot(
                    node.clone(),
                    serde_json::json!([{"name": "h", "connections": [], "users": [
                        {"user": "u", "groups": [entry("g", 0, false)]},
                        {"user": "u", "groups": [entry("k", 1, false)]}
                    ]}]),
                ),
                "user \"u\" in hub \"h\" appears twice",
            ),
            (
                serde_json::json!({"now_ms": 0, "next_seq": 0, "nodes": [], "hubs": [], "extra": 1}),
                "unknown field",
            ),
            (serde_json::json!({"now_ms": 0}), "missing field"),
        ];
        for (value, needle) in cases {
            let err = load(value.clone()).expect_err(&format!("accepted {value}"));
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn more_capped_entries_than_the_cap_are_refused() {
        let groups: Vec<serde_json::Value> = (0..=MAX_GROUPS_WITHOUT_TTL)
            .map(|i| serde_json::json!({"group": format!("g{i}"), "expires_at_ms": 100, "counts_toward_cap": true, "seq": i}))
            .collect();
        let value = serde_json::json!({
            "now_ms": 0, "next_seq": 1_000, "nodes": [],
            "hubs": [{"name": "h", "connections": [], "users": [{"user": "u", "groups": groups}]}]
        });
        let err = load(value).expect_err("accepted");
        assert!(err.contains("more than 100 groups without TTL"), "{err}");
    }
}
