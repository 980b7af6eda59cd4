//! What a run counts, and how counts from many connection tasks and worker processes become one.
//!
//! Connection tasks record into a [`Recorder`] shared by the process: latencies go to one of a
//! few mutex-guarded HDR histograms picked by connection index (so tasks on different threads
//! rarely meet), counters are atomics. A process's figures leave it as plain serde structs
//! ([`ConnectStats`], [`ReceiveStats`]) whose histograms travel as (value, count) buckets, so a
//! parent merges its workers exactly as it would merge its own shards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::frames::Stamp;

/// Microseconds since the Unix epoch: the clock in every payload (one machine, one clock).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A latency histogram in microseconds, 3 significant digits, up to one hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// A histogram as its non-empty buckets, for sending between processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buckets(pub Vec<(u64, u64)>);

impl Buckets {
    pub fn from_histogram(h: &Histogram<u64>) -> Buckets {
        Buckets(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Adds these buckets to `h` (values beyond its range are clamped to its maximum).
    pub fn add_into(&self, h: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            let value = value.min(h.high());
            let _ = h.record_n(value, count);
        }
    }

    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        self.add_into(&mut h);
        h
    }
}

/// Counts of errors by kind; keeps at most [`ErrorSample::MAX_KINDS`] kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorSample(pub BTreeMap<String, u64>);

impl ErrorSample {
    pub const MAX_KINDS: usize = 16;

    pub fn add(&mut self, kind: String, n: u64) {
        if self.0.len() >= Self::MAX_KINDS && !self.0.contains_key(&kind) {
            *self.0.entry("(other kinds)".to_owned()).or_default() += n;
        } else {
            *self.0.entry(kind).or_default() += n;
        }
    }

    pub fn merge(&mut self, other: &ErrorSample) {
        for (kind, n) in &other.0 {
            self.add(kind.clone(), *n);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// One open connection: its global index and, for Switchboard, its connection id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenConnection {
    pub index: usize,
    pub connection_id: Option<String>,
}

/// How opening the connections went, for one process or merged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectStats {
    pub attempted: u64,
    pub opened: u64,
    pub first_start_us: Option<u64>,
    pub last_open_us: Option<u64>,
    /// Negotiate + WebSocket + handshake (+ group join) per connection, µs.
    pub duration_us: Buckets,
    pub open: Vec<OpenConnection>,
    pub errors: ErrorSample,
}

impl ConnectStats {
    pub fn merge(&mut self, other: ConnectStats) {
        self.attempted += other.attempted;
        self.opened += other.opened;
        self.first_start_us = min_opt(self.first_start_us, other.first_start_us);
        self.last_open_us = max_opt(self.last_open_us, other.last_open_us);
        let mut h = self.duration_us.to_histogram();
        other.duration_us.add_into(&mut h);
        self.duration_us = Buckets::from_histogram(&h);
        self.open.extend(other.open);
        self.errors.merge(&other.errors);
    }

    /// Connections opened per second, first attempt to last handshake.
    pub fn per_second(&self) -> Option<f64> {
        let (start, end) = (self.first_start_us?, self.last_open_us?);
        (end > start).then(|| self.opened as f64 / ((end - start) as f64 / 1e6))
    }
}

/// What the clients of one process (or all, merged) received.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReceiveStats {
    pub received: u64,
    pub first_rx_us: Option<u64>,
    pub last_rx_us: Option<u64>,
    pub latency_us: Buckets,
    /// Connections the server ended before the run did.
    pub disconnects: u64,
    /// Frames the clients could not decode.
    pub decode_errors: u64,
    pub errors: ErrorSample,
}

impl ReceiveStats {
    pub fn merge(&mut self, other: ReceiveStats) {
        self.received += other.received;
        self.first_rx_us = min_opt(self.first_rx_us, other.first_rx_us);
        self.last_rx_us = max_opt(self.last_rx_us, other.last_rx_us);
        let mut h = self.latency_us.to_histogram();
        other.latency_us.add_into(&mut h);
        self.latency_us = Buckets::from_histogram(&h);
        self.disconnects += other.disconnects;
        self.decode_errors += other.decode_errors;
        self.errors.merge(&other.errors);
    }
}

/// The receive-side counters of one process, shared by its connection tasks.
pub struct Recorder {
    shards: Box<[Mutex<Histogram<u64>>]>,
    received: AtomicU64,
    first_rx_us: AtomicU64,
    last_rx_us: AtomicU64,
    disconnects: AtomicU64,
    decode_errors: AtomicU64,
    errors: Mutex<ErrorSample>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new(16)
    }
}

impl Recorder {
    pub fn new(shards: usize) -> Recorder {
        Recorder {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
            received: AtomicU64::new(0),
            first_rx_us: AtomicU64::new(u64::MAX),
            last_rx_us: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            errors: Mutex::new(ErrorSample::default()),
        }
    }

    /// Records measured messages that connection `conn` received at `now_us`.
    pub fn record(&self, conn: usize, now_us: u64, stamps: &[Stamp]) {
        if stamps.is_empty() {
            return;
        }
        let shard = &self.shards[conn % self.shards.len()];
        {
            let mut h = shard.lock();
            for stamp in stamps {
                let latency = now_us.saturating_sub(stamp.sent_at_us).clamp(1, h.high());
                let _ = h.record(latency);
            }
        }
        self.received
            .fetch_add(stamps.len() as u64, Ordering::Relaxed);
        self.first_rx_us.fetch_min(now_us, Ordering::Relaxed);
        self.last_rx_us.fetch_max(now_us, Ordering::Relaxed);
    }

    /// Messages received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn disconnected(&self, reason: String) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
        self.errors.lock().add(format!("disconnect: {reason}"), 1);
    }

    pub fn decode_error(&self, kind: String) {
        self.decode_errors.fetch_add(1, Ordering::Relaxed);
        self.errors.lock().add(kind, 1);
    }

    /// Everything recorded so far, merged.
    pub fn snapshot(&self) -> ReceiveStats {
        let mut h = new_histogram();
        for shard in self.shards.iter() {
            let _ = h.add(&*shard.lock());
        }
        let first = self.first_rx_us.load(Ordering::Relaxed);
        let last = self.last_rx_us.load(Ordering::Relaxed);
        ReceiveStats {
            received: self.received(),
            first_rx_us: (first != u64::MAX).then_some(first),
            last_rx_us: (last != 0).then_some(last),
            latency_us: Buckets::from_histogram(&h),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            errors: self.errors.lock().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn recorder_counts_and_times() {
        let r = Recorder::new(4);
        r.record(
            0,
            1_000,
            &[Stamp {
                seq: 0,
                sent_at_us: 900,
            }],
        );
        r.record(
            5,
            3_000,
            &[
                Stamp {
                    seq: 1,
                    sent_at_us: 1_000,
                },
                Stamp {
                    seq: 2,
                    sent_at_us: 2_990,
                },
            ],
        );
        r.record(7, 4_000, &[]);
        r.disconnected("eof".into());
        let s = r.snapshot();
        assert_eq!(s.received, 3);
        assert_eq!((s.first_rx_us, s.last_rx_us), (Some(1_000), Some(3_000)));
        let h = s.latency_us.to_histogram();
        assert_eq!(h.len(), 3);
        assert_eq!(h.min(), 10);
        assert!(h.max() >= 2_000 && h.max() <= 2_002);
        assert_eq!(s.disconnects, 1);
        assert_eq!(s.errors.total(), 1);
    }

    #[test]
    fn error_sample_is_bounded() {
        let mut e = ErrorSample::default();
        for i in 0..100 {
            e.add(format!("kind {i}"), 1);
        }
        assert_eq!(e.0.len(), ErrorSample::MAX_KINDS + 1);
        assert_eq!(e.total(), 100);
    }

    #[test]
    fn connect_rate() {
        let s = ConnectStats {
            opened: 500,
            first_start_us: Some(1_000_000),
            last_open_us: Some(1_500_000),
            ..Default::default()
        };
        assert_eq!(s.per_second(), Some(1000.0));
        assert_eq!(ConnectStats::default().per_second(), None);
    }

    proptest! {
        #[test]
        fn merging_buckets_equals_recording_together(a in proptest::collection::vec(1u64..10_000_000, 0..200),
                                                     b in proptest::collection::vec(1u64..10_000_000, 0..200)) {
            let (mut ha, mut hb, mut all) = (new_histogram(), new_histogram(), new_histogram());
            for v in &a { ha.record(*v).unwrap(); all.record(*v).unwrap(); }
            for v in &b { hb.record(*v).unwrap(); all.record(*v).unwrap(); }
            let mut x = ReceiveStats { received: a.len() as u64, latency_us: Buckets::from_histogram(&ha), ..Default::default() };
            x.merge(ReceiveStats { received: b.len() as u64, latency_us: Buckets::from_histogram(&hb), ..Default::default() });
            let merged = x.latency_us.to_histogram();
            prop_assert_eq!(merged.len(), all.len());
            prop_assert_eq!(x.received, (a.len() + b.len()) as u64);
            for q in [0.5, 0.9, 0.99, 1.0] {
                prop_assert_eq!(merged.value_at_quantile(q), all.value_at_quantile(q));
            }
        }
    }
}
