//! `baseline-server`: the least a server must do to deliver SignalR broadcasts, as a ceiling to
//! hold Switchboard against on the same machine and with the same client.
//!
//! It speaks just enough SignalR for the generator: `POST /client/negotiate` answers a
//! connection token, the WebSocket at `/client/?...` takes the handshake (JSON or MessagePack),
//! and `POST /broadcast` (the REST body `{"target","arguments"}`) frames the invocation once
//! per protocol and pushes the same bytes into every connection's bounded queue. No auth, no
//! hubs, no groups, no store, no metrics. A connection whose queue is full is dropped, as
//! Switchboard drops slow consumers. WebSockets use a 4 KiB read buffer and a 4 KiB write
//! buffer by default (frames queued together go out in one write); both can be changed to see
//! what they cost.
//!
//! HTTP is parsed by hand (request line, `Content-Length`, keep-alive): enough for the
//! generator's requests, and no framework cost in the ceiling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::frames::{self, Protocol};

/// Largest request head and body the baseline reads.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1 << 20;

/// Options of the baseline server.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Frames a connection may have queued before it is dropped.
    pub queue: usize,
    /// tungstenite's read buffer per WebSocket, bytes.
    pub read_buffer: usize,
    /// tungstenite's write buffer per WebSocket, bytes (0: one write per frame).
    pub write_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            queue: 2048,
            read_buffer: 4096,
            write_buffer: 4096,
        }
    }
}

struct Conn {
    protocol: Protocol,
    tx: mpsc::Sender<Message>,
}

struct State {
    config: Config,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    msgpack_conns: AtomicUsize,
    slow_consumers: AtomicU64,
}

/// What one broadcast did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    pub delivered: usize,
    pub dropped: usize,
}

/// Serves until `shutdown` fires.
pub async fn serve(listener: TcpListener, config: Config, shutdown: CancellationToken) {
    let state = Arc::new(State {
        config,
        conns: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        msgpack_conns: AtomicUsize::new(0),
        slow_consumers: AtomicU64::new(0),
    });
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the others.
                eprintln!("baseline-server: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (state, shutdown) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, state, shutdown).await {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    eprintln!("baseline-server: {e}");
                }
            }
        });
    }
    let slow = state.slow_consumers.load(Ordering::Relaxed);
    if slow > 0 {
        eprintln!("baseline-server: dropped {slow} slow consumers");
    }
}

async fn handle(
    stream: TcpStream,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // WebSocket upgrades come to the client path; everything else is plain HTTP.
    const WEBSOCKET: &[u8] = b"GET /client/";
    let mut first = [0u8; WEBSOCKET.len()];
    let mut n = stream.peek(&mut first).await?;
    while n > 0 && n < first.len() && first.get(..n) == WEBSOCKET.get(..n) {
        // The first bytes arrived split: wait for the path to be complete.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        n = stream.peek(&mut first).await?;
    }
    if first.get(..n) == Some(WEBSOCKET) {
        websocket(stream, state, shutdown).await;
        Ok(())
    } else {
        http(stream, state).await
    }
}

fn ws_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.read_buffer)
        .write_buffer_size(config.write_buffer)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// The protocol named by a handshake request record.
fn handshake_protocol(text: &str) -> Option<Protocol> {
    #[derive(Deserialize)]
    struct Request {
        protocol: String,
        version: u32,
    }
    let record = text.strip_suffix(frames::RECORD_SEPARATOR)?;
    let request: Request = serde_json::from_str(record).ok()?;
    match (request.protocol.as_str(), request.version) {
        ("json", 1) => Some(Protocol::Json),
        ("messagepack", 1) => Some(Protocol::Messagepack),
        _ => None,
    }
}

async fn websocket(stream: TcpStream, state: Arc<State>, shutdown: CancellationToken) {
    let Ok(mut ws) =
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config(&state.config))).await
    else {
        return;
    };
    let protocol = match ws.next().await {
        Some(Ok(Message::Text(text))) => handshake_protocol(text.as_str()),
        _ => None,
    };
    let Some(protocol) = protocol else {
        let reply = format!(
            "{{\"error\":\"unsupported handshake\"}}{}",
            frames::RECORD_SEPARATOR
        );
        let _ = ws.send(Message::text(reply)).await;
        return;
    };
    if ws
        .send(Message::text(format!("{{}}{}", frames::RECORD_SEPARATOR)))
        .await
        .is_err()
    {
        return;
    }
    let (tx, mut rx) = mpsc::channel(state.config.queue.max(1));
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    if protocol == Protocol::Messagepack {
        state.msgpack_conns.fetch_add(1, Ordering::Relaxed);
    }
    state.conns.lock().insert(id, Conn { protocol, tx });
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            incoming = ws.next() => match incoming {
                // Pings and anything else a client sends are ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                if ws.feed(frame).await.is_err() {
                    break;
                }
                let mut failed = false;
                while let Ok(frame) = rx.try_recv() {
                    if ws.feed(frame).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || ws.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    if state.conns.lock().remove(&id).is_some() && protocol == Protocol::Messagepack {
        state.msgpack_conns.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The REST body of a broadcast.
#[derive(Deserialize)]
struct Broadcast<'a> {
    #[serde(borrow)]
    target: &'a str,
    #[serde(borrow)]
    arguments: &'a RawValue,
}

/// The JSON invocation record of a broadcast body.
pub fn json_frame(target: &str, arguments: &RawValue) -> Result<String, serde_json::Error> {
    Ok(format!(
        "{{\"type\":1,\"target\":{},\"arguments\":{}}}{}",
        serde_json::to_string(target)?,
        arguments.get(),
        frames::RECORD_SEPARATOR
    ))
}

fn to_msgpack(value: serde_json::Value) -> rmpv::Value {
    use serde_json::Value as J;
    match value {
        J::Null => rmpv::Value::Nil,
        J::Bool(b) => rmpv::Value::Boolean(b),
        J::Number(n) => {
            if let Some(u) = n.as_u64() {
                rmpv::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                rmpv::Value::from(i)
            } else {
                rmpv::Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        J::String(s) => rmpv::Value::from(s),
        J::Array(a) => rmpv::Value::Array(a.into_iter().map(to_msgpack).collect()),
        J::Object(o) => rmpv::Value::Map(
            o.into_iter()
                .map(|(k, v)| (rmpv::Value::from(k), to_msgpack(v)))
                .collect(),
        ),
    }
}

/// The MessagePack invocation record (length-prefixed) of a broadcast body.
pub fn msgpack_frame(target: &str, arguments: &RawValue) -> Result<Vec<u8>, serde_json::Error> {
    let args: serde_json::Value = serde_json::from_str(arguments.get())?;
    let message = rmpv::Value::Array(vec![
        rmpv::Value::from(1),
        rmpv::Value::Map(Vec::new()),
        rmpv::Value::Nil,
        rmpv::Value::from(target),
        to_msgpack(args),
    ]);
    let mut body = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut body, &message);
    Ok(frames::length_prefixed(&body))
}

fn broadcast(state: &State, body: &[u8]) -> Result<Fanout, String> {
    let request: Broadcast<'_> =
        serde_json::from_slice(body).map_err(|e| format!("bad body: {e}"))?;
    let json =
        Message::text(json_frame(request.target, request.arguments).map_err(|e| e.to_string())?);
    let msgpack = if state.msgpack_conns.load(Ordering::Relaxed) > 0 {
        Some(Message::binary(
            msgpack_frame(request.target, request.arguments).map_err(|e| e.to_string())?,
        ))
    } else {
        None
    };
    let mut fanout = Fanout {
        delivered: 0,
        dropped: 0,
    };
    let mut conns = state.conns.lock();
    conns.retain(|_, conn| {
        let frame = match (conn.protocol, &msgpack) {
            (Protocol::Messagepack, Some(m)) => m.clone(),
            _ => json.clone(),
        };
        match conn.tx.try_send(frame) {
            Ok(()) => {
                fanout.delivered += 1;
                true
            }
            Err(_) => {
                // Full (slow consumer) or gone: drop the sender, which ends the connection.
                fanout.dropped += 1;
                if conn.protocol == Protocol::Messagepack {
                    state.msgpack_conns.fetch_sub(1, Ordering::Relaxed);
                }
                false
            }
        }
    });
    drop(conns);
    state
        .slow_consumers
        .fetch_add(fanout.dropped as u64, Ordering::Relaxed);
    Ok(fanout)
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
    content_length: usize,
    close: bool,
}

fn parse_head(head: &str) -> Option<Head> {
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let version = request_line.next()?;
    let mut content_length = 0;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Some(Head {
        method,
        path,
        content_length,
        close,
    })
}

async fn http(stream: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(4096, stream);
    let mut head = Vec::with_capacity(512);
    let mut body = Vec::new();
    loop {
        head.clear();
        // Read the head line by line up to the empty line.
        loop {
            let before = head.len();
            let n = (&mut reader)
                .take((MAX_HEAD + 1 - head.len().min(MAX_HEAD)) as u64)
                .read_until(b'\n', &mut head)
                .await?;
            if n == 0 {
                return Ok(());
            }
            if head.len() > MAX_HEAD {
                return respond(reader.get_mut(), 431, "", true).await;
            }
            if head.get(before..) == Some(b"\r\n".as_slice()) {
                break;
            }
        }
        let Some(parsed) = std::str::from_utf8(&head).ok().and_then(parse_head) else {
            return respond(reader.get_mut(), 400, "", true).await;
        };
        if parsed.content_length > MAX_BODY {
            return respond(reader.get_mut(), 413, "", true).await;
        }
        body.resize(parsed.content_length, 0);
        reader.read_exact(&mut body).await?;
        let (status, reply) = route(&state, &parsed, &body);
        respond(reader.get_mut(), status, &reply, parsed.close).await?;
        if parsed.close {
            return Ok(());
        }
    }
}

fn route(state: &State, head: &Head, body: &[u8]) -> (u16, String) {
    match (head.method.as_str(), head.path.as_str()) {
        ("POST", "/client/negotiate") => {
            let id = state.next_id.fetch_add(1, Ordering::Relaxed);
            (
                200,
                format!(
                    "{{\"negotiateVersion\":1,\"connectionId\":\"c{id}\",\"connectionToken\":\"c{id}\",\"availableTransports\":[{{\"transport\":\"WebSockets\",\"transferFormats\":[\"Text\",\"Binary\"]}}]}}"
                ),
            )
        }
        ("POST", "/broadcast") => match broadcast(state, body) {
            Ok(f) => (
                202,
                format!(
                    "{{\"delivered\":{},\"dropped\":{}}}",
                    f.delivered, f.dropped
                ),
            ),
            Err(e) => (400, serde_json::json!({ "error": e }).to_string()),
        },
        ("GET", "/health") => (200, "{}".to_owned()),
        _ => (404, String::new()),
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    body: &str,
    close: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    );
    stream.write_all(response.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{parse_json, parse_msgpack, Incoming, Stamp};

    #[test]
    fn heads() {
        let h = parse_head("POST /broadcast?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n")
            .unwrap();
        assert_eq!(
            h,
            Head {
                method: "POST".into(),
                path: "/broadcast".into(),
                content_length: 12,
                close: false
            }
        );
        assert!(parse_head("GET / HTTP/1.0\r\n\r\n").unwrap().close);
        assert!(
            parse_head("POST / HTTP/1.1\r\nconnection: Close\r\n\r\n")
                .unwrap()
                .close
        );
        assert!(parse_head("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_none());
        assert!(parse_head("garbage").is_none());
    }

    #[test]
    fn handshakes() {
        assert_eq!(
            handshake_protocol("{\"protocol\":\"json\",\"version\":1}\u{1e}"),
            Some(Protocol::Json)
        );
        assert_eq!(
            handshake_protocol(&frames::handshake_request(Protocol::Messagepack)),
            Some(Protocol::Messagepack)
        );
        assert_eq!(
            handshake_protocol("{\"protocol\":\"json\",\"version\":2}\u{1e}"),
            None
        );
        assert_eq!(
            handshake_protocol("{\"protocol\":\"json\",\"version\":1}"),
            None
        );
    }

    #[test]
    fn frames_decode_on_the_client_side() {
        let stamp = Stamp {
            seq: 9,
            sent_at_us: 1_700_000_000_000_001,
        };
        let body = frames::rest_body(stamp, "pad");
        let request: Broadcast<'_> = serde_json::from_str(&body).unwrap();
        let mut seen = Vec::new();
        parse_json(
            &json_frame(request.target, request.arguments).unwrap(),
            |i| seen.push(i),
        )
        .unwrap();
        parse_msgpack(
            &msgpack_frame(request.target, request.arguments).unwrap(),
            |i| seen.push(i),
        )
        .unwrap();
        assert_eq!(
            seen,
            vec![Incoming::Measure(stamp), Incoming::Measure(stamp)]
        );
    }

    #[tokio::test]
    async fn plain_http_next_to_websockets() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, Config::default(), stop.clone()));
        let http = reqwest::Client::new();
        let health = http.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let negotiate: serde_json::Value = http
            .post(format!("{base}/client/negotiate?hub=h"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(negotiate["negotiateVersion"], 1);
        assert!(negotiate["connectionToken"].is_string());
        let missing = http.get(format!("{base}/nothing")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        let bad = http
            .post(format!("{base}/broadcast"))
            .body("{")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        stop.cancel();
    }

    #[tokio::test]
    async fn broadcast_fills_queues_and_drops_full_ones() {
        let state = State {
            config: Config {
                queue: 1,
                ..Config::default()
            },
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            msgpack_conns: AtomicUsize::new(1),
            slow_consumers: AtomicU64::new(0),
        };
        let (tx_json, mut rx_json) = mpsc::channel(1);
        let (tx_mp, mut rx_mp) = mpsc::channel(1);
        state.conns.lock().insert(
            1,
            Conn {
                protocol: Protocol::Json,
                tx: tx_json,
            },
        );
        state.conns.lock().insert(
            2,
            Conn {
                protocol: Protocol::Messagepack,
                tx: tx_mp,
            },
        );
        let body = frames::rest_body(
            Stamp {
                seq: 0,
                sent_at_us: 1,
            },
            "",
        );
        assert_eq!(
            broadcast(&state, body.as_bytes()).unwrap(),
            Fanout {
                delivered: 2,
                dropped: 0
            }
        );
        assert!(matches!(rx_json.try_recv().unwrap(), Message::Text(_)));
        assert!(matches!(rx_mp.try_recv().unwrap(), Message::Binary(_)));
        let _ = broadcast(&state, body.as_bytes()).unwrap();
        // Both queues hold one frame now: the next broadcast drops both connections.
        assert_eq!(
            broadcast(&state, body.as_bytes()).unwrap(),
            Fanout {
                delivered: 0,
                dropped: 2
            }
        );
        assert!(state.conns.lock().is_empty());
        assert_eq!(state.msgpack_conns.load(Ordering::Relaxed), 0);
        assert!(broadcast(&state, b"{}").is_err());
    }
}
