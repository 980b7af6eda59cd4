//! Rate limits for warnings: a flood of refused peers or malformed requests must not become a
//! flood of log lines.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lets one event through per interval and counts the ones it held back. Lock-free; time is a
/// parameter (milliseconds on any monotonic or wall clock), so it is deterministic in tests.
#[derive(Debug)]
pub struct Throttle {
    interval_ms: u64,
    /// When the last event was let through, plus one (0: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// One event per `interval_ms`.
    pub const fn new(interval_ms: u64) -> Throttle {
        Throttle {
            interval_ms,
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if this event should be logged, where `n` events were held back since the last
    /// one let through; `None` if it should be dropped.
    pub fn allow(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_add(1) >= last.saturating_add(self.interval_ms);
        if due
            && self
                .last_ms
                .compare_exchange(
                    last,
                    now_ms.saturating_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it), for [`Throttle::allow`].
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_and_the_rest_counted() {
        let t = Throttle::new(1000);
        assert_eq!(t.allow(5000), Some(0));
        assert_eq!(t.allow(5001), None);
        assert_eq!(t.allow(5999), None);
        assert_eq!(t.allow(6000), Some(2));
        assert_eq!(t.allow(6000), None);
        assert_eq!(t.allow(100_000), Some(1));
    }

    #[test]
    fn time_zero_and_going_backwards_are_safe() {
        let t = Throttle::new(10);
        assert_eq!(t.allow(0), Some(0));
        assert_eq!(t.allow(0), None);
        assert_eq!(t.allow(u64::MAX), Some(1));
        assert_eq!(t.allow(5), None);
    }
}
