//! One client connection: opened the way its target expects, then read until the run ends.
//!
//! - Switchboard and the baseline: `POST /client/negotiate?hub=H&negotiateVersion=1` (Switchboard
//!   with a client access token), the WebSocket at `/client/?hub=H&id=TOKEN` (plus
//!   `access_token`, as the official clients send it), the hub protocol handshake, and a ping
//!   every `--keep-alive` seconds so the server's client timeout never fires.
//! - Socket.IO: the engine.io v4 WebSocket at `/socket.io/?EIO=4&transport=websocket`, the open
//!   packet, `40` to join the main namespace, and `3` for every ping.
//!
//! - Switchboard over Server-Sent Events or Long Polling (`--transport`): the same negotiate,
//!   then [`crate::http_transport`].
//!
//! Every client has a tiny WebSocket read buffer and no write buffer, so ten thousand of them fit
//! in one process.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::cli::{Target, Transport};
use crate::error::{Error, FrameError};
use crate::frames::{self, Incoming, Protocol, SocketIo, Stamp};
use crate::http_transport::{self, HttpKind, HttpOpened};
use crate::rest::RestClient;
use crate::stats::{now_us, Recorder};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long negotiate, the WebSocket upgrade and the handshake may take together.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection of a process shares.
pub struct Endpoint {
    pub target: Target,
    pub protocol: Protocol,
    pub rest: Arc<RestClient>,
    /// `--scenario user`: connection i belongs to `user{i % users}`.
    pub users: Option<usize>,
    /// `--scenario group`: connection i joins `group{i % groups}` once connected.
    pub groups: Option<usize>,
    /// 0: no pings.
    pub keep_alive: Duration,
    pub transport: Transport,
    /// Bounds the side requests of HTTP-transport clients (see [`http_transport`]).
    pub side_requests: tokio::sync::Semaphore,
}

/// The user of connection `index` in the user scenario.
pub fn user_name(index: usize, users: usize) -> String {
    format!("user{}", index % users.max(1))
}

/// The group of connection `index` in the group scenario.
pub fn group_name(index: usize, groups: usize) -> String {
    format!("group{}", index % groups.max(1))
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// How an open connection reaches its client.
enum Link {
    Ws(Box<Ws>),
    Http(Box<HttpOpened>),
}

/// An open client connection, ready to receive.
pub struct Opened {
    link: Link,
    /// Switchboard's connection id (from negotiate).
    pub connection_id: Option<String>,
    /// JSON records that arrived in the same WebSocket message as the handshake response.
    leftover: String,
}

async fn ws_connect(url: &str) -> Result<Ws, Error> {
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true).await?;
    Ok(ws)
}

async fn next_text(ws: &mut Ws, what: &'static str) -> Result<String, Error> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            // With MessagePack the handshake response comes in a binary frame.
            Some(Ok(Message::Binary(bytes))) => {
                return String::from_utf8(bytes.to_vec())
                    .map_err(|_| Error::Protocol(format!("{what}: the reply is not UTF-8")))
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(Error::Protocol(format!(
                    "closed during {what}: {}",
                    frame.map(|f| f.reason.to_string()).unwrap_or_default()
                )))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(Error::Protocol(format!("closed during {what}"))),
        }
    }
}

/// Opens connection `index`: negotiate, WebSocket, handshake (and the group join).
pub async fn open(ep: &Endpoint, index: usize) -> Result<Opened, Error> {
    tokio::time::timeout(OPEN_TIMEOUT, open_inner(ep, index))
        .await
        .map_err(|_| Error::Timeout("opening a connection"))?
}

async fn open_inner(ep: &Endpoint, index: usize) -> Result<Opened, Error> {
    match ep.target {
        Target::Socketio => open_socketio(ep).await,
        Target::Switchboard | Target::Baseline => open_signalr(ep, index).await,
    }
}

async fn open_signalr(ep: &Endpoint, index: usize) -> Result<Opened, Error> {
    let user = ep.users.map(|u| user_name(index, u));
    let negotiated = ep.rest.negotiate(user.as_deref()).await?;
    let kind = match ep.transport {
        Transport::Websockets => None,
        Transport::Sse => Some(HttpKind::Sse),
        Transport::Longpolling => Some(HttpKind::LongPolling),
    };
    let (link, leftover) = match kind {
        None => {
            let mut ws = ws_connect(&negotiated.ws_url).await?;
            ws.send(Message::text(frames::handshake_request(ep.protocol)))
                .await?;
            let reply = next_text(&mut ws, "the handshake").await?;
            let leftover = frames::parse_handshake_response(&reply)?.to_owned();
            (Link::Ws(Box::new(ws)), leftover)
        }
        Some(kind) => {
            let (opened, leftover) =
                http_transport::open(kind, &negotiated.ws_url, &ep.rest, &ep.side_requests).await?;
            (Link::Http(Box::new(opened)), leftover)
        }
    };
    if let (Some(groups), Some(id)) = (ep.groups, negotiated.connection_id.as_deref()) {
        ep.rest.join_group(&group_name(index, groups), id).await?;
    }
    Ok(Opened {
        link,
        connection_id: negotiated.connection_id,
        leftover,
    })
}

async fn open_socketio(ep: &Endpoint) -> Result<Opened, Error> {
    let mut ws = ws_connect(&ep.rest.socketio_url()).await?;
    loop {
        match frames::parse_socketio(&next_text(&mut ws, "the engine.io open").await?)? {
            SocketIo::Open => break,
            SocketIo::Closed(why) => return Err(Error::Protocol(why)),
            _ => continue,
        }
    }
    ws.send(Message::text(frames::SOCKETIO_CONNECT)).await?;
    loop {
        match frames::parse_socketio(&next_text(&mut ws, "the namespace connect").await?)? {
            SocketIo::Connected => break,
            SocketIo::Ping => ws.send(Message::text(frames::SOCKETIO_PONG)).await?,
            SocketIo::Closed(why) => return Err(Error::Protocol(why)),
            _ => continue,
        }
    }
    Ok(Opened {
        link: Link::Ws(Box::new(ws)),
        connection_id: None,
        leftover: String::new(),
    })
}

/// What one WebSocket message asks of the client after its stamps are recorded.
enum Next {
    Continue,
    Reply(Message),
    Closed(String),
}

/// Decodes one WebSocket message into `stamps`.
fn handle(msg: Message, target: Target, stamps: &mut Vec<Stamp>) -> Result<Next, FrameError> {
    let mut closed = None;
    match (target, msg) {
        (Target::Socketio, Message::Text(text)) => match frames::parse_socketio(text.as_str())? {
            SocketIo::Measure(stamp) => stamps.push(stamp),
            SocketIo::Ping => return Ok(Next::Reply(Message::text(frames::SOCKETIO_PONG))),
            SocketIo::Closed(why) => closed = Some(why),
            _ => {}
        },
        (_, Message::Text(text)) => frames::parse_json(text.as_str(), |incoming| match incoming {
            Incoming::Measure(stamp) => stamps.push(stamp),
            Incoming::Close(error) => {
                closed = Some(error.unwrap_or_else(|| "close message".into()))
            }
            Incoming::Ping | Incoming::Other => {}
        })?,
        (_, Message::Binary(bytes)) => frames::parse_msgpack(&bytes, |incoming| match incoming {
            Incoming::Measure(stamp) => stamps.push(stamp),
            Incoming::Close(error) => {
                closed = Some(error.unwrap_or_else(|| "close message".into()))
            }
            Incoming::Ping | Incoming::Other => {}
        })?,
        (_, Message::Close(frame)) => {
            closed = Some(format!(
                "WebSocket close {}",
                frame.map(|f| f.code.to_string()).unwrap_or_default()
            ))
        }
        _ => {}
    }
    Ok(closed.map_or(Next::Continue, Next::Closed))
}

/// Reads connection `index` until `stop` fires, recording every measured message. A connection
/// the server ends first is counted as a disconnect.
pub async fn receive(
    opened: Opened,
    index: usize,
    ep: &Endpoint,
    recorder: &Recorder,
    stop: CancellationToken,
) {
    let Opened { link, leftover, .. } = opened;
    let mut stamps = Vec::new();
    if !leftover.is_empty() {
        if let Err(e) = frames::parse_json(&leftover, |i| {
            if let Incoming::Measure(s) = i {
                stamps.push(s)
            }
        }) {
            recorder.decode_error(e.to_string());
        }
        recorder.record(index, now_us(), &stamps);
        stamps.clear();
    }
    let mut ws = match link {
        Link::Ws(ws) => ws,
        Link::Http(opened) => {
            let shared = http_transport::Shared {
                rest: &ep.rest,
                side: &ep.side_requests,
                keep_alive: ep.keep_alive,
            };
            return http_transport::receive(*opened, index, shared, recorder, stop).await;
        }
    };
    // Spread the pings of many connections over the interval (an hour apart when disabled:
    // the branch is off then).
    let keep_alive = if ep.keep_alive.is_zero() {
        Duration::from_secs(3600)
    } else {
        ep.keep_alive
    };
    let offset = keep_alive.mul_f64((index % 997) as f64 / 997.0);
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + offset + keep_alive / 2,
        keep_alive,
    );
    let ping_message = match (ep.target, ep.protocol) {
        _ if ep.keep_alive.is_zero() => None,
        (Target::Socketio, _) => None,
        (_, Protocol::Json) => Some(Message::text(frames::JSON_PING)),
        (_, Protocol::Messagepack) => Some(Message::binary(frames::MSGPACK_PING.to_vec())),
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            msg = ws.next() => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        if !stop.is_cancelled() {
                            recorder.disconnected(e.to_string());
                        }
                        return;
                    }
                    None => {
                        if !stop.is_cancelled() {
                            recorder.disconnected("end of stream".into());
                        }
                        return;
                    }
                };
                let now = now_us();
                let next = handle(msg, ep.target, &mut stamps);
                recorder.record(index, now, &stamps);
                stamps.clear();
                match next {
                    Ok(Next::Continue) => {}
                    Ok(Next::Reply(reply)) => {
                        if let Err(e) = ws.send(reply).await {
                            if !stop.is_cancelled() {
                                recorder.disconnected(e.to_string());
                            }
                            return;
                        }
                    }
                    Ok(Next::Closed(why)) => {
                        if !stop.is_cancelled() {
                            recorder.disconnected(why);
                        }
                        return;
                    }
                    Err(e) => recorder.decode_error(e.to_string()),
                }
            }
            _ = ping.tick(), if ping_message.is_some() => {
                if let Some(p) = &ping_message {
                    if let Err(e) = ws.send(p.clone()).await {
                        if !stop.is_cancelled() {
                            recorder.disconnected(e.to_string());
                        }
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_wrap() {
        assert_eq!(user_name(12, 10), "user2");
        assert_eq!(group_name(12, 5), "group2");
        assert_eq!(group_name(3, 0), "group0");
    }

    #[test]
    fn handles_frames_of_each_target() {
        let mut stamps = Vec::new();
        let text = Message::text(
            "{\"type\":1,\"target\":\"measure\",\"arguments\":[1,2,\"\"]}\u{1e}{\"type\":7}\u{1e}",
        );
        assert!(matches!(
            handle(text, Target::Switchboard, &mut stamps),
            Ok(Next::Closed(_))
        ));
        assert_eq!(
            stamps,
            vec![Stamp {
                seq: 1,
                sent_at_us: 2
            }]
        );
        stamps.clear();
        assert!(matches!(
            handle(Message::text("2"), Target::Socketio, &mut stamps),
            Ok(Next::Reply(_))
        ));
        assert!(matches!(
            handle(
                Message::text("42[\"measure\",3,4,\"\"]"),
                Target::Socketio,
                &mut stamps
            ),
            Ok(Next::Continue)
        ));
        assert_eq!(
            stamps,
            vec![Stamp {
                seq: 3,
                sent_at_us: 4
            }]
        );
        assert!(matches!(
            handle(Message::Close(None), Target::Baseline, &mut stamps),
            Ok(Next::Closed(_))
        ));
        assert!(handle(
            Message::binary(vec![0x05, 0x01]),
            Target::Baseline,
            &mut stamps
        )
        .is_err());
    }
}
