//! The bounded outbound queue of one client connection.
//!
//! Producers (REST handlers, peer streams, the keep-alive timer) push already-serialized frames;
//! the connection's task drains them in batches and writes them with one flush. The queue is
//! bounded in frames and in bytes. When a push would exceed either bound the connection is marked
//! for closing as a slow consumer and later pushes are dropped: one slow client never holds up a
//! producer or the other recipients of the same message. The policy is deliberate and counted
//! (`switchboard_slow_consumer_closes_total`, `switchboard_queue_dropped_messages_total`).
//!
//! The queue is a mutex-guarded `VecDeque` plus a `Notify` rather than a channel so an idle
//! connection costs no queue allocation at all.

use std::collections::VecDeque;

use axum::extract::ws::Message;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::metrics::CloseReason;

/// How much unsent data a connection may accumulate.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_frames: usize,
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_frames: 2048,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// A request to close the connection, with what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub reason: CloseReason,
    /// The `error` of the Close message (None: a normal close).
    pub error: Option<String>,
    pub allow_reconnect: bool,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue overflowed with this frame: the connection is now closing as a slow consumer.
    Overflow,
    /// The connection is already closing; the frame was dropped.
    Closing,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Message>,
    bytes: usize,
    close: Option<CloseRequest>,
}

/// See the module docs.
#[derive(Default)]
pub struct Outbound {
    state: Mutex<State>,
    notify: Notify,
    /// Signalled only when a close is requested, so a task blocked writing to a stalled socket
    /// can still notice it must give up.
    close_notify: Notify,
}

pub(crate) fn frame_len(message: &Message) -> usize {
    match message {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(_) => 0,
    }
}

impl Outbound {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a frame unless that would exceed `limits`.
    pub fn push(&self, frame: Message, limits: QueueLimits) -> Push {
        let len = frame_len(&frame);
        let mut state = self.state.lock();
        if state.close.is_some() {
            return Push::Closing;
        }
        if state.frames.len() >= limits.max_frames || state.bytes + len > limits.max_bytes {
            state.close = Some(CloseRequest {
                reason: CloseReason::SlowConsumer,
                error: Some("Connection closed by the server: the client did not read its messages fast enough.".into()),
                allow_reconnect: true,
            });
            state.frames = VecDeque::new();
            state.bytes = 0;
            drop(state);
            self.notify.notify_one();
            self.close_notify.notify_waiters();
            return Push::Overflow;
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(frame);
        state.bytes += len;
        drop(state);
        if was_empty {
            self.notify.notify_one();
        }
        Push::Queued
    }

    /// Asks the connection to close. The first request wins; returns whether this one did.
    pub fn close(&self, request: CloseRequest) -> bool {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return false;
        }
        state.close = Some(request);
        drop(state);
        self.notify.notify_one();
        self.close_notify.notify_waiters();
        true
    }

    /// Resolves once a close has been requested (immediately if one already was).
    pub async fn closing(&self) {
        loop {
            let notified = self.close_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closing() {
                return;
            }
            notified.await;
        }
    }

    /// The close request, if one was made (the queued frames stay queued).
    pub fn close_request(&self) -> Option<CloseRequest> {
        self.state.lock().close.clone()
    }

    /// Whether a close has been requested.
    pub fn is_closing(&self) -> bool {
        self.state.lock().close.is_some()
    }

    /// Wakes the connection task as if something was queued (it re-checks what it waits for).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Waits until something was queued or a close was requested since the last `take`.
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// Takes every queued frame (a slow consumer's backlog is discarded) and the close
    /// request, if any. The queue is left without an allocation: an idle connection keeps none.
    pub fn take(&self) -> (VecDeque<Message>, Option<CloseRequest>) {
        let mut state = self.state.lock();
        state.bytes = 0;
        let frames = std::mem::take(&mut state.frames);
        (frames, state.close.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::Text(s.into())
    }

    #[test]
    fn frames_come_out_in_order() {
        let q = Outbound::new();
        let limits = QueueLimits::default();
        assert_eq!(q.push(text("a"), limits), Push::Queued);
        assert_eq!(q.push(text("b"), limits), Push::Queued);
        let (out, close) = q.take();
        assert_eq!(close, None);
        assert_eq!(out, VecDeque::from(vec![text("a"), text("b")]));
    }

    #[test]
    fn overflow_by_count_closes_as_slow_consumer_and_drops_later_frames() {
        let q = Outbound::new();
        let limits = QueueLimits {
            max_frames: 2,
            max_bytes: 1 << 20,
        };
        assert_eq!(q.push(text("a"), limits), Push::Queued);
        assert_eq!(q.push(text("b"), limits), Push::Queued);
        assert_eq!(q.push(text("c"), limits), Push::Overflow);
        assert_eq!(q.push(text("d"), limits), Push::Closing);
        let (out, close) = q.take();
        assert_eq!(
            close.expect("close requested").reason,
            CloseReason::SlowConsumer
        );
        assert!(out.is_empty(), "a slow consumer's backlog is discarded");
    }

    #[test]
    fn overflow_by_bytes() {
        let q = Outbound::new();
        let limits = QueueLimits {
            max_frames: 100,
            max_bytes: 5,
        };
        assert_eq!(q.push(text("abc"), limits), Push::Queued);
        assert_eq!(q.push(text("abc"), limits), Push::Overflow);
    }

    #[test]
    fn first_close_request_wins() {
        let q = Outbound::new();
        let first = CloseRequest {
            reason: CloseReason::Api,
            error: Some("bye".into()),
            allow_reconnect: true,
        };
        assert!(q.close(first.clone()));
        assert!(!q.close(CloseRequest {
            reason: CloseReason::Shutdown,
            error: None,
            allow_reconnect: true
        }));
        assert_eq!(q.take().1, Some(first));
    }

    #[tokio::test]
    async fn closing_resolves_for_requests_made_before_and_after_waiting() {
        let q = std::sync::Arc::new(Outbound::new());
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.closing().await })
        };
        tokio::task::yield_now().await;
        q.close(CloseRequest {
            reason: CloseReason::Api,
            error: None,
            allow_reconnect: true,
        });
        waiter.await.expect("woken by the request");
        q.closing().await;
    }

    #[tokio::test]
    async fn ready_wakes_on_push() {
        let q = std::sync::Arc::new(Outbound::new());
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.ready().await })
        };
        q.push(text("x"), QueueLimits::default());
        waiter.await.expect("waiter finished");
    }
}
