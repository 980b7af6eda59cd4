//! Presence of this gateway's own connections: which hub and user each belongs to and which
//! groups each is in.
//!
//! This is soft state, owned by the gateway that holds the sockets, and never written to the
//! Raft log: a connect or a disconnect, or a connection joining a group, costs no consensus
//! round and no disk write. It is exactly as long-lived as the connections themselves, so a
//! gateway that dies takes it along, and the cluster forgets those connections as soon as the
//! store stops listing the gateway (its lease). Other gateways ask for it (`scatter`) instead of
//! replicating it, so a gateway's memory grows with its own connections only.
//!
//! The state is the membership state machine itself ([`Membership`]) holding one node that
//! never expires and no stored user-group entries: the same rules (a connection's groups end
//! with it, a user's connections join and leave together, pages in id order) with none of the
//! durable parts. Commands apply at a fixed time (nothing here expires). The durable user-group
//! entries stay in the store. Each user-group change arrives with the index of the log entry
//! that wrote it, and each user with a connection here remembers the index its connections
//! reflect: a new connection joins its user's live groups as the store's view has them (at the
//! view's applied index, read under this state's lock), and a change at or below the
//! remembered index is already reflected — a change retried late, or overtaken by a newer one,
//! is dropped instead of undoing what came after it.

use std::collections::HashMap;

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};
use switchboard_core::NodeId;
use switchboard_membership::{Batch, Command, Membership, Name, Outcome};

/// The lease of the one node the local state holds: long enough never to end at time 0.
const NEVER: u64 = u64::MAX / 4;

/// See the module docs.
pub struct LocalPresence {
    node: NodeId,
    state: RwLock<Inner>,
}

struct Inner {
    membership: Membership,
    /// `(hub, user)` → the log index the user's connections here reflect; only users with a
    /// connection here.
    marks: HashMap<(Name, Name), u64>,
}

impl Inner {
    fn apply(&mut self, commands: Vec<Command>) -> Vec<Outcome> {
        self.membership.apply(&Batch {
            time_ms: 0,
            commands,
        })
    }
}

impl LocalPresence {
    pub fn new(node: NodeId) -> Self {
        let mut membership = Membership::default();
        membership.apply(&Batch {
            time_ms: 0,
            commands: vec![Command::NodeHeartbeat {
                node,
                incarnation: 1,
                address: String::new(),
                lease_ms: NEVER,
            }],
        });
        LocalPresence {
            node,
            state: RwLock::new(Inner {
                membership,
                marks: HashMap::new(),
            }),
        }
    }

    /// Read access for queries; hold it briefly.
    pub fn read(&self) -> MappedRwLockReadGuard<'_, Membership> {
        RwLockReadGuard::map(self.state.read(), |inner| &inner.membership)
    }

    /// Adds a connection and joins it to its user's live groups, which `groups` reads from the
    /// store's view with the view's applied index; false if its id is here already.
    pub fn open(
        &self,
        hub: &Name,
        connection: &Name,
        user: Option<&Name>,
        groups: impl Fn() -> (Vec<Name>, u64),
    ) -> bool {
        let mut inner = self.state.write();
        if inner.membership.connection(hub, connection).is_some() {
            return false;
        }
        let mut commands = vec![Command::ConnectionOpened {
            hub: hub.clone(),
            connection: connection.clone(),
            user: user.cloned(),
            node: self.node,
            incarnation: 1,
        }];
        if let Some(user) = user {
            // Read under this state's lock: see the module docs.
            let (live, index) = groups();
            commands.extend(live.into_iter().map(|group| Command::AddConnectionToGroup {
                hub: hub.clone(),
                group,
                connection: connection.clone(),
            }));
            let mark = inner.marks.entry((hub.clone(), user.clone())).or_insert(0);
            *mark = (*mark).max(index);
        }
        inner.apply(commands);
        true
    }

    /// Removes a connection and its group memberships.
    pub fn close(&self, hub: &Name, connection: &Name) {
        let mut inner = self.state.write();
        let user = inner
            .membership
            .connection(hub, connection)
            .and_then(|c| c.user);
        inner.apply(vec![Command::ConnectionClosed {
            hub: hub.clone(),
            connection: connection.clone(),
        }]);
        if let Some(user) = user {
            if !inner.membership.user_has_connections(hub, &user) {
                inner.marks.remove(&(hub.clone(), user));
            }
        }
    }

    /// Applies a change to one connection held here (a connection-group change); whether the
    /// connection is here.
    pub fn apply(&self, command: Command) -> bool {
        let outcome = self.state.write().apply(vec![command]);
        !outcome.contains(&Outcome::ConnectionNotFound)
    }

    /// Applies a user-group change written at log index `index` to the user's connections
    /// here, unless they already reflect it (see the module docs); whether the user has a
    /// connection here.
    pub fn apply_user_change(&self, command: Command, index: u64) -> bool {
        let (hub, user) = match &command {
            Command::AddUserToGroup { hub, user, .. }
            | Command::RemoveUserFromGroup { hub, user, .. }
            | Command::RemoveUserFromAllGroups { hub, user } => (hub.clone(), user.clone()),
            _ => return false,
        };
        let command = match command {
            // Only the user's current connections: nothing is stored here.
            Command::AddUserToGroup {
                hub, user, group, ..
            } => Command::AddUserToGroup {
                hub,
                user,
                group,
                ttl_secs: Some(0),
            },
            other => other,
        };
        let mut inner = self.state.write();
        if !inner.membership.user_has_connections(&hub, &user) {
            return false;
        }
        let mark = inner.marks.entry((hub, user)).or_insert(0);
        if *mark >= index {
            return true;
        }
        *mark = index;
        inner.apply(vec![command]);
        true
    }
}

/// Whether `command` is one a gateway applies to the connections it holds (and another gateway
/// may ask it to): a connection's groups, or a user-group change reaching the user's current
/// connections. Everything else is the store's.
pub fn is_local_change(command: &Command) -> bool {
    matches!(
        command,
        Command::AddConnectionToGroup { .. }
            | Command::RemoveConnectionFromGroup { .. }
            | Command::RemoveConnectionFromAllGroups { .. }
            | Command::AddUserToGroup { .. }
            | Command::RemoveUserFromGroup { .. }
            | Command::RemoveUserFromAllGroups { .. }
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn n(s: &str) -> Name {
        s.into()
    }

    fn none() -> (Vec<Name>, u64) {
        (Vec::new(), 0)
    }

    fn add(user: &str, group: &str) -> Command {
        Command::AddUserToGroup {
            hub: n("h"),
            user: n(user),
            group: n(group),
            ttl_secs: None,
        }
    }

    fn remove(user: &str, group: &str) -> Command {
        Command::RemoveUserFromGroup {
            hub: n("h"),
            user: n(user),
            group: n(group),
        }
    }

    fn in_group(local: &LocalPresence, group: &str) -> bool {
        local.read().group_has_connections("h", group)
    }

    #[test]
    fn a_user_change_older_than_what_the_connections_reflect_is_dropped() {
        let local = LocalPresence::new(7);
        // The connection read the store at index 10: the user was in "a".
        assert!(local.open(&n("h"), &n("c"), Some(&n("u")), || (vec![n("a")], 10)));
        // A removal written at 9 was already reflected by that read.
        assert!(local.apply_user_change(remove("u", "a"), 9));
        assert!(in_group(&local, "a"));
        // An add at 12, then a removal at 13 that overtakes a retried add at 12.
        assert!(local.apply_user_change(remove("u", "b"), 13));
        assert!(local.apply_user_change(add("u", "b"), 12));
        assert!(!in_group(&local, "b"), "a late retry resurrected a removal");
        assert!(local.apply_user_change(add("u", "b"), 14));
        assert!(in_group(&local, "b"));
        // The mark goes with the user's last connection.
        local.close(&n("h"), &n("c"));
        assert!(local.state.read().marks.is_empty());
    }

    #[test]
    fn a_connection_joins_its_users_groups_and_leaves_with_them() {
        let local = LocalPresence::new(7);
        assert!(local.open(&n("h"), &n("c1"), Some(&n("u")), || (vec![n("g")], 5)));
        assert!(
            !local.open(&n("h"), &n("c1"), None, none),
            "an id opens once"
        );
        assert!(local.open(&n("h"), &n("c2"), Some(&n("u")), none));
        assert!(local.read().group_has_connections("h", "g"));
        // A user-group add reaches every current connection of the user, nothing is stored.
        assert!(local.apply_user_change(add("u", "g2"), 6));
        let members: Vec<_> = local
            .read()
            .group_connections_page("h", "g2", None, 10)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(members, vec![n("c1"), n("c2")]);
        assert!(!local.read().user_in_group("h", "u", "g2", 0));
        assert!(!local.apply_user_change(add("nobody", "g2"), 7));
        assert!(!local.apply(Command::AddConnectionToGroup {
            hub: n("h"),
            group: n("g"),
            connection: n("missing"),
        }));
        local.close(&n("h"), &n("c1"));
        local.close(&n("h"), &n("c2"));
        assert!(!local.read().group_has_connections("h", "g"));
        assert!(!local.read().user_has_connections("h", "u"));
        assert_eq!(local.read().stats().connections, 0);
    }
}
