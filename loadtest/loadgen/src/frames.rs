//! The wire formats the generator speaks, reduced to what it measures.
//!
//! Every measured message carries `[seq, sent_at_us, padding]` as its arguments: the sequence
//! number of the REST send, the sender's wall clock in microseconds when the request left, and
//! padding to reach `--payload-bytes`. Clients only need those two integers back, so the
//! decoders here read them and skip everything else without allocating: the generator shares
//! the machine with the server it measures, and its per-message cost must stay small. The
//! decoders are written from the protocol descriptions rather than borrowed from the server's
//! codec, so a server bug cannot hide behind the same bug on the client side.
//!
//! - SignalR JSON hub protocol: records terminated by `0x1e`.
//! - SignalR MessagePack hub protocol: records prefixed by a VarInt length.
//! - Socket.IO 4 over engine.io 4 (WebSocket transport): one packet per WebSocket message.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::FrameError;

/// Ends every record of the JSON hub protocol (and the handshake).
pub const RECORD_SEPARATOR: char = '\u{1e}';

/// The hub method every measured message invokes on the clients.
pub const TARGET: &str = "measure";

/// The numbers a measured message carries from the sender to each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sequence number of the send (0-based, per run).
    pub seq: u64,
    /// The sender's wall clock (microseconds since the Unix epoch) when the request was sent.
    pub sent_at_us: u64,
}

/// The hub protocol a client asks for in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Json,
    Messagepack,
}

impl Protocol {
    /// The name used in the handshake and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::Messagepack => "messagepack",
        }
    }
}

/// What one hub message means to a client of the generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A measured invocation.
    Measure(Stamp),
    /// A keep-alive ping.
    Ping,
    /// The server closes the connection (SignalR close message), with its error if any.
    Close(Option<String>),
    /// Anything else that is valid but not measured (another target, other message types).
    Other,
}

/// A string of `len` filler bytes (ASCII, so JSON and MessagePack sizes agree).
pub fn padding(len: usize) -> String {
    "x".repeat(len)
}

/// The REST body of a measured send: `{"target":"measure","arguments":[seq,sent_at_us,"pad"]}`.
/// The same body goes to Switchboard, the baseline server and the Socket.IO server.
pub fn rest_body(stamp: Stamp, padding: &str) -> String {
    let mut body = String::with_capacity(padding.len() + 80);
    // Writing to a String cannot fail.
    let _ = write!(
        body,
        "{{\"target\":\"{TARGET}\",\"arguments\":[{},{},\"{padding}\"]}}",
        stamp.seq, stamp.sent_at_us
    );
    body
}

/// The handshake request a SignalR client sends first (always JSON text).
pub fn handshake_request(protocol: Protocol) -> String {
    format!(
        "{{\"protocol\":\"{}\",\"version\":1}}{RECORD_SEPARATOR}",
        protocol.name()
    )
}

/// Reads the handshake response at the start of `text`: `Ok(rest)` with whatever followed the
/// first record (servers may send more records in the same WebSocket message), or the server's
/// error.
pub fn parse_handshake_response(text: &str) -> Result<&str, FrameError> {
    let (record, rest) = text
        .split_once(RECORD_SEPARATOR)
        .ok_or(FrameError::Unterminated)?;
    #[derive(Deserialize)]
    struct Response<'a> {
        #[serde(default, borrow)]
        error: Option<Cow<'a, str>>,
    }
    let response: Response<'_> = serde_json::from_str(record)?;
    match response.error {
        Some(error) => Err(FrameError::Refused(error.into_owned())),
        None => Ok(rest),
    }
}

/// The JSON ping record.
pub const JSON_PING: &str = "{\"type\":6}\u{1e}";

/// The MessagePack ping record: length 2, then `[6]`.
pub const MSGPACK_PING: [u8; 3] = [0x02, 0x91, 0x06];

#[derive(Deserialize)]
struct JsonRecord<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default, borrow)]
    target: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
}

/// The arguments of a measured message; the padding is skipped, not copied.
#[derive(Deserialize)]
struct MeasureArgs(u64, u64, IgnoredAny);

/// Decodes every record of a JSON hub protocol text message, calling `each` per record.
pub fn parse_json(text: &str, mut each: impl FnMut(Incoming)) -> Result<(), FrameError> {
    let mut rest = text;
    while !rest.is_empty() {
        let (record, tail) = rest
            .split_once(RECORD_SEPARATOR)
            .ok_or(FrameError::Unterminated)?;
        rest = tail;
        let record: JsonRecord<'_> = serde_json::from_str(record)?;
        let incoming = match record.kind {
            1 if record.target.as_deref() == Some(TARGET) => {
                let raw = record.arguments.ok_or(FrameError::BadArguments)?;
                let MeasureArgs(seq, sent_at_us, _) =
                    serde_json::from_str(raw.get()).map_err(|_| FrameError::BadArguments)?;
                Incoming::Measure(Stamp { seq, sent_at_us })
            }
            6 => Incoming::Ping,
            7 => Incoming::Close(record.error.map(Cow::into_owned)),
            _ => Incoming::Other,
        };
        each(incoming);
    }
    Ok(())
}

/// Splits the VarInt length prefix (7 bits per byte, low first, at most 5 bytes) off `bytes`.
fn split_length_prefix(bytes: &[u8]) -> Result<(usize, &[u8]), FrameError> {
    let mut len: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(5) {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let len = usize::try_from(len).map_err(|_| FrameError::Unterminated)?;
            return Ok((len, bytes.get(i + 1..).unwrap_or_default()));
        }
    }
    Err(FrameError::Unterminated)
}

/// Prefixes `body` with its VarInt length, as the MessagePack hub protocol frames records.
pub fn length_prefixed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    let mut len = body.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(body);
    out
}

fn read_u64(rd: &mut &[u8]) -> Result<u64, FrameError> {
    rmp::decode::read_int(rd).map_err(|_| FrameError::BadArguments)
}

fn skip_value(rd: &mut &[u8]) -> Result<(), FrameError> {
    rmpv::decode::read_value_ref(rd).map_err(|e| FrameError::MessagePack(e.to_string()))?;
    Ok(())
}

fn read_str(rd: &mut &[u8]) -> Result<Option<String>, FrameError> {
    match rmpv::decode::read_value_ref(rd).map_err(|e| FrameError::MessagePack(e.to_string()))? {
        rmpv::ValueRef::String(s) => Ok(s.as_str().map(str::to_owned)),
        _ => Ok(None),
    }
}

fn is_target(rd: &mut &[u8]) -> Result<bool, FrameError> {
    match rmpv::decode::read_value_ref(rd).map_err(|e| FrameError::MessagePack(e.to_string()))? {
        rmpv::ValueRef::String(s) => Ok(s.as_str() == Some(TARGET)),
        _ => Ok(false),
    }
}

fn array_len(rd: &mut &[u8]) -> Result<u32, FrameError> {
    rmp::decode::read_array_len(rd).map_err(|e| FrameError::MessagePack(e.to_string()))
}

/// Decodes one MessagePack hub message body (without its length prefix).
fn parse_msgpack_record(mut rd: &[u8]) -> Result<Incoming, FrameError> {
    let len = array_len(&mut rd)?;
    let kind: u8 =
        rmp::decode::read_int(&mut rd).map_err(|e| FrameError::MessagePack(e.to_string()))?;
    match kind {
        // [1, headers, invocationId, target, arguments, streamIds?]
        1 if len >= 5 => {
            skip_value(&mut rd)?;
            skip_value(&mut rd)?;
            if !is_target(&mut rd)? {
                return Ok(Incoming::Other);
            }
            if array_len(&mut rd)? < 2 {
                return Err(FrameError::BadArguments);
            }
            let seq = read_u64(&mut rd)?;
            let sent_at_us = read_u64(&mut rd)?;
            Ok(Incoming::Measure(Stamp { seq, sent_at_us }))
        }
        6 => Ok(Incoming::Ping),
        // [7, error, allowReconnect?]
        7 => {
            let error = if len >= 2 { read_str(&mut rd)? } else { None };
            Ok(Incoming::Close(error))
        }
        _ => Ok(Incoming::Other),
    }
}

/// Decodes every record of a MessagePack hub protocol binary message.
pub fn parse_msgpack(bytes: &[u8], mut each: impl FnMut(Incoming)) -> Result<(), FrameError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = split_length_prefix(rest)?;
        let record = tail.get(..len).ok_or(FrameError::Unterminated)?;
        rest = tail.get(len..).unwrap_or_default();
        each(parse_msgpack_record(record)?);
    }
    Ok(())
}

/// One engine.io packet (with the Socket.IO packet inside a message), as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketIo {
    /// `0{...}`: the engine.io session is open.
    Open,
    /// `2`: the server's ping, to be answered with `3`.
    Ping,
    /// `40{...}`: connected to the main namespace.
    Connected,
    /// `42["measure",seq,sent_at_us,...]`.
    Measure(Stamp),
    /// `44{...}` (connect error), `41` (disconnect) or `1` (close).
    Closed(String),
    /// Another event or packet type.
    Other,
}

/// The engine.io message that connects to the main Socket.IO namespace.
pub const SOCKETIO_CONNECT: &str = "40";
/// The engine.io pong.
pub const SOCKETIO_PONG: &str = "3";

#[derive(Deserialize)]
struct SocketIoEvent<'a>(#[serde(borrow)] Cow<'a, str>, u64, u64, IgnoredAny);

/// Decodes one engine.io text packet.
pub fn parse_socketio(text: &str) -> Result<SocketIo, FrameError> {
    let mut chars = text.chars();
    let Some(engine) = chars.next() else {
        return Err(FrameError::Unterminated);
    };
    Ok(match engine {
        '0' => SocketIo::Open,
        '1' => SocketIo::Closed("engine.io close".to_owned()),
        '2' => SocketIo::Ping,
        '4' => match chars.next() {
            Some('0') => SocketIo::Connected,
            Some('1') => SocketIo::Closed("socket.io disconnect".to_owned()),
            Some('2') => {
                let body = chars.as_str();
                // An ack id may precede the array; events without one start with '['.
                let body = body.trim_start_matches(|c: char| c.is_ascii_digit());
                match serde_json::from_str::<SocketIoEvent<'_>>(body) {
                    Ok(SocketIoEvent(name, seq, sent_at_us, _)) if name == TARGET => {
                        SocketIo::Measure(Stamp { seq, sent_at_us })
                    }
                    Ok(_) => SocketIo::Other,
                    // Our event with arguments of another shape is an error; others are not ours.
                    Err(_) if body.starts_with(concat!("[\"", "measure", "\"")) => {
                        return Err(FrameError::BadArguments)
                    }
                    Err(_) => SocketIo::Other,
                }
            }
            Some('4') => SocketIo::Closed(format!("connect error: {}", chars.as_str())),
            _ => SocketIo::Other,
        },
        _ => SocketIo::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect_json(text: &str) -> Result<Vec<Incoming>, FrameError> {
        let mut out = Vec::new();
        parse_json(text, |i| out.push(i))?;
        Ok(out)
    }

    fn collect_msgpack(bytes: &[u8]) -> Result<Vec<Incoming>, FrameError> {
        let mut out = Vec::new();
        parse_msgpack(bytes, |i| out.push(i))?;
        Ok(out)
    }

    fn msgpack_invocation(target: &str, args: Vec<rmpv::Value>) -> Vec<u8> {
        let value = rmpv::Value::Array(vec![
            1.into(),
            rmpv::Value::Map(vec![]),
            rmpv::Value::Nil,
            target.into(),
            rmpv::Value::Array(args),
        ]);
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &value).unwrap();
        length_prefixed(&body)
    }

    #[test]
    fn rest_body_is_the_invocation_the_clients_decode() {
        let stamp = Stamp {
            seq: 7,
            sent_at_us: 1_700_000_000_123_456,
        };
        let body = rest_body(stamp, "xyz");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["target"], "measure");
        assert_eq!(
            value["arguments"],
            serde_json::json!([7, 1_700_000_000_123_456u64, "xyz"])
        );
        // What a server makes of it.
        let frame = format!(
            "{{\"type\":1,\"target\":\"measure\",\"arguments\":{}}}\u{1e}",
            value["arguments"]
        );
        assert_eq!(
            collect_json(&frame).unwrap(),
            vec![Incoming::Measure(stamp)]
        );
    }

    #[test]
    fn json_records_of_every_kind() {
        let text = concat!(
            "{\"type\":6}\u{1e}",
            "{\"type\":1,\"target\":\"other\",\"arguments\":[\"a\"]}\u{1e}",
            "{\"type\":1,\"target\":\"measure\",\"arguments\":[1,2,\"p\\\"ad\"],\"headers\":{}}\u{1e}",
            "{\"type\":7,\"error\":\"bye\",\"allowReconnect\":true}\u{1e}",
        );
        assert_eq!(
            collect_json(text).unwrap(),
            vec![
                Incoming::Ping,
                Incoming::Other,
                Incoming::Measure(Stamp {
                    seq: 1,
                    sent_at_us: 2
                }),
                Incoming::Close(Some("bye".to_owned())),
            ]
        );
    }

    #[test]
    fn json_errors() {
        assert!(matches!(
            collect_json("{\"type\":6}"),
            Err(FrameError::Unterminated)
        ));
        assert!(matches!(
            collect_json("nope\u{1e}"),
            Err(FrameError::Json(_))
        ));
        assert!(matches!(
            collect_json("{\"type\":1,\"target\":\"measure\",\"arguments\":[\"a\"]}\u{1e}"),
            Err(FrameError::BadArguments)
        ));
    }

    #[test]
    fn handshake_response() {
        assert_eq!(parse_handshake_response("{}\u{1e}").unwrap(), "");
        assert_eq!(
            parse_handshake_response("{}\u{1e}{\"type\":6}\u{1e}").unwrap(),
            "{\"type\":6}\u{1e}"
        );
        assert!(matches!(
            parse_handshake_response("{\"error\":\"no\"}\u{1e}"),
            Err(FrameError::Refused(e)) if e == "no"
        ));
        assert!(parse_handshake_response("{}").is_err());
    }

    #[test]
    fn msgpack_records() {
        let mut bytes = msgpack_invocation(
            "measure",
            vec![5.into(), 1_700_000_000_000_000u64.into(), "pad".into()],
        );
        bytes.extend_from_slice(&MSGPACK_PING);
        bytes.extend(msgpack_invocation("other", vec![]));
        let mut close = Vec::new();
        rmpv::encode::write_value(
            &mut close,
            &rmpv::Value::Array(vec![7.into(), "gone".into()]),
        )
        .unwrap();
        bytes.extend(length_prefixed(&close));
        assert_eq!(
            collect_msgpack(&bytes).unwrap(),
            vec![
                Incoming::Measure(Stamp {
                    seq: 5,
                    sent_at_us: 1_700_000_000_000_000
                }),
                Incoming::Ping,
                Incoming::Other,
                Incoming::Close(Some("gone".to_owned())),
            ]
        );
    }

    #[test]
    fn msgpack_truncated() {
        let bytes = msgpack_invocation("measure", vec![5.into(), 6.into(), "pad".into()]);
        assert!(collect_msgpack(&bytes[..bytes.len() - 1]).is_err());
        assert!(collect_msgpack(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
        let short = msgpack_invocation("measure", vec![5.into()]);
        assert!(matches!(
            collect_msgpack(&short),
            Err(FrameError::BadArguments)
        ));
    }

    #[test]
    fn socketio_packets() {
        assert_eq!(parse_socketio("0{\"sid\":\"a\"}").unwrap(), SocketIo::Open);
        assert_eq!(parse_socketio("2").unwrap(), SocketIo::Ping);
        assert_eq!(
            parse_socketio("40{\"sid\":\"b\"}").unwrap(),
            SocketIo::Connected
        );
        assert_eq!(
            parse_socketio("42[\"measure\",3,4,\"pad\"]").unwrap(),
            SocketIo::Measure(Stamp {
                seq: 3,
                sent_at_us: 4
            })
        );
        assert_eq!(
            parse_socketio("42[\"chat\",\"hi\"]").unwrap(),
            SocketIo::Other
        );
        assert!(matches!(
            parse_socketio("42[\"measure\",\"x\"]"),
            Err(FrameError::BadArguments)
        ));
        assert!(matches!(
            parse_socketio("44{\"message\":\"no\"}").unwrap(),
            SocketIo::Closed(_)
        ));
        assert!(parse_socketio("").is_err());
    }

    proptest! {
        #[test]
        fn length_prefix_round_trips(len in 0usize..300_000) {
            let body = vec![0u8; len];
            let framed = length_prefixed(&body);
            let (read, rest) = split_length_prefix(&framed).unwrap();
            prop_assert_eq!(read, len);
            prop_assert_eq!(rest.len(), len);
        }

        #[test]
        fn stamps_survive_both_protocols(seq in any::<u64>(), sent in any::<u64>(), pad in "[a-z]{0,64}") {
            let stamp = Stamp { seq, sent_at_us: sent };
            let body: serde_json::Value = serde_json::from_str(&rest_body(stamp, &pad)).unwrap();
            let frame = format!("{{\"type\":1,\"target\":\"measure\",\"arguments\":{}}}\u{1e}", body["arguments"]);
            prop_assert_eq!(collect_json(&frame).unwrap(), vec![Incoming::Measure(stamp)]);
            let bytes = msgpack_invocation("measure", vec![seq.into(), sent.into(), pad.as_str().into()]);
            prop_assert_eq!(collect_msgpack(&bytes).unwrap(), vec![Incoming::Measure(stamp)]);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = collect_msgpack(&bytes);
            let text = String::from_utf8_lossy(&bytes);
            let _ = collect_json(&text);
            let _ = parse_socketio(&text);
        }
    }
}
