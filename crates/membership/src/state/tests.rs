//! Unit tests of the rules, one group of rules at a time.

use std::sync::Arc;

use super::*;
use crate::{ConnectionInfo, Stats, UserGroupInfo};

const HUB: &str = "chat";
const LEASE: u64 = 10_000;
const T0: u64 = 1_000_000;

fn n(s: &str) -> Name {
    Name::from(s)
}

fn hb(node: NodeId, incarnation: u64, lease_ms: u64) -> Command {
    Command::NodeHeartbeat {
        node,
        incarnation,
        address: format!("10.0.0.{node}:7000"),
        lease_ms,
    }
}

fn open_in(hub: &str, conn: &str, user: Option<&str>, node: NodeId, incarnation: u64) -> Command {
    Command::ConnectionOpened {
        hub: n(hub),
        connection: n(conn),
        user: user.map(n),
        node,
        incarnation,
    }
}

fn open(conn: &str, user: Option<&str>, node: NodeId) -> Command {
    open_in(HUB, conn, user, node, 1)
}

fn close(conn: &str) -> Command {
    Command::ConnectionClosed {
        hub: n(HUB),
        connection: n(conn),
    }
}

fn join(conn: &str, group: &str) -> Command {
    Command::AddConnectionToGroup {
        hub: n(HUB),
        group: n(group),
        connection: n(conn),
    }
}

fn leave(conn: &str, group: &str) -> Command {
    Command::RemoveConnectionFromGroup {
        hub: n(HUB),
        group: n(group),
        connection: n(conn),
    }
}

fn leave_all(conn: &str) -> Command {
    Command::RemoveConnectionFromAllGroups {
        hub: n(HUB),
        connection: n(conn),
    }
}

fn add_user(user: &str, group: &str, ttl_secs: Option<u32>) -> Command {
    Command::AddUserToGroup {
        hub: n(HUB),
        user: n(user),
        group: n(group),
        ttl_secs,
    }
}

fn remove_user(user: &str, group: &str) -> Command {
    Command::RemoveUserFromGroup {
        hub: n(HUB),
        user: n(user),
        group: n(group),
    }
}

fn remove_user_all(user: &str) -> Command {
    Command::RemoveUserFromAllGroups {
        hub: n(HUB),
        user: n(user),
    }
}

/// A state with nodes 1 and 2 registered (incarnation 1) at `T0`.
struct Fixture {
    m: Membership,
    t: u64,
}

impl Fixture {
    fn new() -> Self {
        let mut f = Fixture {
            m: Membership::new(),
            t: T0,
        };
        assert_eq!(
            f.run(vec![hb(1, 1, LEASE), hb(2, 1, LEASE)]),
            vec![Outcome::Registered; 2]
        );
        f
    }

    /// Applies `commands` at time `t` (which may be earlier than state time).
    fn at(&mut self, t: u64, commands: Vec<Command>) -> Vec<Outcome> {
        self.t = t;
        let out = self.m.apply(&Batch {
            time_ms: t,
            commands,
        });
        self.m.check_invariants();
        out
    }

    fn run(&mut self, commands: Vec<Command>) -> Vec<Outcome> {
        self.at(self.t, commands)
    }

    fn one(&mut self, command: Command) -> Outcome {
        self.run(vec![command])[0]
    }

    fn groups_of(&self, conn: &str) -> Vec<String> {
        sorted(self.m.connection_groups(HUB, conn))
    }

    fn members(&self, group: &str) -> Vec<String> {
        self.m
            .group_connections_page(HUB, group, None, usize::MAX)
            .into_iter()
            .map(|(c, _)| c.to_string())
            .collect()
    }

    fn user_groups(&self, user: &str) -> Vec<String> {
        self.m
            .user_groups(HUB, user, self.m.now_ms())
            .into_iter()
            .map(|g| g.group.to_string())
            .collect()
    }
}

fn sorted<'a>(it: impl Iterator<Item = &'a Name>) -> Vec<String> {
    let mut v: Vec<String> = it.map(|s| s.to_string()).collect();
    v.sort();
    v
}

// ---- nodes ----

#[test]
fn heartbeat_registers_renews_and_rejects_stale_incarnations() {
    let mut f = Fixture::new();
    let node = f.m.node(1).expect("registered").clone();
    assert_eq!(node.incarnation, 1);
    assert_eq!(node.lease_until_ms, T0 + LEASE);
    f.t += 3_000;
    let renew = Command::NodeHeartbeat {
        node: 1,
        incarnation: 1,
        address: "moved:1".into(),
        lease_ms: LEASE,
    };
    assert_eq!(f.one(renew), Outcome::Renewed);
    let node = f.m.node(1).expect("registered");
    assert_eq!(node.lease_until_ms, T0 + 3_000 + LEASE);
    assert_eq!(node.address, "moved:1");
    assert_eq!(f.one(hb(1, 3, LEASE)), Outcome::Registered);
    assert_eq!(f.one(hb(1, 2, LEASE)), Outcome::StaleIncarnation);
    assert_eq!(f.m.node(1).expect("registered").incarnation, 3);
    assert_eq!(f.m.nodes().map(|n| n.node).collect::<Vec<_>>(), vec![1, 2]);
    // Only the current lease is queued.
    assert_eq!(f.m.next_deadline(), Some(T0 + LEASE));
}

#[test]
fn a_higher_incarnation_drops_the_old_incarnations_connections() {
    let mut f = Fixture::new();
    f.run(vec![
        open("a", Some("u"), 1),
        open("b", None, 1),
        open("c", Some("u"), 2),
        join("a", "g"),
        join("c", "g"),
    ]);
    assert_eq!(f.one(hb(1, 2, LEASE)), Outcome::Registered);
    assert_eq!(f.m.connection(HUB, "a"), None);
    assert_eq!(f.m.connection(HUB, "b"), None);
    assert_eq!(f.m.connections_on_node(1).count(), 0);
    assert_eq!(f.members("g"), vec!["c"]);
    assert_eq!(
        f.m.user_connections(HUB, "u")
            .map(|(c, _)| c.to_string())
            .collect::<Vec<_>>(),
        vec!["c"]
    );
    // The old incarnation can no longer open connections; the new one can.
    assert_eq!(
        f.one(open_in(HUB, "d", None, 1, 1)),
        Outcome::StaleIncarnation
    );
    assert_eq!(f.one(open_in(HUB, "d", None, 1, 2)), Outcome::Ok);
}

#[test]
fn lease_expiry_removes_the_node_and_its_connections_and_a_heartbeat_reregisters() {
    let mut f = Fixture::new();
    f.run(vec![
        open("a", Some("u"), 1),
        open("b", Some("u"), 2),
        join("a", "g"),
        add_user("u", "ug", None),
    ]);
    f.at(T0 + 5_000, vec![hb(2, 1, LEASE)]);
    // One millisecond before the deadline the node is still there.
    f.at(T0 + LEASE - 1, vec![Command::Tick]);
    assert!(f.m.node(1).is_some());
    // At the deadline it expires (deadline <= now).
    f.at(T0 + LEASE, vec![Command::Tick]);
    assert_eq!(f.m.node(1), None);
    assert_eq!(f.m.connection(HUB, "a"), None);
    assert!(!f.m.group_has_connections(HUB, "g"));
    assert_eq!(f.m.user_nodes(HUB, "u").collect::<Vec<_>>(), vec![2]);
    // The user's stored entry is not the node's: it stays.
    assert_eq!(f.user_groups("u"), vec!["ug"]);
    // The node's next heartbeat of the same incarnation re-registers: its connections are gone.
    assert_eq!(f.one(hb(1, 1, LEASE)), Outcome::Registered);
    assert_eq!(f.m.connections_on_node(1).count(), 0);
    assert_eq!(f.one(close("a")), Outcome::ConnectionNotFound);
}

#[test]
fn a_connection_of_an_expired_lease_is_refused() {
    let mut f = Fixture::new();
    f.at(T0 + LEASE, vec![hb(2, 1, LEASE)]);
    assert_eq!(f.one(open("a", None, 1)), Outcome::StaleIncarnation);
    assert_eq!(f.one(open("a", None, 2)), Outcome::Ok);
    assert_eq!(f.one(open("b", None, 9)), Outcome::StaleIncarnation);
}

#[test]
fn node_left_removes_the_node_at_once_unless_stale() {
    let mut f = Fixture::new();
    f.run(vec![
        hb(1, 2, LEASE),
        open_in(HUB, "a", Some("u"), 1, 2),
        open("b", None, 2),
    ]);
    assert_eq!(
        f.one(Command::NodeLeft {
            node: 1,
            incarnation: 1
        }),
        Outcome::StaleIncarnation
    );
    assert!(f.m.connection(HUB, "a").is_some());
    assert_eq!(
        f.one(Command::NodeLeft {
            node: 1,
            incarnation: 2
        }),
        Outcome::Ok
    );
    assert_eq!(f.m.node(1), None);
    assert_eq!(f.m.connection(HUB, "a"), None);
    assert!(!f.m.user_has_connections(HUB, "u"));
    assert_eq!(f.m.next_deadline(), Some(T0 + LEASE), "node 2's lease only");
    assert_eq!(f.m.node_deadlines.len(), 1);
    // Leaving again is harmless.
    assert_eq!(
        f.one(Command::NodeLeft {
            node: 1,
            incarnation: 2
        }),
        Outcome::Ok
    );
    // A newer incarnation leaving also ends the older registration.
    assert_eq!(
        f.one(Command::NodeLeft {
            node: 2,
            incarnation: 5
        }),
        Outcome::Ok
    );
    assert_eq!(f.m.nodes().count(), 0);
    assert!(f.m.hubs.is_empty());
}

// ---- connections ----

#[test]
fn connection_opened_is_idempotent_and_queryable() {
    let mut f = Fixture::new();
    assert_eq!(f.one(open("a", Some("u"), 1)), Outcome::Ok);
    assert_eq!(f.one(open("a", Some("u"), 1)), Outcome::Ok);
    assert_eq!(
        f.m.connection(HUB, "a"),
        Some(ConnectionInfo {
            user: Some(n("u")),
            node: 1
        })
    );
    assert_eq!(f.m.stats().connections, 1);
    assert_eq!(f.one(open("b", None, 2)), Outcome::Ok);
    assert_eq!(
        f.m.connection(HUB, "b"),
        Some(ConnectionInfo {
            user: None,
            node: 2
        })
    );
    assert!(f.m.user_has_connections(HUB, "u"));
    assert!(!f.m.user_has_connections(HUB, "v"));
    let on1: Vec<(String, String)> =
        f.m.connections_on_node(1)
            .map(|(h, c)| (h.to_string(), c.to_string()))
            .collect();
    assert_eq!(on1, vec![(HUB.to_string(), "a".to_string())]);
}

#[test]
fn connection_closed_removes_memberships() {
    let mut f = Fixture::new();
    f.run(vec![
        open("a", Some("u"), 1),
        open("b", Some("u"), 1),
        join("a", "g"),
        join("a", "h"),
        join("b", "g"),
    ]);
    assert_eq!(f.one(close("a")), Outcome::Ok);
    assert_eq!(f.one(close("a")), Outcome::ConnectionNotFound);
    assert_eq!(f.members("g"), vec!["b"]);
    assert!(!f.m.group_has_connections(HUB, "h"));
    assert_eq!(f.groups_of("a"), Vec::<String>::new());
    assert_eq!(f.m.user_connections(HUB, "u").count(), 1);
}

#[test]
fn connection_group_operations() {
    let mut f = Fixture::new();
    f.run(vec![open("a", None, 1), open("b", None, 2)]);
    assert_eq!(f.one(join("a", "g")), Outcome::Ok);
    assert_eq!(f.one(join("a", "g")), Outcome::Ok);
    assert_eq!(f.one(join("a", "h")), Outcome::Ok);
    assert_eq!(f.one(join("b", "g")), Outcome::Ok);
    assert_eq!(f.one(join("x", "g")), Outcome::ConnectionNotFound);
    assert_eq!(f.groups_of("a"), vec!["g", "h"]);
    assert_eq!(f.members("g"), vec!["a", "b"]);
    assert_eq!(f.m.group_nodes(HUB, "g").collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(
        f.one(leave("a", "zzz")),
        Outcome::Ok,
        "not in the group is fine"
    );
    assert_eq!(f.one(leave("x", "g")), Outcome::ConnectionNotFound);
    assert_eq!(f.one(leave("a", "g")), Outcome::Ok);
    assert_eq!(f.m.group_nodes(HUB, "g").collect::<Vec<_>>(), vec![2]);
    assert_eq!(f.one(leave_all("b")), Outcome::Ok);
    assert_eq!(f.one(leave_all("x")), Outcome::ConnectionNotFound);
    assert!(!f.m.group_has_connections(HUB, "g"));
    assert_eq!(f.m.stats().groups, 1, "only h is left");
    let other_hub = Command::AddConnectionToGroup {
        hub: n("other"),
        group: n("g"),
        connection: n("a"),
    };
    assert_eq!(f.one(other_hub), Outcome::ConnectionNotFound);
    assert!(
        !f.m.hubs.contains_key("other"),
        "a failed command creates no hub"
    );
}

// ---- user groups ----

#[test]
fn adding_a_user_joins_current_and_future_connections() {
    let mut f = Fixture::new();
    f.run(vec![open("a", Some("u"), 1), open("z", Some("other"), 1)]);
    assert_eq!(f.one(add_user("u", "g", None)), Outcome::Ok);
    assert_eq!(f.members("g"), vec!["a"]);
    f.one(open("b", Some("u"), 2));
    assert_eq!(f.members("g"), vec!["a", "b"]);
    assert_eq!(
        f.m.user_groups(HUB, "u", f.t),
        vec![UserGroupInfo {
            group: n("g"),
            expires_at_ms: T0 + DEFAULT_USER_GROUP_TTL_SECS * 1000,
            counts_toward_cap: true
        }]
    );
    assert!(f.m.user_in_group(HUB, "u", "g", f.t));
    assert!(!f.m.user_in_group(HUB, "other", "g", f.t));
    assert_eq!(f.m.stats().user_group_entries, 1);
}

#[test]
fn a_user_group_entry_without_connections_is_kept() {
    let mut f = Fixture::new();
    f.one(add_user("u", "g", Some(60)));
    assert!(!f.m.group_has_connections(HUB, "g"));
    assert!(f.m.user_in_group(HUB, "u", "g", f.t));
    assert!(!f.m.user_has_connections(HUB, "u"));
    assert_eq!(f.m.next_deadline(), Some(T0 + LEASE));
    f.at(T0 + 5_000, vec![hb(1, 1, 100_000), hb(2, 1, 100_000)]);
    assert_eq!(f.m.next_deadline(), Some(T0 + 60_000));
}

#[test]
fn ttl_entry_expires_exactly_at_its_deadline_and_joined_connections_stay() {
    let mut f = Fixture::new();
    f.run(vec![
        hb(1, 1, 1_000_000),
        open("a", Some("u"), 1),
        add_user("u", "g", Some(10)),
    ]);
    let deadline = T0 + 10_000;
    assert_eq!(
        f.m.user_groups(HUB, "u", f.t),
        vec![UserGroupInfo {
            group: n("g"),
            expires_at_ms: deadline,
            counts_toward_cap: false
        }]
    );
    // Queries hide an entry whose deadline passed even before a batch purges it.
    assert!(!f.m.user_in_group(HUB, "nobody", "g", f.t));
    f.one(close("a"));
    assert!(f.m.user_in_group(HUB, "u", "g", deadline - 1));
    assert!(!f.m.user_in_group(HUB, "u", "g", deadline));
    assert!(f.m.user_groups(HUB, "u", deadline).is_empty());
    f.one(open("a", Some("u"), 1));
    // Just before the deadline a new connection still joins.
    f.at(deadline - 1, vec![open("b", Some("u"), 1)]);
    assert_eq!(f.groups_of("b"), vec!["g"]);
    // At the deadline the entry is gone and a new connection does not join...
    f.at(deadline, vec![open("c", Some("u"), 1)]);
    assert!(f.groups_of("c").is_empty());
    assert!(f.user_groups("u").is_empty());
    assert_eq!(f.m.stats().user_group_entries, 0);
    // ...but those that joined stay. The user is no longer "in" the group: that answers from
    // the stored entry only, as Azure's emulator does, not from connections that joined through it.
    assert_eq!(f.members("g"), vec!["a", "b"]);
    assert!(!f.m.user_in_group(HUB, "u", "g", deadline));
}

#[test]
fn ttl_zero_joins_current_connections_and_removes_the_stored_entry() {
    let mut f = Fixture::new();
    f.run(vec![open("a", Some("u"), 1), add_user("u", "g", Some(0))]);
    assert_eq!(f.members("g"), vec!["a"]);
    assert!(f.user_groups("u").is_empty());
    // Nothing stored, so the user is not in the group, though its connection is.
    assert!(!f.m.user_in_group(HUB, "u", "g", f.t));
    f.one(join("a", "j"));
    assert!(!f.m.user_in_group(HUB, "u", "j", f.t));
    f.one(open("b", Some("u"), 1));
    assert!(f.groups_of("b").is_empty());
    // An existing entry is removed by ttl=0 (the TTL is set to zero), current connections join.
    f.run(vec![add_user("u", "h", None), add_user("u", "k", Some(30))]);
    assert_eq!(f.user_groups("u"), vec!["h", "k"]);
    f.run(vec![
        add_user("u", "h", Some(0)),
        add_user("u", "k", Some(0)),
    ]);
    assert!(f.user_groups("u").is_empty());
    assert_eq!(f.m.stats().user_group_entries, 0);
    assert!(f.m.entry_deadlines.is_empty());
    assert_eq!(f.groups_of("b"), vec!["h", "k"]);
    f.one(open("c", Some("u"), 1));
    assert!(f.groups_of("c").is_empty());
    // ttl=0 for a user with no connections and no entry leaves nothing behind.
    f.one(add_user("ghost", "g", Some(0)));
    assert!(!f
        .m
        .hubs
        .get(HUB)
        .is_some_and(|h| h.users.contains_key("ghost")));
}

#[test]
fn readding_updates_the_expiry() {
    let mut f = Fixture::new();
    f.one(add_user("u", "g", Some(10)));
    f.at(T0 + 5_000, vec![add_user("u", "g", Some(10))]);
    assert_eq!(f.m.user_groups(HUB, "u", f.t)[0].expires_at_ms, T0 + 15_000);
    assert_eq!(f.m.entry_deadlines.len(), 1);
    f.at(
        T0 + 12_000,
        vec![hb(1, 1, LEASE), hb(2, 1, LEASE), Command::Tick],
    );
    assert_eq!(f.user_groups("u"), vec!["g"]);
    // Shortening works too: the old, later deadline does not linger.
    f.one(add_user("u", "g", Some(1)));
    assert_eq!(f.m.next_deadline(), Some(T0 + 13_000));
    f.at(T0 + 13_000, vec![Command::Tick]);
    assert!(f.user_groups("u").is_empty());
    assert!(f.m.entry_deadlines.is_empty());
}

fn group_name(i: usize) -> String {
    format!("g{i:03}")
}

fn capped_groups(f: &Fixture, user: &str) -> Vec<String> {
    f.m.user_groups(HUB, user, f.t)
        .into_iter()
        .filter(|g| g.counts_toward_cap)
        .map(|g| g.group.to_string())
        .collect()
}

#[test]
fn the_cap_evicts_the_least_recently_updated_entry() {
    let mut f = Fixture::new();
    f.one(open("a", Some("u"), 1));
    let adds: Vec<Command> = (0..MAX_GROUPS_WITHOUT_TTL)
        .map(|i| add_user("u", &group_name(i), None))
        .collect();
    f.run(adds);
    assert_eq!(capped_groups(&f, "u").len(), MAX_GROUPS_WITHOUT_TTL);
    // TTL entries do not count and are never evicted by the cap.
    f.run(vec![
        add_user("u", "ttl-a", Some(3600)),
        add_user("u", "ttl-b", Some(3600)),
    ]);
    // Refreshing g000 makes it the most recent: the 101st evicts g001 instead.
    f.one(add_user("u", &group_name(0), None));
    f.one(add_user("u", "new", None));
    let capped = capped_groups(&f, "u");
    assert_eq!(capped.len(), MAX_GROUPS_WITHOUT_TTL);
    assert!(capped.contains(&group_name(0)));
    assert!(!capped.contains(&group_name(1)));
    assert!(capped.contains(&"new".to_string()));
    assert!(f.m.user_in_group(HUB, "u", "ttl-a", f.t) && f.m.user_in_group(HUB, "u", "ttl-b", f.t));
    // The next one evicts g002, the least recently updated now.
    f.one(add_user("u", "newer", None));
    assert!(!capped_groups(&f, "u").contains(&group_name(2)));
    assert_eq!(f.m.stats().user_group_entries, MAX_GROUPS_WITHOUT_TTL + 2);
    // Eviction removes only the entry: the connection that joined stays in the group, a new
    // connection of the user does not join it.
    assert_eq!(f.members(&group_name(1)), vec!["a"]);
    f.one(open("b", Some("u"), 1));
    assert!(!f.groups_of("b").contains(&group_name(1)));
    assert!(f.groups_of("b").contains(&group_name(0)));
    assert_eq!(f.groups_of("b").len(), MAX_GROUPS_WITHOUT_TTL + 2);
}

#[test]
fn switching_an_entry_between_ttl_and_no_ttl_moves_it_in_and_out_of_the_cap() {
    let mut f = Fixture::new();
    let adds: Vec<Command> = (0..MAX_GROUPS_WITHOUT_TTL)
        .map(|i| add_user("u", &group_name(i), None))
        .collect();
    f.run(adds);
    // g050 gets a TTL: it leaves the capped set, making room for one more without eviction.
    f.one(add_user("u", &group_name(50), Some(60)));
    assert_eq!(capped_groups(&f, "u").len(), MAX_GROUPS_WITHOUT_TTL - 1);
    f.one(add_user("u", "extra", None));
    let capped = capped_groups(&f, "u");
    assert_eq!(capped.len(), MAX_GROUPS_WITHOUT_TTL);
    assert!(capped.contains(&group_name(0)), "nothing was evicted");
    assert_eq!(f.user_groups("u").len(), MAX_GROUPS_WITHOUT_TTL + 1);
    // g050 back without TTL: it counts again (most recent), so g000 is evicted.
    f.one(add_user("u", &group_name(50), None));
    let capped = capped_groups(&f, "u");
    assert_eq!(capped.len(), MAX_GROUPS_WITHOUT_TTL);
    assert!(capped.contains(&group_name(50)));
    assert!(!capped.contains(&group_name(0)));
    assert_eq!(f.user_groups("u").len(), MAX_GROUPS_WITHOUT_TTL);
    // ttl=0 on a capped entry removes it from the cap as well.
    f.one(add_user("u", &group_name(1), Some(0)));
    assert_eq!(capped_groups(&f, "u").len(), MAX_GROUPS_WITHOUT_TTL - 1);
}

#[test]
fn the_cap_is_per_user_and_hub() {
    let mut f = Fixture::new();
    let mut adds: Vec<Command> = (0..MAX_GROUPS_WITHOUT_TTL)
        .map(|i| add_user("u", &group_name(i), None))
        .collect();
    adds.push(add_user("v", "g-v", None));
    adds.push(Command::AddUserToGroup {
        hub: n("other"),
        user: n("u"),
        group: n("g-o"),
        ttl_secs: None,
    });
    f.run(adds);
    assert_eq!(capped_groups(&f, "u").len(), MAX_GROUPS_WITHOUT_TTL);
    assert!(capped_groups(&f, "u").contains(&group_name(0)));
    assert_eq!(capped_groups(&f, "v"), vec!["g-v"]);
}

#[test]
fn remove_user_from_group_removes_the_entry_and_the_users_connections() {
    let mut f = Fixture::new();
    f.run(vec![
        open("a", Some("u"), 1),
        open("b", Some("u"), 2),
        open("c", Some("v"), 1),
        add_user("u", "g", None),
        add_user("u", "h", None),
        join("c", "g"),
    ]);
    assert_eq!(f.one(remove_user("u", "g")), Outcome::Ok);
    assert_eq!(f.members("g"), vec!["c"]);
    assert_eq!(f.groups_of("a"), vec!["h"]);
    assert_eq!(f.user_groups("u"), vec!["h"]);
    assert!(!f.m.user_in_group(HUB, "u", "g", f.t));
    // Connection-level membership is removed too, even without an entry.
    f.one(join("a", "k"));
    f.one(remove_user("u", "k"));
    assert_eq!(f.groups_of("a"), vec!["h"]);
    // Unknown hub / user: nothing to do, nothing created.
    assert_eq!(
        f.one(Command::RemoveUserFromGroup {
            hub: n("nope"),
            user: n("u"),
            group: n("g")
        }),
        Outcome::Ok
    );
    assert!(!f.m.hubs.contains_key("nope"));
    f.one(remove_user("nobody", "g"));
}

#[test]
fn remove_user_from_all_groups_clears_entries_and_every_group_of_the_users_connections() {
    let mut f = Fixture::new();
    f.run(vec![
        open("a", Some("u"), 1),
        open("b", Some("u"), 2),
        open("c", Some("v"), 1),
        add_user("u", "g", None),
        add_user("u", "h", Some(100)),
        join("a", "conn-only"),
        join("c", "g"),
        add_user("v", "g", None),
    ]);
    assert_eq!(f.one(remove_user_all("u")), Outcome::Ok);
    assert!(f.user_groups("u").is_empty());
    assert!(f.groups_of("a").is_empty());
    assert!(f.groups_of("b").is_empty());
    assert_eq!(f.members("g"), vec!["c"]);
    assert!(!f.m.group_has_connections(HUB, "conn-only"));
    assert_eq!(f.user_groups("v"), vec!["g"]);
    assert_eq!(f.m.stats().user_group_entries, 1);
    // New connections of u join nothing.
    f.one(open("d", Some("u"), 1));
    assert!(f.groups_of("d").is_empty());
    // A user with only entries (no connection) is removed entirely.
    f.one(add_user("w", "g", None));
    f.one(remove_user_all("w"));
    assert!(!f.m.hubs.get(HUB).is_some_and(|h| h.users.contains_key("w")));
}

// ---- time ----

#[test]
fn time_never_goes_backwards() {
    let mut f = Fixture::new();
    f.at(T0 + 5_000, vec![Command::Tick]);
    assert_eq!(f.m.now_ms(), T0 + 5_000);
    // A new leader whose clock is behind: state time stays, TTLs count from state time.
    let out = f.at(
        T0 + 1_000,
        vec![add_user("u", "g", Some(10)), Command::Tick],
    );
    assert_eq!(out, vec![Outcome::Ok, Outcome::Ok]);
    assert_eq!(f.m.now_ms(), T0 + 5_000);
    assert_eq!(f.m.user_groups(HUB, "u", 0)[0].expires_at_ms, T0 + 15_000);
    f.at(T0 + 2_000, vec![hb(1, 1, LEASE)]);
    assert_eq!(
        f.m.node(1).expect("registered").lease_until_ms,
        T0 + 5_000 + LEASE
    );
    // Expiry uses state time even when the batch's time is earlier.
    f.at(T0 + 10_000, vec![]);
    assert!(f.m.node(2).is_none(), "node 2's lease ended at T0 + LEASE");
    f.at(0, vec![Command::Tick]);
    assert_eq!(f.m.now_ms(), T0 + 10_000);
}

#[test]
fn tick_only_advances_time() {
    let mut f = Fixture::new();
    f.run(vec![open("a", Some("u"), 1), add_user("u", "g", Some(100))]);
    let before = f.m.clone();
    f.at(T0 + 1, vec![Command::Tick]);
    assert_eq!(f.m.now_ms(), T0 + 1);
    let mut expected = before;
    expected.now_ms = T0 + 1;
    assert_eq!(f.m, expected);
}

#[test]
fn an_empty_batch_still_expires() {
    let mut f = Fixture::new();
    f.one(add_user("u", "g", Some(1)));
    assert_eq!(f.at(T0 + 1_000, vec![]), Vec::<Outcome>::new());
    assert!(f.user_groups("u").is_empty());
}

// ---- isolation and leaks ----

#[test]
fn hubs_are_isolated() {
    let mut f = Fixture::new();
    f.run(vec![
        open_in("h1", "c", Some("u"), 1, 1),
        open_in("h2", "c", Some("u"), 2, 1),
        Command::AddConnectionToGroup {
            hub: n("h1"),
            group: n("g"),
            connection: n("c"),
        },
        Command::AddUserToGroup {
            hub: n("h2"),
            user: n("u"),
            group: n("ug"),
            ttl_secs: None,
        },
    ]);
    assert_eq!(f.m.connection("h1", "c").map(|c| c.node), Some(1));
    assert_eq!(f.m.connection("h2", "c").map(|c| c.node), Some(2));
    assert!(f.m.group_has_connections("h1", "g") && !f.m.group_has_connections("h2", "g"));
    assert!(f.m.group_has_connections("h2", "ug") && !f.m.group_has_connections("h1", "ug"));
    assert_eq!(f.m.user_nodes("h1", "u").collect::<Vec<_>>(), vec![1]);
    assert!(!f.m.user_in_group("h1", "u", "ug", f.t));
    f.one(Command::RemoveUserFromAllGroups {
        hub: n("h1"),
        user: n("u"),
    });
    assert!(f.m.group_has_connections("h2", "ug"));
    assert_eq!(
        f.one(Command::ConnectionClosed {
            hub: n("h1"),
            connection: n("c")
        }),
        Outcome::Ok
    );
    assert!(f.m.connection("h2", "c").is_some());
    assert!(!f.m.hubs.contains_key("h1"));
}

#[test]
fn churn_leaves_no_empty_containers() {
    let mut f = Fixture::new();
    let empty = f.m.clone();
    for round in 0..5u64 {
        let mut cmds = Vec::new();
        for i in 0..30 {
            let c = format!("c{round}-{i}");
            let user = format!("u{}", i % 7);
            let node = 1 + (i % 2) as NodeId;
            cmds.push(open_in(&format!("hub{}", i % 3), &c, Some(&user), node, 1));
            cmds.push(Command::AddConnectionToGroup {
                hub: n(&format!("hub{}", i % 3)),
                group: n(&format!("g{}", i % 5)),
                connection: n(&c),
            });
            cmds.push(Command::AddUserToGroup {
                hub: n(&format!("hub{}", i % 3)),
                user: n(&user),
                group: n(&format!("ug{}", i % 4)),
                ttl_secs: Some(1 + (i % 3) as u32),
            });
        }
        f.run(cmds);
        assert!(f.m.stats().connections > 0);
        let mut closes = Vec::new();
        for i in 0..30 {
            closes.push(Command::ConnectionClosed {
                hub: n(&format!("hub{}", i % 3)),
                connection: n(&format!("c{round}-{i}")),
            });
        }
        assert!(f.run(closes).iter().all(|o| *o == Outcome::Ok));
    }
    // Let every TTL lapse, keeping the nodes alive.
    f.at(f.t + 5_000, vec![hb(1, 1, LEASE), hb(2, 1, LEASE)]);
    assert!(
        f.m.hubs.is_empty(),
        "no hub, user or group record survives its last member"
    );
    assert!(f.m.entry_deadlines.is_empty());
    assert!(f.m.nodes.values().all(|n| n.connections.is_empty()));
    assert_eq!(
        f.m.stats(),
        Stats {
            nodes: 2,
            connections: 0,
            groups: 0,
            user_group_entries: 0
        }
    );
    // Apart from time, leases and the sequence counter, the state is as it started.
    let mut normalized = f.m.clone();
    normalized.now_ms = empty.now_ms;
    normalized.next_seq = empty.next_seq;
    normalized.nodes = empty.nodes.clone();
    normalized.node_deadlines = empty.node_deadlines.clone();
    assert_eq!(normalized, empty);
}

// ---- queries ----

#[test]
fn group_routing_queries_see_only_the_asked_node() {
    let mut f = Fixture::new();
    f.one(hb(3, 1, LEASE));
    let mut cmds = Vec::new();
    for i in 0..30 {
        let c = format!("c{i:02}");
        cmds.push(open(
            &c,
            Some(&format!("u{}", i % 4)),
            1 + (i % 3) as NodeId,
        ));
        cmds.push(join(&c, "g"));
    }
    f.run(cmds);
    assert_eq!(f.m.group_nodes(HUB, "g").collect::<Vec<_>>(), vec![1, 2, 3]);
    let on2: Vec<String> =
        f.m.group_connections_on_node(HUB, "g", 2)
            .map(|c| c.to_string())
            .collect();
    let expected: Vec<String> = (0..30)
        .filter(|i| i % 3 == 1)
        .map(|i| format!("c{i:02}"))
        .collect();
    assert_eq!(on2, expected, "ascending by id");
    assert_eq!(f.m.group_connections_on_node(HUB, "g", 9).count(), 0);
    assert_eq!(f.m.group_connections_on_node(HUB, "nope", 1).count(), 0);
    // Users.
    assert_eq!(f.m.user_nodes(HUB, "u0").collect::<Vec<_>>(), vec![1, 2, 3]);
    let u0_on1: Vec<String> = sorted(f.m.user_connections_on_node(HUB, "u0", 1));
    assert_eq!(u0_on1, vec!["c00", "c12", "c24"]);
    assert_eq!(f.m.user_nodes(HUB, "nobody").count(), 0);
}

#[test]
fn group_pages_merge_nodes_in_id_order() {
    let mut f = Fixture::new();
    let mut cmds = Vec::new();
    for i in 0..25 {
        let c = format!("c{i:02}");
        let user = if i % 2 == 0 { Some("even") } else { None };
        cmds.push(open(&c, user, 1 + (i % 2) as NodeId));
        cmds.push(join(&c, "g"));
    }
    f.run(cmds);
    let mut all = Vec::new();
    let mut after: Option<Name> = None;
    loop {
        let page = f.m.group_connections_page(HUB, "g", after.as_deref(), 10);
        assert!(page.len() <= 10);
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        all.extend(page);
    }
    let ids: Vec<String> = all.iter().map(|(c, _)| c.to_string()).collect();
    let expected: Vec<String> = (0..25).map(|i| format!("c{i:02}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(all[0].1.as_deref(), Some("even"));
    assert_eq!(all[1].1, None);
    // `after` need not be a member.
    let page = f.m.group_connections_page(HUB, "g", Some("c05x"), 2);
    assert_eq!(
        page.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>(),
        vec!["c06", "c07"]
    );
    assert!(f.m.group_connections_page(HUB, "g", None, 0).is_empty());
    assert!(f.m.group_connections_page(HUB, "none", None, 5).is_empty());
}

#[test]
fn user_in_group_answers_from_the_stored_entry_only() {
    let mut f = Fixture::new();
    // A connection of the user in the group is not the user in the group ...
    f.run(vec![open("a", Some("u"), 1), join("a", "g")]);
    assert!(!f.m.user_in_group(HUB, "u", "g", f.t));
    assert!(f.user_groups("u").is_empty());
    // ... a stored entry is, in its hub only, while it lives.
    f.one(add_user("u", "g", Some(5)));
    assert!(f.m.user_in_group(HUB, "u", "g", f.t));
    assert!(!f.m.user_in_group(HUB, "u", "h", f.t));
    assert!(!f.m.user_in_group("other", "u", "g", f.t));
    assert!(!f.m.user_in_group(HUB, "u", "g", f.t + 5_000));
    assert_eq!(f.members("g"), vec!["a"]);
}

#[test]
fn stats_count_everything() {
    let mut f = Fixture::new();
    f.run(vec![
        open("a", Some("u"), 1),
        open_in("h2", "a", None, 2, 1),
        join("a", "g"),
        join("a", "h"),
        add_user("u", "x", None),
        add_user("v", "y", Some(5)),
    ]);
    assert_eq!(
        f.m.stats(),
        Stats {
            nodes: 2,
            connections: 2,
            groups: 3,
            user_group_entries: 2
        }
    );
}

#[test]
fn names_are_shared_between_indexes() {
    let mut f = Fixture::new();
    f.run(vec![
        open("a", Some("u"), 1),
        join("a", "g"),
        add_user("u", "g", None),
    ]);
    let h = f.m.hubs.get(HUB).expect("hub");
    let (conn_key, conn) = h.connections.get_key_value("a").expect("conn");
    let (on_node, ()) = f.m.nodes[&1].connections[HUB]
        .get_key_value("a")
        .expect("node index");
    assert!(Arc::ptr_eq(conn_key, on_node));
    let member = h.groups["g"]
        .members_on(1)
        .and_then(|s| s.get("a"))
        .expect("member");
    assert!(Arc::ptr_eq(conn_key, member));
    let (user_key, _) = h.users.get_key_value("u").expect("user");
    assert!(Arc::ptr_eq(user_key, conn.user.as_ref().expect("user")));
    let (group_key, _) = h.groups.get_key_value("g").expect("group");
    let entry_group = h
        .users
        .get("u")
        .expect("user")
        .entries
        .as_ref()
        .and_then(|e| e.by_group.get_key_value("g"))
        .expect("entry")
        .0;
    assert!(Arc::ptr_eq(group_key, entry_group));
}

#[test]
fn a_burst_of_entries_expires_over_several_batches_and_is_gone_at_once_for_queries() {
    let mut f = Fixture::new();
    let count = MAX_EXPIRED_PER_BATCH + 10;
    let t0 = f.m.now_ms;
    let adds: Vec<Command> = (0..count)
        .map(|i| add_user(&format!("u{i}"), "g", Some(60)))
        .collect();
    f.at(t0, adds);
    assert_eq!(f.m.stats().user_group_entries, count);
    let later = t0 + 61_000;
    f.at(later, vec![Command::Tick]);
    // One batch took the bound; what is left is already past its time for every query.
    assert_eq!(f.m.stats().user_group_entries, 10);
    assert!((0..count).all(|i| !f.m.user_in_group(HUB, &format!("u{i}"), "g", later)));
    assert!(
        f.m.next_deadline().is_some_and(|d| d <= later),
        "the ticker is due again"
    );
    f.at(later, vec![Command::Tick]);
    assert_eq!(f.m.stats().user_group_entries, 0);
    f.m.check_invariants();
}
