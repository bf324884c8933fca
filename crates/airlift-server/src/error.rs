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
    /// 429: too many requests of this kind; try again after the seconds given.
    #[error("{1}")]
    TooManyRequests(u64, String),
    /// 500: our fault; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// 503: a dependency (the database) is slow or away; try again after the
    /// seconds given. The detail is logged, not sent.
    #[error("unavailable: {1}")]
    Unavailable(u64, String),
    /// 507: the server's disk is full; nothing was kept. The detail is logged.
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
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

    /// A failed file operation: 507 when the disk is full, else 500.
    pub fn io(error: std::io::Error) -> Self {
        if is_disk_full(&error) {
            Self::InsufficientStorage(error.to_string())
        } else {
            Self::internal(error)
        }
    }

    /// A failed blob store operation: 507 when its disk is full, else 500.
    pub fn blob(error: object_store::Error) -> Self {
        if source_chain(&error).any(|e| e.downcast_ref().is_some_and(is_disk_full)) {
            Self::InsufficientStorage(error.to_string())
        } else {
            Self::internal(error)
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
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
            Self::TooManyRequests(..) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::Unavailable(..) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::InsufficientStorage(_) => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
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
            StoreError::Unavailable(detail) => Self::Unavailable(5, detail),
            StoreError::Full(detail) => Self::InsufficientStorage(detail),
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
            Self::Unavailable(_, detail) => {
                tracing::warn!(error = %detail, "request failed: the database is unavailable");
                "the database is slow or unavailable; try again shortly".to_owned()
            }
            Self::InsufficientStorage(detail) => {
                tracing::error!(error = %detail, "request failed: the disk is full");
                "the server's disk is full, so nothing was stored; free space on it and try again"
                    .to_owned()
            }
            other => other.to_string(),
        };
        let retry_after = match &self {
            Self::TooManyRequests(secs, _) | Self::Unavailable(secs, _) => Some(*secs),
            _ => None,
        };
        let mut response = (
            status,
            Json(ErrorBody {
                code: code.to_owned(),
                message,
            }),
        )
            .into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
        }
        response
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

/// Whether `error` says the disk (or a quota) is full.
fn is_disk_full(error: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(error.kind(), std::io::ErrorKind::StorageFull)
        || matches!(error.raw_os_error(), Some(ENOSPC | EDQUOT))
}

fn source_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_with_words_and_other_failures_stay_500() {
        let full = ApiError::io(std::io::Error::from_raw_os_error(28));
        let response = full.into_response();
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        let quota = ApiError::io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(matches!(quota, ApiError::InsufficientStorage(_)));
        let other = ApiError::io(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(matches!(other, ApiError::Internal(_)));
        let database = ApiError::from(StoreError::Full("SQLITE_FULL".into()));
        assert_eq!(
            database.into_response().status(),
            StatusCode::INSUFFICIENT_STORAGE
        );
    }

    #[test]
    fn an_unavailable_database_says_when_to_try_again() {
        let response =
            ApiError::from(StoreError::Unavailable("pool timed out".into())).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(axum::http::header::RETRY_AFTER),
            Some(&axum::http::HeaderValue::from_static("5"))
        );
    }
}
