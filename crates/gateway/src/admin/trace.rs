//! The live trace behind the admin page: what this gateway does (REST calls, messages and
//! closes it routes, connections opening and closing), as JSON events.
//!
//! Off unless the admin page is enabled: then every event is serialised once, kept in a small
//! ring of recent events (what the page shows when it opens) and offered to the open trace
//! streams through a bounded broadcast channel. A viewer that falls behind loses the oldest
//! events (counted), never holds up the gateway. Nothing here is cluster-wide: each gateway
//! traces itself, and the page names the gateway it is served by.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

/// Events kept for a page that opens.
const RECENT: usize = 200;
/// Events buffered per open stream before the slowest loses the oldest.
const STREAM_BUFFER: usize = 1024;
/// Trace streams open at once, across every viewer.
pub(crate) const MAX_STREAMS: usize = 16;

/// See the module docs.
pub struct Trace {
    enabled: bool,
    tx: broadcast::Sender<Arc<str>>,
    recent: Mutex<VecDeque<Arc<str>>>,
    pub(crate) streams: Arc<Semaphore>,
    pub(crate) closed: CancellationToken,
}

impl Trace {
    pub fn new(enabled: bool) -> Trace {
        let (tx, _) = broadcast::channel(STREAM_BUFFER);
        Trace {
            enabled,
            tx,
            recent: Mutex::new(VecDeque::with_capacity(if enabled { RECENT } else { 0 })),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            closed: CancellationToken::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records the event `make` builds (a JSON object; `time` is added), if tracing is on.
    pub fn emit(&self, make: impl FnOnce() -> Value) {
        if !self.enabled {
            return;
        }
        let mut event = make();
        if let Some(object) = event.as_object_mut() {
            object.insert("time".into(), Value::from(crate::now_ms()));
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

    /// Ends every open stream (shutdown).
    pub fn close(&self) {
        self.closed.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn off_records_nothing_and_on_keeps_the_latest() {
        let off = Trace::new(false);
        let mut rx = off.subscribe();
        off.emit(|| json!({ "type": "x" }));
        assert!(off.recent().is_empty());
        assert!(rx.try_recv().is_err());

        let on = Trace::new(true);
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
}
