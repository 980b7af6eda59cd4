//! The handshake that opens every hub connection.
//!
//! Whatever the hub protocol, the client's first message is JSON text terminated by `0x1E`
//! naming the protocol and its version, and the server answers in JSON with `{}` or an error.
//! The client may send its first hub messages right behind the handshake in the same read, so
//! [`decode_handshake`] reports how many bytes it consumed and leaves the rest to the caller.

use bytes::Bytes;

use crate::error::ProtocolError;
use crate::value::Value;
use crate::{json, Protocol, RECORD_SEPARATOR};

/// Largest handshake request accepted. Real ones are about 40 bytes; the limit only stops a
/// client from making the server buffer text that never ends.
pub const MAX_HANDSHAKE_SIZE: usize = 16 * 1024;

/// Highest protocol version accepted for both JSON and MessagePack (.NET 8+ clients send 2).
pub const MAX_PROTOCOL_VERSION: u32 = 2;

/// The client's handshake request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// Protocol name, e.g. `json` or `messagepack`.
    pub protocol: String,
    /// Protocol version.
    pub version: u32,
}

fn invalid(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::InvalidHandshake(reason.into())
}

/// Decodes the handshake request at the start of `buf`.
///
/// `Ok(None)` means the separator has not arrived yet. On success, returns the request and the
/// number of bytes it took (separator included); bytes after that belong to the first hub
/// messages. Unknown fields are ignored.
pub fn decode_handshake(buf: &[u8]) -> Result<Option<(HandshakeRequest, usize)>, ProtocolError> {
    let Some(end) = buf.iter().position(|&b| b == RECORD_SEPARATOR) else {
        if buf.len() > MAX_HANDSHAKE_SIZE {
            return Err(ProtocolError::MessageTooLarge {
                size: buf.len() as u64,
                max: MAX_HANDSHAKE_SIZE,
            });
        }
        return Ok(None);
    };
    if end > MAX_HANDSHAKE_SIZE {
        return Err(ProtocolError::MessageTooLarge {
            size: end as u64,
            max: MAX_HANDSHAKE_SIZE,
        });
    }
    let text = buf.get(..end).unwrap_or_default();
    let entries = match serde_json::from_slice::<Value>(text) {
        Ok(Value::Map(entries)) => entries,
        Ok(other) => {
            return Err(invalid(format!(
                "expected a JSON object, found {}",
                other.kind()
            )))
        }
        Err(e) => return Err(invalid(format!("malformed JSON: {e}"))),
    };
    let field = |name: &str| {
        entries
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v)
    };
    let protocol = match field("protocol") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(invalid(format!(
                "`protocol` must be a string, found {}",
                other.kind()
            )))
        }
        None => return Err(invalid("missing required field `protocol`")),
    };
    let version = match field("version") {
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "`version` must be a non-negative 32-bit integer, found {}",
                    v.kind()
                ))
            })?,
        None => return Err(invalid("missing required field `version`")),
    };
    Ok(Some((HandshakeRequest { protocol, version }, end + 1)))
}

/// The handshake response: `{}\x1e` on success, `{"error":"..."}\x1e` on failure.
pub fn encode_handshake_response(error: Option<&str>) -> Bytes {
    match error {
        None => Bytes::from_static(b"{}\x1e"),
        Some(error) => {
            let mut buf = Vec::with_capacity(error.len() + 16);
            buf.extend_from_slice(b"{\"error\":");
            json::write_str(&mut buf, error);
            buf.extend_from_slice(b"}\x1e");
            Bytes::from(buf)
        }
    }
}

/// Decides which protocol the server speaks for this request: `json` and `messagepack`
/// (names compared case-insensitively, as ASP.NET Core does), every version up to 2 (ASP.NET
/// Core accepts `version <= current`; some clients send 0). The error text
/// is meant for the handshake response.
pub fn negotiate_protocol(req: &HandshakeRequest) -> Result<Protocol, String> {
    let protocol = Protocol::from_name(&req.protocol)
        .ok_or_else(|| format!("The protocol '{}' is not supported.", req.protocol))?;
    if req.version > MAX_PROTOCOL_VERSION {
        return Err(format!(
            "The server does not support version {} of the '{}' protocol.",
            req.version,
            protocol.name()
        ));
    }
    Ok(protocol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(protocol: &str, version: u32) -> HandshakeRequest {
        HandshakeRequest {
            protocol: protocol.into(),
            version,
        }
    }

    #[test]
    fn decodes_official_client_handshakes() {
        let (req, used) = decode_handshake(b"{\"protocol\":\"json\",\"version\":1}\x1e")
            .expect("ok")
            .expect("complete");
        assert_eq!((req, used), (request("json", 1), 32));
        let (req, _) = decode_handshake(b"{\"protocol\":\"messagepack\",\"version\":2}\x1e")
            .expect("ok")
            .expect("complete");
        assert_eq!(req, request("messagepack", 2));
        // Pretty-printed, with an unknown field.
        let (req, _) = decode_handshake(
            b"{\n  \"protocol\": \"json\",\n  \"version\": 1,\n  \"minorVersion\": 0\n}\x1e",
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(req, request("json", 1));
    }

    #[test]
    fn reports_bytes_consumed_so_following_messages_are_kept() {
        let buf = b"{\"protocol\":\"json\",\"version\":1}\x1e{\"type\":6}\x1e";
        let (_, used) = decode_handshake(buf).expect("ok").expect("complete");
        assert_eq!(&buf[used..], b"{\"type\":6}\x1e");
    }

    #[test]
    fn needs_more_bytes_until_the_separator() {
        let full = b"{\"protocol\":\"json\",\"version\":1}\x1e";
        for end in 0..full.len() {
            assert_eq!(decode_handshake(&full[..end]).expect("ok"), None, "{end}");
        }
    }

    #[test]
    fn rejects_malformed_requests_clearly() {
        let err = |buf: &[u8]| decode_handshake(buf).expect_err("must fail").to_string();
        assert!(err(b"{\"version\":1}\x1e").contains("missing required field `protocol`"));
        assert!(err(b"{\"protocol\":\"json\"}\x1e").contains("missing required field `version`"));
        assert!(err(b"{\"protocol\":1,\"version\":1}\x1e").contains("must be a string"));
        assert!(err(b"{\"protocol\":\"json\",\"version\":-1}\x1e").contains("`version`"));
        assert!(err(b"{\"protocol\":\"json\",\"version\":\"1\"}\x1e").contains("`version`"));
        assert!(err(b"[]\x1e").contains("expected a JSON object"));
        assert!(err(b"\x1e").contains("malformed JSON"));
        assert!(err(b"\x91\x06\x1e").contains("malformed JSON"));
        let long = vec![b' '; MAX_HANDSHAKE_SIZE + 1];
        assert!(matches!(
            decode_handshake(&long),
            Err(ProtocolError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn responses() {
        assert_eq!(&encode_handshake_response(None)[..], b"{}\x1e");
        assert_eq!(
            &encode_handshake_response(Some("The protocol 'x' is not supported."))[..],
            b"{\"error\":\"The protocol 'x' is not supported.\"}\x1e"
        );
        assert_eq!(
            &encode_handshake_response(Some("a \"b\""))[..],
            b"{\"error\":\"a \\\"b\\\"\"}\x1e"
        );
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate_protocol(&request("json", 1)), Ok(Protocol::Json));
        assert_eq!(negotiate_protocol(&request("json", 2)), Ok(Protocol::Json));
        assert_eq!(
            negotiate_protocol(&request("messagepack", 1)),
            Ok(Protocol::MessagePack)
        );
        assert_eq!(
            negotiate_protocol(&request("MessagePack", 2)),
            Ok(Protocol::MessagePack)
        );
        assert_eq!(
            negotiate_protocol(&request("blazorpack", 1)),
            Err("The protocol 'blazorpack' is not supported.".to_owned())
        );
        assert_eq!(
            negotiate_protocol(&request("json", 3)),
            Err("The server does not support version 3 of the 'json' protocol.".to_owned())
        );
        // Like ASP.NET Core, every version up to the current one (some clients send 0).
        assert_eq!(
            negotiate_protocol(&request("messagepack", 0)),
            Ok(Protocol::MessagePack)
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((_, used))) = decode_handshake(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert_eq!(bytes[used - 1], RECORD_SEPARATOR);
            }
        }
    }
}
