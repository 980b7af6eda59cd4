//! Riding out storage faults: retry a failed disk operation until the disk works again.
//!
//! openraft treats any error from its storage as fatal: the Raft node stops for good, and every
//! later write fails until the process restarts. A full disk or a volume that went read-only is
//! usually fixed by an operator within minutes, so the log store and the snapshot directory do not
//! hand such errors to openraft. They retry the operation here, with backoff, until it succeeds
//! (or the store shuts down). Meanwhile the operation simply has not completed: an append is not
//! acknowledged, so no write is acknowledged that is not on disk, and Raft sees a slow node (a
//! stuck leader loses its leadership to the healthy voters; a stuck follower falls behind).
//!
//! Only faults of the disk are retried. Data that cannot be decoded is [`Failure::Permanent`]:
//! reading it again gives the same bytes, so it goes to openraft as before.
//!
//! While any operation is failing, [`DiskHealth::failing`] is true: the node reports not ready
//! at once (a disruption budget counts it as down), `switchboard_store_disk_failing` is 1, every
//! failed attempt counts in `switchboard_store_disk_errors_total{op}`, and the log says what failed
//! and why — once when the fault starts, then at most every [`STILL_FAILING_EVERY`], and once when
//! it clears. Paths appear only in the log, never in what a client is told.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// First pause after a failed attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a fault that goes on is logged again.
pub const STILL_FAILING_EVERY: Duration = Duration::from_secs(10);

/// Why one attempt at a disk operation failed.
#[derive(Debug)]
pub enum Failure<E> {
    /// The disk failed (I/O error, no space, read-only): trying again may succeed.
    Transient(E),
    /// Retrying cannot help (the bytes on disk do not decode): handed to the caller.
    Permanent(E),
}

/// The pause before each retry: doubling from [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// The pause to take now; the following one is twice as long, up to the bound.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        pause
    }
}

/// What is failing now, for status and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The operation that failed most recently (`append`, `snapshot write`, ...).
    pub op: &'static str,
    /// The error of its last attempt (may name paths: for logs and operators only).
    pub error: String,
}

/// The disk's health, shared by the log store and the snapshot directory of one node.
#[derive(Clone, Default)]
pub struct DiskHealth {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Operations retrying now.
    failing: AtomicUsize,
    last: Mutex<Option<Fault>>,
    stop: CancellationToken,
}

impl DiskHealth {
    /// A healthy disk.
    pub fn new() -> DiskHealth {
        DiskHealth::default()
    }

    /// Whether some disk operation is failing and being retried now.
    pub fn failing(&self) -> bool {
        self.inner.failing.load(Ordering::Acquire) > 0
    }

    /// The latest fault, while one is going on.
    pub fn fault(&self) -> Option<Fault> {
        if self.failing() {
            self.inner.last.lock().clone()
        } else {
            None
        }
    }

    /// Stops retrying: an operation still failing returns its last error (on shutdown, so that
    /// Raft can stop even with a broken disk).
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// Runs `attempt` until it succeeds, fails permanently, or [`DiskHealth::stop`] is called
    /// (then the last transient error is returned).
    pub async fn retry<T, E, F, Fut>(&self, op: &'static str, mut attempt: F) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure<E>>>,
    {
        let mut episode: Option<Episode> = None;
        let mut backoff = Backoff::default();
        loop {
            let error = match attempt().await {
                Ok(value) => {
                    if let Some(episode) = episode {
                        self.end(op, episode);
                    }
                    return Ok(value);
                }
                Err(Failure::Permanent(error)) => {
                    if let Some(episode) = episode {
                        self.end(op, episode);
                    }
                    return Err(error);
                }
                Err(Failure::Transient(error)) => error,
            };
            metrics::counter!(crate::metrics::DISK_ERRORS, "op" => op).increment(1);
            *self.inner.last.lock() = Some(Fault {
                op,
                error: error.to_string(),
            });
            match &mut episode {
                None => {
                    let count = self.inner.failing.fetch_add(1, Ordering::AcqRel) + 1;
                    metrics::gauge!(crate::metrics::DISK_FAILING).set(1.0);
                    tracing::error!(
                        op,
                        %error,
                        failing = count,
                        "storage fault: the operation is retried until the disk works again; not ready meanwhile"
                    );
                    episode = Some(Episode::new());
                }
                Some(episode) => {
                    episode.attempts += 1;
                    if episode.logged.elapsed() >= STILL_FAILING_EVERY {
                        episode.logged = Instant::now();
                        tracing::error!(
                            op,
                            %error,
                            attempts = episode.attempts,
                            failing_for_s = episode.since.elapsed().as_secs(),
                            "storage fault goes on"
                        );
                    }
                }
            }
            if self.inner.stop.is_cancelled() {
                if let Some(episode) = episode {
                    self.end(op, episode);
                }
                return Err(error);
            }
            tokio::select! {
                _ = self.inner.stop.cancelled() => {}
                _ = tokio::time::sleep(backoff.next_pause()) => {}
            }
        }
    }

    fn end(&self, op: &'static str, episode: Episode) {
        let left = self.inner.failing.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 {
            metrics::gauge!(crate::metrics::DISK_FAILING).set(0.0);
        }
        tracing::info!(
            op,
            attempts = episode.attempts,
            failed_for_ms = episode.since.elapsed().as_millis() as u64,
            still_failing = left,
            "storage fault over"
        );
    }
}

/// One run of failures of one operation.
struct Episode {
    since: Instant,
    logged: Instant,
    attempts: u64,
}

impl Episode {
    fn new() -> Episode {
        let now = Instant::now();
        Episode {
            since: now,
            logged: now,
            attempts: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let mut backoff = Backoff::default();
        let pauses: Vec<Duration> = (0..10).map(|_| backoff.next_pause()).collect();
        assert_eq!(pauses[0], FIRST_BACKOFF);
        assert_eq!(pauses[1], FIRST_BACKOFF * 2);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().unwrap(), MAX_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_fault_is_retried_and_reported_until_it_clears() {
        let health = DiskHealth::new();
        let calls = Arc::new(AtomicU32::new(0));
        let task = {
            let health = health.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                health
                    .retry("append", || {
                        let n = calls.fetch_add(1, Ordering::SeqCst);
                        async move {
                            if n < 5 {
                                Err(Failure::Transient(format!("no space ({n})")))
                            } else {
                                Ok(n)
                            }
                        }
                    })
                    .await
            })
        };
        // Wait (in paused time) until the first attempt failed.
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(health.failing());
        assert_eq!(health.fault().unwrap().op, "append");
        assert_eq!(task.await.unwrap(), Ok(5));
        assert!(!health.failing());
        assert_eq!(health.fault(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_returned_at_once() {
        let health = DiskHealth::new();
        let result: Result<(), String> = health
            .retry("read", || async {
                Err(Failure::Permanent("corrupt".to_owned()))
            })
            .await;
        assert_eq!(result, Err("corrupt".to_owned()));
        assert!(!health.failing());
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_a_retry_with_its_last_error() {
        let health = DiskHealth::new();
        let task = {
            let health = health.clone();
            tokio::spawn(async move {
                health
                    .retry("append", || async {
                        Err::<(), _>(Failure::Transient("read-only".to_owned()))
                    })
                    .await
            })
        };
        while !health.failing() {
            tokio::task::yield_now().await;
        }
        health.stop();
        assert_eq!(task.await.unwrap(), Err("read-only".to_owned()));
        assert!(!health.failing());
    }

    #[tokio::test(start_paused = true)]
    async fn two_failing_operations_keep_the_node_failing_until_both_clear() {
        let health = DiskHealth::new();
        let gate = Arc::new(AtomicU32::new(0));
        let spawn = |op: &'static str, until: u32| {
            let health = health.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                health
                    .retry(op, || {
                        let open = gate.load(Ordering::SeqCst) >= until;
                        async move {
                            if open {
                                Ok(())
                            } else {
                                Err::<(), _>(Failure::Transient("full"))
                            }
                        }
                    })
                    .await
            })
        };
        let first = spawn("append", 1);
        let second = spawn("snapshot write", 2);
        while health.inner.failing.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        gate.store(1, Ordering::SeqCst);
        first.await.unwrap().unwrap();
        assert!(health.failing(), "the snapshot write still fails");
        gate.store(2, Ordering::SeqCst);
        second.await.unwrap().unwrap();
        assert!(!health.failing());
    }
}
