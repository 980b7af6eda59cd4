//! The MessagePack hub protocol: message layout and a bounds-checked value reader.
//!
//! Each message is one MessagePack array whose first element is the message type (layouts in
//! HubProtocol.md, "MessagePack (MsgPack) encoding"). Decoding is written against a byte slice by
//! hand rather than through a generic reader so that nothing a peer declares (an array of four
//! billion elements, a string longer than the payload) is trusted before the bytes are there:
//! every length is checked against the bytes remaining, and nesting depth is capped. Extra
//! trailing array elements are ignored, as newer protocol versions may append fields.

use rmp::Marker;

use crate::error::ProtocolError;
use crate::message::{CompletionResult, Headers, HubMessage};
use crate::value::Value;

/// Deepest nesting of arrays and maps accepted in a payload (the same limit serde_json applies
/// to JSON), so a hostile payload cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// Completion result kinds.
const RESULT_KIND_ERROR: i64 = 1;
const RESULT_KIND_VOID: i64 = 2;
const RESULT_KIND_VALUE: i64 = 3;

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

pub(crate) fn enc<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, ProtocolError> {
    r.map_err(|e| ProtocolError::Encode(e.to_string()))
}

fn wire_len(len: usize, what: &str) -> Result<u32, ProtocolError> {
    u32::try_from(len)
        .map_err(|_| ProtocolError::Encode(format!("{what} of length {len} exceeds u32::MAX")))
}

pub(crate) fn write_str(buf: &mut Vec<u8>, s: &str) -> Result<(), ProtocolError> {
    let len = wire_len(s.len(), "string")?;
    enc(rmp::encode::write_str_len(buf, len))?;
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

fn write_opt_str(buf: &mut Vec<u8>, s: Option<&str>) -> Result<(), ProtocolError> {
    match s {
        Some(s) => write_str(buf, s),
        None => enc(rmp::encode::write_nil(buf)),
    }
}

pub(crate) fn write_array_len(buf: &mut Vec<u8>, len: usize) -> Result<(), ProtocolError> {
    let len = wire_len(len, "array")?;
    enc(rmp::encode::write_array_len(buf, len)).map(drop)
}

pub(crate) fn write_map_len(buf: &mut Vec<u8>, len: usize) -> Result<(), ProtocolError> {
    let len = wire_len(len, "map")?;
    enc(rmp::encode::write_map_len(buf, len)).map(drop)
}

/// Writes one value in the smallest MessagePack representation of its kind.
pub(crate) fn write_value(buf: &mut Vec<u8>, value: &Value) -> Result<(), ProtocolError> {
    match value {
        Value::Nil => enc(rmp::encode::write_nil(buf)),
        Value::Bool(b) => enc(rmp::encode::write_bool(buf, *b)),
        Value::Int(i) => enc(rmp::encode::write_sint(buf, *i)).map(drop),
        Value::UInt(u) => enc(rmp::encode::write_uint(buf, *u)).map(drop),
        Value::F32(f) => enc(rmp::encode::write_f32(buf, *f)),
        Value::F64(f) => enc(rmp::encode::write_f64(buf, *f)),
        Value::String(s) => write_str(buf, s),
        Value::Binary(b) => {
            let len = wire_len(b.len(), "binary")?;
            enc(rmp::encode::write_bin_len(buf, len))?;
            buf.extend_from_slice(b);
            Ok(())
        }
        Value::Ext(ty, data) => {
            let len = wire_len(data.len(), "extension")?;
            enc(rmp::encode::write_ext_meta(buf, len, *ty))?;
            buf.extend_from_slice(data);
            Ok(())
        }
        Value::Array(items) => {
            write_array_len(buf, items.len())?;
            items.iter().try_for_each(|item| write_value(buf, item))
        }
        Value::Map(entries) => {
            write_map_len(buf, entries.len())?;
            entries.iter().try_for_each(|(k, v)| {
                write_value(buf, k)?;
                write_value(buf, v)
            })
        }
    }
}

fn write_headers(buf: &mut Vec<u8>, headers: &Headers) -> Result<(), ProtocolError> {
    write_map_len(buf, headers.len())?;
    headers.iter().try_for_each(|(k, v)| {
        write_str(buf, k)?;
        write_str(buf, v)
    })
}

fn write_strings(buf: &mut Vec<u8>, items: &[String]) -> Result<(), ProtocolError> {
    write_array_len(buf, items.len())?;
    items.iter().try_for_each(|s| write_str(buf, s))
}

fn write_values(buf: &mut Vec<u8>, items: &[Value]) -> Result<(), ProtocolError> {
    write_array_len(buf, items.len())?;
    items.iter().try_for_each(|v| write_value(buf, v))
}

fn write_type(buf: &mut Vec<u8>, len: usize, message_type: u8) -> Result<(), ProtocolError> {
    write_array_len(buf, len)?;
    enc(rmp::encode::write_pfix(buf, message_type))
}

/// Appends the unframed MessagePack encoding of `msg` to `buf`.
pub(crate) fn encode_message(buf: &mut Vec<u8>, msg: &HubMessage) -> Result<(), ProtocolError> {
    match msg {
        HubMessage::Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
            headers,
        } => {
            write_type(buf, 6, 1)?;
            write_headers(buf, headers)?;
            write_opt_str(buf, invocation_id.as_deref())?;
            write_str(buf, target)?;
            write_values(buf, arguments)?;
            write_strings(buf, stream_ids)
        }
        HubMessage::StreamItem {
            invocation_id,
            item,
            headers,
        } => {
            write_type(buf, 4, 2)?;
            write_headers(buf, headers)?;
            write_str(buf, invocation_id)?;
            write_value(buf, item)
        }
        HubMessage::Completion {
            invocation_id,
            result,
            headers,
        } => {
            let len = if matches!(result, CompletionResult::Void) {
                4
            } else {
                5
            };
            write_type(buf, len, 3)?;
            write_headers(buf, headers)?;
            write_str(buf, invocation_id)?;
            match result {
                CompletionResult::Void => {
                    enc(rmp::encode::write_sint(buf, RESULT_KIND_VOID)).map(drop)
                }
                CompletionResult::Error(error) => {
                    enc(rmp::encode::write_sint(buf, RESULT_KIND_ERROR))?;
                    write_str(buf, error)
                }
                CompletionResult::Value(value) => {
                    enc(rmp::encode::write_sint(buf, RESULT_KIND_VALUE))?;
                    write_value(buf, value)
                }
            }
        }
        HubMessage::StreamInvocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
            headers,
        } => {
            write_type(buf, 6, 4)?;
            write_headers(buf, headers)?;
            write_str(buf, invocation_id)?;
            write_str(buf, target)?;
            write_values(buf, arguments)?;
            write_strings(buf, stream_ids)
        }
        HubMessage::CancelInvocation {
            invocation_id,
            headers,
        } => {
            write_type(buf, 3, 5)?;
            write_headers(buf, headers)?;
            write_str(buf, invocation_id)
        }
        HubMessage::Ping => write_type(buf, 1, 6),
        HubMessage::Close {
            error,
            allow_reconnect,
        } => {
            // `[7, Error]` as in the spec's example; AllowReconnect only when set, which every
            // client reads as optional.
            if *allow_reconnect {
                write_type(buf, 3, 7)?;
                write_opt_str(buf, error.as_deref())?;
                enc(rmp::encode::write_bool(buf, true))
            } else {
                write_type(buf, 2, 7)?;
                write_opt_str(buf, error.as_deref())
            }
        }
        HubMessage::Ack { sequence_id } => {
            write_type(buf, 2, 8)?;
            enc(rmp::encode::write_uint(buf, *sequence_id)).map(drop)
        }
        HubMessage::Sequence { sequence_id } => {
            write_type(buf, 2, 9)?;
            enc(rmp::encode::write_uint(buf, *sequence_id)).map(drop)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// A cursor over one payload. Every read checks the remaining length first.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn err(&self, reason: impl Into<String>) -> ProtocolError {
        ProtocolError::msgpack(self.pos, reason)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                self.err(format!(
                    "needs {n} more bytes but only {} remain",
                    self.remaining()
                ))
            })?;
        let bytes = self.buf.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn marker(&mut self) -> Result<Marker, ProtocolError> {
        if self.remaining() == 0 {
            return Err(self.err("unexpected end of data"));
        }
        Ok(Marker::from_u8(self.u8()?))
    }

    /// A declared element count, rejected when the remaining bytes cannot possibly hold it
    /// (every element takes at least `min_bytes_each` bytes).
    fn count(&self, len: u32, min_bytes_each: usize) -> Result<usize, ProtocolError> {
        let len = usize::try_from(len).map_err(|_| self.err("length does not fit in memory"))?;
        if len.saturating_mul(min_bytes_each) > self.remaining() {
            return Err(self.err(format!(
                "declares {len} elements but only {} bytes remain",
                self.remaining()
            )));
        }
        Ok(len)
    }

    fn byte_len(&self, len: u32) -> Result<usize, ProtocolError> {
        self.count(len, 1)
    }

    fn utf8(&mut self, len: usize) -> Result<String, ProtocolError> {
        let start = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| ProtocolError::msgpack(start, format!("string is not valid UTF-8: {e}")))
    }

    /// Reads any value.
    pub(crate) fn value(&mut self, depth: usize) -> Result<Value, ProtocolError> {
        let marker = self.marker()?;
        self.value_after(marker, depth)
    }

    fn value_after(&mut self, marker: Marker, depth: usize) -> Result<Value, ProtocolError> {
        Ok(match marker {
            Marker::FixPos(n) => Value::Int(i64::from(n)),
            Marker::FixNeg(n) => Value::Int(i64::from(n)),
            Marker::Null => Value::Nil,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::U8 => Value::Int(i64::from(self.u8()?)),
            Marker::U16 => Value::Int(i64::from(self.u16()?)),
            Marker::U32 => Value::Int(i64::from(self.u32()?)),
            Marker::U64 => Value::from(self.u64()?),
            Marker::I8 => Value::Int(i64::from(i8::from_be_bytes(self.array()?))),
            Marker::I16 => Value::Int(i64::from(i16::from_be_bytes(self.array()?))),
            Marker::I32 => Value::Int(i64::from(i32::from_be_bytes(self.array()?))),
            Marker::I64 => Value::Int(i64::from_be_bytes(self.array()?)),
            Marker::F32 => Value::F32(f32::from_be_bytes(self.array()?)),
            Marker::F64 => Value::F64(f64::from_be_bytes(self.array()?)),
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let len = self.str_len(marker)?;
                Value::String(self.utf8(len)?)
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let len = match marker {
                    Marker::Bin8 => u32::from(self.u8()?),
                    Marker::Bin16 => u32::from(self.u16()?),
                    _ => self.u32()?,
                };
                let len = self.byte_len(len)?;
                Value::Binary(self.take(len)?.to_vec())
            }
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32 => {
                let len = match marker {
                    Marker::FixExt1 => 1,
                    Marker::FixExt2 => 2,
                    Marker::FixExt4 => 4,
                    Marker::FixExt8 => 8,
                    Marker::FixExt16 => 16,
                    Marker::Ext8 => u32::from(self.u8()?),
                    Marker::Ext16 => u32::from(self.u16()?),
                    _ => self.u32()?,
                };
                let ty = i8::from_be_bytes(self.array()?);
                let len = self.byte_len(len)?;
                Value::Ext(ty, self.take(len)?.to_vec())
            }
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                let depth = self.deeper(depth)?;
                let len = self.array_len_after(marker)?;
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.value(depth)?);
                }
                Value::Array(items)
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                let depth = self.deeper(depth)?;
                let len = self.map_len_after(marker)?;
                let mut entries = Vec::with_capacity(len);
                for _ in 0..len {
                    let key = self.value(depth)?;
                    let value = self.value(depth)?;
                    entries.push((key, value));
                }
                Value::Map(entries)
            }
            Marker::Reserved => return Err(self.err("reserved marker 0xc1")),
        })
    }

    fn deeper(&self, depth: usize) -> Result<usize, ProtocolError> {
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(depth)
    }

    fn str_len(&mut self, marker: Marker) -> Result<usize, ProtocolError> {
        let len = match marker {
            Marker::FixStr(n) => u32::from(n),
            Marker::Str8 => u32::from(self.u8()?),
            Marker::Str16 => u32::from(self.u16()?),
            _ => self.u32()?,
        };
        self.byte_len(len)
    }

    fn array_len_after(&mut self, marker: Marker) -> Result<usize, ProtocolError> {
        let len = match marker {
            Marker::FixArray(n) => u32::from(n),
            Marker::Array16 => u32::from(self.u16()?),
            _ => self.u32()?,
        };
        self.count(len, 1)
    }

    fn map_len_after(&mut self, marker: Marker) -> Result<usize, ProtocolError> {
        let len = match marker {
            Marker::FixMap(n) => u32::from(n),
            Marker::Map16 => u32::from(self.u16()?),
            _ => self.u32()?,
        };
        self.count(len, 2)
    }
}

/// Field-level reads for one message, naming the message and field in every error.
struct Fields<'r, 'a> {
    reader: &'r mut Reader<'a>,
    message: &'static str,
    /// Elements of the message array not read yet.
    left: usize,
}

impl Fields<'_, '_> {
    fn next(&mut self, field: &'static str) -> Result<Value, ProtocolError> {
        if self.left == 0 {
            return Err(ProtocolError::MissingField {
                message: self.message,
                field,
            });
        }
        self.left -= 1;
        self.reader.value(1)
    }

    fn has_more(&self) -> bool {
        self.left > 0
    }

    fn invalid(&self, field: &'static str, expected: &'static str, found: &Value) -> ProtocolError {
        ProtocolError::InvalidField {
            message: self.message,
            field,
            expected,
            found: found.kind().to_owned(),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        match self.next(field)? {
            Value::String(s) => Ok(s),
            other => Err(self.invalid(field, "a string", &other)),
        }
    }

    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, ProtocolError> {
        match self.next(field)? {
            Value::String(s) => Ok(Some(s)),
            Value::Nil => Ok(None),
            other => Err(self.invalid(field, "a string or nil", &other)),
        }
    }

    fn int(&mut self, field: &'static str) -> Result<i64, ProtocolError> {
        let value = self.next(field)?;
        value
            .as_i64()
            .ok_or_else(|| self.invalid(field, "an integer", &value))
    }

    fn uint(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        let value = self.next(field)?;
        value
            .as_u64()
            .ok_or_else(|| self.invalid(field, "a non-negative integer", &value))
    }

    fn headers(&mut self) -> Result<Headers, ProtocolError> {
        match self.next("headers")? {
            Value::Map(entries) => entries
                .into_iter()
                .map(|entry| match entry {
                    (Value::String(k), Value::String(v)) => Ok((k, v)),
                    (k, v) => {
                        let bad = if matches!(k, Value::String(_)) { v } else { k };
                        Err(self.invalid("headers", "a map of strings to strings", &bad))
                    }
                })
                .collect(),
            other => Err(self.invalid("headers", "a map", &other)),
        }
    }

    fn values(&mut self, field: &'static str) -> Result<Vec<Value>, ProtocolError> {
        match self.next(field)? {
            Value::Array(items) => Ok(items),
            other => Err(self.invalid(field, "an array", &other)),
        }
    }

    fn strings(&mut self, field: &'static str) -> Result<Vec<String>, ProtocolError> {
        match self.next(field)? {
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    other => Err(self.invalid(field, "an array of strings", &other)),
                })
                .collect(),
            other => Err(self.invalid(field, "an array of strings", &other)),
        }
    }

    /// Optional trailing stream ids (absent in messages from older clients).
    fn opt_strings(&mut self, field: &'static str) -> Result<Vec<String>, ProtocolError> {
        if self.has_more() {
            self.strings(field)
        } else {
            Ok(Vec::new())
        }
    }
}

/// Decodes one unframed MessagePack hub message.
pub(crate) fn decode_message(payload: &[u8]) -> Result<HubMessage, ProtocolError> {
    let mut reader = Reader::new(payload);
    let marker = reader.marker()?;
    let len = match marker {
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
            reader.array_len_after(marker)?
        }
        other => {
            let found = reader.value_after(other, 1).map_or("garbage", |v| v.kind());
            return Err(ProtocolError::InvalidMessage(format!(
                "a MessagePack hub message must be an array, found {found}"
            )));
        }
    };
    if len == 0 {
        return Err(ProtocolError::MissingMessageType);
    }
    let type_value = reader.value(1)?;
    let message_type = type_value.as_i64().ok_or_else(|| {
        ProtocolError::InvalidMessage(format!(
            "the message type must be an integer, found {}",
            type_value.kind()
        ))
    })?;
    let message = match message_type {
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
    let mut f = Fields {
        reader: &mut reader,
        message,
        left: len - 1,
    };
    Ok(match message_type {
        1 => {
            let headers = f.headers()?;
            let invocation_id = f.opt_string("invocationId")?;
            let target = f.string("target")?;
            let arguments = f.values("arguments")?;
            let stream_ids = f.opt_strings("streamIds")?;
            HubMessage::Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
                headers,
            }
        }
        2 => {
            let headers = f.headers()?;
            let invocation_id = f.string("invocationId")?;
            let item = f.next("item")?;
            HubMessage::StreamItem {
                invocation_id,
                item,
                headers,
            }
        }
        3 => {
            let headers = f.headers()?;
            let invocation_id = f.string("invocationId")?;
            let result = match f.int("resultKind")? {
                RESULT_KIND_ERROR => CompletionResult::Error(f.string("error")?),
                RESULT_KIND_VOID => CompletionResult::Void,
                RESULT_KIND_VALUE => CompletionResult::Value(f.next("result")?),
                other => {
                    return Err(ProtocolError::InvalidField {
                        message: "Completion",
                        field: "resultKind",
                        expected: "1 (error), 2 (void) or 3 (result)",
                        found: other.to_string(),
                    })
                }
            };
            HubMessage::Completion {
                invocation_id,
                result,
                headers,
            }
        }
        4 => {
            let headers = f.headers()?;
            let invocation_id = f.string("invocationId")?;
            let target = f.string("target")?;
            let arguments = f.values("arguments")?;
            let stream_ids = f.opt_strings("streamIds")?;
            HubMessage::StreamInvocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
                headers,
            }
        }
        5 => {
            let headers = f.headers()?;
            let invocation_id = f.string("invocationId")?;
            HubMessage::CancelInvocation {
                invocation_id,
                headers,
            }
        }
        6 => HubMessage::Ping,
        7 => {
            let error = f.opt_string("error")?;
            let allow_reconnect = if f.has_more() {
                match f.next("allowReconnect")? {
                    Value::Bool(b) => b,
                    Value::Nil => false,
                    other => return Err(f.invalid("allowReconnect", "a boolean", &other)),
                }
            } else {
                false
            };
            HubMessage::Close {
                error,
                allow_reconnect,
            }
        }
        8 => HubMessage::Ack {
            sequence_id: f.uint("sequenceId")?,
        },
        _ => HubMessage::Sequence {
            sequence_id: f.uint("sequenceId")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::tests::arb_value;
    use crate::{decode, encode, Protocol};
    use proptest::prelude::*;

    fn unframed(msg: &HubMessage) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_message(&mut buf, msg).expect("encodes");
        buf
    }

    fn xyz_method_42(id: Option<&str>) -> HubMessage {
        HubMessage::Invocation {
            invocation_id: id.map(str::to_owned),
            target: "method".into(),
            arguments: vec![Value::Int(42)],
            stream_ids: vec![],
            headers: vec![],
        }
    }

    /// (payload from HubProtocol.md, message) pairs that encode to exactly those bytes.
    fn spec_vectors() -> Vec<(Vec<u8>, HubMessage)> {
        vec![
            (
                vec![
                    0x96, 0x01, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f,
                    0x64, 0x91, 0x2a, 0x90,
                ],
                xyz_method_42(Some("xyz")),
            ),
            (
                vec![
                    0x96, 0x01, 0x80, 0xc0, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x91, 0x2a,
                    0x90,
                ],
                xyz_method_42(None),
            ),
            (
                vec![
                    0x96, 0x04, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f,
                    0x64, 0x91, 0x2a, 0x90,
                ],
                HubMessage::StreamInvocation {
                    invocation_id: "xyz".into(),
                    target: "method".into(),
                    arguments: vec![Value::Int(42)],
                    stream_ids: vec![],
                    headers: vec![],
                },
            ),
            (
                vec![0x94, 0x02, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x2a],
                HubMessage::StreamItem {
                    invocation_id: "xyz".into(),
                    item: Value::Int(42),
                    headers: vec![],
                },
            ),
            (
                vec![
                    0x95, 0x03, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x01, 0xa5, 0x45, 0x72, 0x72, 0x6f,
                    0x72,
                ],
                HubMessage::Completion {
                    invocation_id: "xyz".into(),
                    result: CompletionResult::Error("Error".into()),
                    headers: vec![],
                },
            ),
            (
                vec![0x94, 0x03, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x02],
                HubMessage::Completion {
                    invocation_id: "xyz".into(),
                    result: CompletionResult::Void,
                    headers: vec![],
                },
            ),
            (
                vec![0x95, 0x03, 0x80, 0xa3, 0x78, 0x79, 0x7a, 0x03, 0x2a],
                HubMessage::Completion {
                    invocation_id: "xyz".into(),
                    result: CompletionResult::Value(Value::Int(42)),
                    headers: vec![],
                },
            ),
            (
                vec![0x93, 0x05, 0x80, 0xa3, 0x78, 0x79, 0x7a],
                HubMessage::CancelInvocation {
                    invocation_id: "xyz".into(),
                    headers: vec![],
                },
            ),
            (vec![0x91, 0x06], HubMessage::Ping),
            (
                vec![0x92, 0x07, 0xa3, 0x78, 0x79, 0x7a],
                HubMessage::Close {
                    error: Some("xyz".into()),
                    allow_reconnect: false,
                },
            ),
            (
                vec![0x93, 0x07, 0xa3, 0x78, 0x79, 0x7a, 0xc3],
                HubMessage::Close {
                    error: Some("xyz".into()),
                    allow_reconnect: true,
                },
            ),
            (
                vec![
                    0x96, 0x01, 0x82, 0xa1, 0x78, 0xa1, 0x79, 0xa1, 0x7a, 0xa1, 0x7a, 0xa3, 0x78,
                    0x79, 0x7a, 0xa6, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x91, 0x2a, 0x90,
                ],
                HubMessage::Invocation {
                    invocation_id: Some("xyz".into()),
                    target: "method".into(),
                    arguments: vec![Value::Int(42)],
                    stream_ids: vec![],
                    headers: vec![("x".into(), "y".into()), ("z".into(), "z".into())],
                },
            ),
        ]
    }

    #[test]
    fn spec_examples_decode_and_encode_byte_exact() {
        for (bytes, msg) in spec_vectors() {
            assert_eq!(
                decode_message(&bytes).expect("decodes"),
                msg,
                "{bytes:02x?}"
            );
            assert_eq!(unframed(&msg), bytes, "{msg:?}");
        }
    }

    #[test]
    fn spec_ack_and_sequence_examples_decode() {
        // The spec writes 36 and 19 as uint8; we encode the smallest form (positive fixint).
        assert_eq!(
            decode_message(&[0x92, 0x08, 0xcc, 0x24]).expect("ack"),
            HubMessage::Ack { sequence_id: 36 }
        );
        assert_eq!(
            decode_message(&[0x92, 0x09, 0xcc, 0x13]).expect("sequence"),
            HubMessage::Sequence { sequence_id: 19 }
        );
        assert_eq!(
            unframed(&HubMessage::Ack { sequence_id: 36 }),
            vec![0x92, 0x08, 0x24]
        );
    }

    #[test]
    fn framed_encoding_has_varint_prefix() {
        let frame = encode(Protocol::MessagePack, &HubMessage::Ping).expect("encodes");
        assert_eq!(&frame[..], &[0x02, 0x91, 0x06]);
        let big = HubMessage::StreamItem {
            invocation_id: "1".into(),
            item: Value::Binary(vec![7; 300]),
            headers: vec![],
        };
        let frame = encode(Protocol::MessagePack, &big).expect("encodes");
        let body_len = frame.len() - 2;
        assert_eq!(frame[0] as usize, (body_len & 0x7f) | 0x80);
        assert_eq!(frame[1] as usize, body_len >> 7);
        assert_eq!(
            decode(Protocol::MessagePack, &frame[2..]).expect("decodes"),
            big
        );
    }

    #[test]
    fn tolerates_missing_optional_and_extra_trailing_elements() {
        // Invocation without StreamIds (older clients).
        let short = [0x95, 0x01, 0x80, 0xc0, 0xa1, 0x6d, 0x90];
        assert_eq!(
            decode_message(&short).expect("decodes"),
            HubMessage::Invocation {
                invocation_id: None,
                target: "m".into(),
                arguments: vec![],
                stream_ids: vec![],
                headers: vec![],
            }
        );
        // Ping and CancelInvocation with extra elements from a newer protocol version.
        assert_eq!(
            decode_message(&[0x93, 0x06, 0x01, 0xa1, 0x78]).expect("decodes"),
            HubMessage::Ping
        );
        assert_eq!(
            decode_message(&[0x94, 0x05, 0x80, 0xa1, 0x78, 0xc3]).expect("decodes"),
            HubMessage::CancelInvocation {
                invocation_id: "x".into(),
                headers: vec![]
            }
        );
        // Close with nil error and no AllowReconnect.
        assert_eq!(
            decode_message(&[0x92, 0x07, 0xc0]).expect("decodes"),
            HubMessage::Close {
                error: None,
                allow_reconnect: false
            }
        );
        // Message type written as uint8 is still the message type.
        assert_eq!(
            decode_message(&[0x91, 0xcc, 0x06]).expect("decodes"),
            HubMessage::Ping
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |bytes: &[u8]| decode_message(bytes).expect_err("must fail").to_string();
        assert_eq!(err(&[0x90]), "hub message has no message type");
        assert_eq!(err(&[0x91, 0x0a]), "unknown hub message type 10");
        assert!(err(&[0x06]).contains("must be an array, found an integer"));
        assert_eq!(
            err(&[0x94, 0x01, 0x80, 0xc0, 0xa1, 0x6d]),
            "Invocation message is missing required field `arguments`"
        );
        assert_eq!(
            err(&[0x95, 0x01, 0x80, 0xc0, 0x01, 0x90]),
            "Invocation message field `target` must be a string, found an integer"
        );
        assert_eq!(
            err(&[0x93, 0x05, 0x80, 0xc0]),
            "CancelInvocation message field `invocationId` must be a string, found null"
        );
        assert_eq!(
            err(&[0x94, 0x03, 0x80, 0xa1, 0x78, 0x07]),
            "Completion message field `resultKind` must be 1 (error), 2 (void) or 3 (result), \
             found 7"
        );
        assert_eq!(
            err(&[0x92, 0x08, 0xff]),
            "Ack message field `sequenceId` must be a non-negative integer, found an integer"
        );
        assert!(err(&[]).contains("unexpected end of data"));
        assert!(err(&[0x91, 0xcd, 0x00]).contains("needs 2 more bytes but only 1 remain"));
        assert!(err(&[0x92, 0x06]).contains("declares 2 elements but only 1 bytes remain"));
        assert!(err(&[0x92, 0x07, 0xa3, 0xff, 0xfe, 0xfd]).contains("not valid UTF-8"));
        assert!(err(&[0x92, 0x07, 0xc1]).contains("reserved marker"));
    }

    #[test]
    fn declared_lengths_are_checked_before_allocating() {
        // An array, a map, a string and binary each claiming 4 billion entries/bytes.
        for bytes in [
            &[0x92, 0x06, 0xdd, 0xff, 0xff, 0xff, 0xff][..],
            &[0x92, 0x06, 0xdf, 0xff, 0xff, 0xff, 0xff],
            &[0x92, 0x06, 0xdb, 0xff, 0xff, 0xff, 0xff, 0x00],
            &[0x92, 0x06, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],
            &[0x92, 0x06, 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
        ] {
            // Ping ignores trailing elements, so read the value directly.
            let mut reader = Reader::new(bytes);
            let err = reader.value(0).expect_err("must fail").to_string();
            assert!(err.contains("remain"), "{err}");
        }
        let too_big = [0xdd, 0xff, 0xff, 0xff, 0xff];
        let err = decode_message(&too_big).expect_err("must fail").to_string();
        assert!(err.contains("declares 4294967295 elements"), "{err}");
    }

    #[test]
    fn nesting_depth_is_capped() {
        let mut deep = vec![0x91u8; MAX_DEPTH + 10];
        deep.push(0xc0);
        let err = Value::from_msgpack(&deep)
            .expect_err("too deep")
            .to_string();
        assert!(err.contains("nesting deeper than"), "{err}");
        let mut ok = vec![0x91u8; MAX_DEPTH];
        ok.push(0xc0);
        assert!(Value::from_msgpack(&ok).is_ok());
    }

    #[test]
    fn integers_decode_canonically_from_every_width() {
        let cases: &[(&[u8], Value)] = &[
            (&[0x7f], Value::Int(127)),
            (&[0xe0], Value::Int(-32)),
            (&[0xcc, 0xff], Value::Int(255)),
            (&[0xcd, 0xff, 0xff], Value::Int(65535)),
            (&[0xce, 0xff, 0xff, 0xff, 0xff], Value::Int(4_294_967_295)),
            (
                &[0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                Value::Int(i64::MAX),
            ),
            (
                &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                Value::UInt(u64::MAX),
            ),
            (&[0xd0, 0x80], Value::Int(-128)),
            (&[0xd1, 0x00, 0x01], Value::Int(1)),
            (&[0xd2, 0xff, 0xff, 0xff, 0xff], Value::Int(-1)),
            (&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0], Value::Int(i64::MIN)),
            (&[0xca, 0x3f, 0x80, 0, 0], Value::F32(1.0)),
            (&[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0], Value::F64(1.0)),
            (&[0xd4, 0x05, 0x01], Value::Ext(5, vec![1])),
            (&[0xc7, 0x00, 0x05], Value::Ext(5, vec![])),
            (&[0xc4, 0x02, 0x01, 0x02], Value::Binary(vec![1, 2])),
        ];
        for (bytes, expected) in cases {
            assert_eq!(&Value::from_msgpack(bytes).expect("decodes"), expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn values_round_trip(value in arb_value()) {
            let bytes = value.to_msgpack().expect("encodes");
            prop_assert_eq!(Value::from_msgpack(&bytes).expect("decodes"), value.clone());
            // An independent decoder reads the same value.
            let independent = rmpv::decode::read_value(&mut &bytes[..]).expect("rmpv decodes");
            prop_assert_eq!(Value::from(independent), value);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_message(&bytes);
            let _ = Value::from_msgpack(&bytes);
        }

        #[test]
        fn corrupted_messages_never_panic(
            value in arb_value(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let msg = HubMessage::StreamItem {
                invocation_id: "id".into(),
                item: value,
                headers: vec![("k".into(), "v".into())],
            };
            let mut bytes = unframed(&msg);
            for (at, byte) in flips {
                let len = bytes.len();
                bytes[at % len] = byte;
            }
            let _ = decode_message(&bytes);
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = decode_message(&bytes);
        }
    }
}
