//! The one error-code taxonomy.
//!
//! Every failure that leaves a process (an HTTP response or a gRPC status) is described by an
//! [`ErrorCode`]. The gateway turns it into an HTTP status, an `ErrorDetail` body and, for 404s, the
//! `x-ms-error-code` header that the official server SDK inspects; the cluster turns it into a
//! gRPC code and back. Keeping the table here keeps both mappings in one place.

use std::fmt;

/// What went wrong, at the granularity clients act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A parameter, name or body is invalid (400).
    InvalidArgument,
    /// Missing, malformed, expired or wrongly signed token (401).
    Unauthenticated,
    /// The caller proved a key but may not do this (403; on the cluster plane: a peer acting for
    /// another node).
    PermissionDenied,
    /// The request body exceeds the limit (413).
    PayloadTooLarge,
    /// The request line (URI) is too long (414).
    UriTooLong,
    /// The request headers are too large or too many (431).
    HeadersTooLarge,
    /// The request did not arrive in time (408).
    RequestTimeout,
    /// The connection token is already used by an open connection (409).
    ConnectionInUse,
    /// The process has as many client connections as it may hold (429).
    ConnectionLimit,
    /// Existence check: the connection does not exist (404, `Warning.Connection.NotExisted`).
    ConnectionNotExisted,
    /// Operation on a connection that does not exist (404, `Error.Connection.NotExisted`).
    ConnectionNotExistedError,
    /// Existence check: the user has no connection (404, `Warning.User.NotExisted`).
    UserNotExisted,
    /// Existence check: the group has no connection (404, `Warning.Group.NotExisted`).
    GroupNotExisted,
    /// The user is not in the group (404, `Info.User.NotInGroup`).
    UserNotInGroup,
    /// No such route (404).
    RouteNotFound,
    /// The route exists but not with this method (405).
    MethodNotAllowed,
    /// The store has no leader or is unreachable; retry later (503).
    Unavailable,
    /// The operation did not finish in time (504).
    Timeout,
    /// A bug or an unexpected failure (500).
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UriTooLong => 414,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::ConnectionInUse => 409,
            ErrorCode::ConnectionLimit => 429,
            ErrorCode::ConnectionNotExisted
            | ErrorCode::ConnectionNotExistedError
            | ErrorCode::UserNotExisted
            | ErrorCode::GroupNotExisted
            | ErrorCode::UserNotInGroup
            | ErrorCode::RouteNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal => 500,
        }
    }

    /// Every code.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::ConnectionInUse,
        ErrorCode::ConnectionLimit,
        ErrorCode::ConnectionNotExisted,
        ErrorCode::ConnectionNotExistedError,
        ErrorCode::UserNotExisted,
        ErrorCode::GroupNotExisted,
        ErrorCode::UserNotInGroup,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::Internal,
    ];

    /// The code whose [`ErrorCode::as_str`] is `code` (codes travel between gateways so).
    pub fn from_code_str(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The `code` field of `ErrorDetail` (and `x-ms-error-code` for 404s).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "Error.Request.Invalid",
            ErrorCode::Unauthenticated => "Error.Request.Unauthorized",
            ErrorCode::PermissionDenied => "Error.Request.Forbidden",
            ErrorCode::PayloadTooLarge => "Error.Request.TooLarge",
            ErrorCode::UriTooLong => "Error.Request.UriTooLong",
            ErrorCode::HeadersTooLarge => "Error.Request.HeadersTooLarge",
            ErrorCode::RequestTimeout => "Error.Request.Timeout",
            ErrorCode::ConnectionInUse => "Error.Connection.InUse",
            ErrorCode::ConnectionLimit => "Error.Connection.LimitReached",
            ErrorCode::ConnectionNotExisted => "Warning.Connection.NotExisted",
            ErrorCode::ConnectionNotExistedError => "Error.Connection.NotExisted",
            ErrorCode::UserNotExisted => "Warning.User.NotExisted",
            ErrorCode::GroupNotExisted => "Warning.Group.NotExisted",
            ErrorCode::UserNotInGroup => "Info.User.NotInGroup",
            ErrorCode::RouteNotFound => "Error.Request.NotFound",
            ErrorCode::MethodNotAllowed => "Error.Request.MethodNotAllowed",
            ErrorCode::Unavailable => "Error.Service.Unavailable",
            ErrorCode::Timeout => "Error.Service.Timeout",
            ErrorCode::Internal => "Error.Service.Internal",
        }
    }

    /// The `x-ms-error-code` header value; only the 404s the server SDK understands carry one.
    pub fn x_ms_error_code(self) -> Option<&'static str> {
        match self {
            ErrorCode::ConnectionNotExisted
            | ErrorCode::ConnectionNotExistedError
            | ErrorCode::UserNotExisted
            | ErrorCode::GroupNotExisted
            | ErrorCode::UserNotInGroup => Some(self.as_str()),
            _ => None,
        }
    }

    /// The canonical gRPC status code number (as in `tonic::Code`). The conversion between
    /// errors and statuses, both ways, is `switchboard_net::status`.
    pub fn grpc_code(self) -> i32 {
        match self {
            ErrorCode::InvalidArgument
            | ErrorCode::PayloadTooLarge
            | ErrorCode::UriTooLong
            | ErrorCode::HeadersTooLarge
            // The client was too slow: its fault, unlike a deadline we missed.
            | ErrorCode::RequestTimeout => 3,
            ErrorCode::Unauthenticated => 16,
            ErrorCode::PermissionDenied => 7,
            ErrorCode::ConnectionInUse => 6,
            ErrorCode::ConnectionLimit => 8,
            ErrorCode::ConnectionNotExisted
            | ErrorCode::ConnectionNotExistedError
            | ErrorCode::UserNotExisted
            | ErrorCode::GroupNotExisted
            | ErrorCode::UserNotInGroup
            | ErrorCode::RouteNotFound => 5,
            ErrorCode::MethodNotAllowed => 12,
            ErrorCode::Unavailable => 14,
            ErrorCode::Timeout => 4,
            ErrorCode::Internal => 13,
        }
    }

    /// Whether a caller may retry the same request unchanged.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::Timeout)
    }

    /// Whether the server should log this at warn level or above (a fault on our side).
    pub fn is_server_fault(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Internal
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a code, a human-readable message and optionally the parameter it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub target: Option<String>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            target: None,
        }
    }

    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidArgument, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 19] = ErrorCode::ALL;

    #[test]
    fn every_sdk_404_carries_its_header() {
        for code in ALL {
            let has_header = code.x_ms_error_code().is_some();
            let sdk_404 = code.http_status() == 404 && code != ErrorCode::RouteNotFound;
            assert_eq!(has_header, sdk_404, "{code:?}");
        }
        assert_eq!(
            ErrorCode::UserNotInGroup.x_ms_error_code(),
            Some("Info.User.NotInGroup")
        );
    }
}
