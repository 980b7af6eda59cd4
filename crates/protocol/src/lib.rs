//! Codecs for the ASP.NET Core SignalR hub protocol, as spoken by the official clients
//! (`@microsoft/signalr` with JSON or MessagePack, the .NET and Java clients).
//!
//! The gateway runs every client WebSocket through this crate, so it is pure and I/O free: bytes
//! in, messages or frames out, no clock, no sockets, and no panic or unbounded allocation on any
//! input. The authoritative wire description is `HubProtocol.md` in dotnet/aspnetcore.
//!
//! Layout:
//! - [`handshake`]: the JSON handshake every connection starts with, and protocol negotiation.
//! - [`framing`]: record-separator and varint-length framing, the incremental [`FrameReader`],
//!   and validation of pre-serialized frames.
//! - [`message`]: [`HubMessage`] and the protocol-dispatching [`encode`] / [`decode`], backed by
//!   the private `json` and `msgpack` codecs.
//! - [`value`]: [`Value`], the protocol-neutral payload value.
//! - [`frames`]: ready-made frames for fan-out (one encoding per protocol, shared by all
//!   recipients), Ping and Close.
//! - [`error`]: the crate's error type, [`ProtocolError`].

pub mod error;
pub mod frames;
pub mod framing;
pub mod handshake;
mod json;
pub mod message;
mod msgpack;
pub mod stateful;
pub mod value;

pub use error::ProtocolError;
pub use frames::{close_frame, json_invocation_frame, msgpack_invocation_frame, ping_frame};
pub use framing::{frame_payload, validate_framed, FrameReader};
pub use handshake::{
    decode_handshake, encode_handshake_response, negotiate_protocol, HandshakeRequest,
};
pub use message::{decode, encode, CompletionResult, Headers, HubMessage};
pub use msgpack::MAX_DEPTH;
pub use value::Value;

/// The ASCII record separator that terminates every JSON message and the handshake.
pub const RECORD_SEPARATOR: u8 = 0x1E;

/// A hub protocol a connection speaks after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `json`: UTF-8 JSON text, each message terminated by `0x1E`.
    Json,
    /// `messagepack`: binary, each message preceded by its varint length.
    MessagePack,
}

impl Protocol {
    /// The protocol's name in the handshake.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::MessagePack => "messagepack",
        }
    }

    /// The protocol with this handshake name, compared case-insensitively.
    pub fn from_name(name: &str) -> Option<Protocol> {
        if name.eq_ignore_ascii_case("json") {
            Some(Protocol::Json)
        } else if name.eq_ignore_ascii_case("messagepack") {
            Some(Protocol::MessagePack)
        } else {
            None
        }
    }

    /// Whether frames are binary (WebSocket binary messages; base64 over SSE).
    pub fn is_binary(self) -> bool {
        matches!(self, Protocol::MessagePack)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
