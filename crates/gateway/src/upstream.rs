//! Client → app: every connection's events, sent to the serverless upstream in order.
//!
//! Each connection with an upstream configured has a [`Link`]: a bounded queue of its events
//! (connected, invocations, disconnected) and at most one worker task that sends them one at a
//! time, in the order the client sent them, and queues each answer for the client. Doing one
//! call at a time per connection is what ASP.NET Core SignalR does by default (one invocation
//! of a client at a time): the app sees a client's calls in the order it made them, the answers
//! come back in that order, and `connected` always comes first. Connections never wait for
//! each other: each has its own worker, and a slow upstream call holds up only its own
//! connection.
//!
//! The worker exists only while its connection has events to send, so an idle connection costs
//! no task. When the queue is full (too many events, or too many bytes of them) the connection
//! stops reading from its socket until the worker catches up: a client that floods invocations
//! is throttled by TCP back-pressure, as a slow hub would throttle it, and nothing it sent is
//! dropped.
//!
//! `disconnected` is queued when the connection ends, however it ends, behind whatever the
//! client sent before; the worker is a gateway task, so a draining gateway waits for it
//! (within the shutdown grace).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics::{Counter, Gauge, Histogram, Unit};
use parking_lot::Mutex;
use switchboard_core::Throttle;
use switchboard_protocol::{self as protocol, CompletionResult, HubMessage, Protocol};
use switchboard_upstream::{
    interpret, Category, Client, ClientConfig, Connection, Event, Failure, Settings,
};
use tokio_util::task::TaskTracker;

use crate::dispatch::to_message;
use crate::metrics::GatewayMetrics;
use crate::outbound::{Push, QueueLimits};
use crate::registry::ConnectionHandle;

/// How the gateway talks to the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub settings: Settings,
    pub client: ClientConfig,
    /// Events a connection may have waiting before it stops reading from its socket.
    pub max_pending: usize,
    /// Bytes of events a connection may have waiting before it stops reading.
    pub max_pending_bytes: usize,
}

impl UpstreamConfig {
    pub fn new(settings: Settings) -> UpstreamConfig {
        UpstreamConfig {
            settings,
            client: ClientConfig::default(),
            max_pending: 64,
            max_pending_bytes: 4 * 1024 * 1024,
        }
    }
}

/// One warning per interval about failing upstream calls, with a count of the ones held back.
static FAILURE_LOG: Throttle = Throttle::new(10_000);

/// The process's upstream: templates, client, keys and metrics.
pub struct Upstream {
    settings: Settings,
    client: Client,
    keys: Vec<String>,
    max_pending: usize,
    max_pending_bytes: usize,
    tracker: TaskTracker,
    metrics: UpstreamMetrics,
}

impl Upstream {
    /// `keys` sign every request; `tracker` runs the workers (the gateway's, so shutdown waits
    /// for the last `disconnected` calls).
    pub fn new(
        config: UpstreamConfig,
        keys: Vec<String>,
        tracker: TaskTracker,
    ) -> Result<Upstream, switchboard_upstream::ClientError> {
        Ok(Upstream {
            client: Client::new(config.client)?,
            settings: config.settings,
            keys,
            max_pending: config.max_pending.max(1),
            max_pending_bytes: config.max_pending_bytes.max(1),
            tracker,
            metrics: UpstreamMetrics::new(),
        })
    }

    /// The link of a connection whose handshake just completed; queues `connected`.
    pub(crate) fn open(
        self: &Arc<Self>,
        handle: Arc<ConnectionHandle>,
        connection: Connection,
        limits: QueueLimits,
        gateway: Arc<GatewayMetrics>,
    ) -> Arc<Link> {
        let link = Arc::new(Link {
            upstream: self.clone(),
            connection,
            handle,
            limits,
            gateway,
            state: Mutex::new(LinkState::default()),
        });
        link.submit(Job::Connected);
        link
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// How many URL templates are configured.
    pub fn templates(&self) -> usize {
        self.settings.templates().len()
    }
}

/// One thing to send for a connection.
#[derive(Debug)]
pub(crate) enum Job {
    Connected,
    Invoke {
        id: Option<String>,
        target: String,
        body: Bytes,
    },
    /// An invocation serverless mode cannot serve; answered in turn, without a call.
    Refuse {
        id: String,
        error: String,
    },
    Disconnected {
        error: Option<String>,
    },
}

impl Job {
    fn bytes(&self) -> usize {
        match self {
            Job::Connected => 0,
            Job::Invoke { target, body, .. } => target.len() + body.len(),
            Job::Refuse { id, error } => id.len() + error.len(),
            Job::Disconnected { error } => error.as_ref().map_or(0, String::len),
        }
    }
}

#[derive(Default)]
struct LinkState {
    jobs: VecDeque<Job>,
    bytes: usize,
    /// A worker is running (it exits when it finds the queue empty).
    running: bool,
    /// The connection stopped reading because the queue was full, and waits to be woken.
    waiting: bool,
}

/// A connection's queue of upstream events; see the module docs.
pub(crate) struct Link {
    upstream: Arc<Upstream>,
    connection: Connection,
    handle: Arc<ConnectionHandle>,
    limits: QueueLimits,
    gateway: Arc<GatewayMetrics>,
    state: Mutex<LinkState>,
}

impl Link {
    /// Queues `job`, starting a worker if none runs.
    pub(crate) fn submit(self: &Arc<Self>, job: Job) {
        let mut state = self.state.lock();
        state.bytes += job.bytes();
        state.jobs.push_back(job);
        if state.running {
            return;
        }
        state.running = true;
        drop(state);
        self.upstream.tracker.spawn(work(self.clone()));
    }

    /// Whether the connection must stop reading until the worker catches up. When it must,
    /// the worker wakes it (through its outbound queue's signal, which the connection task
    /// waits on anyway: no extra future per connection) as soon as it takes an event off.
    pub(crate) fn pause_if_full(&self) -> bool {
        let mut state = self.state.lock();
        let full = state.jobs.len() >= self.upstream.max_pending
            || state.bytes >= self.upstream.max_pending_bytes;
        if full && !state.waiting {
            state.waiting = true;
            self.upstream.metrics.throttled.increment(1);
        }
        full
    }

    /// Queues `disconnected` behind everything the client sent.
    pub(crate) fn close(self: &Arc<Self>, error: Option<String>) {
        self.submit(Job::Disconnected { error });
    }

    async fn run(&self, job: Job) {
        match job {
            Job::Connected => {
                let _ = self.send(Event::Connected, false).await;
            }
            Job::Disconnected { error } => {
                let _ = self
                    .send(
                        Event::Disconnected {
                            error: error.as_deref(),
                        },
                        false,
                    )
                    .await;
            }
            Job::Invoke { id, target, body } => {
                let answered = id.is_some();
                let result = self
                    .send(
                        Event::Message {
                            target: &target,
                            body,
                        },
                        answered,
                    )
                    .await;
                if let Some(id) = id {
                    self.answer(id, result);
                }
            }
            Job::Refuse { id, error } => {
                self.upstream
                    .metrics
                    .failure(Category::Messages, "unsupported");
                self.answer(id, Err(Failure::Unsupported(error)));
            }
        }
    }

    /// Sends one event; with `answered`, interprets the answer for the client.
    async fn send(&self, event: Event<'_>, answered: bool) -> Result<Option<Bytes>, Failure> {
        let upstream = &self.upstream;
        let metrics = &upstream.metrics;
        let category = event.category();
        let Some(request) = self.connection.request(&upstream.settings, &event) else {
            // Not routing connection events is a choice (templates for messages only); an
            // invocation nothing serves is a failure its caller hears about.
            if category == Category::Messages {
                metrics.failure(category, "no_match");
            }
            return Err(Failure::NoMatch {
                hub: self.connection.hub().to_owned(),
                event: event.name().to_owned(),
            });
        };
        let Some(place) = upstream.client.reserve() else {
            metrics.failure(category, "busy");
            self.warn(&event, &Failure::Busy);
            return Err(Failure::Busy);
        };
        metrics.in_flight.increment(1.0);
        let started = Instant::now();
        let response = upstream.client.call(&place, &request).await;
        drop(place);
        metrics.in_flight.decrement(1.0);
        metrics
            .seconds(category)
            .record(started.elapsed().as_secs_f64());
        let result = response.and_then(|r| {
            if answered {
                interpret(r.status, r.body, self.connection.protocol)
            } else if (200..300).contains(&r.status) {
                Ok(None)
            } else {
                Err(Failure::Status(r.status))
            }
        });
        match &result {
            Ok(_) => metrics.ok(category),
            Err(failure) => {
                metrics.failure(category, failure.reason());
                self.warn(&event, failure);
            }
        }
        result
    }

    fn warn(&self, event: &Event<'_>, failure: &Failure) {
        if let Some(suppressed) = FAILURE_LOG.allow(crate::now_ms()) {
            tracing::warn!(
                hub = %self.connection.hub(),
                connection_id = %self.connection.id(),
                category = event.category().as_str(),
                event = event.name(),
                reason = failure.reason(),
                error = %failure,
                suppressed,
                "upstream call failed"
            );
        }
    }

    /// Queues the completion of invocation `id` for the client.
    fn answer(&self, id: String, result: Result<Option<Bytes>, Failure>) {
        let protocol = self.connection.protocol;
        let frame = match result {
            Ok(Some(frames)) => Some(frames),
            Ok(None) => completion(protocol, id, CompletionResult::Void),
            Err(failure) => completion(protocol, id, CompletionResult::Error(failure.to_string())),
        };
        let Some(message) = frame.and_then(|f| to_message(protocol, f)) else {
            return;
        };
        if self.handle.outbound.push(message, self.limits) == Push::Overflow {
            self.gateway.slow_consumer_closes.increment(1);
            self.gateway.queue_dropped.increment(1);
        }
    }
}

fn completion(protocol: Protocol, id: String, result: CompletionResult) -> Option<Bytes> {
    let message = HubMessage::Completion {
        invocation_id: id,
        result,
        headers: Vec::new(),
    };
    protocol::encode(protocol, &message).ok()
}

/// Sends a link's events until its queue is empty.
async fn work(link: Arc<Link>) {
    loop {
        let job = {
            let mut state = link.state.lock();
            match state.jobs.pop_front() {
                Some(job) => {
                    state.bytes -= job.bytes();
                    if std::mem::take(&mut state.waiting) {
                        link.handle.outbound.wake();
                    }
                    job
                }
                None => {
                    state.running = false;
                    return;
                }
            }
        };
        link.run(job).await;
    }
}

/// Upstream metrics (`switchboard_upstream_*`).
struct UpstreamMetrics {
    in_flight: Gauge,
    throttled: Counter,
    /// `[category][ok, failed]`.
    requests: [[Counter; 2]; 2],
    seconds: [Histogram; 2],
    failures: [Vec<(&'static str, Counter)>; 2],
}

const CATEGORIES: [Category; 2] = [Category::Connections, Category::Messages];

impl UpstreamMetrics {
    fn new() -> UpstreamMetrics {
        describe_counter!(
            "switchboard_upstream_requests_total",
            "Upstream events by category (connections, messages) and outcome (ok, failed); failed includes events no template matched and calls refused because too many were in flight."
        );
        describe_counter!(
            "switchboard_upstream_failures_total",
            "Upstream events that failed, by category and reason: status (not 200/204), timeout, unreachable, too_large, no_match, invalid_answer (not a framed completion), busy (too many calls in flight), unsupported (streaming)."
        );
        describe_histogram!(
            "switchboard_upstream_request_duration_seconds",
            Unit::Seconds,
            "Time of an upstream call, from waiting for a connection to the last byte of the answer, by category."
        );
        describe_gauge!(
            "switchboard_upstream_in_flight",
            "Upstream calls in flight on this gateway."
        );
        describe_counter!(
            "switchboard_upstream_throttled_total",
            "Times a connection stopped reading from its socket because its queue of upstream events was full (a client sending faster than the upstream answers)."
        );
        let index = |c: Category| c.as_str();
        UpstreamMetrics {
            in_flight: gauge!("switchboard_upstream_in_flight"),
            throttled: counter!("switchboard_upstream_throttled_total"),
            requests: CATEGORIES.map(|c| {
                [
                    counter!("switchboard_upstream_requests_total", "category" => index(c), "outcome" => "ok"),
                    counter!("switchboard_upstream_requests_total", "category" => index(c), "outcome" => "failed"),
                ]
            }),
            seconds: CATEGORIES.map(|c| {
                histogram!("switchboard_upstream_request_duration_seconds", "category" => index(c))
            }),
            failures: CATEGORIES.map(|c| {
                Failure::REASONS
                    .iter()
                    .map(|r| {
                        (
                            *r,
                            counter!("switchboard_upstream_failures_total", "category" => index(c), "reason" => *r),
                        )
                    })
                    .collect()
            }),
        }
    }

    fn slot(category: Category) -> usize {
        match category {
            Category::Connections => 0,
            Category::Messages => 1,
        }
    }

    fn ok(&self, category: Category) {
        self.requests[Self::slot(category)][0].increment(1);
    }

    fn failure(&self, category: Category, reason: &'static str) {
        let slot = Self::slot(category);
        self.requests[slot][1].increment(1);
        if let Some((_, counter)) = self.failures[slot].iter().find(|(r, _)| *r == reason) {
            counter.increment(1);
        }
    }

    fn seconds(&self, category: Category) -> &Histogram {
        &self.seconds[Self::slot(category)]
    }
}
