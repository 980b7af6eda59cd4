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
//! entries stay in the store; a new connection joins its user's live groups read from the
//! store's view, under this state's lock, so a user-group change being applied meanwhile
//! (`apply_after`) reaches it either way.

use parking_lot::{RwLock, RwLockReadGuard};
use switchboard_core::NodeId;
use switchboard_membership::{Batch, Command, Membership, Name, Outcome};

/// The lease of the one node the local state holds: long enough never to end at time 0.
const NEVER: u64 = u64::MAX / 4;

/// See the module docs.
pub struct LocalPresence {
    node: NodeId,
    state: RwLock<Membership>,
}

impl LocalPresence {
    pub fn new(node: NodeId) -> Self {
        let mut state = Membership::default();
        state.apply(&Batch {
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
            state: RwLock::new(state),
        }
    }

    /// Read access for queries; hold it briefly.
    pub fn read(&self) -> RwLockReadGuard<'_, Membership> {
        self.state.read()
    }

    /// Adds a connection and joins it to `groups` (its user's live groups); false if its id is
    /// here already.
    pub fn open(
        &self,
        hub: &Name,
        connection: &Name,
        user: Option<&Name>,
        groups: impl Fn() -> Vec<Name>,
    ) -> bool {
        let mut state = self.state.write();
        if state.connection(hub, connection).is_some() {
            return false;
        }
        let mut commands = vec![Command::ConnectionOpened {
            hub: hub.clone(),
            connection: connection.clone(),
            user: user.cloned(),
            node: self.node,
            incarnation: 1,
        }];
        // Read under this state's lock: see the module docs.
        commands.extend(
            groups()
                .into_iter()
                .map(|group| Command::AddConnectionToGroup {
                    hub: hub.clone(),
                    group,
                    connection: connection.clone(),
                }),
        );
        state.apply(&Batch {
            time_ms: 0,
            commands,
        });
        true
    }

    /// Removes a connection and its group memberships.
    pub fn close(&self, hub: &Name, connection: &Name) {
        self.apply(Command::ConnectionClosed {
            hub: hub.clone(),
            connection: connection.clone(),
        });
    }

    /// Applies a change to connections held here (see [`is_local_change`]); whether it named
    /// one (a connection here, or a user with a connection here).
    pub fn apply(&self, command: Command) -> bool {
        let found = match &command {
            Command::AddUserToGroup { hub, user, .. }
            | Command::RemoveUserFromGroup { hub, user, .. }
            | Command::RemoveUserFromAllGroups { hub, user } => {
                self.read().user_has_connections(hub, user)
            }
            _ => true,
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
        let outcome = self.state.write().apply(&Batch {
            time_ms: 0,
            commands: vec![command],
        });
        found && !outcome.contains(&Outcome::ConnectionNotFound)
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

    #[test]
    fn a_connection_joins_its_users_groups_and_leaves_with_them() {
        let local = LocalPresence::new(7);
        assert!(local.open(&n("h"), &n("c1"), Some(&n("u")), || vec![n("g")]));
        assert!(
            !local.open(&n("h"), &n("c1"), None, Vec::new),
            "an id opens once"
        );
        assert!(local.open(&n("h"), &n("c2"), Some(&n("u")), Vec::new));
        assert!(local.read().group_has_connections("h", "g"));
        // A user-group add reaches every current connection of the user, nothing is stored.
        assert!(local.apply(Command::AddUserToGroup {
            hub: n("h"),
            user: n("u"),
            group: n("g2"),
            ttl_secs: None,
        }));
        let members: Vec<_> = local
            .read()
            .group_connections_page("h", "g2", None, 10)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(members, vec![n("c1"), n("c2")]);
        assert!(!local.read().user_in_group("h", "u", "g2", 0));
        assert!(!local.apply(Command::AddUserToGroup {
            hub: n("h"),
            user: n("nobody"),
            group: n("g2"),
            ttl_secs: None,
        }));
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
