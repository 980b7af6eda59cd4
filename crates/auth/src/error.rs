//! The one error type of this crate.
//!
//! Every message is meant to be shown to an API caller (a 401 `ErrorDetail`) or to an operator
//! (a rejected connection string), so none of them ever contains key material: connection string
//! errors name the key and the rule, never the value, and token errors describe the token without
//! echoing secrets.

/// Why a connection string, a key set or a token was rejected.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The token is not a well-formed compact JWS with JSON object header and payload.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token is longer than [`crate::MAX_TOKEN_LEN`]; rejected before any decoding.
    #[error("token too long: {len} characters, at most {max} are accepted")]
    TokenTooLong {
        /// Length of the presented token.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The signature does not match any configured access key.
    #[error("invalid token signature")]
    BadSignature,
    /// The header names an algorithm other than HS256 or HS512 (including `none`).
    #[error("unsupported token algorithm '{0}': only HS256 and HS512 are accepted")]
    UnsupportedAlgorithm(String),
    /// `exp` (plus leeway) is in the past.
    #[error("token expired at {exp} (unix seconds), current time is {now}")]
    Expired {
        /// The token's `exp` claim, in unix seconds (0 when it was negative).
        exp: u64,
        /// The verifier's clock, in unix seconds.
        now: u64,
    },
    /// The token has no `exp` claim.
    #[error("token has no 'exp' claim")]
    MissingExp,
    /// The token has no `aud` claim (or no string in it).
    #[error("token has no 'aud' claim")]
    MissingAudience,
    /// No `aud` value matches what the request needs.
    #[error("token audience '{found}' does not match '{expected}'")]
    AudienceMismatch {
        /// What the request needs, e.g. `/api/v1/hubs/chat` or `/client/?hub=chat`.
        expected: String,
        /// The token's audience value(s), shortened if very long.
        found: String,
    },
    /// A token presented as a connection token is not one (it lacks the purpose claim).
    #[error("not a connection token")]
    NotATicket,
    /// A connection token was presented where an access token is needed.
    #[error("a connection token cannot be used as an access token")]
    NotAnAccessToken,
    /// A connection string is invalid; `key` names the offending key (or `ConnectionString`).
    #[error("invalid connection string: {key}: {reason}")]
    BadConnectionString {
        /// The key at fault, in its canonical spelling (e.g. `Endpoint`, `Port`).
        key: String,
        /// What rule it breaks.
        reason: String,
    },
    /// The configured access keys are unusable (none given, or one is empty).
    #[error("invalid access keys: {0}")]
    InvalidKeys(String),
}

impl AuthError {
    pub(crate) fn conn_str(key: &str, reason: impl Into<String>) -> Self {
        AuthError::BadConnectionString {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// Shortens `s` to at most `max` characters (on a char boundary), marking the cut with `...`.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((idx, _)) => format!("{}...", &s[..idx]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_on_char_boundaries() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc...");
        assert_eq!(shorten("ééé", 2), "éé...");
        assert_eq!(shorten("", 0), "");
    }

    #[test]
    fn connection_string_errors_name_the_key() {
        assert_eq!(
            AuthError::conn_str("Port", "must be an integer in 1..=65535").to_string(),
            "invalid connection string: Port: must be an integer in 1..=65535"
        );
    }
}
