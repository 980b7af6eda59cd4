//! The one place where errors become HTTP responses.
//!
//! Every error the gateway answers with is an [`ApiError`] wrapping a
//! [`switchboard_core::Error`]: its code picks the status, the body is an `ErrorDetail`
//! (`code`, `message`, `target`) and 404s carry the `x-ms-error-code` header that the official
//! server SDK requires to tell "does not exist" from "endpoint unreachable".

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchboard_core::{Error, ErrorCode};

/// The `ErrorDetail` body of the data-plane REST API.
#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a str>,
}

/// An error on its way to becoming an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(Error::new(code, message))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError(Error::invalid(message))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Unauthenticated, message)
    }

    pub fn code(&self) -> ErrorCode {
        self.0.code
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl From<switchboard_store::StoreError> for ApiError {
    fn from(e: switchboard_store::StoreError) -> Self {
        ApiError(e.into())
    }
}

impl From<switchboard_auth::AuthError> for ApiError {
    fn from(e: switchboard_auth::AuthError) -> Self {
        ApiError::unauthorized(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Error {
            code,
            message,
            target,
        } = &self.0;
        if code.is_server_fault() {
            tracing::warn!(code = %code, message = %message, "request failed");
        } else {
            tracing::debug!(code = %code, message = %message, "request rejected");
        }
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorDetail {
            code: code.as_str(),
            message,
            target: target.as_deref(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(header) = code.x_ms_error_code() {
            response
                .headers_mut()
                .insert("x-ms-error-code", HeaderValue::from_static(header));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The response to a request the HTTP edge refused before routing (malformed, too large, too
/// slow): the same `ErrorDetail` as every other error.
pub fn reject(error: Error) -> Response {
    ApiError(error).into_response()
}
