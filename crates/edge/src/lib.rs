//! The public HTTP edge: everything between an accepted socket and the router.
//!
//! A public port meets slow, silent, malformed and plentiful clients. This crate makes each of
//! them cost a bounded amount and get a documented answer:
//! - **Strict framing** ([`head`]): every request head is validated before the HTTP server sees
//!   it; a malformed one is answered 400 (414, 431) with an `ErrorDetail` body by the caller's
//!   [`Reject`] function, then the connection closes.
//! - **Deadlines** ([`conn`]): heads within the header timeout, bodies at a minimum pace, idle
//!   connections closed after the idle timeout; WebSockets are exempt once upgraded.
//! - **A socket cap** ([`Table`]): at most `max_sockets` open at once. When full, a connection
//!   with no request being served and no upgrade is closed to make room — one that never carried
//!   a request first (the oldest), else the one idle longest — so health checks, REST and the
//!   clients' keep-alive connections keep working while an attacker holds thousands of silent
//!   sockets; only when every socket is busy is a new one refused.
//! - **Accepting at the file limit**: an accept error (out of file descriptors) is logged at a
//!   limited rate and retried after a pause; the loop never spins and never stops.
//! - **TLS** (optional): handshakes bounded by the header timeout.
//! - **Detached requests** ([`detach`]): bodiless `GET`s to [`EdgeConfig::detach_paths`] (the
//!   client endpoints: Server-Sent Events streams, Long Polling polls) are answered by the edge
//!   itself outside hyper's connection state, so an idle stream keeps no HTTP buffers.
//!
//! HTTP/1.1 only (with upgrades to WebSockets).

pub mod conn;
mod detach;
pub mod head;
mod metrics;

pub use metrics::describe as describe_metrics;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use http::{HeaderValue, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use switchboard_core::throttle::{now_ms, Throttle};
use switchboard_core::{Error, ErrorCode};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{Conn, ConnState, Ending, Timeouts};
use crate::head::{Limits, Rejection};

/// Turns an edge refusal into the response the client gets (an `ErrorDetail`).
pub type Reject = Arc<dyn Fn(Error) -> Response + Send + Sync>;

/// How the edge treats connections.
#[derive(Clone)]
pub struct EdgeConfig {
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Sockets open at once, at most.
    pub max_sockets: usize,
    /// Server-only TLS, if the listener speaks HTTPS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub reject: Reject,
    /// Paths (exact, any query) whose bodiless `GET`s are detached from the HTTP server: the
    /// long-lived client requests.
    pub detach_paths: Arc<[String]>,
}

impl EdgeConfig {
    /// The defaults: Azure's head limits, a 10 s header timeout, a 120 s idle timeout.
    pub fn new(max_sockets: usize, reject: Reject) -> EdgeConfig {
        EdgeConfig {
            limits: Limits::default(),
            timeouts: Timeouts {
                header: Duration::from_secs(10),
                idle: Duration::from_secs(120),
            },
            max_sockets,
            tls: None,
            reject,
            detach_paths: Arc::from([]),
        }
    }
}

impl std::fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field("limits", &self.limits)
            .field("timeouts", &self.timeouts)
            .field("max_sockets", &self.max_sockets)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A connection's place in the [`Table`], given back when the connection is gone — for an
/// upgraded one, when the WebSocket closes, since it travels inside the socket wrapper.
pub(crate) struct Slot {
    table: Arc<Table>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.release(self.id);
    }
}

/// The open connections, for the cap and for eviction.
struct Table {
    max: usize,
    next: AtomicU64,
    /// Connections still speaking HTTP (eviction candidates among them).
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// Upgraded connections: counted, never evicted, not tracked one by one.
    upgraded: AtomicUsize,
    /// The table's epoch: `ConnState::last_progress_ms` counts from here.
    epoch: tokio::time::Instant,
}

impl Table {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A slot for a new connection: free, or freed by evicting the connection that has made no
    /// progress for longest. `None` if every connection is busy.
    fn admit(self: &Arc<Self>) -> Option<(Slot, Arc<ConnState>)> {
        let mut open = self.open.lock();
        if open.len() + self.upgraded.load(Ordering::Acquire) >= self.max {
            let victim = open
                .values()
                .filter(|c| c.evictable() && !c.evicted.load(Ordering::Acquire))
                // Sockets that never carried a request go first (a flood of silent ones evicts
                // its own kind), then the one idle longest.
                .min_by_key(|c| {
                    (
                        c.served.load(Ordering::Acquire),
                        c.last_progress_ms.load(Ordering::Acquire),
                    )
                })?;
            victim.evict();
            metrics::connection_ended("evicted");
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(self.now_ms()));
        open.insert(id, state.clone());
        metrics::open_sockets(open.len() + self.upgraded.load(Ordering::Acquire));
        Some((
            Slot {
                table: self.clone(),
                id,
            },
            state,
        ))
    }

    /// The connection upgraded: it keeps its place but leaves the eviction candidates.
    fn promote(&self, id: u64) {
        let mut open = self.open.lock();
        if open.remove(&id).is_some() {
            self.upgraded.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn release(&self, id: u64) {
        let mut open = self.open.lock();
        if open.remove(&id).is_none() {
            self.upgraded.fetch_sub(1, Ordering::AcqRel);
        }
        metrics::open_sockets(open.len() + self.upgraded.load(Ordering::Acquire));
    }
}

static ACCEPT_LOG: Throttle = Throttle::new(5_000);
static REFUSE_LOG: Throttle = Throttle::new(5_000);

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets HTTP connections
/// finish their current request (bounded by `drain`), and returns. Upgraded connections belong
/// to whoever upgraded them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: EdgeConfig,
    shutdown: CancellationToken,
    drain: Duration,
) {
    metrics::describe();
    let table = Arc::new(Table {
        max: config.max_sockets.max(1),
        next: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
        upgraded: AtomicUsize::new(0),
        epoch: tokio::time::Instant::now(),
    });
    let tasks = TaskTracker::new();
    let config = Arc::new(config);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(error) => {
                metrics::accept_error();
                if let Some(suppressed) = ACCEPT_LOG.allow(now_ms()) {
                    tracing::warn!(%error, suppressed, "cannot accept a connection; retrying");
                }
                // Most likely out of file descriptors: give connections time to close.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
        };
        let Some((slot, state)) = table.admit() else {
            metrics::connection_ended("limit");
            if let Some(suppressed) = REFUSE_LOG.allow(now_ms()) {
                tracing::warn!(%remote, max = table.max, suppressed, "every connection is busy: refusing a new one");
            }
            refuse_busy(&tcp);
            continue;
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let (table, config, router, shutdown) = (
            table.clone(),
            config.clone(),
            router.clone(),
            shutdown.clone(),
        );
        tasks.spawn(serve_connection(
            tcp, remote, slot, state, table, config, router, shutdown,
        ));
    }
    tasks.close();
    if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
        tracing::debug!("HTTP connections still open after the drain period");
    }
}

/// Tells a client there is no room, without waiting for it (the socket closes right after).
fn refuse_busy(tcp: &TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 96\r\nconnection: close\r\n\r\n{\"code\":\"Error.Service.Unavailable\",\"message\":\"Every connection of this server is busy; retry.\"}";
    let _ = tcp.try_write(BUSY);
}

/// A connection's task. Not an `async fn`: it would keep its arguments beside the future it
/// hands them to, for as long as the connection lives.
#[allow(clippy::too_many_arguments)]
fn serve_connection(
    tcp: TcpStream,
    remote: SocketAddr,
    slot: Slot,
    state: Arc<ConnState>,
    table: Arc<Table>,
    config: Arc<EdgeConfig>,
    router: Router,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    match config.tls.clone() {
        None => futures::future::Either::Left(turns(
            tcp, slot, remote, state, table, config, router, shutdown,
        )),
        // Boxed: a plain connection's task does not carry a TLS stream's size.
        Some(tls) => futures::future::Either::Right(Box::pin(serve_tls(
            tls, tcp, remote, slot, state, table, config, router, shutdown,
        ))),
    }
}

/// A TLS connection: the handshake (bounded by the header timeout, evictable), then its turns.
#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    tls: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
    remote: SocketAddr,
    slot: Slot,
    state: Arc<ConnState>,
    table: Arc<Table>,
    config: Arc<EdgeConfig>,
    router: Router,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshake = tokio::time::timeout(config.timeouts.header, acceptor.accept(tcp));
    // A handshake in progress is a connection like any other: the table may evict it.
    let evicted = futures::future::poll_fn(|cx| {
        state.waker.register(cx.waker());
        if state.evicted.load(Ordering::Acquire) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    });
    let stream = tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = evicted => {
            metrics::connection_ended("evicted_closed");
            return;
        }
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                metrics::connection_ended("tls");
                tracing::debug!(%remote, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics::connection_ended("tls");
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        },
    };
    turns(stream, slot, remote, state, table, config, router, shutdown).await;
}

fn on_end(ending: Ending) {
    metrics::connection_ended(match ending {
        Ending::Malformed => "malformed",
        Ending::HeadTimeout => "head_timeout",
        Ending::SilentTimeout => "silent_timeout",
        Ending::IdleTimeout => "idle_timeout",
        Ending::BodyTimeout => "body_timeout",
        Ending::WriteTimeout => "write_timeout",
        Ending::Evicted => "evicted_closed",
    })
}

/// A connection's life: turns of the HTTP server, each ended by a detached request that the
/// edge answers itself before handing the socket back (see [`detach`]).
#[allow(clippy::too_many_arguments)]
async fn turns<IO>(
    mut io: IO,
    mut slot: Slot,
    remote: SocketAddr,
    state: Arc<ConnState>,
    table: Arc<Table>,
    config: Arc<EdgeConfig>,
    router: Router,
    shutdown: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let id = slot.id;
    let mut after = None;
    loop {
        let conn = Conn::resume(
            io,
            config.limits,
            config.detach_paths.clone(),
            config.timeouts,
            state.clone(),
            on_end,
            slot,
            after.take(),
        );
        // Boxed: while a detached request is answered, the HTTP server's state is gone.
        let turn = Box::pin(http1(
            conn,
            id,
            remote,
            state.clone(),
            &table,
            &config,
            router.clone(),
            shutdown.clone(),
        ))
        .await;
        let Some((socket, detached, socket_slot)) = turn.and_then(Conn::into_detached) else {
            return;
        };
        let ctx = detach::Ctx {
            id,
            remote,
            state: &state,
            table: &table,
            reject: &config.reject,
            router: router.clone(),
            idle: config.timeouts.idle,
            max_headers: config.limits.max_headers,
        };
        let Some(back) = detach::serve(socket, socket_slot, detached, ctx).await else {
            return;
        };
        if shutdown.is_cancelled() {
            return;
        }
        (io, slot, after) = (back.io, back.slot, Some(back.after));
    }
}

/// One turn of the HTTP server on a connection; the connection back if the turn ended at a
/// detached request.
#[allow(clippy::too_many_arguments)]
async fn http1<IO>(
    conn: Conn<IO>,
    id: u64,
    remote: SocketAddr,
    state: Arc<ConnState>,
    table: &Arc<Table>,
    config: &Arc<EdgeConfig>,
    router: Router,
    shutdown: CancellationToken,
) -> Option<Conn<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let requests = Arc::new(AtomicU64::new(0));
    let service = {
        let (state, table, reject) = (state.clone(), table.clone(), config.reject.clone());
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let seq = requests.fetch_add(1, Ordering::Relaxed) + 1;
            let (state, table, reject, router) =
                (state.clone(), table.clone(), reject.clone(), router.clone());
            async move {
                Ok::<_, Infallible>(
                    handle(request, seq, id, remote, state, &table, &reject, router).await,
                )
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .half_close(false)
        .max_buf_size(64 * 1024)
        .max_headers(config.limits.max_headers)
        // The scanner enforces the head deadline (hyper's would count idle time too).
        .header_read_timeout(None);
    let mut connection = builder
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades();
    tokio::select! {
        result = &mut connection => {
            if let Err(error) = result {
                tracing::debug!(%remote, %error, "HTTP connection ended with an error");
                return None;
            }
        }
        _ = shutdown.cancelled() => {
            std::pin::Pin::new(&mut connection).graceful_shutdown();
            let _ = connection.await;
            return None;
        }
    }
    connection.into_parts().map(|parts| parts.io.into_inner())
}

/// One request: the rejection it stands for, or the router's answer, tracked until its body
/// has been sent.
///
/// Not an `async fn`: the request is handed to the router before the returned future starts,
/// so a request in service (a pending poll, for minutes) keeps only the router's future and the
/// few things the answer needs, not the request's head beside it.
#[allow(clippy::too_many_arguments)]
fn handle<'a, B>(
    request: http::Request<B>,
    seq: u64,
    id: u64,
    remote: SocketAddr,
    state: Arc<ConnState>,
    table: &'a Table,
    reject: &Reject,
    mut router: Router,
) -> impl std::future::Future<Output = Response<TrackedBody>> + Send + 'a
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    use futures::future::Either;
    if let Some(rejection) = state.take_rejection(seq) {
        let error = match rejection {
            Rejection::BadRequest(message) => Error::new(ErrorCode::InvalidArgument, message),
            Rejection::UriTooLong => Error::new(
                ErrorCode::UriTooLong,
                "The request line is longer than this server accepts.",
            ),
            Rejection::HeadersTooLarge(message) => Error::new(ErrorCode::HeadersTooLarge, message),
            Rejection::Timeout(message) => Error::new(ErrorCode::RequestTimeout, message),
            // Never stored: a broken body ends the connection instead.
            Rejection::MalformedBody(message) => Error::new(ErrorCode::InvalidArgument, message),
        };
        metrics::request_rejected(error.code.http_status());
        let mut response = reject(error);
        close_after(&mut response);
        return Either::Left(std::future::ready(response.map(TrackedBody::untracked)));
    }
    state.in_flight.fetch_add(1, Ordering::AcqRel);
    let guard = InFlight {
        state: state.clone(),
        epoch: table.epoch,
    };
    let wants_upgrade = request.headers().contains_key(http::header::UPGRADE);
    let mut request = request.map(Body::new);
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(remote));
    // A router is always ready (axum's `poll_ready` is `Ready` unconditionally).
    let answer = tower::Service::call(&mut router, request);
    Either::Right(async move {
        let mut response = match answer.await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            state.upgraded.store(true, Ordering::Release);
            table.promote(id);
        } else if wants_upgrade {
            // The scanner stopped at the upgrade request: this connection cannot carry more
            // HTTP.
            close_after(&mut response);
        }
        response.map(|body| TrackedBody::tracked(body, guard))
    })
}

fn close_after(response: &mut Response) {
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
}

/// Counts a response as in flight until its body is done (or dropped).
struct InFlight {
    state: Arc<ConnState>,
    /// The table's epoch, for `last_progress_ms`.
    epoch: tokio::time::Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state
            .last_progress_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        self.state.served.store(true, Ordering::Release);
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.state.done.fetch_add(1, Ordering::AcqRel);
        // The reader may be waiting without a deadline: let it arm the idle one.
        self.state.waker.wake();
    }
}

/// A response body that keeps its request counted as in flight while it is being sent.
struct TrackedBody {
    inner: Body,
    _guard: Option<InFlight>,
}

impl TrackedBody {
    fn tracked(inner: Body, guard: InFlight) -> TrackedBody {
        TrackedBody {
            inner,
            _guard: Some(guard),
        }
    }

    fn untracked(inner: Body) -> TrackedBody {
        TrackedBody {
            inner,
            _guard: None,
        }
    }
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Sockets a process can hold for clients and REST: the open-file limit (raised to its hard
/// limit first) minus room for the store, the cluster and everything else the process opens.
pub fn socket_budget() -> usize {
    let limit = raise_file_limit();
    let reserve = (limit / 4).min(512) + limit / 10;
    limit.saturating_sub(reserve).max(64)
}

/// Raises the soft open-file limit to the hard one; returns the limit in effect.
fn raise_file_limit() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (current.current, current.maximum) {
        if soft < hard {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                return usize::try_from(hard).unwrap_or(usize::MAX);
            }
        }
    }
    current.current.map_or(1_048_576, |soft| {
        usize::try_from(soft).unwrap_or(usize::MAX)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_room_for_everything_else() {
        let budget = socket_budget();
        assert!(budget >= 64);
    }

    pub(crate) fn table(max: usize) -> Arc<Table> {
        Arc::new(Table {
            max,
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            upgraded: AtomicUsize::new(0),
            epoch: tokio::time::Instant::now(),
        })
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_connection_idle_longest() {
        let table = table(2);
        let (slot_a, a) = table.admit().unwrap_or_else(|| unreachable!());
        let (slot_b, b) = table.admit().unwrap_or_else(|| unreachable!());
        a.last_progress_ms.store(10, Ordering::Release);
        b.last_progress_ms.store(5, Ordering::Release);
        // A silent socket goes before any that served a request, however old.
        let (slot_s, s) = {
            let mut open = table.open.lock();
            let id = 99;
            let state = Arc::new(ConnState::new(20));
            open.insert(id, state.clone());
            (
                Slot {
                    table: table.clone(),
                    id,
                },
                state,
            )
        };
        a.served.store(true, Ordering::Release);
        b.served.store(true, Ordering::Release);
        let (slot_t, _t) = table.admit().unwrap_or_else(|| unreachable!());
        assert!(s.evicted.load(Ordering::Acquire) && !b.evicted.load(Ordering::Acquire));
        drop((slot_s, slot_t));
        // Full: the one with the oldest progress goes.
        let (slot_c, c) = table.admit().unwrap_or_else(|| unreachable!());
        assert!(b.evicted.load(Ordering::Acquire));
        assert!(!a.evicted.load(Ordering::Acquire));
        // Busy or upgraded connections are never evicted: with nothing evictable, no room.
        a.in_flight.store(1, Ordering::Release);
        c.upgraded.store(true, Ordering::Release);
        table.promote(slot_c.id);
        assert_eq!(table.upgraded.load(Ordering::Acquire), 1);
        // The evicted connection closes: its slot comes back, and the table is full again.
        drop(slot_b);
        assert!(table.admit().is_none());
        // Once a response is done, its connection may go.
        a.in_flight.store(0, Ordering::Release);
        let slot_d = table.admit();
        assert!(slot_d.is_some());
        assert!(a.evicted.load(Ordering::Acquire));
        // Slots of closed connections, upgraded ones included, are given back.
        drop((slot_a, slot_c, slot_d));
        assert!(table.open.lock().is_empty());
        assert_eq!(table.upgraded.load(Ordering::Acquire), 0);
    }
}
