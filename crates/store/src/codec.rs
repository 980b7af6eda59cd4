//! The binary encoding of what the store writes to disk.
//!
//! Log entries, the vote and log ids are MessagePack (rmp-serde) with structs as arrays: compact,
//! and the types are ours or openraft's, so their shape is known. The membership state in a
//! snapshot is MessagePack with named fields, which tolerates serde attributes such as
//! `skip_serializing_if` that an array encoding would misread.
//!
//! A snapshot file is framed so that a torn or damaged file is detected, never half-loaded:
//!
//! ```text
//! magic "SBSNAP01" | meta length u32 LE | meta | data length u64 LE | data | FNV-1a 64 of all before, LE
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why bytes could not be encoded or decoded.
#[derive(thiserror::Error, Debug)]
pub(crate) enum CodecError {
    #[error("encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("snapshot file: {0}")]
    Frame(&'static str),
}

/// Encodes a value compactly (structs as arrays).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec(value)?)
}

/// Encodes a value with field names (for the state, whose serde shape is not ours).
pub(crate) fn encode_named<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decodes either encoding.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

const MAGIC: &[u8; 8] = b"SBSNAP01";

/// FNV-1a, 64 bits: enough to notice a damaged file; not a defence against tampering.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Frames an encoded snapshot meta and the encoded state into one file body.
pub(crate) fn frame_snapshot(meta: &[u8], data: &[u8]) -> Result<Vec<u8>, CodecError> {
    let meta_len = u32::try_from(meta.len()).map_err(|_| CodecError::Frame("meta too large"))?;
    let mut out = Vec::with_capacity(8 + 4 + meta.len() + 8 + data.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    let sum = fnv1a64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
    if bytes.len() < n {
        return Err(CodecError::Frame(what));
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn array<const N: usize>(bytes: &[u8]) -> Result<[u8; N], CodecError> {
    bytes
        .try_into()
        .map_err(|_| CodecError::Frame("bad field width"))
}

/// Splits a framed snapshot file into (meta, data), checking magic, lengths and checksum.
pub(crate) fn unframe_snapshot(file: &[u8]) -> Result<(&[u8], &[u8]), CodecError> {
    if file.len() < 8 {
        return Err(CodecError::Frame("truncated (no checksum)"));
    }
    let (body, sum) = file.split_at(file.len() - 8);
    if u64::from_le_bytes(array(sum)?) != fnv1a64(body) {
        return Err(CodecError::Frame("checksum mismatch"));
    }
    let mut rest = body;
    if take(&mut rest, 8, "truncated (no magic)")? != MAGIC {
        return Err(CodecError::Frame("not a snapshot file (bad magic)"));
    }
    let meta_len =
        u32::from_le_bytes(array(take(&mut rest, 4, "truncated meta length")?)?) as usize;
    let meta = take(&mut rest, meta_len, "truncated meta")?;
    let data_len = u64::from_le_bytes(array(take(&mut rest, 8, "truncated data length")?)?);
    let data_len =
        usize::try_from(data_len).map_err(|_| CodecError::Frame("data length overflows"))?;
    let data = take(&mut rest, data_len, "truncated data")?;
    if !rest.is_empty() {
        return Err(CodecError::Frame("trailing bytes"));
    }
    Ok((meta, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn snapshot_frame_round_trips() {
        let framed = frame_snapshot(b"meta", b"some data").unwrap();
        let (meta, data) = unframe_snapshot(&framed).unwrap();
        assert_eq!(meta, b"meta");
        assert_eq!(data, b"some data");
    }

    #[test]
    fn damaged_frames_are_rejected() {
        let framed = frame_snapshot(b"meta", b"some data").unwrap();
        assert!(unframe_snapshot(&framed[..framed.len() - 1]).is_err());
        let mut flipped = framed.clone();
        flipped[14] ^= 1;
        assert!(unframe_snapshot(&flipped).is_err());
        assert!(unframe_snapshot(b"").is_err());
    }

    proptest! {
        #[test]
        fn unframe_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = unframe_snapshot(&bytes);
        }

        #[test]
        fn any_frame_round_trips(meta in proptest::collection::vec(any::<u8>(), 0..64),
                                 data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let framed = frame_snapshot(&meta, &data).unwrap();
            let (m, d) = unframe_snapshot(&framed).unwrap();
            prop_assert_eq!(m, &meta[..]);
            prop_assert_eq!(d, &data[..]);
        }

        #[test]
        fn commands_encode_within_their_size_bound(
            pick in 0u8..11,
            a in ".{0,300}", b in ".{0,1100}", c in ".{0,300}",
            n in any::<u64>(), m in any::<u64>(), ttl in proptest::option::of(any::<u32>()),
            user in proptest::option::of(".{0,1100}"),
        ) {
            use switchboard_membership::Command;
            let (a, b, c): (switchboard_membership::Name, switchboard_membership::Name, switchboard_membership::Name) = (a.as_str().into(), b.as_str().into(), c.as_str().into());
            let command = match pick {
                0 => Command::NodeHeartbeat { node: n, incarnation: m, address: b.to_string(), lease_ms: n },
                1 => Command::NodeLeft { node: n, incarnation: m },
                2 => Command::ConnectionOpened { hub: a, connection: c, user: user.map(|u| u.as_str().into()), node: n, incarnation: m },
                3 => Command::ConnectionClosed { hub: a, connection: c },
                4 => Command::AddConnectionToGroup { hub: a, group: b, connection: c },
                5 => Command::RemoveConnectionFromGroup { hub: a, group: b, connection: c },
                6 => Command::RemoveConnectionFromAllGroups { hub: a, connection: c },
                7 => Command::AddUserToGroup { hub: a, user: c, group: b, ttl_secs: ttl },
                8 => Command::RemoveUserFromGroup { hub: a, user: c, group: b },
                9 => Command::RemoveUserFromAllGroups { hub: a, user: c },
                _ => Command::Tick,
            };
            let encoded = encode(&command).unwrap();
            prop_assert!(encoded.len() <= command.size_bound(), "{} > {}", encoded.len(), command.size_bound());
        }
    }
}
