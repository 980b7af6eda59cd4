//! The Server-Sent Events and Long Polling clients (`--transport sse|longpolling`), as the
//! SignalR clients speak them to Switchboard, with the JSON hub protocol.
//!
//! Both start like a WebSocket client (negotiate, then the URL `/client/?hub=H&id=TOKEN&
//! access_token=…`) and differ in how frames travel:
//!
//! - **SSE**: one keep-alive HTTP/1.1 connection (hyper's client connection, driven inside the
//!   connection's own task) carries `GET` with `Accept: text/event-stream`; its body is a
//!   stream of events whose `data:` lines are hub frames ([`SseParser`]). Sends (the handshake,
//!   pings) are `POST`s to the same URL, which cannot share that connection: they go through
//!   the process's pooled HTTP client, at most [`SIDE_REQUESTS`] at a time, so a thousand SSE
//!   clients cost the server a thousand streams plus a few pooled connections, not two
//!   connections each.
//! - **Long Polling**: one keep-alive HTTP/1.1 connection per client carries everything in
//!   turn: the first `GET` (answered at once), the handshake `POST`, then poll after poll, each
//!   answered with the frames queued since the last one (200), empty after the server's poll
//!   timeout (200), or 204 once the connection has ended. A ping, when due, is `POST`ed on the
//!   same connection between two polls (a poll returns at least every server keep-alive
//!   interval, 15 s, with the server's own ping); when the run ends the client `DELETE`s its
//!   connection through the pooled client (its own connection is busy with a poll).
//!
//! A poll body or an SSE event is read whole before the next poll, and frames are split at
//! their 0x1E terminators by a [`RecordBuffer`] that keeps an incomplete tail for the next
//! chunk, so every delivered message is counted exactly once, wherever the chunks break.
//! `--keep-alive 0` sends no pings at all (start the server with a longer `--client-timeout`).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming as Body;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, FrameError};
use crate::frames::{self, Incoming, Protocol, Stamp};
use crate::stats::{now_us, Recorder};

/// Side requests (SSE sends, Long Polling's final DELETE) in flight at once per process.
pub const SIDE_REQUESTS: usize = 32;

/// How long a Long Polling client waits for a poll: the server answers within its 90 s poll
/// timeout, so only a dead server takes this long.
pub const POLL_LIMIT: Duration = Duration::from_secs(120);

/// The most bytes of an incomplete frame (or SSE line) a client keeps.
pub const MAX_PENDING: usize = 1 << 20;

/// Which transport a client connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpKind {
    Sse,
    LongPolling,
}

/// Splits a byte stream of JSON hub protocol frames at their 0x1E terminators, whatever the
/// chunk boundaries: complete frames are handed on, an incomplete tail waits for the next chunk.
#[derive(Debug, Default)]
pub struct RecordBuffer {
    pending: Vec<u8>,
}

impl RecordBuffer {
    /// Appends `bytes` and calls `each` once with every complete frame now buffered (as one
    /// string of terminated records), if there is any.
    pub fn push(&mut self, bytes: &[u8], each: impl FnOnce(&str)) -> Result<(), FrameError> {
        const RS: u8 = frames::RECORD_SEPARATOR as u8;
        if self.pending.is_empty() {
            // Most chunks hold whole frames: no copy.
            let Some(end) = bytes.iter().rposition(|b| *b == RS) else {
                return self.keep(bytes);
            };
            let (complete, tail) = bytes.split_at(end + 1);
            each(std::str::from_utf8(complete).map_err(|_| FrameError::NotUtf8)?);
            return self.keep(tail);
        }
        let Some(end) = bytes.iter().rposition(|b| *b == RS) else {
            return self.keep(bytes);
        };
        let (complete, tail) = bytes.split_at(end + 1);
        self.pending.extend_from_slice(complete);
        let result = std::str::from_utf8(&self.pending)
            .map(each)
            .map_err(|_| FrameError::NotUtf8);
        self.pending.clear();
        result?;
        self.keep(tail)
    }

    fn keep(&mut self, tail: &[u8]) -> Result<(), FrameError> {
        if self.pending.len() + tail.len() > MAX_PENDING {
            self.pending.clear();
            return Err(FrameError::Unterminated);
        }
        self.pending.extend_from_slice(tail);
        Ok(())
    }

    /// Bytes of an incomplete frame waiting for the rest.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// An incremental `text/event-stream` parser (the WHATWG rules, reduced to `data`): lines end
/// in CRLF, LF or CR, comments (`:`) and other fields are skipped, an event's `data:` lines are
/// joined with `\n` and dispatched at the blank line that ends it.
#[derive(Debug, Default)]
pub struct SseParser {
    /// A line split across chunks.
    line: Vec<u8>,
    /// The data of the event being read, each line followed by `\n`.
    data: Vec<u8>,
    /// The last chunk ended in CR: an LF first in the next one belongs to it.
    after_cr: bool,
}

impl SseParser {
    /// Feeds one chunk of the body, calling `event` with the data of every event it completes.
    pub fn push(
        &mut self,
        mut chunk: &[u8],
        mut event: impl FnMut(&[u8]) -> Result<(), FrameError>,
    ) -> Result<(), FrameError> {
        if std::mem::take(&mut self.after_cr) {
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let (line, rest) = chunk.split_at(end);
            let rest = match rest {
                [b'\r', b'\n', tail @ ..] => tail,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, tail @ ..] => tail,
                [] => &[],
            };
            if self.line.is_empty() {
                self.line_done(line, &mut event)?;
            } else {
                let mut whole = std::mem::take(&mut self.line);
                whole.extend_from_slice(line);
                let result = self.line_done(&whole, &mut event);
                whole.clear();
                self.line = whole;
                result?;
            }
            chunk = rest;
        }
        if self.line.len() + chunk.len() > MAX_PENDING {
            self.line.clear();
            return Err(FrameError::Unterminated);
        }
        self.line.extend_from_slice(chunk);
        Ok(())
    }

    fn line_done(
        &mut self,
        line: &[u8],
        event: &mut impl FnMut(&[u8]) -> Result<(), FrameError>,
    ) -> Result<(), FrameError> {
        if line.is_empty() {
            if self.data.is_empty() {
                return Ok(());
            }
            self.data.pop();
            let result = event(&self.data);
            self.data.clear();
            return result;
        }
        if line.first() == Some(&b':') {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            if self.data.len() + value.len() > MAX_PENDING {
                self.data.clear();
                return Err(FrameError::Unterminated);
            }
            self.data.extend_from_slice(value);
            self.data.push(b'\n');
        }
        Ok(())
    }
}

type Conn = Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

/// The URL of a connection: `http://host:port/client/?hub=…&id=…&access_token=…`.
struct ClientUrl {
    full: Box<str>,
    /// Where the path starts (after the authority).
    path_at: usize,
}

impl ClientUrl {
    fn new(ws_url: &str) -> Result<ClientUrl, Error> {
        let full = format!("http{}", ws_url.trim_start_matches("ws"));
        let after_scheme = "http://".len();
        let path_at = full
            .get(after_scheme..)
            .and_then(|rest| rest.find('/'))
            .map(|i| i + after_scheme)
            .ok_or_else(|| Error::Protocol(format!("bad client URL {full:?}")))?;
        Ok(ClientUrl {
            full: full.into(),
            path_at,
        })
    }

    fn authority(&self) -> &str {
        &self.full["http://".len()..self.path_at]
    }

    fn path(&self) -> &str {
        &self.full[self.path_at..]
    }

    fn request(
        &self,
        method: Method,
        body: Bytes,
        sse: bool,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let mut builder = Request::builder()
            .method(method)
            .uri(self.path())
            .header(header::HOST, self.authority());
        if sse {
            builder = builder
                .header(header::ACCEPT, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache");
        }
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, "text/plain;charset=UTF-8");
        }
        builder
            .body(Full::new(body))
            .map_err(|e| Error::Protocol(format!("building a request: {e}")))
    }
}

/// An HTTP-transport connection, handshake done.
pub struct HttpOpened {
    kind: HttpKind,
    url: ClientUrl,
    conn: Conn,
    sender: SendRequest<Full<Bytes>>,
    /// SSE: the event stream.
    body: Option<Body>,
    sse: SseParser,
    records: RecordBuffer,
}

/// Runs `work` while driving `conn`; an error if the connection ends first.
async fn driven<T>(
    conn: &mut Conn,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        biased;
        result = work => result,
        ended = conn.as_mut() => Err(ended_error(ended)),
    }
}

fn ended_error(ended: Result<(), hyper::Error>) -> Error {
    match ended {
        Ok(()) => Error::Protocol("the server closed the HTTP connection".into()),
        Err(e) => Error::Hyper(e),
    }
}

/// Reads the rest of a response body as text (for an error message).
async fn body_text(body: Body) -> String {
    match body.collect().await {
        Ok(all) => String::from_utf8_lossy(&all.to_bytes()).into_owned(),
        Err(e) => e.to_string(),
    }
}

/// Requests `method` on the connection and reads the whole answer (Long Polling).
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
    what: &'static str,
) -> Result<(StatusCode, Body), Error> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body();
    if status != StatusCode::OK && status != StatusCode::NO_CONTENT {
        return Err(Error::Status {
            what,
            status: status.as_u16(),
            body: body_text(body).await,
        });
    }
    Ok((status, body))
}

/// Reads a Long Polling answer through `records`, calling `each` per chunk of complete frames.
async fn read_frames(
    body: &mut Body,
    records: &mut RecordBuffer,
    mut each: impl FnMut(&str),
) -> Result<(), Error> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            records.push(&data, &mut each)?;
        }
    }
    Ok(())
}

async fn connect(url: &ClientUrl) -> Result<(SendRequest<Full<Bytes>>, Conn), Error> {
    let stream = TcpStream::connect(url.authority()).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    Ok((sender, Box::pin(conn)))
}

/// Opens an SSE or Long Polling connection at `ws_url` (what negotiate led to) and completes
/// the handshake; returns the connection and the frames that came with the handshake response.
pub async fn open(
    kind: HttpKind,
    ws_url: &str,
    rest: &crate::rest::RestClient,
    side: &tokio::sync::Semaphore,
) -> Result<(HttpOpened, String), Error> {
    let url = ClientUrl::new(ws_url)?;
    let (mut sender, mut conn) = connect(&url).await?;
    let handshake = Bytes::from(frames::handshake_request(Protocol::Json));
    let mut records = RecordBuffer::default();
    let mut leftover = None;
    match kind {
        HttpKind::Sse => {
            let request = url.request(Method::GET, Bytes::new(), true)?;
            let response = driven(&mut conn, async {
                sender.ready().await?;
                Ok(sender.send_request(request).await?)
            })
            .await?;
            let status = response.status();
            let mut body = response.into_body();
            if status != StatusCode::OK {
                let text = driven(&mut conn, async { Ok(body_text(body).await) }).await?;
                return Err(Error::Status {
                    what: "SSE connect",
                    status: status.as_u16(),
                    body: text,
                });
            }
            driven(&mut conn, async {
                let _permit = side.acquire().await;
                rest.client_send(&url.full, handshake).await
            })
            .await?;
            let mut sse = SseParser::default();
            while leftover.is_none() {
                let frame = driven(&mut conn, async { Ok(body.frame().await) }).await?;
                let Some(frame) = frame else {
                    return Err(Error::Protocol(
                        "SSE stream ended during the handshake".into(),
                    ));
                };
                let Ok(data) = frame?.into_data() else {
                    continue;
                };
                sse.push(&data, |event| {
                    records.push(event, |text| take_handshake(text, &mut leftover))
                })?;
            }
            let leftover = leftover.unwrap_or_else(|| Ok(String::new()))?;
            Ok((
                HttpOpened {
                    kind,
                    url,
                    conn,
                    sender,
                    body: Some(body),
                    sse,
                    records,
                },
                leftover,
            ))
        }
        HttpKind::LongPolling => {
            let first = url.request(Method::GET, Bytes::new(), false)?;
            let post = url.request(Method::POST, handshake, false)?;
            driven(&mut conn, async {
                let (_, body) = exchange(&mut sender, first, "long polling connect").await?;
                body_text(body).await;
                let (_, body) = exchange(&mut sender, post, "handshake send").await?;
                body_text(body).await;
                while leftover.is_none() {
                    let poll = url.request(Method::GET, Bytes::new(), false)?;
                    let (status, mut body) = exchange(&mut sender, poll, "poll").await?;
                    if status == StatusCode::NO_CONTENT {
                        return Err(Error::Protocol(
                            "the server ended the connection during the handshake".into(),
                        ));
                    }
                    read_frames(&mut body, &mut records, |text| {
                        take_handshake(text, &mut leftover)
                    })
                    .await?;
                }
                Ok(())
            })
            .await?;
            let leftover = leftover.unwrap_or_else(|| Ok(String::new()))?;
            Ok((
                HttpOpened {
                    kind,
                    url,
                    conn,
                    sender,
                    body: None,
                    sse: SseParser::default(),
                    records,
                },
                leftover,
            ))
        }
    }
}

/// The first complete frames of a connection: the handshake response, then whatever came with it.
fn take_handshake(text: &str, leftover: &mut Option<Result<String, FrameError>>) {
    match leftover {
        None => *leftover = Some(frames::parse_handshake_response(text).map(str::to_owned)),
        Some(Ok(rest)) => rest.push_str(text),
        Some(Err(_)) => {}
    }
}

/// What decoding a chunk of frames found besides its stamps.
#[derive(Default)]
struct Decoded {
    closed: Option<String>,
    error: Option<FrameError>,
}

fn decode(text: &str, stamps: &mut Vec<Stamp>, out: &mut Decoded) {
    if let Err(e) = frames::parse_json(text, |incoming| match incoming {
        Incoming::Measure(stamp) => stamps.push(stamp),
        Incoming::Close(error) => {
            out.closed = Some(error.unwrap_or_else(|| "close message".into()))
        }
        Incoming::Ping | Incoming::Other => {}
    }) {
        out.error = Some(e);
    }
}

/// What the shared parts of a run give an HTTP-transport connection.
pub struct Shared<'a> {
    pub rest: &'a crate::rest::RestClient,
    pub side: &'a tokio::sync::Semaphore,
    /// 0: no pings.
    pub keep_alive: Duration,
}

/// Reads connection `index` until `stop` fires, recording every measured message (see
/// [`crate::client::receive`]).
pub async fn receive(
    opened: HttpOpened,
    index: usize,
    shared: Shared<'_>,
    recorder: &Recorder,
    stop: CancellationToken,
) {
    let ended = match opened.kind {
        HttpKind::Sse => receive_sse(opened, index, &shared, recorder, &stop).await,
        HttpKind::LongPolling => {
            let url = opened.url.full.clone();
            let ended = receive_long_polling(opened, index, &shared, recorder, &stop).await;
            if stop.is_cancelled() {
                // Best effort: the server would otherwise end it after its client timeout.
                let _permit = shared.side.acquire().await;
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), shared.rest.client_delete(&url))
                        .await;
            }
            ended
        }
    };
    if let Err(why) = ended {
        if !stop.is_cancelled() {
            recorder.disconnected(why);
        }
    }
}

/// A ping on its way through the pooled client.
type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// `Ok` when stopped, `Err(why)` when the connection ended first.
async fn receive_sse(
    opened: HttpOpened,
    index: usize,
    shared: &Shared<'_>,
    recorder: &Recorder,
    stop: &CancellationToken,
) -> Result<(), String> {
    let HttpOpened {
        url,
        mut conn,
        body,
        mut sse,
        mut records,
        ..
    } = opened;
    let Some(mut body) = body else {
        return Err("no event stream".into());
    };
    let pings = !shared.keep_alive.is_zero();
    let keep_alive = if pings {
        shared.keep_alive
    } else {
        Duration::from_secs(3600)
    };
    let offset = keep_alive.mul_f64((index % 997) as f64 / 997.0);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + offset + keep_alive / 2,
        keep_alive,
    );
    let mut ping: Option<Sending<'_>> = None;
    let mut stamps = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            ended = conn.as_mut() => return Err(ended_error(ended).kind()),
            frame = body.frame() => {
                let data = match frame {
                    None => return Err("end of stream".into()),
                    Some(Err(e)) => return Err(Error::Hyper(e).kind()),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => data,
                        Err(_) => continue,
                    },
                };
                let now = now_us();
                let mut decoded = Decoded::default();
                let parsed = sse.push(&data, |event| {
                    records.push(event, |text| decode(text, &mut stamps, &mut decoded))
                });
                recorder.record(index, now, &stamps);
                stamps.clear();
                if let Some(e) = decoded.error.take().or(parsed.err()) {
                    recorder.decode_error(e.to_string());
                }
                if let Some(why) = decoded.closed {
                    return Err(why);
                }
            }
            _ = tick.tick(), if pings && ping.is_none() => {
                let url = &url.full;
                ping = Some(Box::pin(async move {
                    let _permit = shared.side.acquire().await;
                    shared.rest.client_send(url, Bytes::from_static(frames::JSON_PING.as_bytes())).await
                }));
            }
            sent = async { ping.as_mut().expect("checked").await }, if ping.is_some() => {
                ping = None;
                if let Err(e) = sent {
                    return Err(format!("ping: {}", e.kind()));
                }
            }
        }
    }
}

/// `Ok` when stopped, `Err(why)` when the connection ended first.
async fn receive_long_polling(
    opened: HttpOpened,
    index: usize,
    shared: &Shared<'_>,
    recorder: &Recorder,
    stop: &CancellationToken,
) -> Result<(), String> {
    let HttpOpened {
        url,
        mut conn,
        mut sender,
        mut records,
        ..
    } = opened;
    let ping_after = shared.keep_alive / 2;
    let polling = async {
        let mut last_sent = tokio::time::Instant::now();
        let mut stamps = Vec::new();
        loop {
            if !shared.keep_alive.is_zero() && last_sent.elapsed() >= ping_after {
                let ping = url.request(
                    Method::POST,
                    Bytes::from_static(frames::JSON_PING.as_bytes()),
                    false,
                )?;
                let (_, body) = exchange(&mut sender, ping, "ping").await?;
                body_text(body).await;
                last_sent = tokio::time::Instant::now();
            }
            let poll = url.request(Method::GET, Bytes::new(), false)?;
            let answer = tokio::time::timeout(POLL_LIMIT, async {
                let (status, mut body) = exchange(&mut sender, poll, "poll").await?;
                if status == StatusCode::NO_CONTENT {
                    return Ok(Some("the server ended the connection (204)".to_owned()));
                }
                let mut decoded = Decoded::default();
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame?.into_data() else {
                        continue;
                    };
                    let now = now_us();
                    let pushed =
                        records.push(&data, |text| decode(text, &mut stamps, &mut decoded));
                    recorder.record(index, now, &stamps);
                    stamps.clear();
                    if let Some(e) = decoded.error.take().or(pushed.err()) {
                        recorder.decode_error(e.to_string());
                    }
                }
                Ok::<_, Error>(decoded.closed)
            })
            .await
            .map_err(|_| Error::Timeout("a poll"))??;
            if let Some(why) = answer {
                return Ok::<String, Error>(why);
            }
        }
    };
    tokio::select! {
        biased;
        _ = stop.cancelled() => Ok(()),
        ended = conn.as_mut() => Err(ended_error(ended).kind()),
        ended = polling => Err(match ended {
            Ok(why) => why,
            Err(e) => e.kind(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser
                .push(chunk, |data| {
                    out.push(String::from_utf8(data.to_vec()).unwrap());
                    Ok(())
                })
                .unwrap();
        }
        out
    }

    #[test]
    fn sse_events_as_switchboard_writes_them() {
        let body: &[u8] =
            b":\r\ndata: {}\x1e\r\n\r\ndata: {\"type\":6}\x1e{\"type\":6}\x1e\r\n\r\n";
        assert_eq!(
            events(&[body]),
            vec!["{}\u{1e}", "{\"type\":6}\u{1e}{\"type\":6}\u{1e}"]
        );
    }

    #[test]
    fn sse_line_endings_comments_fields_and_multiline_data() {
        assert_eq!(
            events(&[b"data:a\ndata: b\r\rid: 7\nevent: x\n: note\ndata\n\n"]),
            vec!["a\nb", ""]
        );
        // A CR at the end of one chunk and its LF at the start of the next are one line end.
        assert_eq!(events(&[b"data: a\r", b"\n\r", b"\n"]), vec!["a"]);
        // No blank line yet: nothing dispatched.
        assert!(events(&[b"data: a\r\n"]).is_empty());
        // A field without a colon other than data, and a colon with no space.
        assert_eq!(events(&[b"retry\ndata:x:y\n\n"]), vec!["x:y"]);
    }

    #[test]
    fn records_wait_for_their_terminator() {
        let mut buffer = RecordBuffer::default();
        let mut seen = Vec::new();
        buffer
            .push(b"{\"a\":1}\x1e{\"b\"", |t| seen.push(t.to_owned()))
            .unwrap();
        assert_eq!(buffer.pending(), 4);
        buffer.push(b":2}", |t| seen.push(t.to_owned())).unwrap();
        buffer
            .push(b"\x1e{\"c\":3}\x1e", |t| seen.push(t.to_owned()))
            .unwrap();
        assert_eq!(
            seen,
            vec!["{\"a\":1}\u{1e}", "{\"b\":2}\u{1e}{\"c\":3}\u{1e}"]
        );
        assert_eq!(buffer.pending(), 0);
        buffer.push(b"", |_| panic!("nothing complete")).unwrap();
        assert!(buffer.push(b"\xff\x1e", |_| {}).is_err());
        assert!(buffer.push(&vec![b'x'; MAX_PENDING + 1], |_| {}).is_err());
        assert_eq!(buffer.pending(), 0);
    }

    #[test]
    fn client_urls_split_into_authority_and_path() {
        let url = ClientUrl::new("ws://127.0.0.1:18080/client/?hub=h&id=t").unwrap();
        assert_eq!(&*url.full, "http://127.0.0.1:18080/client/?hub=h&id=t");
        assert_eq!(url.authority(), "127.0.0.1:18080");
        assert_eq!(url.path(), "/client/?hub=h&id=t");
        assert!(ClientUrl::new("ws://nopath").is_err());
        let request = url.request(Method::GET, Bytes::new(), true).unwrap();
        assert_eq!(request.headers()[header::ACCEPT], "text/event-stream");
        assert_eq!(request.headers()[header::HOST], "127.0.0.1:18080");
    }

    fn measure(seq: u64) -> String {
        format!(
            "{{\"type\":1,\"target\":\"measure\",\"arguments\":[{seq},{},\"pad\\n\"]}}\u{1e}",
            seq * 10
        )
    }

    proptest! {
        /// However an SSE body or a poll body is cut into chunks, every frame is decoded once.
        #[test]
        fn every_frame_once_whatever_the_chunks(
            batches in proptest::collection::vec(1usize..6, 1..20),
            cuts in proptest::collection::vec(0usize..10_000, 0..40),
        ) {
            let mut seq = 0u64;
            let mut sse_body = b":\r\n".to_vec();
            let mut lp_body = Vec::new();
            for n in &batches {
                let mut data = String::new();
                for _ in 0..*n {
                    data.push_str(&measure(seq));
                    seq += 1;
                }
                sse_body.extend_from_slice(format!("data: {data}\r\n\r\n").as_bytes());
                lp_body.extend_from_slice(data.as_bytes());
            }
            for (body, is_sse) in [(sse_body, true), (lp_body, false)] {
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
                cuts.sort_unstable();
                let mut parser = SseParser::default();
                let mut records = RecordBuffer::default();
                let mut stamps = Vec::new();
                let mut decoded = Decoded::default();
                let mut start = 0;
                for end in cuts.into_iter().chain([body.len()]) {
                    let chunk = &body[start..end];
                    start = end;
                    if is_sse {
                        parser.push(chunk, |event| {
                            records.push(event, |t| decode(t, &mut stamps, &mut decoded))
                        }).unwrap();
                    } else {
                        records.push(chunk, |t| decode(t, &mut stamps, &mut decoded)).unwrap();
                    }
                }
                prop_assert!(decoded.error.is_none());
                let seqs: Vec<u64> = stamps.iter().map(|s| s.seq).collect();
                prop_assert_eq!(seqs, (0..seq).collect::<Vec<_>>());
                prop_assert_eq!(records.pending(), 0);
            }
        }
    }
}
