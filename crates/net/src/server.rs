//! The cluster listener's accept loop.
//!
//! Before tonic sees a connection it is counted against a cap (a flood of connections cannot
//! take the process's file descriptors), given a TLS handshake with a deadline when the cluster
//! plane uses TLS, and wrapped in a [`ClusterConn`] that closes it if no call on it passes the
//! authentication layer within the authentication deadline — an outsider cannot keep sockets
//! open by connecting and staying silent. When the cap is reached, the oldest connection that
//! has not authenticated yet is closed to make room, so a flood of them cannot lock real peers
//! out; only when every connection has authenticated is a new one refused. Accept errors (the file limit reached) are logged at a
//! limited rate and retried after a pause; the loop never spins and never stops.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use switchboard_core::throttle::{now_ms, Throttle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use crate::ClusterSecurity;

/// Bounds of the cluster listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections open at once; further ones are closed as they arrive.
    pub max_connections: usize,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long a connection may stay open without one authenticated call.
    pub auth_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
        }
    }
}

/// What the services learn about the connection a call arrived on (a request extension).
#[derive(Debug, Clone)]
pub struct ClusterConnInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// Whether the connection is mutual TLS.
    pub tls: bool,
    flags: Arc<ConnFlags>,
}

/// What the accept loop and the authentication layer know of a connection.
#[derive(Debug, Default)]
struct ConnFlags {
    authenticated: AtomicBool,
    /// Closed to make room for a newer connection.
    evicted: AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl ClusterConnInfo {
    pub(crate) fn mark_authenticated(&self) {
        self.flags.authenticated.store(true, Ordering::Release);
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A connection accepted by the cluster listener (see the module docs).
pub struct ClusterConn {
    io: Io,
    info: ClusterConnInfo,
    auth_deadline: Option<Pin<Box<Sleep>>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ClusterConn {
    fn drop(&mut self) {
        crate::metrics::listener_connections(-1.0);
    }
}

impl ClusterConn {
    fn new(
        io: Io,
        remote: SocketAddr,
        auth_timeout: Duration,
        permit: OwnedSemaphorePermit,
        flags: Arc<ConnFlags>,
    ) -> Self {
        crate::metrics::listener_connections(1.0);
        ClusterConn {
            info: ClusterConnInfo {
                remote: Some(remote),
                tls: matches!(io, Io::Tls(_)),
                flags,
            },
            io,
            auth_deadline: Some(Box::pin(tokio::time::sleep(auth_timeout))),
            _permit: permit,
        }
    }

    /// Fails the connection once the deadline passed without an authenticated call.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(deadline) = &mut self.auth_deadline {
            let flags = &self.info.flags;
            flags.waker.register(cx.waker());
            if flags.evicted.load(Ordering::Acquire) {
                crate::metrics::connection_refused("evicted");
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "closed unauthenticated to make room",
                ));
            }
            if flags.authenticated.load(Ordering::Acquire) {
                self.auth_deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                crate::metrics::connection_refused("unauthenticated");
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no authenticated call on this connection in time",
                ));
            }
        }
        Ok(())
    }
}

impl tonic::transport::server::Connected for ClusterConn {
    type ConnectInfo = ClusterConnInfo;

    fn connect_info(&self) -> ClusterConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for ClusterConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_deadline(cx)?;
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClusterConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, data),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

static ACCEPT_LOG: Throttle = Throttle::new(5_000);

/// The connections `listener` accepts, ready for tonic's `serve_with_incoming`, until `stop`.
pub fn incoming(
    listener: TcpListener,
    security: &ClusterSecurity,
    limits: ListenerLimits,
    stop: CancellationToken,
) -> impl Stream<Item = io::Result<ClusterConn>> + Send + 'static {
    crate::metrics::describe();
    let (tx, rx) = mpsc::channel(64);
    let tls = security
        .tls()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config()));
    tokio::spawn(accept_loop(listener, tls, limits, tx, stop));
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) },
    )
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ListenerLimits,
    tx: mpsc::Sender<ClusterConn>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Connections not (yet) authenticated, oldest first: eviction candidates.
    let mut unproven: std::collections::VecDeque<std::sync::Weak<ConnFlags>> =
        std::collections::VecDeque::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(error) => {
                if let Some(suppressed) = ACCEPT_LOG.allow(now_ms()) {
                    tracing::warn!(%error, suppressed, "cluster listener cannot accept; retrying");
                }
                // Out of file descriptors, most likely: give connections time to close.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Full: close the oldest connection that has not authenticated, and take its place.
                let victim = loop {
                    match unproven.pop_front() {
                        None => break None,
                        Some(weak) => match weak.upgrade() {
                            Some(f) if !f.authenticated.load(Ordering::Acquire) => break Some(f),
                            _ => continue,
                        },
                    }
                };
                let permit = match victim {
                    Some(victim) => {
                        victim.evicted.store(true, Ordering::Release);
                        victim.waker.wake();
                        tokio::time::timeout(Duration::from_secs(1), slots.clone().acquire_owned())
                            .await
                            .ok()
                            .and_then(Result::ok)
                    }
                    None => None,
                };
                let Some(permit) = permit else {
                    crate::metrics::connection_refused("limit");
                    if let Some(suppressed) = ACCEPT_LOG.allow(now_ms()) {
                        tracing::warn!(%remote, max = limits.max_connections, suppressed, "cluster listener is at its connection cap with every connection authenticated: closing a new one");
                    }
                    drop(tcp);
                    continue;
                };
                permit
            }
        };
        // Forget connections that are gone or proved themselves.
        while unproven.front().is_some_and(|w| {
            w.upgrade()
                .is_none_or(|f| f.authenticated.load(Ordering::Acquire))
        }) {
            unproven.pop_front();
        }
        let flags = Arc::new(ConnFlags::default());
        unproven.push_back(Arc::downgrade(&flags));
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        match &tls {
            None => {
                let conn =
                    ClusterConn::new(Io::Plain(tcp), remote, limits.auth_timeout, permit, flags);
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let (acceptor, tx, flags) = (acceptor.clone(), tx.clone(), flags);
                tokio::spawn(async move {
                    // A handshake can be evicted like any unauthenticated connection.
                    let evicted = futures::future::poll_fn(|cx| {
                        flags.waker.register(cx.waker());
                        if flags.evicted.load(Ordering::Acquire) {
                            Poll::Ready(())
                        } else {
                            Poll::Pending
                        }
                    });
                    let handshake =
                        tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
                    let result = tokio::select! {
                        _ = evicted => {
                            crate::metrics::connection_refused("evicted");
                            return;
                        }
                        result = handshake => result,
                    };
                    match result {
                        Ok(Ok(stream)) => {
                            let conn = ClusterConn::new(
                                Io::Tls(Box::new(stream)),
                                remote,
                                limits.auth_timeout,
                                permit,
                                flags,
                            );
                            let _ = tx.send(conn).await;
                        }
                        Ok(Err(error)) => {
                            crate::metrics::connection_refused("tls");
                            if let Some(suppressed) = ACCEPT_LOG.allow(now_ms()) {
                                tracing::warn!(%remote, %error, suppressed, "cluster TLS handshake failed");
                            }
                        }
                        Err(_) => {
                            crate::metrics::connection_refused("tls");
                            tracing::debug!(%remote, "cluster TLS handshake timed out");
                        }
                    }
                });
            }
        }
    }
}

/// A tonic server with the cluster plane's HTTP/2 bounds: keep-alive pings, at most 256 streams
/// and 16 KiB of headers per connection.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(256))
        .http2_max_header_list_size(Some(16 * 1024))
        .concurrency_limit_per_connection(256)
}
