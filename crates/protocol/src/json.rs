//! The JSON hub protocol: one JSON object per message, keyed by a numeric `type`.
//!
//! Encoding writes the object by hand in a fixed field order, omitting optional fields that are
//! absent (`invocationId` of a non-blocking invocation, empty `headers` and `streamIds`, a
//! `Close` without error), which is what the official clients send and accept. Decoding parses
//! into [`Value`]s first (serde_json caps nesting depth) and then checks each field, ignoring
//! fields it does not know.

use crate::error::ProtocolError;
use crate::message::{CompletionResult, Headers, HubMessage};
use crate::value::Value;

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Appends `s` as a JSON string literal (quoted and escaped).
pub(crate) fn write_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[usize::from(b >> 4)]);
            buf.push(HEX[usize::from(b & 0xf)]);
        } else {
            buf.extend_from_slice(escape);
        }
        start = i + 1;
    }
    buf.extend_from_slice(bytes.get(start..).unwrap_or_default());
    buf.push(b'"');
}

fn write_value(buf: &mut Vec<u8>, value: &Value) -> Result<(), ProtocolError> {
    serde_json::to_writer(&mut *buf, value).map_err(ProtocolError::from)
}

fn write_key(buf: &mut Vec<u8>, key: &str) {
    buf.push(b',');
    write_str(buf, key);
    buf.push(b':');
}

fn write_headers(buf: &mut Vec<u8>, headers: &Headers) {
    if headers.is_empty() {
        return;
    }
    write_key(buf, "headers");
    buf.push(b'{');
    for (i, (k, v)) in headers.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_str(buf, k);
        buf.push(b':');
        write_str(buf, v);
    }
    buf.push(b'}');
}

fn write_invocation_body(
    buf: &mut Vec<u8>,
    invocation_id: Option<&str>,
    target: &str,
    arguments: &[Value],
    stream_ids: &[String],
) -> Result<(), ProtocolError> {
    if let Some(id) = invocation_id {
        write_key(buf, "invocationId");
        write_str(buf, id);
    }
    write_key(buf, "target");
    write_str(buf, target);
    write_key(buf, "arguments");
    buf.push(b'[');
    for (i, arg) in arguments.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_value(buf, arg)?;
    }
    buf.push(b']');
    if !stream_ids.is_empty() {
        write_key(buf, "streamIds");
        buf.push(b'[');
        for (i, id) in stream_ids.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_str(buf, id);
        }
        buf.push(b']');
    }
    Ok(())
}

/// Appends the unframed JSON encoding of `msg` to `buf`.
pub(crate) fn encode_message(buf: &mut Vec<u8>, msg: &HubMessage) -> Result<(), ProtocolError> {
    buf.extend_from_slice(b"{\"type\":");
    buf.extend_from_slice(msg.message_type().to_string().as_bytes());
    match msg {
        HubMessage::Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
            headers,
        } => {
            write_headers(buf, headers);
            write_invocation_body(buf, invocation_id.as_deref(), target, arguments, stream_ids)?;
        }
        HubMessage::StreamInvocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
            headers,
        } => {
            write_headers(buf, headers);
            write_invocation_body(buf, Some(invocation_id), target, arguments, stream_ids)?;
        }
        HubMessage::StreamItem {
            invocation_id,
            item,
            headers,
        } => {
            write_headers(buf, headers);
            write_key(buf, "invocationId");
            write_str(buf, invocation_id);
            write_key(buf, "item");
            write_value(buf, item)?;
        }
        HubMessage::Completion {
            invocation_id,
            result,
            headers,
        } => {
            write_headers(buf, headers);
            write_key(buf, "invocationId");
            write_str(buf, invocation_id);
            match result {
                CompletionResult::Void => {}
                CompletionResult::Value(value) => {
                    write_key(buf, "result");
                    write_value(buf, value)?;
                }
                CompletionResult::Error(error) => {
                    write_key(buf, "error");
                    write_str(buf, error);
                }
            }
        }
        HubMessage::CancelInvocation {
            invocation_id,
            headers,
        } => {
            write_headers(buf, headers);
            write_key(buf, "invocationId");
            write_str(buf, invocation_id);
        }
        HubMessage::Ping => {}
        HubMessage::Close {
            error,
            allow_reconnect,
        } => {
            if let Some(error) = error {
                write_key(buf, "error");
                write_str(buf, error);
            }
            if *allow_reconnect {
                write_key(buf, "allowReconnect");
                buf.extend_from_slice(b"true");
            }
        }
        HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => {
            write_key(buf, "sequenceId");
            buf.extend_from_slice(sequence_id.to_string().as_bytes());
        }
    }
    buf.push(b'}');
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// The fields of one message object, read by name.
struct Fields {
    message: &'static str,
    entries: Vec<(Value, Value)>,
}

impl Fields {
    /// Removes and returns a field; the last occurrence wins, as in serde_json's own maps.
    /// `null` counts as absent.
    fn take(&mut self, field: &str) -> Option<Value> {
        let index = self
            .entries
            .iter()
            .rposition(|(k, _)| k.as_str() == Some(field))?;
        match self.entries.swap_remove(index).1 {
            Value::Nil => None,
            value => Some(value),
        }
    }

    /// Like [`Fields::take`] but keeps an explicit `null` as [`Value::Nil`].
    fn take_nullable(&mut self, field: &str) -> Option<Value> {
        let index = self
            .entries
            .iter()
            .rposition(|(k, _)| k.as_str() == Some(field))?;
        Some(self.entries.swap_remove(index).1)
    }

    fn invalid(&self, field: &'static str, expected: &'static str, found: &Value) -> ProtocolError {
        ProtocolError::InvalidField {
            message: self.message,
            field,
            expected,
            found: found.kind().to_owned(),
        }
    }

    fn missing(&self, field: &'static str) -> ProtocolError {
        ProtocolError::MissingField {
            message: self.message,
            field,
        }
    }

    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, ProtocolError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.invalid(field, "a string", &other)),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        self.opt_string(field)?.ok_or_else(|| self.missing(field))
    }

    fn values(&mut self, field: &'static str) -> Result<Vec<Value>, ProtocolError> {
        match self.take(field) {
            None => Err(self.missing(field)),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(self.invalid(field, "an array", &other)),
        }
    }

    fn opt_strings(&mut self, field: &'static str) -> Result<Vec<String>, ProtocolError> {
        match self.take(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    other => Err(self.invalid(field, "an array of strings", &other)),
                })
                .collect(),
            Some(other) => Err(self.invalid(field, "an array of strings", &other)),
        }
    }

    fn headers(&mut self) -> Result<Headers, ProtocolError> {
        match self.take("headers") {
            None => Ok(Vec::new()),
            Some(Value::Map(entries)) => entries
                .into_iter()
                .map(|(k, v)| match (k, v) {
                    (Value::String(k), Value::String(v)) => Ok((k, v)),
                    (_, other) => Err(self.invalid("headers", "an object of strings", &other)),
                })
                .collect(),
            Some(other) => Err(self.invalid("headers", "an object", &other)),
        }
    }

    fn sequence_id(&mut self) -> Result<u64, ProtocolError> {
        let value = self
            .take("sequenceId")
            .ok_or_else(|| self.missing("sequenceId"))?;
        value
            .as_u64()
            .ok_or_else(|| self.invalid("sequenceId", "a non-negative integer", &value))
    }
}

/// Decodes one unframed JSON hub message (without its record separator).
pub(crate) fn decode_message(payload: &[u8]) -> Result<HubMessage, ProtocolError> {
    let entries = match serde_json::from_slice::<Value>(payload)? {
        Value::Map(entries) => entries,
        other => {
            return Err(ProtocolError::InvalidMessage(format!(
                "a JSON hub message must be an object, found {}",
                other.kind()
            )))
        }
    };
    let mut f = Fields {
        message: "hub",
        entries,
    };
    let type_value = f.take("type").ok_or(ProtocolError::MissingMessageType)?;
    let message_type = type_value.as_i64().ok_or_else(|| {
        ProtocolError::InvalidMessage(format!(
            "`type` must be an integer, found {}",
            type_value.kind()
        ))
    })?;
    f.message = match message_type {
        1 => "Invocation",
        2 => "StreamItem",
        3 => "Completion",
        4 => "StreamInvocation",
        5 => "CancelInvocation",
        6 => "Ping",
        7 => "Close",
        8 => "Ack",
        9 => "Sequence",
        other => return Err(ProtocolError::UnknownMessageType(other)),
    };
    Ok(match message_type {
        1 => HubMessage::Invocation {
            headers: f.headers()?,
            invocation_id: f.opt_string("invocationId")?,
            target: f.string("target")?,
            arguments: f.values("arguments")?,
            stream_ids: f.opt_strings("streamIds")?,
        },
        2 => HubMessage::StreamItem {
            headers: f.headers()?,
            invocation_id: f.string("invocationId")?,
            item: f.take_nullable("item").ok_or_else(|| f.missing("item"))?,
        },
        3 => {
            let headers = f.headers()?;
            let invocation_id = f.string("invocationId")?;
            let error = f.opt_string("error")?;
            let result = f.take_nullable("result");
            let result = match (error, result) {
                (Some(_), Some(_)) => return Err(ProtocolError::ResultAndError),
                (Some(error), None) => CompletionResult::Error(error),
                (None, Some(value)) => CompletionResult::Value(value),
                (None, None) => CompletionResult::Void,
            };
            HubMessage::Completion {
                invocation_id,
                result,
                headers,
            }
        }
        4 => HubMessage::StreamInvocation {
            headers: f.headers()?,
            invocation_id: f.string("invocationId")?,
            target: f.string("target")?,
            arguments: f.values("arguments")?,
            stream_ids: f.opt_strings("streamIds")?,
        },
        5 => HubMessage::CancelInvocation {
            headers: f.headers()?,
            invocation_id: f.string("invocationId")?,
        },
        6 => HubMessage::Ping,
        7 => HubMessage::Close {
            error: f.opt_string("error")?,
            allow_reconnect: match f.take("allowReconnect") {
                None => false,
                Some(Value::Bool(b)) => b,
                Some(other) => return Err(f.invalid("allowReconnect", "a boolean", &other)),
            },
        },
        8 => HubMessage::Ack {
            sequence_id: f.sequence_id()?,
        },
        _ => HubMessage::Sequence {
            sequence_id: f.sequence_id()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, Protocol};
    use proptest::prelude::*;

    fn encoded(msg: &HubMessage) -> String {
        let frame = encode(Protocol::Json, msg).expect("encodes");
        assert_eq!(frame.last(), Some(&0x1e));
        String::from_utf8(frame[..frame.len() - 1].to_vec()).expect("utf-8")
    }

    fn decoded(text: &str) -> HubMessage {
        decode(Protocol::Json, text.as_bytes()).expect("decodes")
    }

    fn error(text: &str) -> String {
        decode(Protocol::Json, text.as_bytes())
            .expect_err("must fail")
            .to_string()
    }

    /// (compact form of a HubProtocol.md example, message).
    fn spec_vectors() -> Vec<(&'static str, HubMessage)> {
        let send = |id: Option<&str>, stream_ids: Vec<String>, arguments: Vec<Value>| {
            HubMessage::Invocation {
                invocation_id: id.map(str::to_owned),
                target: "Send".into(),
                arguments,
                stream_ids,
                headers: vec![],
            }
        };
        let args = || vec![Value::Int(42), Value::from("Test Message")];
        vec![
            (
                r#"{"type":1,"invocationId":"123","target":"Send","arguments":[42,"Test Message"]}"#,
                send(Some("123"), vec![], args()),
            ),
            (
                r#"{"type":1,"target":"Send","arguments":[42,"Test Message"]}"#,
                send(None, vec![], args()),
            ),
            (
                r#"{"type":1,"invocationId":"123","target":"Send","arguments":[42],"streamIds":["1"]}"#,
                send(Some("123"), vec!["1".into()], vec![Value::Int(42)]),
            ),
            (
                r#"{"type":4,"invocationId":"123","target":"Send","arguments":[42,"Test Message"]}"#,
                HubMessage::StreamInvocation {
                    invocation_id: "123".into(),
                    target: "Send".into(),
                    arguments: args(),
                    stream_ids: vec![],
                    headers: vec![],
                },
            ),
            (
                r#"{"type":2,"invocationId":"123","item":42}"#,
                HubMessage::StreamItem {
                    invocation_id: "123".into(),
                    item: Value::Int(42),
                    headers: vec![],
                },
            ),
            (
                r#"{"type":3,"invocationId":"123"}"#,
                HubMessage::Completion {
                    invocation_id: "123".into(),
                    result: CompletionResult::Void,
                    headers: vec![],
                },
            ),
            (
                r#"{"type":3,"invocationId":"123","result":42}"#,
                HubMessage::Completion {
                    invocation_id: "123".into(),
                    result: CompletionResult::Value(Value::Int(42)),
                    headers: vec![],
                },
            ),
            (
                r#"{"type":3,"invocationId":"123","error":"It didn't work!"}"#,
                HubMessage::Completion {
                    invocation_id: "123".into(),
                    result: CompletionResult::Error("It didn't work!".into()),
                    headers: vec![],
                },
            ),
            (
                r#"{"type":5,"invocationId":"123"}"#,
                HubMessage::CancelInvocation {
                    invocation_id: "123".into(),
                    headers: vec![],
                },
            ),
            (r#"{"type":6}"#, HubMessage::Ping),
            (
                r#"{"type":7}"#,
                HubMessage::Close {
                    error: None,
                    allow_reconnect: false,
                },
            ),
            (
                r#"{"type":7,"error":"Connection closed because of an error!"}"#,
                HubMessage::Close {
                    error: Some("Connection closed because of an error!".into()),
                    allow_reconnect: false,
                },
            ),
            (
                r#"{"type":7,"error":"Connection closed because of an error!","allowReconnect":true}"#,
                HubMessage::Close {
                    error: Some("Connection closed because of an error!".into()),
                    allow_reconnect: true,
                },
            ),
            (
                r#"{"type":8,"sequenceId":1394}"#,
                HubMessage::Ack { sequence_id: 1394 },
            ),
            (
                r#"{"type":9,"sequenceId":1234}"#,
                HubMessage::Sequence { sequence_id: 1234 },
            ),
            (
                r#"{"type":1,"headers":{"Foo":"Bar"},"invocationId":"123","target":"Send","arguments":[42,"Test Message"]}"#,
                HubMessage::Invocation {
                    invocation_id: Some("123".into()),
                    target: "Send".into(),
                    arguments: args(),
                    stream_ids: vec![],
                    headers: vec![("Foo".into(), "Bar".into())],
                },
            ),
        ]
    }

    #[test]
    fn spec_examples_decode_and_encode_byte_exact() {
        for (text, msg) in spec_vectors() {
            assert_eq!(decoded(text), msg, "{text}");
            assert_eq!(encoded(&msg), text);
        }
    }

    #[test]
    fn pretty_printed_spec_example_decodes() {
        let text = "{\n    \"type\": 1,\n    \"headers\": {\n        \"Foo\": \"Bar\"\n    },\n    \
                    \"invocationId\": \"123\",\n    \"target\": \"Send\",\n    \"arguments\": [\n        \
                    42,\n        \"Test Message\"\n    ]\n}";
        assert_eq!(decoded(text), spec_vectors()[15].1);
    }

    #[test]
    fn unknown_fields_are_ignored_and_nulls_are_absent() {
        assert_eq!(
            decoded(r#"{"type":6,"extra":{"deep":[1,2]}}"#),
            HubMessage::Ping
        );
        assert_eq!(
            decoded(
                r#"{"target":"m","invocationId":null,"arguments":[],"type":1,"streamIds":null}"#
            ),
            HubMessage::Invocation {
                invocation_id: None,
                target: "m".into(),
                arguments: vec![],
                stream_ids: vec![],
                headers: vec![],
            }
        );
        assert_eq!(
            decoded(r#"{"type":7,"error":null,"allowReconnect":null}"#),
            HubMessage::Close {
                error: None,
                allow_reconnect: false
            }
        );
        // An explicit null result is a result, not a void completion.
        assert_eq!(
            decoded(r#"{"type":3,"invocationId":"1","result":null,"error":null}"#),
            HubMessage::Completion {
                invocation_id: "1".into(),
                result: CompletionResult::Value(Value::Nil),
                headers: vec![],
            }
        );
        assert_eq!(
            decoded(r#"{"type":2,"invocationId":"1","item":null}"#),
            HubMessage::StreamItem {
                invocation_id: "1".into(),
                item: Value::Nil,
                headers: vec![],
            }
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            error(r#"{"target":"x"}"#),
            "hub message has no message type"
        );
        assert_eq!(error(r#"{"type":10}"#), "unknown hub message type 10");
        assert_eq!(error(r#"{"type":-1}"#), "unknown hub message type -1");
        assert!(error(r#"{"type":"1"}"#).contains("`type` must be an integer, found a string"));
        assert!(error(r#"[1]"#).contains("must be an object, found an array"));
        assert!(error("").starts_with("malformed JSON"));
        assert!(error(r#"{"type":6"#).starts_with("malformed JSON"));
        assert!(error(r#"{"type":6} x"#).starts_with("malformed JSON"));
        assert_eq!(
            error(r#"{"type":1,"target":"m"}"#),
            "Invocation message is missing required field `arguments`"
        );
        assert_eq!(
            error(r#"{"type":1,"target":5,"arguments":[]}"#),
            "Invocation message field `target` must be a string, found an integer"
        );
        assert_eq!(
            error(r#"{"type":1,"target":"m","arguments":{}}"#),
            "Invocation message field `arguments` must be an array, found a map"
        );
        assert_eq!(
            error(r#"{"type":1,"target":"m","arguments":[],"streamIds":[1]}"#),
            "Invocation message field `streamIds` must be an array of strings, found an integer"
        );
        assert_eq!(
            error(r#"{"type":4,"target":"m","arguments":[]}"#),
            "StreamInvocation message is missing required field `invocationId`"
        );
        assert_eq!(
            error(r#"{"type":2,"invocationId":"1"}"#),
            "StreamItem message is missing required field `item`"
        );
        assert_eq!(
            error(r#"{"type":3,"invocationId":"1","result":1,"error":"e"}"#),
            "Completion message carries both `result` and `error`"
        );
        assert_eq!(
            error(r#"{"type":5,"invocationId":"1","headers":{"a":1}}"#),
            "CancelInvocation message field `headers` must be an object of strings, found an integer"
        );
        assert_eq!(
            error(r#"{"type":7,"allowReconnect":"yes"}"#),
            "Close message field `allowReconnect` must be a boolean, found a string"
        );
        assert_eq!(
            error(r#"{"type":8,"sequenceId":-1}"#),
            "Ack message field `sequenceId` must be a non-negative integer, found an integer"
        );
        assert_eq!(
            error(r#"{"type":9}"#),
            "Sequence message is missing required field `sequenceId`"
        );
    }

    #[test]
    fn strings_are_escaped() {
        let msg = HubMessage::Close {
            error: Some("quote \" backslash \\ nl \n tab \t nul \u{0} rs \u{1e} é 😀".into()),
            allow_reconnect: false,
        };
        let text = encoded(&msg);
        assert_eq!(
            text,
            r#"{"type":7,"error":"quote \" backslash \\ nl \n tab \t nul \u0000 rs \u001e é 😀"}"#
        );
        assert_eq!(decoded(&text), msg);
    }

    #[test]
    fn binary_and_non_string_keys_use_the_json_mapping() {
        let msg = HubMessage::StreamItem {
            invocation_id: "1".into(),
            item: Value::Map(vec![
                (Value::Int(1), Value::Binary(vec![0xde, 0xad])),
                (Value::from("f"), Value::F64(f64::INFINITY)),
            ]),
            headers: vec![],
        };
        assert_eq!(
            encoded(&msg),
            r#"{"type":2,"invocationId":"1","item":{"1":"3q0=","f":null}}"#
        );
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowing() {
        let text = format!(
            r#"{{"type":2,"invocationId":"1","item":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(error(&text).contains("recursion limit"));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_message(&bytes);
        }

        #[test]
        fn json_shaped_garbage_never_panics(
            text in r#"\{("(type|target|invocationId|arguments|item|result|error|headers|streamIds|sequenceId|allowReconnect)":(-?[0-9]{1,3}|"[a-z]{0,3}"|null|true|\[\]|\{\}|\[1,"a"\]|\{"a":"b"\}),?){0,6}\}"#
        ) {
            let _ = decode_message(text.as_bytes());
        }

        #[test]
        fn any_string_survives_escaping(s in any::<String>()) {
            let mut buf = Vec::new();
            write_str(&mut buf, &s);
            prop_assert!(!buf.contains(&crate::RECORD_SEPARATOR));
            let back: String = serde_json::from_slice(&buf).expect("valid JSON string");
            prop_assert_eq!(back, s);
        }
    }
}
