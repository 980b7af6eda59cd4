//! The live trace behind the admin page: what this gateway does (REST calls, messages and
//! closes it routes, connections opening and closing), as JSON events.
//!
//! Off unless the admin page is enabled (then each REST call, routed envelope and connection
//! opened or closed costs one small JSON serialisation and a short lock, watched or not): every
//! event is kept in a small ring of recent events (what the page shows when it opens) and
//! offered to the open trace streams through a bounded broadcast channel. A viewer that falls
//! behind loses the oldest events (counted); it never holds up the gateway. Each gateway traces itself; the page's stream
//! joins the other gateways' (`Presence.Trace`), each event naming its gateway.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::Stream;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Events kept for a page that opens.
const RECENT: usize = 200;
/// Events buffered per open stream before the slowest loses the oldest.
const STREAM_BUFFER: usize = 1024;
/// Trace streams open at once for viewers of this gateway's page, and (separately) for the
/// other gateways following this one on behalf of theirs.
pub(crate) const MAX_STREAMS: usize = 16;

/// See the module docs.
pub struct Trace {
    enabled: bool,
    node: switchboard_core::NodeId,
    tx: broadcast::Sender<Arc<str>>,
    recent: Mutex<VecDeque<Arc<str>>>,
    viewers: Arc<Semaphore>,
    followers: Arc<Semaphore>,
    pub(crate) closed: CancellationToken,
}

impl Trace {
    pub fn new(enabled: bool, node: switchboard_core::NodeId) -> Trace {
        let (tx, _) = broadcast::channel(STREAM_BUFFER);
        Trace {
            enabled,
            node,
            tx,
            recent: Mutex::new(VecDeque::with_capacity(if enabled { RECENT } else { 0 })),
            viewers: Arc::new(Semaphore::new(MAX_STREAMS)),
            followers: Arc::new(Semaphore::new(MAX_STREAMS)),
            closed: CancellationToken::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records the event `make` builds (a JSON object; `time` and `node` are added), if
    /// tracing is on.
    pub fn emit(&self, make: impl FnOnce() -> Value) {
        if !self.enabled {
            return;
        }
        let mut event = make();
        if let Some(object) = event.as_object_mut() {
            object.insert("time".into(), Value::from(crate::now_ms()));
            object.insert("node".into(), Value::from(self.node));
        }
        let text: Arc<str> = Arc::from(event.to_string());
        {
            let mut recent = self.recent.lock();
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(text.clone());
        }
        // No receiver is not an error: nobody is watching.
        let _ = self.tx.send(text);
    }

    /// The recent events, oldest first.
    pub fn recent(&self) -> Vec<Arc<str>> {
        self.recent.lock().iter().cloned().collect()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }

    /// Every event from now on, as a stream holding one of the [`MAX_STREAMS`] permits (of a
    /// viewer here, or of another gateway following this one: `follower`) until it is
    /// dropped; `None` when every permit is taken. Ends when the trace closes.
    pub(crate) fn follow(
        &self,
        follower: bool,
    ) -> Option<impl Stream<Item = Item> + Send + 'static> {
        let permits = if follower {
            &self.followers
        } else {
            &self.viewers
        };
        let permit = permits.clone().try_acquire_owned().ok()?;
        let open = Open::new(permit);
        let (rx, closed) = (self.subscribe(), self.closed.clone());
        Some(futures::stream::unfold(
            (rx, closed, open),
            |(mut rx, closed, open)| async move {
                let next = tokio::select! {
                    _ = closed.cancelled() => return None,
                    next = rx.recv() => next,
                };
                let item = match next {
                    Ok(text) => Item::Event(text),
                    Err(RecvError::Lagged(missed)) => {
                        metrics::counter!("switchboard_admin_trace_dropped_total")
                            .increment(missed);
                        Item::Lagged(missed)
                    }
                    Err(RecvError::Closed) => return None,
                };
                Some((item, (rx, closed, open)))
            },
        ))
    }

    /// Ends every open stream (shutdown).
    pub fn close(&self) {
        self.closed.cancel();
    }
}

/// What a trace stream carries.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// One event's JSON.
    Event(Arc<str>),
    /// The stream fell behind and missed this many events.
    Lagged(u64),
}

/// An open stream: its permit, counted in the streams gauge.
struct Open {
    _permit: OwnedSemaphorePermit,
    gauge: metrics::Gauge,
}

impl Open {
    fn new(permit: OwnedSemaphorePermit) -> Open {
        let gauge = metrics::gauge!("switchboard_admin_trace_streams");
        gauge.increment(1.0);
        Open {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn off_records_nothing_and_on_keeps_the_latest() {
        let off = Trace::new(false, 1);
        let mut rx = off.subscribe();
        off.emit(|| json!({ "type": "x" }));
        assert!(off.recent().is_empty());
        assert!(rx.try_recv().is_err());

        let on = Trace::new(true, 1);
        let mut rx = on.subscribe();
        for i in 0..RECENT + 5 {
            on.emit(|| json!({ "type": "n", "i": i }));
        }
        let recent = on.recent();
        assert_eq!(recent.len(), RECENT);
        let first: Value = serde_json::from_str(&recent[0]).expect("json");
        assert_eq!(first["i"], json!(5));
        assert!(first["time"].is_u64());
        let got: Value = serde_json::from_str(&rx.try_recv().expect("an event")).expect("json");
        assert_eq!(got["i"], json!(0));
    }

    #[tokio::test]
    async fn a_stream_follows_from_now_until_closed_and_streams_are_bounded() {
        use futures::StreamExt;
        let trace = Trace::new(true, 7);
        trace.emit(|| json!({ "type": "before" }));
        let streams: Vec<_> = (0..MAX_STREAMS).map(|_| trace.follow(false)).collect();
        assert!(streams.iter().all(Option::is_some));
        assert!(
            trace.follow(false).is_none(),
            "every viewer permit is taken"
        );
        assert!(
            trace.follow(true).is_some(),
            "other gateways' followers do not take viewers' permits"
        );
        drop(streams);
        let mut stream = Box::pin(trace.follow(false).expect("a permit is free again"));
        trace.emit(|| json!({ "type": "after" }));
        match stream.next().await {
            Some(Item::Event(text)) => {
                let event: Value = serde_json::from_str(&text).expect("json");
                assert_eq!(event["type"], json!("after"));
                assert_eq!(event["node"], json!(7));
            }
            other => panic!("expected the event, got {other:?}"),
        }
        trace.close();
        assert!(
            stream.next().await.is_none(),
            "a closed trace ends its streams"
        );
    }
}
