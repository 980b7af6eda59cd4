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
