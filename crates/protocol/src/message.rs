//! Hub messages (types 1..=9 of HubProtocol.md) and the protocol-dispatching `encode`/`decode`.
//!
//! [`HubMessage`] is the one in-memory form both codecs read and write, so the gateway can decode
//! with a client's protocol and re-encode with another's.

use bytes::Bytes;

use crate::error::ProtocolError;
use crate::framing::{frame_msgpack_body, VARINT_MAX_LEN};
use crate::value::Value;
use crate::{json, msgpack, Protocol, RECORD_SEPARATOR};

/// Message headers in wire order (string keys and values; no header is defined by the spec).
pub type Headers = Vec<(String, String)>;

/// How an invocation completed.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionResult {
    /// The method returned nothing (or a stream ended without error).
    Void,
    /// The method returned a value.
    Value(Value),
    /// The method failed with this message.
    Error(String),
}

/// One hub protocol message.
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    /// Type 1: call `target`; no `invocation_id` means non-blocking (no completion expected).
    Invocation {
        /// Present for blocking invocations.
        invocation_id: Option<String>,
        /// Method name, case-sensitive.
        target: String,
        /// Method arguments.
        arguments: Vec<Value>,
        /// Ids of upload streams feeding this invocation.
        stream_ids: Vec<String>,
        /// Message headers.
        headers: Headers,
    },
    /// Type 2: one item of a stream.
    StreamItem {
        /// The stream's invocation (or upload stream) id.
        invocation_id: String,
        /// The item.
        item: Value,
        /// Message headers.
        headers: Headers,
    },
    /// Type 3: an invocation or stream completed.
    Completion {
        /// The invocation (or upload stream) id.
        invocation_id: String,
        /// Void, a value or an error.
        result: CompletionResult,
        /// Message headers.
        headers: Headers,
    },
    /// Type 4: call a streaming method.
    StreamInvocation {
        /// The invocation id (always present).
        invocation_id: String,
        /// Method name, case-sensitive.
        target: String,
        /// Method arguments.
        arguments: Vec<Value>,
        /// Ids of upload streams feeding this invocation.
        stream_ids: Vec<String>,
        /// Message headers.
        headers: Headers,
    },
    /// Type 5: cancel an invocation or stream.
    CancelInvocation {
        /// The invocation id to cancel.
        invocation_id: String,
        /// Message headers.
        headers: Headers,
    },
    /// Type 6: keep-alive.
    Ping,
    /// Type 7: the connection is closing.
    Close {
        /// Why, if because of an error.
        error: Option<String>,
        /// Whether clients with automatic reconnect should reconnect.
        allow_reconnect: bool,
    },
    /// Type 8: stateful reconnect, messages received up to `sequence_id`.
    Ack {
        /// Highest trackable sequence id processed.
        sequence_id: u64,
    },
    /// Type 9: stateful reconnect, the next trackable message will carry `sequence_id`.
    Sequence {
        /// Sequence id of the next trackable message.
        sequence_id: u64,
    },
}

impl HubMessage {
    /// The numeric message type (1..=9).
    pub fn message_type(&self) -> u8 {
        match self {
            HubMessage::Invocation { .. } => 1,
            HubMessage::StreamItem { .. } => 2,
            HubMessage::Completion { .. } => 3,
            HubMessage::StreamInvocation { .. } => 4,
            HubMessage::CancelInvocation { .. } => 5,
            HubMessage::Ping => 6,
            HubMessage::Close { .. } => 7,
            HubMessage::Ack { .. } => 8,
            HubMessage::Sequence { .. } => 9,
        }
    }

    /// Whether the message takes part in stateful-reconnect sequence tracking (types 1..=5).
    pub fn is_trackable(&self) -> bool {
        (1..=5).contains(&self.message_type())
    }
}

/// Encodes one message with its framing: JSON text followed by `0x1E`, or a MessagePack body
/// preceded by its varint length.
pub fn encode(protocol: Protocol, msg: &HubMessage) -> Result<Bytes, ProtocolError> {
    match protocol {
        Protocol::Json => {
            let mut buf = Vec::with_capacity(64);
            json::encode_message(&mut buf, msg)?;
            buf.push(RECORD_SEPARATOR);
            Ok(Bytes::from(buf))
        }
        Protocol::MessagePack => {
            let mut buf = Vec::with_capacity(64);
            // Room for the longest length prefix, filled in once the body length is known.
            buf.resize(VARINT_MAX_LEN, 0);
            msgpack::encode_message(&mut buf, msg)?;
            frame_msgpack_body(buf)
        }
    }
}

/// Decodes one unframed payload (the framing was already stripped, e.g. by
/// [`FrameReader`](crate::FrameReader)).
pub fn decode(protocol: Protocol, payload: &[u8]) -> Result<HubMessage, ProtocolError> {
    match protocol {
        Protocol::Json => json::decode_message(payload),
        Protocol::MessagePack => msgpack::decode_message(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::tests::{arb_json, arb_value};
    use crate::FrameReader;
    use proptest::prelude::*;

    fn arb_headers() -> impl Strategy<Value = Headers> {
        // Unique keys: JSON objects cannot repeat them. Sorted, so the order survives any map.
        proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..3)
            .prop_map(|m| m.into_iter().collect())
    }

    fn arb_message(value: BoxedStrategy<Value>) -> impl Strategy<Value = HubMessage> {
        let id = ".{0,12}";
        let args = proptest::collection::vec(value.clone(), 0..5);
        let stream_ids = proptest::collection::vec(".{0,6}", 0..3);
        let result = prop_oneof![
            Just(CompletionResult::Void),
            value.clone().prop_map(CompletionResult::Value),
            ".{0,20}".prop_map(CompletionResult::Error),
        ];
        prop_oneof![
            (
                proptest::option::of(id),
                ".{0,12}",
                args.clone(),
                stream_ids.clone(),
                arb_headers()
            )
                .prop_map(|(invocation_id, target, arguments, stream_ids, headers)| {
                    HubMessage::Invocation {
                        invocation_id,
                        target,
                        arguments,
                        stream_ids,
                        headers,
                    }
                }),
            (id, value, arb_headers()).prop_map(|(invocation_id, item, headers)| {
                HubMessage::StreamItem {
                    invocation_id,
                    item,
                    headers,
                }
            }),
            (id, result, arb_headers()).prop_map(|(invocation_id, result, headers)| {
                HubMessage::Completion {
                    invocation_id,
                    result,
                    headers,
                }
            }),
            (id, ".{0,12}", args, stream_ids, arb_headers()).prop_map(
                |(invocation_id, target, arguments, stream_ids, headers)| {
                    HubMessage::StreamInvocation {
                        invocation_id,
                        target,
                        arguments,
                        stream_ids,
                        headers,
                    }
                }
            ),
            (id, arb_headers()).prop_map(|(invocation_id, headers)| {
                HubMessage::CancelInvocation {
                    invocation_id,
                    headers,
                }
            }),
            Just(HubMessage::Ping),
            (proptest::option::of(".{0,20}"), any::<bool>()).prop_map(
                |(error, allow_reconnect)| HubMessage::Close {
                    error,
                    allow_reconnect,
                }
            ),
            any::<u64>().prop_map(|sequence_id| HubMessage::Ack { sequence_id }),
            any::<u64>().prop_map(|sequence_id| HubMessage::Sequence { sequence_id }),
        ]
    }

    /// Encodes, de-frames with a [`FrameReader`] and decodes.
    fn round_trip(protocol: Protocol, msg: &HubMessage) -> HubMessage {
        let frame = encode(protocol, msg).expect("encodes");
        crate::validate_framed(protocol, &frame).expect("well framed");
        let mut reader = FrameReader::new(protocol, usize::MAX);
        reader.push(&frame);
        let payload = reader.next_frame().expect("frames").expect("complete");
        assert_eq!(reader.buffered(), 0);
        decode(protocol, &payload).expect("decodes")
    }

    /// Structural JSON equality with floats compared to a relative tolerance (a float's text
    /// form may parse back one ulp away).
    fn json_close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value as J;
        match (a, b) {
            (J::Number(x), J::Number(y)) if x.is_f64() || y.is_f64() => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
            }
            (J::Array(x), J::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_close(x, y))
            }
            (J::Object(x), J::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
            }
            _ => a == b,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn msgpack_round_trips_any_message(msg in arb_message(arb_value().boxed())) {
            prop_assert_eq!(round_trip(Protocol::MessagePack, &msg), msg);
        }

        #[test]
        fn json_round_trips_any_message(
            msg in arb_message(arb_json().prop_map(Value::from).boxed())
        ) {
            prop_assert_eq!(round_trip(Protocol::Json, &msg), msg);
        }

        /// A message decoded from MessagePack and re-encoded as JSON carries the JSON mapping of
        /// its values.
        #[test]
        fn msgpack_values_reach_json_clients_as_their_json_mapping(
            args in proptest::collection::vec(arb_value(), 0..4)
        ) {
            let msg = HubMessage::Invocation {
                invocation_id: None,
                target: "t".into(),
                arguments: args.clone(),
                stream_ids: vec![],
                headers: vec![],
            };
            let frame = encode(Protocol::Json, &msg).expect("encodes");
            let text = frame.strip_suffix(&[RECORD_SEPARATOR]).expect("separator");
            let parsed: serde_json::Value = serde_json::from_slice(text).expect("valid JSON");
            let expected: Vec<serde_json::Value> = args.iter().map(Value::to_json).collect();
            let actual = parsed["arguments"].as_array().cloned().unwrap_or_default();
            prop_assert_eq!(actual.len(), expected.len());
            for (a, e) in actual.iter().zip(&expected) {
                prop_assert!(json_close(a, e), "{} != {}", a, e);
            }
        }
    }

    #[test]
    fn message_types_and_tracking() {
        assert_eq!(HubMessage::Ping.message_type(), 6);
        assert!(!HubMessage::Ping.is_trackable());
        let cancel = HubMessage::CancelInvocation {
            invocation_id: "1".into(),
            headers: vec![],
        };
        assert_eq!(cancel.message_type(), 5);
        assert!(cancel.is_trackable());
        assert!(!HubMessage::Ack { sequence_id: 1 }.is_trackable());
    }
}
