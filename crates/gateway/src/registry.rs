//! The connections this gateway holds, by hub.
//!
//! The registry owns nothing but handles: each [`ConnectionHandle`] is shared between the
//! connection's own task (which drains its outbound queue into the socket) and whoever routes a
//! message to it. Which groups a connection is in, and which connections a user has, is the
//! store's knowledge (the membership view); the registry answers only "give me the handle of this
//! local connection" and "every local connection of this hub" (broadcast).
//!
//! The handles are split over [`SHARDS`] locks by connection id, so a broadcast to a large hub
//! holds each lock only for its share of the fan-out: a connect or a disconnect meanwhile waits
//! for one shard's part of one broadcast at most, never for the whole of it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
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

/// Locks the handles are split over.
pub const SHARDS: usize = 16;

/// One shard: its connections by hub.
type Shard = RwLock<HashMap<Name, HubConnections>>;

/// See the module docs.
pub struct Registry {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn shard_index(&self, id: &str) -> usize {
        (self.hasher.hash_one(id) as usize) % self.shards.len()
    }

    fn shard(&self, id: &str) -> &Shard {
        &self.shards[self.shard_index(id)]
    }

    /// Adds the handle; false (and nothing changes) if its id is already taken — a connection
    /// token presented twice.
    pub fn insert(&self, handle: Arc<ConnectionHandle>) -> bool {
        let mut hubs = self.shard(&handle.id).write();
        let conns = hubs.entry(handle.hub.clone()).or_default();
        if conns.contains_key(&handle.id) {
            return false;
        }
        conns.insert(handle.id.clone(), handle);
        true
    }

    /// Removes the handle if it is the one registered for its id.
    pub fn remove(&self, handle: &ConnectionHandle) {
        let mut hubs = self.shard(&handle.id).write();
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
        self.shard(id).read().get(hub)?.get(id).cloned()
    }

    pub fn contains(&self, hub: &str, id: &str) -> bool {
        self.shard(id)
            .read()
            .get(hub)
            .is_some_and(|c| c.contains_key(id))
    }

    /// Calls `f` for every connection of `hub`, holding one shard's read lock at a time: `f`
    /// must not block.
    pub fn for_each_in_hub(&self, hub: &str, mut f: impl FnMut(&Arc<ConnectionHandle>)) {
        for shard in self.shards.iter() {
            if let Some(conns) = shard.read().get(hub) {
                conns.values().for_each(&mut f);
            }
        }
    }

    /// Calls `f` for every local connection.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<ConnectionHandle>)) {
        for shard in self.shards.iter() {
            for conns in shard.read().values() {
                conns.values().for_each(&mut f);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().values().map(HashMap::len).sum::<usize>())
            .sum()
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
    fn a_broadcast_visits_every_connection_once_holding_one_shard_at_a_time() {
        let r = Registry::new();
        for i in 0..200 {
            assert!(r.insert(handle("h", &format!("c{i}"))));
        }
        let mut seen = std::collections::HashSet::new();
        let mut opened = false;
        r.for_each_in_hub("h", |h| {
            assert!(seen.insert(h.id.clone()), "{} twice", h.id);
            if !opened {
                // A connection of another shard opens in the middle of the broadcast: it takes
                // that shard's write lock at once (under one lock for all, this would deadlock).
                let here = r.shard_index(&h.id);
                let other = (0..)
                    .map(|i| format!("n{i}"))
                    .find(|id| r.shard_index(id) != here)
                    .unwrap_or_default();
                assert!(r.insert(handle("other", &other)));
                opened = true;
            }
        });
        assert_eq!(seen.len(), 200);
        assert_eq!(r.len(), 201);
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
        assert!(r
            .shards
            .iter()
            .all(|shard| shard.read().get("h1").is_none()));
    }
}
