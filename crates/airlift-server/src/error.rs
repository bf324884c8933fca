//! One error type for every handler: each variant is an HTTP meaning, the
//! body is always [`ErrorBody`], and 5xx details go to the log, never to the
//! client.

use airlift_protocol::ErrorBody;
use airlift_store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// What a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// 401: no credentials or wrong ones.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing.
    #[error("{0}")]
    NotFound(String),
    /// 409: it conflicts with what exists.
    #[error("{1}")]
    Conflict(&'static str, String),
    /// 410: it is gone for good (a cancelled deployment).
    #[error("{1}")]
    Gone(&'static str, String),
    /// 413: the body is too large.
    #[error("{0}")]
    TooLarge(String),
    /// 422: well-formed but not acceptable (an unverifiable package, an empty target).
    #[error("{1}")]
    Unprocessable(&'static str, String),
    /// 500: our fault; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with code `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest("bad_request", message.into())
    }

    /// A 422 with code `invalid`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Unprocessable("invalid", message.into())
    }

    /// A 500 whose detail is logged.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(code, _) => (StatusCode::CONFLICT, code),
            Self::Gone(code, _) => (StatusCode::GONE, code),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::Unprocessable(code, _) => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(what) => {
                Self::Conflict("conflict", format!("already exists: {what}"))
            }
            StoreError::NotFound(what) => Self::NotFound(format!("not found: {what}")),
            StoreError::InUse(what) => Self::Conflict("in_use", format!("in use: {what}")),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                "internal server error; the server log has the details".to_owned()
            }
            other => other.to_string(),
        };
        (
            status,
            Json(ErrorBody {
                code: code.to_owned(),
                message,
            }),
        )
            .into_response()
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;
