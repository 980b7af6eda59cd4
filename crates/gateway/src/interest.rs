//! Routing by interest, at the grain of a hub: which hubs each other gateway holds connections
//! of, so a message (or a presence question) goes only to gateways that may hold a recipient.
//!
//! Each gateway *announces* a hub to every other gateway before its first connection of that
//! hub is opened (and before that connection's handshake is answered), and waits for their
//! answers (1 s at most each). A receiver answers once its view lists the announcing gateway;
//! each answer carries the receiver's applied store index, which the announcing gateway's view
//! reaches before the connection reads its user's groups. So a message, a connection change or
//! a user-group change routed by a gateway that answered reaches the new connection, and one
//! written before finds the change already in the store. A gateway that did not answer (frozen,
//! cut off) is told again every 500 ms while the store lists it; until it is, its sends for that
//! hub may miss the new connection — the one window this table opens, bounded by its recovery.
//! Announcements are deltas; every gateway also *pulls* each other's whole set every 5 s
//! (`presence::pull_interest`), which repairs a lost announcement and is how a hub a gateway
//! stopped serving (no connection of it for [`IDLE_HUB`]) leaves the others' tables. Both carry
//! the announcing gateway's generation (taken when the announcement begins; a pull answered
//! meanwhile lists the hub already), and an announcement is kept until a whole set at least as
//! new covers it, so an older whole set never undoes a newer announcement. A gateway whose set is
//! not known (just listed, its last pull failed, a new incarnation) gets everything.
//!
//! The table holds hubs × gateways: nothing per connection, user or group. Within a hub, user,
//! group and connection messages still go to every gateway serving the hub.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use switchboard_core::NodeId;
use switchboard_membership::Name;
use tokio::sync::watch;

/// A hub with no connection here for this long is withdrawn (on the next sweep).
pub(crate) const IDLE_HUB: Duration = Duration::from_secs(30);
/// Announcements kept per peer until a whole set covers them.
const MAX_PENDING: usize = 4096;

/// What another gateway said it serves.
#[derive(Debug)]
struct PeerHubs {
    incarnation: u64,
    /// Whether a whole set arrived: until then everything is sent to it.
    known: bool,
    generation: u64,
    hubs: HashSet<Name>,
    /// Announcements by generation, kept until a whole set at least as new covers them (a
    /// whole set answered before an announcement may arrive after it).
    announced: Vec<(u64, Name)>,
}

/// A hub this gateway serves, or is announcing.
enum Local {
    /// The announcement is in flight; openers wait for it.
    Announcing(watch::Receiver<bool>),
    /// Announced; `idle_since` is set by the sweep while the hub has no connection here.
    Announced { idle_since: Option<Instant> },
}

/// See the module docs.
#[derive(Default)]
pub struct Interest {
    generation: AtomicU64,
    local: Mutex<HashMap<Name, Local>>,
    peers: RwLock<HashMap<NodeId, PeerHubs>>,
}

/// What an opener must do for its hub.
pub(crate) enum Admission {
    /// Announced already: open at once (`open` ran under the table's lock).
    Opened(bool),
    /// Another connection is announcing it: wait, then try again.
    Wait(watch::Receiver<bool>),
    /// This connection announces it, with this generation: call [`Interest::announced`]
    /// afterwards.
    Announce(watch::Sender<bool>, u64),
}

impl Interest {
    /// May `peer` (at `incarnation`) hold a connection of `hub`? True unless its set is known
    /// and lacks the hub.
    pub(crate) fn may_hold(&self, peer: NodeId, incarnation: u64, hub: &str) -> bool {
        match self.peers.read().get(&peer) {
            Some(p) if p.incarnation == incarnation && p.known => p.hubs.contains(hub),
            _ => true,
        }
    }

    fn entry(
        peers: &mut HashMap<NodeId, PeerHubs>,
        peer: NodeId,
        incarnation: u64,
    ) -> &mut PeerHubs {
        let entry = peers.entry(peer).or_insert_with(|| PeerHubs {
            incarnation,
            known: false,
            generation: 0,
            hubs: HashSet::new(),
            announced: Vec::new(),
        });
        if entry.incarnation != incarnation {
            *entry = PeerHubs {
                incarnation,
                known: false,
                generation: 0,
                hubs: HashSet::new(),
                announced: Vec::new(),
            };
        }
        entry
    }

    /// Records an announcement of `peer`: it serves `hubs` too (from `generation` on).
    pub(crate) fn add(&self, peer: NodeId, incarnation: u64, generation: u64, hubs: Vec<Name>) {
        let mut peers = self.peers.write();
        let p = Self::entry(&mut peers, peer, incarnation);
        for hub in hubs {
            p.hubs.insert(hub.clone());
            // Bounded: a peer announces each hub once per time it starts serving it.
            if p.announced.len() < MAX_PENDING {
                p.announced.push((generation, hub));
            }
        }
    }

    /// Records `peer`'s whole set as of `generation`: it replaces what was known, except the
    /// hubs announced after that generation.
    pub(crate) fn replace(&self, peer: NodeId, incarnation: u64, generation: u64, hubs: Vec<Name>) {
        let mut peers = self.peers.write();
        let p = Self::entry(&mut peers, peer, incarnation);
        if p.known && p.generation > generation {
            // Older than a whole set already recorded.
            return;
        }
        p.announced.retain(|(g, _)| *g > generation);
        p.hubs = hubs.into_iter().collect();
        p.hubs
            .extend(p.announced.iter().map(|(_, hub)| hub.clone()));
        p.generation = generation;
        p.known = true;
    }

    /// Forgets `peer`'s set (its pull failed): everything goes to it until the next one.
    pub(crate) fn forget(&self, peer: NodeId) {
        self.peers.write().remove(&peer);
    }

    /// Keeps only the peers in `listed`.
    pub(crate) fn retain(&self, listed: &HashSet<NodeId>) {
        self.peers.write().retain(|node, _| listed.contains(node));
    }

    /// This gateway's generation and its hubs, those being announced included (what a pull
    /// answers: a pull answered after an announcement began must not undo it).
    pub(crate) fn announced_hubs(&self) -> (u64, Vec<Name>) {
        let local = self.local.lock();
        let hubs = local.keys().cloned().collect();
        (self.generation.load(Ordering::Acquire), hubs)
    }

    /// The first step of opening a connection of `hub`: `open` runs now, under the table's lock,
    /// if the hub is announced (so a sweep cannot withdraw it in between).
    pub(crate) fn admit(&self, hub: &Name, open: impl FnOnce() -> bool) -> Admission {
        let mut local = self.local.lock();
        match local.get_mut(hub) {
            Some(Local::Announced { idle_since }) => {
                *idle_since = None;
                Admission::Opened(open())
            }
            Some(Local::Announcing(rx)) => Admission::Wait(rx.clone()),
            None => {
                let (tx, rx) = watch::channel(false);
                local.insert(hub.clone(), Local::Announcing(rx));
                // Under the lock: a pull answered from now on lists the hub with this generation.
                let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                Admission::Announce(tx, generation)
            }
        }
    }

    /// The announcement of `hub` is done (answered or not): it is served from now on.
    pub(crate) fn announced(&self, hub: &Name, done: watch::Sender<bool>) {
        self.local
            .lock()
            .insert(hub.clone(), Local::Announced { idle_since: None });
        let _ = done.send(true);
    }

    /// An announcement of `hub` that did not finish (its connection went away first): the next
    /// opener announces again.
    pub(crate) fn abandon(&self, hub: &Name, done: watch::Sender<bool>) {
        let mut local = self.local.lock();
        if matches!(local.get(hub), Some(Local::Announcing(_))) {
            local.remove(hub);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        let _ = done.send(true);
    }

    /// Withdraws hubs with no connection here for [`IDLE_HUB`]; `has_connections` is asked
    /// under the table's lock, so no connection opens in a hub being withdrawn.
    pub(crate) fn sweep(&self, now: Instant, has_connections: impl Fn(&str) -> bool) {
        let mut local = self.local.lock();
        let mut withdrawn = false;
        local.retain(|hub, state| match state {
            Local::Announcing(_) => true,
            Local::Announced { idle_since } => {
                if has_connections(hub) {
                    *idle_since = None;
                    return true;
                }
                let since = *idle_since.get_or_insert(now);
                let keep = now.duration_since(since) < IDLE_HUB;
                withdrawn |= !keep;
                keep
            }
        });
        if withdrawn {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Waits for an announcement another opener makes.
pub(crate) async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|done| *done).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn n(s: &str) -> Name {
        s.into()
    }

    #[test]
    fn an_announcement_to_an_unknown_peer_survives_an_older_whole_set() {
        let interest = Interest::default();
        // The pull is answered at generation 3, then the peer announces chat (4); the
        // announcement arrives first.
        interest.add(2, 1, 4, vec![n("chat")]);
        interest.replace(2, 1, 3, vec![n("other")]);
        assert!(interest.may_hold(2, 1, "chat"));
        assert!(interest.may_hold(2, 1, "other"));
        assert!(!interest.may_hold(2, 1, "third"));
        // A whole set at 5 without chat: withdrawn since.
        interest.replace(2, 1, 5, vec![n("other")]);
        assert!(!interest.may_hold(2, 1, "chat"));
    }

    #[test]
    fn an_unknown_peer_gets_everything_and_a_known_one_only_its_hubs() {
        let interest = Interest::default();
        assert!(interest.may_hold(2, 1, "chat"));
        // An announcement alone does not make a set known.
        interest.add(2, 1, 1, vec![n("chat")]);
        assert!(interest.may_hold(2, 1, "other"));
        interest.replace(2, 1, 1, vec![n("chat")]);
        assert!(interest.may_hold(2, 1, "chat"));
        assert!(!interest.may_hold(2, 1, "other"));
        // A new incarnation is unknown again.
        assert!(interest.may_hold(2, 2, "other"));
        interest.forget(2);
        assert!(interest.may_hold(2, 1, "other"));
    }

    #[test]
    fn an_older_whole_set_never_undoes_a_newer_announcement() {
        let interest = Interest::default();
        interest.replace(2, 1, 4, vec![]);
        interest.add(2, 1, 6, vec![n("chat")]);
        // The pull answered before the announcement, delivered after it.
        interest.replace(2, 1, 5, vec![]);
        assert!(interest.may_hold(2, 1, "chat"));
        interest.replace(2, 1, 6, vec![n("chat")]);
        interest.replace(2, 1, 7, vec![]);
        assert!(!interest.may_hold(2, 1, "chat"));
    }

    #[test]
    fn a_hub_is_announced_once_and_withdrawn_only_when_idle() {
        let interest = Interest::default();
        let hub = n("chat");
        let Admission::Announce(tx, generation) = interest.admit(&hub, || unreachable!()) else {
            panic!("the first opener announces")
        };
        assert_eq!(generation, 1);
        // A pull answered meanwhile lists it already.
        assert_eq!(interest.announced_hubs(), (1, vec![hub.clone()]));
        let Admission::Wait(rx) = interest.admit(&hub, || unreachable!()) else {
            panic!("a second opener waits")
        };
        interest.announced(&hub, tx);
        assert!(*rx.borrow());
        assert!(matches!(
            interest.admit(&hub, || true),
            Admission::Opened(true)
        ));
        assert_eq!(interest.announced_hubs(), (1, vec![hub.clone()]));
        let t0 = Instant::now();
        interest.sweep(t0, |_| true);
        interest.sweep(t0 + IDLE_HUB * 2, |_| true);
        assert_eq!(interest.announced_hubs().1.len(), 1, "busy hubs stay");
        interest.sweep(t0, |_| false);
        interest.sweep(t0 + IDLE_HUB / 2, |_| false);
        assert_eq!(interest.announced_hubs().1.len(), 1, "not idle long enough");
        interest.sweep(t0 + IDLE_HUB, |_| false);
        assert_eq!(interest.announced_hubs(), (2, vec![]));
        assert!(matches!(
            interest.admit(&hub, || true),
            Admission::Announce(_, 3)
        ));
    }
}
