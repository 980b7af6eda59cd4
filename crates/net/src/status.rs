//! The one conversion between Switchboard's errors and gRPC statuses, used by every cluster
//! service and client.
//!
//! A status carries the gRPC code of the error's [`ErrorCode`] (`ErrorCode::grpc_code`), so any
//! gRPC client reads its class, and the exact code in the [`CODE_KEY`] metadata, so a
//! Switchboard peer gets back the error it was answered with (several codes share a gRPC code:
//! a missing connection and a missing group are both `NOT_FOUND`). A status without that
//! metadata comes from the transport or from a peer's gRPC stack (the peer is down, the call
//! timed out or was cancelled, a message was too large) and is read by its gRPC code alone:
//! whatever a retry may cure is [`ErrorCode::Unavailable`] or [`ErrorCode::Timeout`].

use switchboard_core::{Error, ErrorCode};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Metadata key of the exact [`ErrorCode`] of a status.
pub const CODE_KEY: &str = "x-switchboard-error-code";

/// The status `error` is answered with.
pub fn to_status(error: &Error) -> Status {
    let mut status = Status::new(
        Code::from_i32(error.code.grpc_code()),
        error.message.clone(),
    );
    if let Ok(value) = MetadataValue::try_from(error.code.as_str()) {
        status.metadata_mut().insert(CODE_KEY, value);
    }
    status
}

/// The error a status stands for.
pub fn from_status(status: &Status) -> Error {
    let exact = status
        .metadata()
        .get(CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::from_code_str);
    let code = exact.unwrap_or_else(|| from_transport(status.code()));
    Error::new(code, status.message())
}

/// The code of a status that carries no exact one.
fn from_transport(code: Code) -> ErrorCode {
    match code {
        // The call did not complete, for reasons a retry may cure.
        Code::Unavailable
        | Code::Cancelled
        | Code::Unknown
        | Code::Aborted
        | Code::ResourceExhausted => ErrorCode::Unavailable,
        Code::DeadlineExceeded => ErrorCode::Timeout,
        Code::Unauthenticated => ErrorCode::Unauthenticated,
        Code::PermissionDenied => ErrorCode::PermissionDenied,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            ErrorCode::InvalidArgument
        }
        Code::NotFound => ErrorCode::RouteNotFound,
        Code::Unimplemented => ErrorCode::MethodNotAllowed,
        Code::AlreadyExists => ErrorCode::ConnectionInUse,
        Code::Ok | Code::Internal | Code::DataLoss => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_the_wire_exactly() {
        for code in ErrorCode::ALL {
            let error = Error::new(code, "why");
            let status = to_status(&error);
            assert_eq!(status.code() as i32, code.grpc_code(), "{code:?}");
            assert_eq!(from_status(&status), error, "{code:?}");
        }
    }

    #[test]
    fn statuses_from_the_transport_keep_their_class() {
        for (code, expected) in [
            (Code::Unavailable, ErrorCode::Unavailable),
            (Code::Cancelled, ErrorCode::Unavailable),
            (Code::Unknown, ErrorCode::Unavailable),
            (Code::ResourceExhausted, ErrorCode::Unavailable),
            (Code::DeadlineExceeded, ErrorCode::Timeout),
            (Code::Unauthenticated, ErrorCode::Unauthenticated),
            (Code::InvalidArgument, ErrorCode::InvalidArgument),
            (Code::Internal, ErrorCode::Internal),
        ] {
            let error = from_status(&Status::new(code, "m"));
            assert_eq!(error.code, expected, "{code:?}");
            assert_eq!(error.message, "m");
        }
        // A code this build does not know (a newer peer) is read by its gRPC code.
        let mut status = Status::unavailable("later");
        status
            .metadata_mut()
            .insert(CODE_KEY, MetadataValue::from_static("Error.Something.New"));
        assert_eq!(from_status(&status).code, ErrorCode::Unavailable);
        // Every gRPC code a transport could produce reads as something retryable or not, never
        // as success.
        for n in 0..=16 {
            let error = from_status(&Status::new(Code::from_i32(n), ""));
            assert_ne!(error.code.http_status(), 200);
        }
    }
}
