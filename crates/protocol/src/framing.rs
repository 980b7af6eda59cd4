//! Message framing: the JSON record separator and the MessagePack varint length prefix.
//!
//! A WebSocket message may hold several hub messages, and a hub message may span several
//! WebSocket messages (or arrive in arbitrary pieces on SSE/long-polling), so the gateway feeds
//! every read into a [`FrameReader`] and takes complete payloads out. The reader enforces the
//! message size limit as early as the framing allows: from the length prefix, before any body
//! byte arrives, for MessagePack; as soon as the buffered text outgrows the limit without a
//! separator for JSON. A declared length is never used to allocate.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::{Protocol, RECORD_SEPARATOR};

/// Longest MessagePack length prefix: 5 bytes of 7 bits carry the largest 2 GB length.
pub const VARINT_MAX_LEN: usize = 5;

/// Largest MessagePack body the length prefix can declare (2 GB - 1).
pub const MAX_VARINT_VALUE: u32 = 0x7fff_ffff;

/// Reads a varint length prefix from the start of `buf`: `Ok(None)` while incomplete,
/// otherwise the value and the number of bytes it took.
pub(crate) fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, ProtocolError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(VARINT_MAX_LEN).enumerate() {
        if i == VARINT_MAX_LEN - 1 && byte > 0x07 {
            return Err(ProtocolError::InvalidFraming(
                "length prefix declares a message over 2 GB".to_owned(),
            ));
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Ok(None)
}

/// Encodes `value` as a varint; returns the bytes and how many of them are used.
pub(crate) fn write_varint(mut value: u32) -> ([u8; VARINT_MAX_LEN], usize) {
    let mut out = [0u8; VARINT_MAX_LEN];
    let mut len = 0;
    for slot in out.iter_mut() {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        len += 1;
        if value == 0 {
            *slot = low;
            break;
        }
        *slot = low | 0x80;
    }
    (out, len)
}

/// Turns a buffer whose first [`VARINT_MAX_LEN`] bytes are reserved and whose rest is a
/// MessagePack body into the framed message, without copying the body.
pub(crate) fn frame_msgpack_body(mut buf: Vec<u8>) -> Result<Bytes, ProtocolError> {
    let body_len = buf.len().saturating_sub(VARINT_MAX_LEN);
    let declared = u32::try_from(body_len)
        .ok()
        .filter(|&len| len <= MAX_VARINT_VALUE)
        .ok_or_else(|| {
            ProtocolError::Encode(format!(
                "message of {body_len} bytes exceeds the 2 GB MessagePack frame limit"
            ))
        })?;
    let (prefix, prefix_len) = write_varint(declared);
    let start = VARINT_MAX_LEN - prefix_len;
    if let (Some(dst), Some(src)) = (buf.get_mut(start..VARINT_MAX_LEN), prefix.get(..prefix_len)) {
        dst.copy_from_slice(src);
    }
    Ok(Bytes::from(buf).slice(start..))
}

/// Frames an already-encoded payload: appends `0x1E` (JSON) or prepends the varint length
/// (MessagePack). Used for payloads that arrive unframed, e.g. from an upstream HTTP response.
pub fn frame_payload(protocol: Protocol, payload: &[u8]) -> Result<Bytes, ProtocolError> {
    match protocol {
        Protocol::Json => {
            if payload.contains(&RECORD_SEPARATOR) {
                return Err(ProtocolError::InvalidFraming(
                    "a JSON payload cannot contain the record separator 0x1E".to_owned(),
                ));
            }
            let mut buf = Vec::with_capacity(payload.len() + 1);
            buf.extend_from_slice(payload);
            buf.push(RECORD_SEPARATOR);
            Ok(Bytes::from(buf))
        }
        Protocol::MessagePack => {
            let mut buf = Vec::with_capacity(payload.len() + VARINT_MAX_LEN);
            buf.resize(VARINT_MAX_LEN, 0);
            buf.extend_from_slice(payload);
            frame_msgpack_body(buf)
        }
    }
}

/// Checks that `frame` is exactly one well-framed message for `protocol` — JSON text ending with
/// its only `0x1E`, or a varint length prefix matching the bytes that follow — so a
/// pre-serialized frame from a REST body can be forwarded to clients as is. The payload itself
/// is not decoded (the service forwards such frames without interpreting them).
pub fn validate_framed(protocol: Protocol, frame: &[u8]) -> Result<(), ProtocolError> {
    match protocol {
        Protocol::Json => match frame.iter().position(|&b| b == RECORD_SEPARATOR) {
            None => Err(ProtocolError::InvalidFraming(
                "JSON frame does not end with the record separator 0x1E".to_owned(),
            )),
            Some(0) => Err(ProtocolError::InvalidFraming(
                "JSON frame is empty".to_owned(),
            )),
            Some(end) if end + 1 != frame.len() => Err(ProtocolError::InvalidFraming(format!(
                "JSON frame has {} bytes after its record separator",
                frame.len() - end - 1
            ))),
            Some(_) => Ok(()),
        },
        Protocol::MessagePack => match read_varint(frame)? {
            None => Err(ProtocolError::InvalidFraming(
                "MessagePack frame has a truncated length prefix".to_owned(),
            )),
            Some((0, _)) => Err(ProtocolError::InvalidFraming(
                "MessagePack frame is empty".to_owned(),
            )),
            Some((declared, prefix_len)) => {
                let actual = frame.len() - prefix_len;
                if u64::from(declared) == actual as u64 {
                    Ok(())
                } else {
                    Err(ProtocolError::InvalidFraming(format!(
                        "MessagePack length prefix declares {declared} bytes but {actual} follow"
                    )))
                }
            }
        },
    }
}

/// Incremental de-framer: push bytes as they arrive, take complete unframed payloads out.
///
/// Frames may be split across pushes and several may arrive in one. After an error the
/// connection must be closed: the reader keeps returning the error.
#[derive(Debug)]
pub struct FrameReader {
    protocol: Protocol,
    max_message_size: usize,
    buf: BytesMut,
    /// JSON: how many buffered bytes are known to hold no record separator.
    scanned: usize,
}

impl FrameReader {
    /// A reader for `protocol` that rejects payloads larger than `max_message_size` bytes (framing
    /// excluded). Pass `usize::MAX` for no limit.
    pub fn new(protocol: Protocol, max_message_size: usize) -> Self {
        FrameReader {
            protocol,
            max_message_size,
            buf: BytesMut::new(),
            scanned: 0,
        }
    }

    /// The protocol this reader de-frames.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete unframed payload, `Ok(None)` if more bytes are needed.
    ///
    /// Fails when a payload exceeds the size limit (detected from the length prefix, or once the
    /// JSON text buffered without a separator is longer than the limit) or when the length prefix
    /// is malformed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        match self.protocol {
            Protocol::Json => self.next_json(),
            Protocol::MessagePack => self.next_msgpack(),
        }
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn too_large(&self, size: u64) -> ProtocolError {
        ProtocolError::MessageTooLarge {
            size,
            max: self.max_message_size,
        }
    }

    fn next_json(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        let found = self
            .buf
            .get(self.scanned..)
            .and_then(|rest| rest.iter().position(|&b| b == RECORD_SEPARATOR));
        match found {
            Some(offset) => {
                let end = self.scanned + offset;
                if end > self.max_message_size {
                    return Err(self.too_large(end as u64));
                }
                let mut frame = self.buf.split_to(end + 1);
                frame.truncate(end);
                self.scanned = 0;
                Ok(Some(frame.freeze()))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_message_size {
                    return Err(self.too_large(self.buf.len() as u64));
                }
                Ok(None)
            }
        }
    }

    fn next_msgpack(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        let Some((declared, prefix_len)) = read_varint(&self.buf)? else {
            return Ok(None);
        };
        let len = usize::try_from(declared)
            .ok()
            .filter(|&len| len <= self.max_message_size)
            .ok_or_else(|| self.too_large(u64::from(declared)))?;
        if self.buf.len() - prefix_len < len {
            return Ok(None);
        }
        self.buf.advance(prefix_len);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, HubMessage, Value};
    use proptest::prelude::*;

    fn messages() -> Vec<HubMessage> {
        vec![
            HubMessage::Ping,
            HubMessage::Invocation {
                invocation_id: Some("1".into()),
                target: "send".into(),
                arguments: vec![Value::from("x".repeat(200)), Value::Int(-7)],
                stream_ids: vec![],
                headers: vec![],
            },
            HubMessage::Ack { sequence_id: 3 },
            HubMessage::Close {
                error: Some("bye".into()),
                allow_reconnect: true,
            },
        ]
    }

    fn stream(protocol: Protocol) -> Vec<u8> {
        messages()
            .iter()
            .flat_map(|m| encode(protocol, m).expect("encodes").to_vec())
            .collect()
    }

    fn drain(reader: &mut FrameReader, out: &mut Vec<HubMessage>) {
        while let Some(frame) = reader.next_frame().expect("frames") {
            out.push(decode(reader.protocol(), &frame).expect("decodes"));
        }
    }

    #[test]
    fn varint_matches_spec_examples() {
        assert_eq!(read_varint(&[0x35]).expect("ok"), Some((0x35, 1)));
        assert_eq!(read_varint(&[0x80, 0x29]).expect("ok"), Some((0x1480, 2)));
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x07]).expect("ok"),
            Some((0x7fff_ffff, 5))
        );
        assert_eq!(read_varint(&[0x80, 0x80]).expect("ok"), None);
        assert_eq!(read_varint(&[]).expect("ok"), None);
        assert!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0x08]).is_err());
        assert!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).is_err());
        let (bytes, len) = write_varint(0x1480);
        assert_eq!(&bytes[..len], &[0x80, 0x29]);
        let (bytes, len) = write_varint(0);
        assert_eq!(&bytes[..len], &[0x00]);
    }

    #[test]
    fn spec_binary_framing_example() {
        let mut wire = vec![0x0b];
        wire.extend_from_slice(b"Hello\nWorld");
        wire.extend_from_slice(&[0x02, 0x01, 0x02]);
        let mut reader = FrameReader::new(Protocol::MessagePack, 1024);
        reader.push(&wire);
        assert_eq!(
            reader.next_frame().expect("ok").as_deref(),
            Some(&b"Hello\nWorld"[..])
        );
        assert_eq!(
            reader.next_frame().expect("ok").as_deref(),
            Some(&[1u8, 2][..])
        );
        assert_eq!(reader.next_frame().expect("ok"), None);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn every_split_point_yields_the_same_frames() {
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            let wire = stream(protocol);
            for split in 0..=wire.len() {
                let mut reader = FrameReader::new(protocol, 1024);
                let mut out = Vec::new();
                reader.push(&wire[..split]);
                drain(&mut reader, &mut out);
                reader.push(&wire[split..]);
                drain(&mut reader, &mut out);
                assert_eq!(out, messages(), "{protocol} split at {split}");
                assert_eq!(reader.buffered(), 0);
            }
        }
    }

    #[test]
    fn byte_by_byte_and_all_at_once() {
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            let wire = stream(protocol);
            let mut reader = FrameReader::new(protocol, 1024);
            let mut out = Vec::new();
            for byte in &wire {
                reader.push(std::slice::from_ref(byte));
                drain(&mut reader, &mut out);
            }
            assert_eq!(out, messages());

            let mut reader = FrameReader::new(protocol, 1024);
            let mut out = Vec::new();
            reader.push(&wire);
            reader.push(&wire);
            drain(&mut reader, &mut out);
            assert_eq!(out.len(), 2 * messages().len());
        }
    }

    #[test]
    fn msgpack_oversize_is_detected_from_the_prefix_alone() {
        let mut reader = FrameReader::new(Protocol::MessagePack, 100);
        // Declares 2 GB - 1 but carries no body: rejected without waiting or allocating.
        reader.push(&[0xff, 0xff, 0xff, 0xff, 0x07]);
        match reader.next_frame() {
            Err(ProtocolError::MessageTooLarge { size, max }) => {
                assert_eq!((size, max), (0x7fff_ffff, 100));
            }
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
        let mut reader = FrameReader::new(Protocol::MessagePack, 100);
        reader.push(&[101]);
        assert!(matches!(
            reader.next_frame(),
            Err(ProtocolError::MessageTooLarge { size: 101, .. })
        ));
        // Exactly at the limit is fine.
        let mut reader = FrameReader::new(Protocol::MessagePack, 100);
        reader.push(&[100]);
        reader.push(&[0u8; 100]);
        assert_eq!(reader.next_frame().expect("ok").map(|f| f.len()), Some(100));
    }

    #[test]
    fn msgpack_malformed_prefix_is_an_error() {
        let mut reader = FrameReader::new(Protocol::MessagePack, usize::MAX);
        reader.push(&[0x80, 0x80, 0x80, 0x80, 0x10]);
        assert!(matches!(
            reader.next_frame(),
            Err(ProtocolError::InvalidFraming(_))
        ));
    }

    #[test]
    fn json_oversize_is_detected_before_the_separator() {
        let mut reader = FrameReader::new(Protocol::Json, 10);
        reader.push(b"{\"type\":");
        assert_eq!(reader.next_frame().expect("still under"), None);
        reader.push(b"6  ");
        assert!(matches!(
            reader.next_frame(),
            Err(ProtocolError::MessageTooLarge { size: 11, max: 10 })
        ));
        // A complete frame over the limit in one push is rejected too.
        let mut reader = FrameReader::new(Protocol::Json, 5);
        reader.push(b"{\"type\":6}\x1e");
        assert!(matches!(
            reader.next_frame(),
            Err(ProtocolError::MessageTooLarge { .. })
        ));
        // Exactly at the limit is fine.
        let mut reader = FrameReader::new(Protocol::Json, 10);
        reader.push(b"{\"type\":6}\x1e");
        assert_eq!(
            reader.next_frame().expect("ok").as_deref(),
            Some(&b"{\"type\":6}"[..])
        );
    }

    #[test]
    fn validate_framed_accepts_exactly_one_frame() {
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            for msg in messages() {
                let frame = encode(protocol, &msg).expect("encodes");
                validate_framed(protocol, &frame).expect("valid");
                // Truncated, doubled and extended frames are rejected.
                assert!(validate_framed(protocol, &frame[..frame.len() - 1]).is_err());
                let doubled = [&frame[..], &frame[..]].concat();
                assert!(validate_framed(protocol, &doubled).is_err());
                let extended = [&frame[..], &[0u8][..]].concat();
                assert!(validate_framed(protocol, &extended).is_err());
            }
            assert!(validate_framed(protocol, &[]).is_err());
        }
        assert!(validate_framed(Protocol::Json, b"\x1e").is_err());
        assert!(validate_framed(Protocol::MessagePack, &[0x00]).is_err());
    }

    #[test]
    fn frame_payload_frames_raw_payloads() {
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            let framed = encode(protocol, &HubMessage::Ping).expect("encodes");
            let mut reader = FrameReader::new(protocol, usize::MAX);
            reader.push(&framed);
            let payload = reader.next_frame().expect("ok").expect("frame");
            assert_eq!(frame_payload(protocol, &payload).expect("frames"), framed);
        }
        assert!(frame_payload(Protocol::Json, b"{\x1e}").is_err());
        let big = vec![0u8; 300];
        let framed = frame_payload(Protocol::MessagePack, &big).expect("frames");
        assert_eq!(&framed[..2], &[0xac, 0x02]);
        assert_eq!(framed.len(), 302);
    }

    proptest! {
        #[test]
        fn arbitrary_chunking_yields_the_same_frames(
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            json in any::<bool>(),
        ) {
            let protocol = if json { Protocol::Json } else { Protocol::MessagePack };
            let wire = stream(protocol);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.push(0);
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut reader = FrameReader::new(protocol, 1024);
            let mut out = Vec::new();
            for pair in cuts.windows(2) {
                reader.push(&wire[pair[0]..pair[1]]);
                drain(&mut reader, &mut out);
            }
            prop_assert_eq!(out, messages());
        }

        #[test]
        fn garbage_never_panics(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..32), 0..8),
            max in 0usize..64,
            json in any::<bool>(),
        ) {
            let protocol = if json { Protocol::Json } else { Protocol::MessagePack };
            let mut reader = FrameReader::new(protocol, max);
            for chunk in &chunks {
                reader.push(chunk);
                while let Ok(Some(frame)) = reader.next_frame() {
                    prop_assert!(frame.len() <= max);
                    let _ = decode(protocol, &frame);
                }
            }
            let _ = validate_framed(protocol, &chunks.concat());
        }
    }
}
