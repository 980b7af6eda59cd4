//! Ready-made frames for the gateway's hot paths.
//!
//! A REST send to a group of ten thousand connections must not encode the message ten thousand
//! times: the gateway builds one frame per protocol with these functions and hands the same
//! [`Bytes`] to every recipient. The JSON variant splices the arguments text from the REST body
//! in verbatim, so it is never parsed twice.

use bytes::Bytes;

use crate::error::ProtocolError;
use crate::framing::{frame_msgpack_body, VARINT_MAX_LEN};
use crate::msgpack::{enc, write_array_len, write_map_len, write_str, MAX_DEPTH};
use crate::{json, Protocol, RECORD_SEPARATOR};

/// `{"type":1,"target":<target>,"arguments":<arguments_json>}` followed by `0x1E`.
///
/// `arguments_json` is spliced in verbatim: it must be the JSON text of an array (as taken from
/// a REST body that was already validated); `target` is escaped here.
pub fn json_invocation_frame(target: &str, arguments_json: &str) -> Bytes {
    let mut buf = Vec::with_capacity(target.len() + arguments_json.len() + 40);
    buf.extend_from_slice(b"{\"type\":1,\"target\":");
    json::write_str(&mut buf, target);
    buf.extend_from_slice(b",\"arguments\":");
    buf.extend_from_slice(arguments_json.as_bytes());
    buf.push(b'}');
    buf.push(RECORD_SEPARATOR);
    Bytes::from(buf)
}

/// The framed MessagePack Invocation `[1, {}, nil, target, arguments, []]`, converting the JSON
/// arguments the way the service does for MessagePack clients: integers to the smallest
/// MessagePack integer, other numbers to float64, objects to maps with string keys, `null` to
/// nil.
pub fn msgpack_invocation_frame(
    target: &str,
    arguments: &[serde_json::Value],
) -> Result<Bytes, ProtocolError> {
    let mut buf = Vec::with_capacity(64);
    buf.resize(VARINT_MAX_LEN, 0);
    write_array_len(&mut buf, 6)?;
    buf.extend_from_slice(&[0x01, 0x80, 0xc0]); // type 1, empty headers, no invocation id
    write_str(&mut buf, target)?;
    write_array_len(&mut buf, arguments.len())?;
    for arg in arguments {
        write_json_value(&mut buf, arg, 1)?;
    }
    write_array_len(&mut buf, 0)?;
    frame_msgpack_body(buf)
}

fn write_json_value(
    buf: &mut Vec<u8>,
    value: &serde_json::Value,
    depth: usize,
) -> Result<(), ProtocolError> {
    use serde_json::Value as J;
    match value {
        J::Null => buf.push(0xc0),
        J::Bool(false) => buf.push(0xc2),
        J::Bool(true) => buf.push(0xc3),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                enc(rmp::encode::write_sint(buf, i))?;
            } else if let Some(u) = n.as_u64() {
                enc(rmp::encode::write_uint(buf, u))?;
            } else {
                buf.push(0xcb);
                buf.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_be_bytes());
            }
        }
        J::String(s) => write_str(buf, s)?,
        J::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(ProtocolError::Encode(format!(
                    "arguments nest deeper than {MAX_DEPTH} levels"
                )));
            }
            write_array_len(buf, items.len())?;
            for item in items {
                write_json_value(buf, item, depth + 1)?;
            }
        }
        J::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(ProtocolError::Encode(format!(
                    "arguments nest deeper than {MAX_DEPTH} levels"
                )));
            }
            write_map_len(buf, map.len())?;
            for (k, v) in map {
                write_str(buf, k)?;
                write_json_value(buf, v, depth + 1)?;
            }
        }
    }
    Ok(())
}

static JSON_PING: &[u8] = b"{\"type\":6}\x1e";
static MSGPACK_PING: &[u8] = &[0x02, 0x91, 0x06];

/// The framed Ping message (static bytes, free to clone).
pub fn ping_frame(protocol: Protocol) -> Bytes {
    match protocol {
        Protocol::Json => Bytes::from_static(JSON_PING),
        Protocol::MessagePack => Bytes::from_static(MSGPACK_PING),
    }
}

/// The framed Close message.
pub fn close_frame(protocol: Protocol, error: Option<&str>, allow_reconnect: bool) -> Bytes {
    match (protocol, error, allow_reconnect) {
        (Protocol::Json, None, false) => Bytes::from_static(b"{\"type\":7}\x1e"),
        (Protocol::Json, None, true) => {
            Bytes::from_static(b"{\"type\":7,\"allowReconnect\":true}\x1e")
        }
        (Protocol::MessagePack, None, false) => Bytes::from_static(&[0x03, 0x92, 0x07, 0xc0]),
        (Protocol::MessagePack, None, true) => Bytes::from_static(&[0x04, 0x93, 0x07, 0xc0, 0xc3]),
        (protocol, Some(error), allow_reconnect) => {
            let msg = crate::HubMessage::Close {
                error: Some(error.to_owned()),
                allow_reconnect,
            };
            // Encoding a Close only fails for an error text over 2 GB; fall back to no text.
            crate::encode(protocol, &msg)
                .unwrap_or_else(|_| close_frame(protocol, None, allow_reconnect))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::tests::arb_json;
    use crate::{decode, FrameReader, HubMessage, Value};
    use proptest::prelude::*;

    fn single(protocol: Protocol, frame: &[u8]) -> HubMessage {
        crate::validate_framed(protocol, frame).expect("well framed");
        let mut reader = FrameReader::new(protocol, usize::MAX);
        reader.push(frame);
        let payload = reader.next_frame().expect("ok").expect("complete");
        decode(protocol, &payload).expect("decodes")
    }

    fn invocation(target: &str, arguments: Vec<Value>) -> HubMessage {
        HubMessage::Invocation {
            invocation_id: None,
            target: target.into(),
            arguments,
            stream_ids: vec![],
            headers: vec![],
        }
    }

    #[test]
    fn json_invocation_frame_splices_arguments_verbatim() {
        let frame = json_invocation_frame("send\"Message", r#"[1, "two", {"three": 3.5}]"#);
        assert_eq!(
            &frame[..],
            &b"{\"type\":1,\"target\":\"send\\\"Message\",\"arguments\":[1, \"two\", {\"three\": 3.5}]}\x1e"[..]
        );
        assert_eq!(
            single(Protocol::Json, &frame),
            invocation(
                "send\"Message",
                vec![
                    Value::Int(1),
                    Value::from("two"),
                    Value::Map(vec![(Value::from("three"), Value::F64(3.5))]),
                ]
            )
        );
    }

    #[test]
    fn msgpack_invocation_frame_converts_json_arguments() {
        let args = serde_json::json!([1, -200, 70000, u64::MAX, 1.5, 2.0, null, true, "s", [1], {"k": "v"}]);
        let args = args.as_array().expect("array");
        let frame = msgpack_invocation_frame("target", args).expect("encodes");
        // Smallest integer forms, float64 for non-integral numbers.
        let body = &frame[1..];
        assert_eq!(frame[0] as usize, body.len());
        assert_eq!(
            &body[..11],
            &[0x96, 0x01, 0x80, 0xc0, 0xa6, b't', b'a', b'r', b'g', b'e', b't']
        );
        assert_eq!(body[11], 0x9b);
        assert_eq!(&body[12..15], &[0x01, 0xd1, 0xff]);
        assert_eq!(
            single(Protocol::MessagePack, &frame),
            invocation(
                "target",
                vec![
                    Value::Int(1),
                    Value::Int(-200),
                    Value::Int(70000),
                    Value::UInt(u64::MAX),
                    Value::F64(1.5),
                    Value::F64(2.0),
                    Value::Nil,
                    Value::Bool(true),
                    Value::from("s"),
                    Value::Array(vec![Value::Int(1)]),
                    Value::Map(vec![(Value::from("k"), Value::from("v"))]),
                ]
            )
        );
    }

    #[test]
    fn ping_and_close_frames() {
        assert_eq!(&ping_frame(Protocol::Json)[..], b"{\"type\":6}\x1e");
        assert_eq!(&ping_frame(Protocol::MessagePack)[..], &[0x02, 0x91, 0x06]);
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            assert_eq!(single(protocol, &ping_frame(protocol)), HubMessage::Ping);
            for error in [None, Some("server shutting down")] {
                for allow_reconnect in [false, true] {
                    let frame = close_frame(protocol, error, allow_reconnect);
                    let expected = HubMessage::Close {
                        error: error.map(str::to_owned),
                        allow_reconnect,
                    };
                    assert_eq!(single(protocol, &frame), expected);
                    // The static shortcuts match the general encoder byte for byte, except
                    // that an absent error is written as nil rather than dropped in MessagePack.
                    if protocol == Protocol::Json || error.is_some() {
                        assert_eq!(frame, crate::encode(protocol, &expected).expect("encodes"));
                    }
                }
            }
        }
        assert_eq!(
            &close_frame(Protocol::Json, Some("x"), true)[..],
            b"{\"type\":7,\"error\":\"x\",\"allowReconnect\":true}\x1e"
        );
    }

    proptest! {
        #[test]
        fn fast_paths_agree_with_the_general_codec(
            target in ".{0,16}",
            args in proptest::collection::vec(arb_json(), 0..5),
        ) {
            let expected = invocation(&target, args.iter().map(Value::from).collect());
            let text = serde_json::to_string(&args).expect("serialize");
            let json = json_invocation_frame(&target, &text);
            prop_assert_eq!(single(Protocol::Json, &json), expected.clone());
            prop_assert_eq!(&json, &crate::encode(Protocol::Json, &expected).expect("encodes"));
            let msgpack = msgpack_invocation_frame(&target, &args).expect("encodes");
            prop_assert_eq!(single(Protocol::MessagePack, &msgpack), expected.clone());
            prop_assert_eq!(
                &msgpack,
                &crate::encode(Protocol::MessagePack, &expected).expect("encodes")
            );
        }
    }
}
