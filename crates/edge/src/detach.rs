//! Long-lived client requests, served outside the HTTP server's connection state.
//!
//! hyper keeps a read buffer and a header write buffer (8 KiB each) for as long as it holds a
//! connection. That is nothing for a REST call, but a Server-Sent Events stream or a pending
//! Long Polling poll idles for minutes with nothing to read and little to write, and there may
//! be hundreds of thousands of them: the buffers would cost five times what the rest of such a
//! connection costs. So the scanner detaches a bodiless `GET` to the client endpoints (see
//! `head`), hyper's turn on the socket ends once everything before it is answered (see `conn`),
//! and [`serve`] takes over: it rebuilds the request from its validated head, runs the router,
//! and writes the answer itself — the status line and headers, then the body with its exact
//! length or in chunks, flushed frame by frame — while watching the socket for the client going
//! away (which drops the answer, as hyper would). A frame the client does not read within the
//! idle timeout ends the connection. Afterwards, unless the request or the answer closes the
//! connection, the socket goes back to the HTTP server for its next request, with any bytes
//! that arrived meanwhile.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body::{Body as _, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::conn::ConnState;
use crate::head::Detached;
use crate::{metrics, Reject, Slot, Table};

/// Bytes a client may send while its detached request is answered (a pipelined request); a
/// client that sends more is treated as gone (counted as `pipelined_overflow`).
const MAX_AFTER: usize = 64 * 1024;

/// What a detached request needs from its connection.
pub(crate) struct Ctx<'a> {
    pub(crate) id: u64,
    pub(crate) remote: SocketAddr,
    pub(crate) state: &'a Arc<ConnState>,
    pub(crate) table: &'a Table,
    pub(crate) reject: &'a Reject,
    pub(crate) router: Router,
    /// How long a frame may wait for the client to read it.
    pub(crate) idle: Duration,
    pub(crate) max_headers: usize,
}

/// A socket handed back for the HTTP server's next turn.
pub(crate) struct Back<IO> {
    pub(crate) io: IO,
    pub(crate) slot: Slot,
    /// What the client sent after the detached request.
    pub(crate) after: Vec<u8>,
}

/// Answers the detached request on `io`; the socket back if the connection stays open.
///
/// The request is parsed and handed to the router before the returned future starts, and the
/// answer is waited for and sent in futures of their own, so the state an idle stream waits in
/// (its body) keeps nothing of the request; the socket is read only inside polls, into a
/// buffer on the stack.
pub(crate) fn serve<'a, IO>(
    io: IO,
    slot: Slot,
    detached: Detached,
    ctx: Ctx<'a>,
) -> impl Future<Output = Option<Back<IO>>> + Send + 'a
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'a,
{
    let Detached { head, rest } = detached;
    let (idle, remote) = (ctx.idle, ctx.remote);
    let started = start(&head, ctx);
    drop(head);
    async move {
        let (answer, http11, keep_alive) = started?;
        let mut io = io;
        let mut client = Client { after: rest };
        let response = wait(&mut io, &mut client, answer).await?;
        let (head, body, framing, close) = prepare(response, http11, keep_alive);
        if send(&mut io, &mut client, head, body, framing, idle)
            .await
            .is_none()
        {
            tracing::debug!(remote = %remote, "a detached answer ended early: the client left or a write failed");
            return None;
        }
        if close {
            let _ = tokio::time::timeout(idle, io.shutdown()).await;
            return None;
        }
        Some(Back {
            io,
            slot,
            after: client.after,
        })
    }
}

/// The router's answer being produced.
type Answer<'a> = Pin<Box<dyn Future<Output = Response<crate::TrackedBody>> + Send + 'a>>;

/// Hands the request in `head` to the router; with whether it is HTTP/1.1 and keeps the
/// connection alive.
fn start<'a>(head: &[u8], ctx: Ctx<'a>) -> Option<(Answer<'a>, bool, bool)> {
    let Some(request) = parse(head, ctx.max_headers) else {
        // The scanner validated it: unreachable in practice, and nothing sensible to answer.
        tracing::debug!(remote = %ctx.remote, "a detached request head did not parse");
        return None;
    };
    let http11 = request.version() == Version::HTTP_11;
    let keep_alive = http11 && !wants_close(request.headers());
    let answer = Box::pin(crate::handle(
        request,
        0,
        ctx.id,
        ctx.remote,
        ctx.state.clone(),
        ctx.table,
        ctx.reject,
        ctx.router,
    ));
    Some((answer, http11, keep_alive))
}

/// The answer, unless the client leaves first.
async fn wait<IO: AsyncRead + Unpin>(
    io: &mut IO,
    client: &mut Client,
    mut answer: Answer<'_>,
) -> Option<Response<crate::TrackedBody>> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(response) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        client.poll_gone(io, cx).map(|()| None)
    })
    .await
}

/// The answer's head (status line, headers, the edge's framing) and its body.
fn prepare(
    response: Response<crate::TrackedBody>,
    http11: bool,
    keep_alive: bool,
) -> (Vec<u8>, crate::TrackedBody, Framing, bool) {
    let (parts, body) = response.into_parts();
    let framing = Framing::of(parts.status, body.size_hint(), http11);
    let close = !keep_alive || wants_close(&parts.headers) || framing == Framing::Close;
    let head = encode_head(
        parts.status,
        &parts.headers,
        framing,
        close,
        SystemTime::now(),
    );
    (head, body, framing, close)
}

/// The client's side of the socket while its request is answered.
struct Client {
    /// What it sent after the request.
    after: Vec<u8>,
}

impl Client {
    /// Reads what the client sent meanwhile; `Ready` if it is gone (end of stream, an error, or
    /// more than [`MAX_AFTER`] pipelined).
    fn poll_gone<IO: AsyncRead + Unpin>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut buf = [0u8; 512];
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut *io).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {
                    self.after.extend_from_slice(read.filled());
                    if self.after.len() > MAX_AFTER {
                        // Nobody pipelines that much behind a poll or a stream: stop holding it.
                        metrics::connection_ended("pipelined_overflow");
                        return Poll::Ready(());
                    }
                }
            }
        }
    }
}

/// Writes the answer's `head` and `body`; `None` if the connection broke.
///
/// One poll function over explicit state rather than an `async fn`: an idle stream waits here,
/// and this keeps what it holds to the body, the bytes being written and a few counters.
fn send<'a, IO: AsyncRead + AsyncWrite + Unpin>(
    io: &'a mut IO,
    client: &'a mut Client,
    head: Vec<u8>,
    mut body: crate::TrackedBody,
    framing: Framing,
    idle: Duration,
) -> impl Future<Output = Option<()>> + 'a {
    // What is being written, and how much of it is out.
    let mut out = Bytes::from(head);
    let mut written = 0;
    let mut flushed = false;
    // The body is done (its last bytes are in `out`).
    let mut ended = framing == Framing::Empty;
    let mut sent = 0u64;
    // Armed while the client takes nothing (boxed: most writes never wait).
    let mut stalled: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(move |cx| loop {
        if written < out.len() || !flushed {
            let progress = if written < out.len() {
                match Pin::new(&mut *io).poll_write(cx, &out[written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        true
                    }
                    Poll::Pending => false,
                }
            } else {
                match Pin::new(&mut *io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        flushed = true;
                        true
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Pending => false,
                }
            };
            if progress {
                stalled = None;
                continue;
            }
            let timer = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
            if timer.as_mut().poll(cx).is_ready() {
                metrics::connection_ended("write_timeout");
                return Poll::Ready(None);
            }
            return Poll::Pending;
        }
        if ended {
            return Poll::Ready(Some(()));
        }
        let data = match Pin::new(&mut body).poll_frame(cx) {
            Poll::Pending => {
                return match client.poll_gone(io, cx) {
                    Poll::Ready(()) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                };
            }
            Poll::Ready(None) => {
                ended = true;
                match framing {
                    Framing::Chunked => {
                        (out, written, flushed) = (Bytes::from_static(b"0\r\n\r\n"), 0, false);
                    }
                    Framing::Length(n) if sent != n => return Poll::Ready(None),
                    _ => {}
                }
                continue;
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::debug!(%error, "a detached response body failed");
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers and empty frames: nothing to send.
                _ => continue,
            },
        };
        sent += data.len() as u64;
        if matches!(framing, Framing::Length(n) if sent > n) {
            tracing::debug!("a detached response body outgrew its length");
            return Poll::Ready(None);
        }
        out = match framing {
            Framing::Chunked => chunk(&data),
            _ => data,
        };
        (written, flushed) = (0, false);
    })
}

/// Rebuilds a request from a head the scanner validated.
fn parse(head: &[u8], max_headers: usize) -> Option<Request<Body>> {
    let mut fields = vec![httparse::EMPTY_HEADER; max_headers.max(1)];
    let mut parsed = httparse::Request::new(&mut fields);
    if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(parsed.path?)
        .version(match parsed.version? {
            0 => Version::HTTP_10,
            _ => Version::HTTP_11,
        });
    for field in parsed.headers.iter() {
        builder = builder.header(field.name, field.value);
    }
    builder.body(Body::empty()).ok()
}

/// Whether a `Connection` header asks to close.
fn wants_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes: an HTTP/1.0 client knows no chunks.
    Close,
}

impl Framing {
    fn of(status: StatusCode, hint: SizeHint, http11: bool) -> Framing {
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Empty
        } else if let Some(n) = hint.exact() {
            Framing::Length(n)
        } else if http11 {
            Framing::Chunked
        } else {
            Framing::Close
        }
    }
}

/// The status line and headers; the framing headers and `Connection` are the edge's own.
fn encode_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    close: bool,
    now: SystemTime,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Empty | Framing::Close => {}
        Framing::Length(n) => out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if !headers.contains_key(http::header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One chunk of a chunked body.
fn chunk(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 20);
    out.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn heads_carry_the_framing_and_close_of_the_edge() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert("content-length", HeaderValue::from_static("99"));
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let head = encode_head(StatusCode::OK, &headers, Framing::Chunked, false, now);
        assert_eq!(
            String::from_utf8_lossy(&head),
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\ndate: Sun, 09 Sep 2001 01:46:40 GMT\r\n\r\n"
        );
        let head = encode_head(
            StatusCode::NO_CONTENT,
            &HeaderMap::new(),
            Framing::Empty,
            true,
            now,
        );
        assert_eq!(
            String::from_utf8_lossy(&head),
            "HTTP/1.1 204 No Content\r\ndate: Sun, 09 Sep 2001 01:46:40 GMT\r\nconnection: close\r\n\r\n"
        );
        // What a parser reads back is what was meant.
        let head = encode_head(
            StatusCode::NOT_FOUND,
            &headers,
            Framing::Length(5),
            false,
            now,
        );
        let mut fields = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Response::new(&mut fields);
        assert!(
            matches!(parsed.parse(&head), Ok(httparse::Status::Complete(n)) if n == head.len())
        );
        assert_eq!(parsed.code, Some(404));
        let lengths: Vec<_> = parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| h.value)
            .collect();
        assert_eq!(lengths, vec![b"5".as_slice()]);
    }

    #[test]
    fn framing_follows_status_and_length() {
        let ok = StatusCode::OK;
        assert_eq!(
            Framing::of(ok, SizeHint::with_exact(3), true),
            Framing::Length(3)
        );
        assert_eq!(Framing::of(ok, SizeHint::new(), true), Framing::Chunked);
        assert_eq!(Framing::of(ok, SizeHint::new(), false), Framing::Close);
        assert_eq!(
            Framing::of(ok, SizeHint::with_exact(3), false),
            Framing::Length(3)
        );
        let no_content = StatusCode::NO_CONTENT;
        assert_eq!(
            Framing::of(no_content, SizeHint::with_exact(0), true),
            Framing::Empty
        );
        assert_eq!(
            Framing::of(StatusCode::NOT_MODIFIED, SizeHint::new(), true),
            Framing::Empty
        );
        assert_eq!(
            chunk(b"hello world!!!!!").as_ref(),
            b"10\r\nhello world!!!!!\r\n"
        );
    }

    #[test]
    fn requests_are_rebuilt_from_their_heads() {
        let head = b"GET /client/?hub=h&id=x HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\nX: 1\r\nX: 2\r\n\r\n";
        let request = parse(head, 100).unwrap();
        assert_eq!(request.uri(), "/client/?hub=h&id=x");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["accept"], "text/event-stream");
        assert_eq!(request.headers().get_all("x").iter().count(), 2);
        assert!(!wants_close(request.headers()));
        let head = b"GET /client HTTP/1.0\r\nConnection: keep-alive, Close\r\n\r\n";
        let request = parse(head, 100).unwrap();
        assert_eq!(request.version(), Version::HTTP_10);
        assert!(wants_close(request.headers()));
        assert!(parse(b"GET / HTTP/1.1\r\nHost: h\r\n", 100).is_none());
    }
}
