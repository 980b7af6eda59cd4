//! The one error type of the crate.
//!
//! Every failure names what was wrong (which message, which field, what type was expected and what
//! was found) because these texts end up in logs and in the `Close` frames sent to clients, where
//! they are the only clue a client developer gets.

/// What went wrong while framing, decoding or encoding a hub protocol message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The payload is not well-formed JSON (syntax error, invalid UTF-8, nesting too deep, ...).
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// The payload is not well-formed MessagePack.
    #[error("malformed MessagePack at byte {offset}: {reason}")]
    MessagePack {
        /// Byte offset in the payload where the problem was found.
        offset: usize,
        /// What was wrong there.
        reason: String,
    },

    /// The payload is well-formed but its top level is not what a hub message must be
    /// (a JSON object, or a MessagePack array whose first element is the message type).
    #[error("invalid hub message: {0}")]
    InvalidMessage(String),

    /// The message carries no `type` (JSON) or has an empty array (MessagePack).
    #[error("hub message has no message type")]
    MissingMessageType,

    /// The message type is not one of 1..=9. Newer protocol versions may add types, so callers may
    /// choose to ignore such messages instead of closing the connection.
    #[error("unknown hub message type {0}")]
    UnknownMessageType(i64),

    /// A required field is absent.
    #[error("{message} message is missing required field `{field}`")]
    MissingField {
        /// Message kind, e.g. `Invocation`.
        message: &'static str,
        /// Field name, e.g. `target`.
        field: &'static str,
    },

    /// A field is present but of the wrong type or out of range.
    #[error("{message} message field `{field}` must be {expected}, found {found}")]
    InvalidField {
        /// Message kind, e.g. `Invocation`.
        message: &'static str,
        /// Field name, e.g. `target`.
        field: &'static str,
        /// What the protocol requires, e.g. `a string`.
        expected: &'static str,
        /// What was there, e.g. `a number`.
        found: String,
    },

    /// A `Completion` carries both `result` and `error`, which the protocol forbids.
    #[error("Completion message carries both `result` and `error`")]
    ResultAndError,

    /// A frame (or a handshake) is larger than the configured limit.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// Size of the frame, or a lower bound of it when it is still incomplete.
        size: u64,
        /// The configured limit.
        max: usize,
    },

    /// The framing itself is broken (bad length prefix, missing record separator, ...).
    #[error("malformed frame: {0}")]
    InvalidFraming(String),

    /// The handshake request is not what the protocol requires.
    #[error("invalid handshake request: {0}")]
    InvalidHandshake(String),

    /// A message could not be encoded (a length does not fit the wire format).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

impl ProtocolError {
    pub(crate) fn msgpack(offset: usize, reason: impl Into<String>) -> Self {
        ProtocolError::MessagePack {
            offset,
            reason: reason.into(),
        }
    }
}
