//! Model-based property tests: random batches applied to [`Membership`] and to a deliberately
//! naive reference model (flat ordered maps and sets, every rule written as a scan), comparing
//! every outcome and every query after every batch. Small name alphabets make collisions (same
//! connection, group, user in two hubs; reopen after close; heartbeats racing leases) common.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::{
    Batch, Command, ConnectionInfo, HubCounts, Membership, Name, NodeId, NodeInfo, Outcome, Stats,
    UserGroupInfo, DEFAULT_USER_GROUP_TTL_SECS, MAX_GROUPS_WITHOUT_TTL,
};

type Key2 = (String, String);
type Key3 = (String, String, String);

#[derive(Debug, Clone, Default)]
struct ModelNode {
    incarnation: u64,
    address: String,
    lease_until: u64,
}

#[derive(Debug, Clone)]
struct ModelEntry {
    expires: u64,
    counts: bool,
    seq: u64,
}

/// The reference: obviously correct, not fast.
#[derive(Debug, Clone, Default)]
struct Model {
    now: u64,
    seq: u64,
    nodes: BTreeMap<NodeId, ModelNode>,
    /// (hub, connection) → (user, node)
    conns: BTreeMap<Key2, (Option<String>, NodeId)>,
    /// (hub, group, connection)
    members: BTreeSet<Key3>,
    /// (hub, user, group) → entry
    entries: BTreeMap<Key3, ModelEntry>,
}

fn s(name: &Name) -> String {
    name.to_string()
}

impl Model {
    fn drop_connection(&mut self, hub: &str, conn: &str) {
        self.conns.remove(&(hub.to_string(), conn.to_string()));
        self.members.retain(|(h, _, c)| !(h == hub && c == conn));
    }

    fn drop_node_connections(&mut self, node: NodeId) {
        let victims: Vec<Key2> = self
            .conns
            .iter()
            .filter(|(_, (_, n))| *n == node)
            .map(|(k, _)| k.clone())
            .collect();
        for (hub, conn) in victims {
            self.drop_connection(&hub, &conn);
        }
    }

    fn user_connections(&self, hub: &str, user: &str) -> Vec<String> {
        self.conns
            .iter()
            .filter(|((h, _), (u, _))| h == hub && u.as_deref() == Some(user))
            .map(|((_, c), _)| c.clone())
            .collect()
    }

    fn has_connection(&self, hub: &str, conn: &str) -> bool {
        self.conns
            .contains_key(&(hub.to_string(), conn.to_string()))
    }

    fn apply(&mut self, batch: &Batch) -> Vec<Outcome> {
        self.now = self.now.max(batch.time_ms);
        let now = self.now;
        let expired: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.lease_until <= now)
            .map(|(id, _)| *id)
            .collect();
        for node in expired {
            self.drop_node_connections(node);
            self.nodes.remove(&node);
        }
        self.entries.retain(|_, e| e.expires > now);
        batch.commands.iter().map(|c| self.command(c)).collect()
    }

    fn command(&mut self, command: &Command) -> Outcome {
        let now = self.now;
        match command {
            Command::NodeHeartbeat {
                node,
                incarnation,
                address,
                lease_ms,
            } => {
                let fresh = ModelNode {
                    incarnation: *incarnation,
                    address: address.clone(),
                    lease_until: now + lease_ms,
                };
                match self.nodes.get(node).map(|n| n.incarnation) {
                    None => {
                        self.nodes.insert(*node, fresh);
                        Outcome::Registered
                    }
                    Some(old) if *incarnation > old => {
                        self.drop_node_connections(*node);
                        self.nodes.insert(*node, fresh);
                        Outcome::Registered
                    }
                    Some(old) if *incarnation == old => {
                        self.nodes.insert(*node, fresh);
                        Outcome::Renewed
                    }
                    Some(_) => Outcome::StaleIncarnation,
                }
            }
            Command::NodeLeft { node, incarnation } => {
                match self.nodes.get(node).map(|n| n.incarnation) {
                    None => Outcome::Ok,
                    Some(old) if *incarnation < old => Outcome::StaleIncarnation,
                    Some(_) => {
                        self.drop_node_connections(*node);
                        self.nodes.remove(node);
                        Outcome::Ok
                    }
                }
            }
            Command::ConnectionOpened {
                hub,
                connection,
                user,
                node,
                incarnation,
            } => {
                if self.nodes.get(node).map(|n| n.incarnation) != Some(*incarnation) {
                    return Outcome::StaleIncarnation;
                }
                if let Some((_, owner)) = self.conns.get(&(s(hub), s(connection))) {
                    return if owner == node {
                        Outcome::Ok
                    } else {
                        Outcome::ConnectionExists
                    };
                }
                self.conns
                    .insert((s(hub), s(connection)), (user.as_ref().map(s), *node));
                if let Some(user) = user {
                    let groups: Vec<String> = self
                        .entries
                        .iter()
                        .filter(|((h, u, _), e)| h == &**hub && u == &**user && e.expires > now)
                        .map(|((_, _, g), _)| g.clone())
                        .collect();
                    for g in groups {
                        self.members.insert((s(hub), g, s(connection)));
                    }
                }
                Outcome::Ok
            }
            Command::ConnectionClosed { hub, connection } => {
                if !self.has_connection(hub, connection) {
                    return Outcome::ConnectionNotFound;
                }
                self.drop_connection(hub, connection);
                Outcome::Ok
            }
            Command::AddConnectionToGroup {
                hub,
                group,
                connection,
            } => {
                if !self.has_connection(hub, connection) {
                    return Outcome::ConnectionNotFound;
                }
                self.members.insert((s(hub), s(group), s(connection)));
                Outcome::Ok
            }
            Command::RemoveConnectionFromGroup {
                hub,
                group,
                connection,
            } => {
                if !self.has_connection(hub, connection) {
                    return Outcome::ConnectionNotFound;
                }
                self.members.remove(&(s(hub), s(group), s(connection)));
                Outcome::Ok
            }
            Command::RemoveConnectionFromAllGroups { hub, connection } => {
                if !self.has_connection(hub, connection) {
                    return Outcome::ConnectionNotFound;
                }
                self.members
                    .retain(|(h, _, c)| !(h == &**hub && c == &**connection));
                Outcome::Ok
            }
            Command::AddUserToGroup {
                hub,
                user,
                group,
                ttl_secs,
            } => {
                let key = (s(hub), s(user), s(group));
                match ttl_secs {
                    Some(0) => {
                        self.entries.remove(&key);
                    }
                    None => {
                        let expires = now + DEFAULT_USER_GROUP_TTL_SECS * 1000;
                        self.entries.insert(
                            key,
                            ModelEntry {
                                expires,
                                counts: true,
                                seq: self.seq,
                            },
                        );
                        self.seq += 1;
                        let capped: Vec<(u64, Key3)> = self
                            .entries
                            .iter()
                            .filter(|((h, u, _), e)| h == &**hub && u == &**user && e.counts)
                            .map(|(k, e)| (e.seq, k.clone()))
                            .collect();
                        if capped.len() > MAX_GROUPS_WITHOUT_TTL {
                            if let Some((_, oldest)) = capped.iter().min() {
                                self.entries.remove(oldest);
                            }
                        }
                    }
                    Some(n) => {
                        let expires = now + u64::from(*n) * 1000;
                        self.entries.insert(
                            key,
                            ModelEntry {
                                expires,
                                counts: false,
                                seq: self.seq,
                            },
                        );
                        self.seq += 1;
                    }
                }
                for c in self.user_connections(hub, user) {
                    self.members.insert((s(hub), s(group), c));
                }
                Outcome::Ok
            }
            Command::RemoveUserFromGroup { hub, user, group } => {
                self.entries.remove(&(s(hub), s(user), s(group)));
                for c in self.user_connections(hub, user) {
                    self.members.remove(&(s(hub), s(group), c));
                }
                Outcome::Ok
            }
            Command::RemoveUserFromAllGroups { hub, user } => {
                self.entries
                    .retain(|(h, u, _), _| !(h == &**hub && u == &**user));
                for c in self.user_connections(hub, user) {
                    self.members.retain(|(h, _, mc)| !(h == &**hub && *mc == c));
                }
                Outcome::Ok
            }
            Command::Tick | Command::SetClusterId { .. } => Outcome::Ok,
        }
    }

    fn group_members(&self, hub: &str, group: &str) -> Vec<String> {
        self.members
            .iter()
            .filter(|(h, g, _)| h == hub && g == group)
            .map(|(_, _, c)| c.clone())
            .collect()
    }

    fn node_of(&self, hub: &str, conn: &str) -> Option<NodeId> {
        self.conns
            .get(&(hub.to_string(), conn.to_string()))
            .map(|(_, n)| *n)
    }
}

/// The names the generated commands draw from.
struct Alphabet {
    hubs: Vec<String>,
    conns: Vec<String>,
    users: Vec<String>,
    groups: Vec<String>,
    nodes: Vec<NodeId>,
}

fn strings(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn names<'a>(it: impl Iterator<Item = &'a Name>) -> Vec<String> {
    let mut v: Vec<String> = it.map(s).collect();
    v.sort();
    v
}

/// Compares every query of `m` with the model, over the whole alphabet.
fn compare(m: &Membership, model: &Model, a: &Alphabet) {
    let now = model.now;
    assert_eq!(m.now_ms(), now);
    let deadline = model
        .nodes
        .values()
        .map(|n| n.lease_until)
        .chain(model.entries.values().map(|e| e.expires))
        .min();
    assert_eq!(m.next_deadline(), deadline);
    let nodes: Vec<NodeInfo> = model
        .nodes
        .iter()
        .map(|(id, n)| NodeInfo {
            node: *id,
            incarnation: n.incarnation,
            address: n.address.clone(),
            lease_until_ms: n.lease_until,
        })
        .collect();
    assert_eq!(m.nodes().cloned().collect::<Vec<_>>(), nodes);
    let groups: BTreeSet<(String, String)> = model
        .members
        .iter()
        .map(|(h, g, _)| (h.clone(), g.clone()))
        .collect();
    assert_eq!(
        m.stats(),
        Stats {
            nodes: model.nodes.len(),
            connections: model.conns.len(),
            groups: groups.len(),
            user_group_entries: model.entries.len(),
        }
    );
    for node in &a.nodes {
        assert_eq!(m.node(*node), nodes.iter().find(|n| n.node == *node));
        let mut on_node: Vec<Key2> = m
            .connections_on_node(*node)
            .map(|(h, c)| (s(h), s(c)))
            .collect();
        on_node.sort();
        let expected: Vec<Key2> = model
            .conns
            .iter()
            .filter(|(_, (_, n))| n == node)
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(on_node, expected, "connections on node {node}");
    }
    for hub in &a.hubs {
        let hub_nodes: BTreeSet<NodeId> = model
            .conns
            .iter()
            .filter(|((h, _), _)| h == hub)
            .map(|(_, (_, n))| *n)
            .collect();
        assert_eq!(
            m.hub_nodes(hub).collect::<Vec<_>>(),
            hub_nodes.into_iter().collect::<Vec<_>>(),
            "nodes of hub {hub}"
        );
        let hub_conns: Vec<(String, Option<String>)> = model
            .conns
            .iter()
            .filter(|((h, _), _)| h == hub)
            .map(|((_, c), (u, _))| (c.clone(), u.clone()))
            .collect();
        check_pages(&hub_conns, |after, limit| {
            m.hub_connections_page(hub, after, limit)
                .into_iter()
                .map(|(c, u)| (s(&c), u.as_ref().map(s)))
                .collect()
        });
        let mut hub_groups: BTreeMap<String, usize> = BTreeMap::new();
        for (_, g, _) in model.members.iter().filter(|(h, _, _)| h == hub) {
            *hub_groups.entry(g.clone()).or_default() += 1;
        }
        let hub_groups: Vec<(String, usize)> = hub_groups.into_iter().collect();
        check_pages(&hub_groups, |after, limit| {
            m.hub_groups_page(hub, after, limit)
                .into_iter()
                .map(|(g, n)| (s(&g), n))
                .collect()
        });
        let users_online: BTreeSet<&String> =
            hub_conns.iter().filter_map(|(_, u)| u.as_ref()).collect();
        let entries = model.entries.keys().filter(|(h, _, _)| h == hub).count();
        let counts = m.hub_counts().into_iter().find(|c| &*c.hub == hub);
        if hub_conns.is_empty() && entries == 0 {
            assert_eq!(counts, None, "a hub holding nothing is not counted");
        } else {
            assert_eq!(
                counts,
                Some(HubCounts {
                    hub: Name::from(hub.as_str()),
                    connections: hub_conns.len(),
                    users: users_online.len(),
                    groups: hub_groups.len(),
                    user_group_entries: entries,
                }),
                "counts of {hub}"
            );
        }
        for conn in &a.conns {
            let expected =
                model
                    .conns
                    .get(&(hub.clone(), conn.clone()))
                    .map(|(u, n)| ConnectionInfo {
                        user: u.as_deref().map(Name::from),
                        node: *n,
                    });
            assert_eq!(m.connection(hub, conn), expected);
            let groups: Vec<String> = model
                .members
                .iter()
                .filter(|(h, _, c)| h == hub && c == conn)
                .map(|(_, g, _)| g.clone())
                .collect();
            assert_eq!(
                names(m.connection_groups(hub, conn)),
                groups,
                "groups of {hub}/{conn}"
            );
            check_pages(&groups, |after, limit| {
                m.connection_groups_page(hub, conn, after, limit)
                    .iter()
                    .map(s)
                    .collect()
            });
        }
        for user in &a.users {
            let conns = strings(&model.user_connections(hub, user));
            assert_eq!(m.user_has_connections(hub, user), !conns.is_empty());
            let mut got: Vec<(String, NodeId)> = m
                .user_connections(hub, user)
                .map(|(c, n)| (s(c), n))
                .collect();
            got.sort();
            let expected: Vec<(String, NodeId)> = conns
                .iter()
                .map(|c| (c.clone(), model.node_of(hub, c).unwrap_or(0)))
                .collect();
            assert_eq!(got, expected, "connections of {hub}/{user}");
            check_pages(&conns, |after, limit| {
                m.user_connections_page(hub, user, after, limit)
                    .iter()
                    .map(s)
                    .collect()
            });
            let user_nodes: BTreeSet<NodeId> = expected.iter().map(|(_, n)| *n).collect();
            assert_eq!(
                m.user_nodes(hub, user).collect::<Vec<_>>(),
                user_nodes.into_iter().collect::<Vec<_>>()
            );
            for node in &a.nodes {
                let on: Vec<String> = expected
                    .iter()
                    .filter(|(_, n)| n == node)
                    .map(|(c, _)| c.clone())
                    .collect();
                assert_eq!(names(m.user_connections_on_node(hub, user, *node)), on);
            }
            for at in [now, now + 2_500] {
                let entries: Vec<UserGroupInfo> = model
                    .entries
                    .iter()
                    .filter(|((h, u, _), e)| h == hub && u == user && e.expires > at)
                    .map(|((_, _, g), e)| UserGroupInfo {
                        group: Name::from(g.as_str()),
                        expires_at_ms: e.expires,
                        counts_toward_cap: e.counts,
                    })
                    .collect();
                assert_eq!(
                    m.user_groups(hub, user, at),
                    entries,
                    "user groups of {hub}/{user} at {at}"
                );
                for group in &a.groups {
                    // The stored entry alone, never the connections that joined through it.
                    let stored = entries.iter().any(|e| &*e.group == group);
                    assert_eq!(
                        m.user_in_group(hub, user, group, at),
                        stored,
                        "{hub}/{user} in {group}"
                    );
                }
            }
        }
        for group in &a.groups {
            let members = model.group_members(hub, group);
            assert_eq!(m.group_has_connections(hub, group), !members.is_empty());
            let group_nodes: BTreeSet<NodeId> = members
                .iter()
                .filter_map(|c| model.node_of(hub, c))
                .collect();
            assert_eq!(
                m.group_nodes(hub, group).collect::<Vec<_>>(),
                group_nodes.into_iter().collect::<Vec<_>>()
            );
            for node in &a.nodes {
                let on: Vec<String> = members
                    .iter()
                    .filter(|c| model.node_of(hub, c) == Some(*node))
                    .cloned()
                    .collect();
                let got: Vec<String> = m
                    .group_connections_on_node(hub, group, *node)
                    .map(s)
                    .collect();
                assert_eq!(got, on, "{hub}/{group} on {node}, ascending");
            }
            let with_users: Vec<(String, Option<String>)> = members
                .iter()
                .map(|c| {
                    (
                        c.clone(),
                        model
                            .conns
                            .get(&(hub.clone(), c.clone()))
                            .and_then(|(u, _)| u.clone()),
                    )
                })
                .collect();
            let page = |after: Option<&str>, limit: usize| -> Vec<(String, Option<String>)> {
                m.group_connections_page(hub, group, after, limit)
                    .into_iter()
                    .map(|(c, u)| (s(&c), u.as_ref().map(s)))
                    .collect()
            };
            assert_eq!(page(None, usize::MAX), with_users);
            for after in std::iter::once(None).chain(a.conns.iter().map(|c| Some(c.as_str()))) {
                for limit in [0, 1, 2] {
                    let expected: Vec<(String, Option<String>)> = with_users
                        .iter()
                        .filter(|(c, _)| after.is_none_or(|a| c.as_str() > a))
                        .take(limit)
                        .cloned()
                        .collect();
                    assert_eq!(
                        page(after, limit),
                        expected,
                        "page of {hub}/{group} after {after:?}"
                    );
                }
            }
        }
    }
}

/// Something listed in pages, ordered by its key.
trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for String {
    fn key(&self) -> &str {
        self
    }
}

impl<T> Keyed for (String, T) {
    fn key(&self) -> &str {
        &self.0
    }
}

/// `page(after, limit)` against `all` (ascending by key): the whole list at once, and every
/// page after every listed key (and from the start) for small limits.
fn check_pages<T: Keyed + Clone + PartialEq + std::fmt::Debug>(
    all: &[T],
    page: impl Fn(Option<&str>, usize) -> Vec<T>,
) {
    assert_eq!(page(None, usize::MAX), all, "everything at once");
    let afters = std::iter::once(None).chain(all.iter().map(|t| Some(t.key())));
    for after in afters.chain([Some(""), Some("~")]) {
        for limit in [0, 1, 2] {
            let expected: Vec<T> = all
                .iter()
                .filter(|t| after.is_none_or(|a| t.key() > a))
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(page(after, limit), expected, "after {after:?}, {limit}");
        }
    }
}

fn pick(prefix: &'static str, count: usize) -> impl Strategy<Value = Name> {
    (0..count).prop_map(move |i| Name::from(format!("{prefix}{i}")))
}

const HUBS: usize = 2;
const CONNS: usize = 6;
const USERS: usize = 3;
const GROUPS: usize = 4;
const NODES: u64 = 3;

fn alphabet(groups: usize) -> Alphabet {
    Alphabet {
        hubs: (0..HUBS).map(|i| format!("h{i}")).collect(),
        conns: (0..CONNS).map(|i| format!("c{i}")).collect(),
        users: (0..USERS).map(|i| format!("u{i}")).collect(),
        groups: (0..groups).map(|i| format!("g{i}")).collect(),
        nodes: (1..=NODES + 1).collect(),
    }
}

fn incarnation() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(1u64), 1 => Just(2u64)]
}

fn ttl() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![2 => Just(None), 1 => Just(Some(0)), 3 => (1..=5u32).prop_map(Some)]
}

fn command() -> impl Strategy<Value = Command> {
    let hub = || pick("h", HUBS);
    let conn = || pick("c", CONNS);
    let user = || pick("u", USERS);
    let group = || pick("g", GROUPS);
    let node = || 1..=NODES;
    prop_oneof![
        3 => (node(), incarnation(), prop_oneof![1 => Just(0u64), 1 => Just(1_000), 2 => Just(10_000), 4 => Just(30_000)], prop_oneof![Just("a"), Just("b")])
            .prop_map(|(node, incarnation, lease_ms, address)| Command::NodeHeartbeat { node, incarnation, address: address.to_string(), lease_ms }),
        1 => (node(), incarnation()).prop_map(|(node, incarnation)| Command::NodeLeft { node, incarnation }),
        6 => (hub(), conn(), proptest::option::weighted(0.7, user()), node(), incarnation())
            .prop_map(|(hub, connection, user, node, incarnation)| Command::ConnectionOpened { hub, connection, user, node, incarnation }),
        2 => (hub(), conn()).prop_map(|(hub, connection)| Command::ConnectionClosed { hub, connection }),
        4 => (hub(), group(), conn()).prop_map(|(hub, group, connection)| Command::AddConnectionToGroup { hub, group, connection }),
        2 => (hub(), group(), conn()).prop_map(|(hub, group, connection)| Command::RemoveConnectionFromGroup { hub, group, connection }),
        1 => (hub(), conn()).prop_map(|(hub, connection)| Command::RemoveConnectionFromAllGroups { hub, connection }),
        4 => (hub(), user(), group(), ttl()).prop_map(|(hub, user, group, ttl_secs)| Command::AddUserToGroup { hub, user, group, ttl_secs }),
        2 => (hub(), user(), group()).prop_map(|(hub, user, group)| Command::RemoveUserFromGroup { hub, user, group }),
        1 => (hub(), user()).prop_map(|(hub, user)| Command::RemoveUserFromAllGroups { hub, user }),
        1 => Just(Command::Tick),
    ]
}

/// Batches as (time step, commands); steps may be negative (a leader whose clock is behind).
fn batches(
    command: impl Strategy<Value = Command>,
    steps: std::ops::Range<i64>,
    per_batch: usize,
    count: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<Batch>> {
    prop::collection::vec((steps, prop::collection::vec(command, 0..per_batch)), count).prop_map(
        |raw| {
            let mut clock: i64 = 1_000_000;
            raw.into_iter()
                .map(|(step, commands)| {
                    clock += step;
                    Batch {
                        time_ms: clock.max(0) as u64,
                        commands,
                    }
                })
                .collect()
        },
    )
}

/// Applies `batches` to a state, the model and (from `split` on) a replica restored from a
/// snapshot of the state, checking everything after every batch.
fn run(batches: &[Batch], split: usize, a: &Alphabet) {
    let mut m = Membership::new();
    let mut model = Model::default();
    let mut replica: Option<Membership> = None;
    for (i, batch) in batches.iter().enumerate() {
        if i == split {
            let json = serde_json::to_string(&m).expect("serialize");
            let restored: Membership = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(restored, m, "snapshot round trip");
            replica = Some(restored);
        }
        let out = m.apply(batch);
        let expected = model.apply(batch);
        assert_eq!(out, expected, "outcomes of batch {i}: {batch:?}");
        m.check_invariants();
        compare(&m, &model, a);
        if let Some(r) = replica.as_mut() {
            assert_eq!(r.apply(batch), out);
        }
    }
    let json = serde_json::to_string(&m).expect("serialize");
    let restored: Membership = serde_json::from_str(&json).expect("deserialize");
    restored.check_invariants();
    assert_eq!(restored, m, "final snapshot round trip");
    if let Some(r) = replica {
        assert_eq!(r, m, "a replica restored mid-way agrees");
        assert_eq!(
            serde_json::to_string(&r).expect("serialize"),
            json,
            "and writes the same bytes"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_reference_model(
        batches in batches(command(), -2_000..4_000, 8, 1..40),
        split in any::<prop::sample::Index>(),
    ) {
        // Nodes 1 and 2 start registered (node 3 only when the commands register it).
        let mut all = vec![Batch {
            time_ms: 1_000_000,
            commands: (1..=2)
                .map(|node| Command::NodeHeartbeat { node, incarnation: 1, address: "a".into(), lease_ms: 30_000 })
                .collect(),
        }];
        all.extend(batches);
        let split = split.index(all.len() + 1);
        run(&all, split, &alphabet(GROUPS));
    }
}

const CAP_GROUPS: usize = MAX_GROUPS_WITHOUT_TTL + 40;

/// Mostly user-group adds over more groups than the cap, for two users in one hub.
fn cap_command() -> impl Strategy<Value = Command> {
    let hub = || Just(Name::from("h0"));
    let user = || prop_oneof![4 => Just(Name::from("u0")), 1 => Just(Name::from("u1"))];
    let group = || pick("g", CAP_GROUPS);
    let ttl = prop_oneof![12 => Just(None), 1 => Just(Some(0)), 2 => (1..=5u32).prop_map(Some)];
    prop_oneof![
        40 => (hub(), user(), group(), ttl).prop_map(|(hub, user, group, ttl_secs)| Command::AddUserToGroup { hub, user, group, ttl_secs }),
        1 => (hub(), user(), group()).prop_map(|(hub, user, group)| Command::RemoveUserFromGroup { hub, user, group }),
        2 => (hub(), pick("c", 3), user()).prop_map(|(hub, connection, user)| Command::ConnectionOpened {
            hub, connection, user: Some(user), node: 1, incarnation: 1
        }),
        1 => (hub(), pick("c", 3)).prop_map(|(hub, connection)| Command::ConnectionClosed { hub, connection }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_cap_matches_the_reference_model(
        batches in batches(cap_command(), 0..1_500, 200, 4..8),
        split in any::<prop::sample::Index>(),
    ) {
        // Start near the cap so the random part crosses it often.
        let mut prefix = vec![Command::NodeHeartbeat { node: 1, incarnation: 1, address: "a".into(), lease_ms: u64::MAX / 4 }];
        for (user, count) in [("u0", MAX_GROUPS_WITHOUT_TTL - 5), ("u1", MAX_GROUPS_WITHOUT_TTL / 2)] {
            prefix.extend((0..count).map(|i| Command::AddUserToGroup {
                hub: Name::from("h0"),
                user: Name::from(user),
                group: Name::from(format!("g{i}")),
                ttl_secs: None,
            }));
        }
        let mut all = vec![Batch { time_ms: 1_000_000, commands: prefix }];
        all.extend(batches);
        let split = split.index(all.len() + 1);
        let mut a = alphabet(CAP_GROUPS);
        a.hubs.truncate(1);
        a.users.truncate(2);
        a.conns.truncate(3);
        a.nodes = vec![1];
        run(&all, split, &a);
    }
}
