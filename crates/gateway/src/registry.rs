//! The connections this gateway holds, by hub.
//!
//! The registry owns nothing but handles: each [`ConnectionHandle`] is shared between the
//! connection's own task (which drains its outbound queue into the socket) and whoever routes a
//! message to it. Which groups a connection is in, and which connections a user has, is the
//! store's knowledge (the membership view); the registry answers only "give me the handle of this
//! local connection" and "every local connection of this hub" (broadcast).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use switchboard_membership::Name;
use switchboard_protocol::Protocol;

use crate::outbound::{CloseRequest, Outbound};

/// One client connection as seen by producers.
pub struct ConnectionHandle {
    pub id: Name,
    pub hub: Name,
    pub user: Option<Name>,
    pub protocol: Protocol,
    pub outbound: Outbound,
    /// Set once the store has acknowledged the connection (it is routable cluster-wide).
    registered: AtomicBool,
}

impl ConnectionHandle {
    pub fn new(id: Name, hub: Name, user: Option<Name>, protocol: Protocol) -> Self {
        ConnectionHandle {
            id,
            hub,
            user,
            protocol,
            outbound: Outbound::new(),
            registered: AtomicBool::new(false),
        }
    }

    pub fn mark_registered(&self) {
        self.registered.store(true, Ordering::Release);
    }

    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    pub fn close(&self, request: CloseRequest) -> bool {
        self.outbound.close(request)
    }
}

type HubConnections = HashMap<Name, Arc<ConnectionHandle>>;

/// See the module docs.
#[derive(Default)]
pub struct Registry {
    hubs: RwLock<HashMap<Name, HubConnections>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the handle; false (and nothing changes) if its id is already taken — a connection
    /// token presented twice.
    pub fn insert(&self, handle: Arc<ConnectionHandle>) -> bool {
        let mut hubs = self.hubs.write();
        let conns = hubs.entry(handle.hub.clone()).or_default();
        if conns.contains_key(&handle.id) {
            return false;
        }
        conns.insert(handle.id.clone(), handle);
        true
    }

    /// Removes the handle if it is the one registered for its id.
    pub fn remove(&self, handle: &ConnectionHandle) {
        let mut hubs = self.hubs.write();
        if let Some(conns) = hubs.get_mut(&handle.hub) {
            if conns
                .get(&handle.id)
                .is_some_and(|h| std::ptr::eq(Arc::as_ptr(h), handle))
            {
                conns.remove(&handle.id);
            }
            if conns.is_empty() {
                hubs.remove(&handle.hub);
            }
        }
    }

    pub fn get(&self, hub: &str, id: &str) -> Option<Arc<ConnectionHandle>> {
        self.hubs.read().get(hub)?.get(id).cloned()
    }

    pub fn contains(&self, hub: &str, id: &str) -> bool {
        self.hubs
            .read()
            .get(hub)
            .is_some_and(|c| c.contains_key(id))
    }

    /// Calls `f` for every connection of `hub` while holding the read lock: `f` must not block.
    pub fn for_each_in_hub(&self, hub: &str, mut f: impl FnMut(&Arc<ConnectionHandle>)) {
        if let Some(conns) = self.hubs.read().get(hub) {
            conns.values().for_each(&mut f);
        }
    }

    /// Calls `f` for every local connection.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<ConnectionHandle>)) {
        for conns in self.hubs.read().values() {
            conns.values().for_each(&mut f);
        }
    }

    pub fn len(&self) -> usize {
        self.hubs.read().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(hub: &str, id: &str) -> Arc<ConnectionHandle> {
        Arc::new(ConnectionHandle::new(
            id.into(),
            hub.into(),
            None,
            Protocol::Json,
        ))
    }

    #[test]
    fn hubs_are_separate_and_empty_hubs_vanish() {
        let r = Registry::new();
        let a = handle("h1", "a");
        assert!(r.insert(a.clone()));
        assert!(r.insert(handle("h2", "b")));
        // The same id again is refused, and removing the newcomer leaves the first in place.
        let twin = handle("h1", "a");
        assert!(!r.insert(twin.clone()));
        r.remove(&twin);
        assert!(r.contains("h1", "a"));
        assert!(r.contains("h1", "a"));
        assert!(!r.contains("h2", "a"));
        let mut seen = 0;
        r.for_each_in_hub("h1", |_| seen += 1);
        assert_eq!(seen, 1);
        r.remove(&a);
        assert!(r.get("h1", "a").is_none());
        assert_eq!(r.len(), 1);
        assert!(r.hubs.read().get("h1").is_none());
    }
}
