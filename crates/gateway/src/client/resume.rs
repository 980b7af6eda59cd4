//! Stateful reconnect: where a reconnecting client's new WebSocket finds its connection.
//!
//! A connection that negotiated `useStatefulReconnect` and shook hands with hub protocol
//! version 2 keeps what it sent until the client acknowledges it (see
//! `switchboard_protocol::stateful`), and, when its WebSocket drops, stays open for the reconnect
//! window. The official client reconnects once, at once, with the same connection token, and
//! sends no new handshake: the connect handler finds the connection here by that token, upgrades,
//! and leaves the new socket in the connection's [`Slot`], waking its task through the outbound
//! queue's signal (the task already waits on it: an idle connection pays no extra future). The
//! task swaps its socket, sends `Sequence` and everything unacknowledged, and goes on. A new
//! socket may arrive before the task noticed the old one was gone: it replaces the old one.
//!
//! The token is accepted here past its connect lifetime because it names a connection that is open
//! on this gateway and was opened with it; the same checks as for other requests of an open
//! connection apply (hub, and an access token, when presented, for the same user).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::socket::ClientSocket;
use crate::registry::ConnectionHandle;

/// The connections of this gateway that can be resumed, by the token their client presents.
#[derive(Default)]
pub(crate) struct Resumable {
    map: Mutex<HashMap<Box<str>, Arc<Slot>>>,
    /// Tokens of stateful connections that ended recently, still within their connect
    /// lifetime: a reconnect with one must not open a new connection (the client would send no
    /// handshake, fail, and reconnect again until the token expired).
    ended: Mutex<Ended>,
}

/// At most this many ended tokens are remembered (the oldest are forgotten first).
const MAX_ENDED: usize = 65_536;

#[derive(Default)]
struct Ended {
    order: VecDeque<(Instant, Box<str>)>,
    tokens: HashSet<Box<str>>,
}

/// Where a reconnecting socket waits for its connection's task.
pub(crate) struct Slot {
    pub(crate) hub: Box<str>,
    pub(crate) user: Option<Box<str>>,
    handle: Arc<ConnectionHandle>,
    socket: Mutex<Option<ClientSocket>>,
}

impl Resumable {
    pub(crate) fn get(&self, token: &str) -> Option<Arc<Slot>> {
        self.map.lock().get(token).cloned()
    }

    /// Lists a connection as resumable under `token`.
    pub(crate) fn insert(&self, token: &str, handle: Arc<ConnectionHandle>) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            hub: handle.hub.as_ref().into(),
            user: handle.user.as_deref().map(Into::into),
            handle,
            socket: Mutex::new(None),
        });
        self.map.lock().insert(token.into(), slot.clone());
        slot
    }

    /// Forgets the connection (it ended); its token is refused for `remember`.
    pub(crate) fn remove(&self, token: &str, slot: &Arc<Slot>, remember: Duration) {
        let mut map = self.map.lock();
        if map.get(token).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            map.remove(token);
        }
        drop(map);
        let mut ended = self.ended.lock();
        let now = Instant::now();
        ended.prune(now);
        if ended.order.len() >= MAX_ENDED {
            if let Some((_, oldest)) = ended.order.pop_front() {
                ended.tokens.remove(&oldest);
            }
        }
        if ended.tokens.insert(token.into()) {
            ended.order.push_back((now + remember, token.into()));
        }
    }

    /// Whether `token` belonged to a stateful connection that ended recently.
    pub(crate) fn has_ended(&self, token: &str) -> bool {
        let mut ended = self.ended.lock();
        ended.prune(Instant::now());
        ended.tokens.contains(token)
    }
}

impl Ended {
    fn prune(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(until, _)| *until <= now) {
            if let Some((_, token)) = self.order.pop_front() {
                self.tokens.remove(&token);
            }
        }
    }
}

impl Slot {
    /// Leaves a new socket for the connection and wakes its task. A socket left earlier and not
    /// yet taken is replaced (the client gave up on it).
    pub(crate) fn deposit(&self, socket: ClientSocket) {
        *self.socket.lock() = Some(socket);
        self.handle.outbound.wake();
    }

    /// Wakes the connection's task (to take frames queued while it waited for the client).
    pub(crate) fn wake(&self) {
        self.handle.outbound.wake();
    }

    /// Whether a reconnecting client left a socket.
    pub(crate) fn has_socket(&self) -> bool {
        self.socket.lock().is_some()
    }

    /// The socket a reconnecting client left, if any.
    pub(crate) fn take(&self) -> Option<ClientSocket> {
        self.socket.lock().take()
    }
}
