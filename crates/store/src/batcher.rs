//! Group commit: many concurrent writes, one log entry, one fsync.
//!
//! Every write goes through one bounded queue to one batcher task. The batcher takes whatever has
//! queued up (up to `max_batch_commands` commands, never splitting one caller's commands), stamps
//! the batch with the leader's wall clock — the only time the state machine ever sees — and
//! proposes it as a single entry. At most `max_in_flight` entries are in flight; while they
//! commit, the next batch accumulates in the queue, so under load many commands share one fsync.
//! Each caller gets its own slice of the entry's outcomes.
//!
//! On a follower the batch goes to the [`Forwarder`] instead, and the answer waits until this
//! node has applied the leader's entry (read-your-writes on every node). Writes that were already
//! forwarded to this node ([`Submitter::submit_leader_only`]) are never forwarded again: on a
//! node that is not the leader they fail with [`StoreError::NotLeader`], so two nodes with stale
//! ideas of who leads cannot bounce a write between them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::ClientWriteError;
use openraft::BasicNode;
use switchboard_membership::{Batch, Command};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::View;
use crate::disk::DiskHealth;
use crate::error::StoreError;
use crate::forward::{Applied, Forwarder};
use crate::{Raft, RaftMetrics};

/// How long an entry in flight may still take once shutdown has begun.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Milliseconds since the Unix epoch by this machine's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One caller's commands and where to send their outcomes.
pub(crate) struct Request {
    pub(crate) commands: Vec<Command>,
    pub(crate) reply: oneshot::Sender<Result<Applied, StoreError>>,
    /// Whether a follower may hand these commands to the leader (false for writes that another
    /// node already forwarded here).
    pub(crate) forward: bool,
    /// Set once the commands left this node's queue for the log (proposed, forwarded, or sent
    /// to a voter): from then on a write that runs out of time may still be applied.
    pub(crate) sent: Arc<AtomicBool>,
}

impl Request {
    pub(crate) fn mark_sent(&self) {
        self.sent.store(true, Ordering::Release);
    }
}

/// The sending side of the batcher queue: submits commands and waits for their outcomes.
#[derive(Clone)]
pub(crate) struct Submitter {
    tx: mpsc::Sender<Request>,
    timeout: Duration,
}

impl Submitter {
    /// [`Submitter::submit`] for a `MembershipStore::write_all` call: the outcomes, with the
    /// write counted and timed in the store's metrics.
    pub(crate) async fn write_all(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<switchboard_membership::Outcome>, StoreError> {
        self.write_indexed(commands)
            .await
            .map(|applied| applied.outcomes)
    }

    /// [`Submitter::write_all`] with the index of the log entry that carried the commands.
    pub(crate) async fn write_indexed(
        &self,
        commands: Vec<Command>,
    ) -> Result<Applied, StoreError> {
        let started = std::time::Instant::now();
        let result = self.submit(commands).await;
        let label = crate::metrics::result_label(&result.as_ref().map(|_| ()));
        crate::metrics::write_done(label, started.elapsed());
        result
    }

    /// A submitter feeding `tx`, waiting at most `timeout` per call (for batchers elsewhere in
    /// the crate that consume the same requests).
    pub(crate) fn new(tx: mpsc::Sender<Request>, timeout: Duration) -> Submitter {
        Submitter { tx, timeout }
    }

    /// Queues `commands` as one unit and waits (at most the write timeout) until they are
    /// applied locally.
    pub(crate) async fn submit(&self, commands: Vec<Command>) -> Result<Applied, StoreError> {
        self.submit_with(commands, true).await
    }

    /// Like [`Submitter::submit`], but fails with [`StoreError::NotLeader`] instead of
    /// forwarding when this node does not lead.
    pub(crate) async fn submit_leader_only(
        &self,
        commands: Vec<Command>,
    ) -> Result<Applied, StoreError> {
        self.submit_with(commands, false).await
    }

    async fn submit_with(
        &self,
        commands: Vec<Command>,
        forward: bool,
    ) -> Result<Applied, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sent = Arc::new(AtomicBool::new(false));
        let exchange = async {
            self.tx
                .send(Request {
                    commands,
                    reply,
                    forward,
                    sent: sent.clone(),
                })
                .await
                .map_err(|_| StoreError::Unavailable("the store is shutting down".to_owned()))?;
            answer.await.map_err(|_| {
                StoreError::Unavailable("the store stopped before answering".to_owned())
            })?
        };
        // The caller's one deadline. The timers inside (waiting for a leader, for the commit,
        // for this node to catch up) start later and answer alike: not yet sent is unavailable
        // (nothing was applied), sent is a timeout (it may still be applied).
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) if sent.load(Ordering::Acquire) => Err(StoreError::Timeout(format!(
                "the write was not applied within {} ms; it may still be applied",
                self.timeout.as_millis()
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the write could not be sent to a leader within {} ms; it was not applied",
                self.timeout.as_millis()
            ))),
        }
    }
}

/// How much one batch (one log entry, one write RPC) may carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub(crate) commands: usize,
    /// Bound on the encoded size ([`Command::size_bound`] summed).
    pub(crate) bytes: usize,
}

fn request_bytes(request: &Request) -> usize {
    request.commands.iter().map(Command::size_bound).sum()
}

/// Takes `first` and whatever else is queued in `rx` right now, up to `limits`, never splitting
/// one caller's commands. Returns the batch and the request that did not fit (to start the next
/// one); a caller whose commands alone exceed the byte limit is answered with an error.
pub(crate) fn gather(
    first: Request,
    rx: &mut mpsc::Receiver<Request>,
    limits: BatchLimits,
) -> (Vec<Request>, Option<Request>) {
    let mut bytes = request_bytes(&first);
    if bytes > limits.bytes {
        fail(
            vec![first],
            StoreError::Internal(format!(
                "one write of {bytes} bytes exceeds the {} bytes a log entry may carry",
                limits.bytes
            )),
        );
        return (Vec::new(), None);
    }
    let mut commands = first.commands.len();
    let mut requests = vec![first];
    while commands < limits.commands {
        let Ok(request) = rx.try_recv() else { break };
        let more = request_bytes(&request);
        if commands + request.commands.len() > limits.commands || bytes + more > limits.bytes {
            return (requests, Some(request));
        }
        commands += request.commands.len();
        bytes += more;
        requests.push(request);
    }
    (requests, None)
}

/// Settings of the batcher.
pub(crate) struct BatcherConfig {
    pub(crate) node_id: u64,
    pub(crate) max_batch_commands: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) write_timeout: Duration,
}

/// The task that turns queued requests into log entries.
pub(crate) struct Batcher {
    node_id: u64,
    raft: Raft,
    metrics: watch::Receiver<RaftMetrics>,
    rx: mpsc::Receiver<Request>,
    forwarder: Arc<dyn Forwarder>,
    limits: BatchLimits,
    in_flight: Arc<Semaphore>,
    wait: Duration,
    cancel: CancellationToken,
    tasks: TaskTracker,
    view: View,
    /// This node's disk: while it fails, writes are refused at once (see `crate::disk`).
    disk: DiskHealth,
}

impl Batcher {
    /// Creates the batcher and the submitter that feeds it.
    pub(crate) fn new(
        config: BatcherConfig,
        raft: Raft,
        forwarder: Arc<dyn Forwarder>,
        view: View,
        disk: DiskHealth,
        cancel: CancellationToken,
    ) -> (Batcher, Submitter) {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let batcher = Batcher {
            node_id: config.node_id,
            metrics: raft.metrics(),
            raft,
            rx,
            forwarder,
            limits: BatchLimits {
                commands: config.max_batch_commands.max(1),
                bytes: config.max_batch_bytes.max(1),
            },
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            wait: config.write_timeout,
            cancel,
            tasks: TaskTracker::new(),
            view,
            disk,
        };
        (
            batcher,
            Submitter {
                tx,
                timeout: config.write_timeout,
            },
        )
    }

    /// The semaphore that bounds entries in flight, and its size: holding every permit pauses
    /// the batcher once what is in flight is done (a leadership transfer does).
    pub(crate) fn gate(&self) -> (Arc<Semaphore>, u32) {
        let permits = self.in_flight.available_permits();
        (
            self.in_flight.clone(),
            u32::try_from(permits).unwrap_or(u32::MAX),
        )
    }

    /// Runs until cancelled; then answers whatever is still queued and waits for the entries in
    /// flight.
    pub(crate) async fn run(mut self) {
        let mut carry: Option<Request> = None;
        loop {
            let permit = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                permit = self.in_flight.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let first = match carry.take() {
                Some(request) => request,
                None => tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => break,
                    request = self.rx.recv() => match request {
                        Some(request) => request,
                        None => break,
                    },
                },
            };
            let (mut requests, rest) = gather(first, &mut self.rx, self.limits);
            carry = rest;
            // Callers that gave up (timeout, dropped request) need no work done.
            requests.retain(|r| !r.reply.is_closed());
            if requests.is_empty() {
                continue;
            }
            let work = self.dispatch(requests).await;
            let cancel = self.cancel.clone();
            let limit = self.wait;
            let view = self.view.clone();
            self.tasks
                .spawn(async move { work.finish(cancel, limit, permit, view).await });
        }
        self.rx.close();
        let shutting_down = || StoreError::Unavailable("the store is shutting down".to_owned());
        if let Some(request) = carry.take() {
            let _ = request.reply.send(Err(shutting_down()));
        }
        while let Ok(request) = self.rx.try_recv() {
            let _ = request.reply.send(Err(shutting_down()));
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Waits (bounded) until some leader is known.
    async fn leader(&mut self) -> Option<(u64, Option<BasicNode>)> {
        let deadline = tokio::time::sleep(self.wait);
        tokio::pin!(deadline);
        loop {
            {
                let m = self.metrics.borrow_and_update();
                if let Some(leader) = m.current_leader {
                    let node = m.membership_config.membership().get_node(&leader).cloned();
                    return Some((leader, node));
                }
            }
            tokio::select! {
                _ = &mut deadline => return None,
                _ = self.cancel.cancelled() => return None,
                changed = self.metrics.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// Starts committing one batch: proposes it (leader) or starts forwarding it (follower).
    async fn dispatch(&mut self, mut requests: Vec<Request>) -> Work {
        if self.disk.failing() {
            // A leader could not append them and a follower could not apply them: refused now
            // (nothing was sent), rather than timing out with an unknown outcome.
            return Work::Failed(
                requests,
                StoreError::Unavailable(
                    "this store node cannot write to its disk now; try again later".to_owned(),
                ),
            );
        }
        let Some((leader, leader_node)) = self.leader().await else {
            return Work::Failed(
                requests,
                StoreError::Unavailable(
                    "no raft leader is known; the store may be electing one".to_owned(),
                ),
            );
        };
        let voter = self
            .metrics
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.node_id);
        if leader == self.node_id && !voter {
            // A leader that removed itself from the voters believes it leads until it hears of
            // the next term: nothing it proposes could commit. The caller tries another voter.
            return Work::Failed(
                requests,
                StoreError::NotLeader {
                    leader_id: None,
                    leader_addr: None,
                },
            );
        }
        if leader != self.node_id {
            // Writes forwarded here from another node go no further, and a node that does not
            // vote (a learner catching up, a voter removed) forwards none: the leader would
            // refuse them from it; the caller is told where the leader is instead.
            let (forwardable, refused): (Vec<_>, Vec<_>) =
                requests.into_iter().partition(|r| r.forward && voter);
            if !refused.is_empty() {
                fail(
                    refused,
                    StoreError::NotLeader {
                        leader_id: Some(leader),
                        leader_addr: leader_node.as_ref().map(|n| n.addr.clone()),
                    },
                );
            }
            requests = forwardable;
            if requests.is_empty() {
                return Work::Done;
            }
        }
        let total: usize = requests.iter().map(|r| r.commands.len()).sum();
        let mut commands = Vec::with_capacity(total);
        let mut sizes = Vec::with_capacity(requests.len());
        for request in &mut requests {
            sizes.push(request.commands.len());
            commands.append(&mut request.commands);
        }
        crate::metrics::write_batch(total);
        requests.iter().for_each(Request::mark_sent);
        if leader == self.node_id {
            let batch = Batch {
                // The state machine keeps its time monotone (max of this and its own).
                time_ms: now_ms(),
                commands,
            };
            match self.raft.client_write_ff(batch).await {
                Ok(pending) => Work::Proposed {
                    requests,
                    sizes,
                    pending,
                },
                Err(fatal) => Work::Failed(
                    requests,
                    StoreError::Unavailable(format!("raft stopped: {fatal}")),
                ),
            }
        } else {
            let forwarder = self.forwarder.clone();
            let forwarded =
                Box::pin(async move { forwarder.forward(leader, leader_node, commands).await });
            Work::Forwarded {
                requests,
                sizes,
                forwarded,
            }
        }
    }
}

type Pending = tokio::sync::oneshot::Receiver<openraft::raft::ClientWriteResult<crate::TypeConfig>>;
type ForwardFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied, StoreError>> + Send>>;

/// A batch on its way to being applied.
enum Work {
    /// Nothing left to do (every request was already answered).
    Done,
    Failed(Vec<Request>, StoreError),
    Proposed {
        requests: Vec<Request>,
        sizes: Vec<usize>,
        pending: Pending,
    },
    Forwarded {
        requests: Vec<Request>,
        sizes: Vec<usize>,
        forwarded: ForwardFuture,
    },
}

impl Work {
    /// Waits for the work's result and answers its callers. Bounded by `limit` whatever Raft
    /// does: an entry proposed by a leader that lost its leadership may never be answered, and
    /// an unbounded wait would hold an in-flight slot (and so every later write) forever.
    async fn finish(
        self,
        cancel: CancellationToken,
        limit: Duration,
        permit: OwnedSemaphorePermit,
        view: View,
    ) {
        // On shutdown an entry in flight still gets a moment to be applied and answered.
        let give_up = async {
            tokio::select! {
                _ = cancel.cancelled() => {
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                    StoreError::Unavailable("the store is shutting down".to_owned())
                }
                _ = tokio::time::sleep(limit) => StoreError::Timeout(format!(
                    "the entry was not committed within {} ms (the leadership may have changed); it may still be applied",
                    limit.as_millis()
                )),
            }
        };
        tokio::pin!(give_up);
        match self {
            Work::Done => {}
            Work::Failed(requests, error) => fail(requests, error),
            Work::Proposed {
                requests,
                sizes,
                pending,
            } => {
                let result = tokio::select! {
                    error = &mut give_up => Err(error),
                    result = pending => match result {
                        Ok(Ok(response)) => Ok(Applied { log_index: response.log_id.index, outcomes: response.data }),
                        Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(StoreError::NotLeader {
                            leader_id: f.leader_id,
                            leader_addr: f.leader_node.map(|n| n.addr),
                        }),
                        Ok(Err(e)) => Err(StoreError::Internal(e.to_string())),
                        Err(_) => Err(StoreError::Unavailable("raft dropped the write (leadership lost or shutting down)".to_owned())),
                    },
                };
                distribute(requests, sizes, result);
            }
            Work::Forwarded {
                requests,
                sizes,
                forwarded,
            } => {
                let mut result = tokio::select! {
                    error = &mut give_up => Err(error),
                    result = forwarded => result,
                };
                // The leader has it: the next batch may go while this node catches up.
                drop(permit);
                if let Ok(applied) = &result {
                    if !view.wait_applied(applied.log_index, limit).await {
                        result = Err(StoreError::Timeout(format!(
                            "the leader applied the write at index {}, but this node has not caught up yet",
                            applied.log_index
                        )));
                    }
                }
                distribute(requests, sizes, result);
            }
        }
    }
}

pub(crate) fn fail(requests: Vec<Request>, error: StoreError) {
    for request in requests {
        let _ = request.reply.send(Err(error.clone()));
    }
}

/// Hands each request its own slice of the entry's outcomes.
pub(crate) fn distribute(
    requests: Vec<Request>,
    sizes: Vec<usize>,
    result: Result<Applied, StoreError>,
) {
    let applied = match result {
        Ok(applied) => applied,
        Err(error) => return fail(requests, error),
    };
    let expected: usize = sizes.iter().sum();
    if applied.outcomes.len() != expected {
        let error = StoreError::Internal(format!(
            "entry {} produced {} outcomes for {expected} commands",
            applied.log_index,
            applied.outcomes.len()
        ));
        return fail(requests, error);
    }
    let mut outcomes = applied.outcomes.into_iter();
    for (request, size) in requests.into_iter().zip(sizes) {
        let mine: Vec<_> = outcomes.by_ref().take(size).collect();
        let _ = request.reply.send(Ok(Applied {
            log_index: applied.log_index,
            outcomes: mine,
        }));
    }
}

#[cfg(test)]
mod tests {
    use switchboard_membership::Outcome;

    use super::*;

    fn request(n: usize) -> (Request, oneshot::Receiver<Result<Applied, StoreError>>) {
        let (reply, rx) = oneshot::channel();
        (
            Request {
                commands: vec![Command::Tick; n],
                reply,
                forward: true,
                sent: Arc::default(),
            },
            rx,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_out_of_time_is_unavailable_until_sent_and_a_timeout_after() {
        let (tx, mut rx) = mpsc::channel(4);
        let submitter = Submitter::new(tx, Duration::from_secs(5));
        // Queued but never taken (no leader): nothing was applied.
        let error = submitter.submit(vec![Command::Tick]).await.unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
        let _ = rx.recv().await;
        // Taken and sent, never answered: it may still be applied.
        let taker = tokio::spawn(async move {
            let mut request = rx.recv().await.unwrap_or_else(|| unreachable!());
            request.mark_sent();
            // Held unanswered until the caller gives up.
            request.reply.closed().await;
        });
        let error = submitter.submit(vec![Command::Tick]).await.unwrap_err();
        assert!(matches!(error, StoreError::Timeout(_)), "{error}");
        assert_eq!(switchboard_core::Error::from(error).code.http_status(), 504);
        taker.await.unwrap_or_else(|_| unreachable!());
    }

    #[test]
    fn outcomes_are_split_in_request_order() {
        let (a, mut ra) = request(1);
        let (b, mut rb) = request(2);
        let outcomes = vec![
            Outcome::Ok,
            Outcome::ConnectionNotFound,
            Outcome::Registered,
        ];
        distribute(
            vec![a, b],
            vec![1, 2],
            Ok(Applied {
                log_index: 9,
                outcomes,
            }),
        );
        assert_eq!(
            ra.try_recv().unwrap().unwrap(),
            Applied {
                log_index: 9,
                outcomes: vec![Outcome::Ok]
            }
        );
        assert_eq!(
            rb.try_recv().unwrap().unwrap(),
            Applied {
                log_index: 9,
                outcomes: vec![Outcome::ConnectionNotFound, Outcome::Registered]
            }
        );
    }

    fn nth_outcome(i: usize) -> Outcome {
        [
            Outcome::Ok,
            Outcome::ConnectionNotFound,
            Outcome::Registered,
            Outcome::Renewed,
            Outcome::StaleIncarnation,
        ][i % 5]
    }

    proptest::proptest! {
        #[test]
        fn every_request_gets_exactly_its_own_slice(sizes in proptest::collection::vec(1usize..6, 1..12)) {
            let total: usize = sizes.iter().sum();
            let outcomes: Vec<Outcome> = (0..total).map(nth_outcome).collect();
            let (requests, mut receivers): (Vec<_>, Vec<_>) = sizes.iter().map(|&n| request(n)).unzip();
            distribute(requests, sizes.clone(), Ok(Applied { log_index: 5, outcomes: outcomes.clone() }));
            let mut offset = 0;
            for (rx, size) in receivers.iter_mut().zip(&sizes) {
                let got = rx.try_recv().unwrap().unwrap();
                proptest::prop_assert_eq!(&got.outcomes[..], &outcomes[offset..offset + size]);
                proptest::prop_assert_eq!(got.log_index, 5);
                offset += size;
            }
        }
    }

    #[test]
    fn a_short_outcome_list_is_an_error_for_everyone() {
        let (a, mut ra) = request(1);
        let (b, mut rb) = request(1);
        distribute(
            vec![a, b],
            vec![1, 1],
            Ok(Applied {
                log_index: 3,
                outcomes: vec![Outcome::Ok],
            }),
        );
        assert!(matches!(
            ra.try_recv().unwrap(),
            Err(StoreError::Internal(_))
        ));
        assert!(matches!(
            rb.try_recv().unwrap(),
            Err(StoreError::Internal(_))
        ));
    }
}
