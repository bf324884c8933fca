//! Extractors whose rejections are [`ApiError`]s, so malformed input gets the
//! same JSON error body as everything else.

use crate::error::ApiError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};

/// JSON body; unknown fields and type errors are 400 with the parser's
/// message, which names the field's path.
///
/// Parsed with plain `serde_json` first: the path-tracking parser that names
/// the field costs a few microseconds on every request (a check-in's
/// inventory is most of a check-in's parsing), so it runs only to explain a
/// body that did not parse.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            // axum's extractor refuses a body without a JSON content type,
            // and says so.
            return match axum::Json::<T>::from_request(request, state).await {
                Ok(axum::Json(value)) => Ok(ApiJson(value)),
                Err(rejection) => Err(rejection.into()),
            };
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::from(JsonRejection::from(e)))?;
        let value = match serde_json::from_slice(&bytes) {
            Ok(value) => value,
            Err(_) => match axum::Json::<T>::from_bytes(&bytes) {
                Ok(axum::Json(value)) => value,
                Err(rejection) => return Err(rejection.into()),
            },
        };
        refuse_nul_in_json(&bytes)?;
        Ok(ApiJson(value))
    }
}

/// `application/json`, or any `application/*+json`.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 17
            && essence[..12].eq_ignore_ascii_case("application/")
            && essence.to_ascii_lowercase().ends_with("+json"))
}

/// Path parameters; a malformed id is a 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters; a malformed filter is a 400, and so is a value with a
/// NUL character.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        if let Some(query) = parts.uri.query() {
            if let Some((key, _)) = query
                .split('&')
                .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                .find(|(key, value)| key.contains("%00") || value.contains("%00"))
            {
                let key: String = key.chars().take(64).collect();
                return Err(nul_refused(&key));
            }
        }
        Ok(ApiQuery(value))
    }
}

/// Refuses a JSON text that holds a NUL character (`\u0000`) in any string
/// or key, naming the first field that does. PostgreSQL cannot store one
/// in text, and no name, version or attribute needs one; SQLite would take
/// it, so both backends refuse it here alike.
pub fn refuse_nul_in_json(bytes: &[u8]) -> Result<(), ApiError> {
    const ESCAPED_NUL: &[u8] = b"\\u0000";
    if !bytes.windows(ESCAPED_NUL.len()).any(|w| w == ESCAPED_NUL) {
        return Ok(());
    }
    // Rare: find where, for the message. (The six bytes may also be an
    // escaped backslash followed by "u0000", which is no NUL.)
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(());
    };
    match nul_path(&value, String::new()) {
        Some(path) => Err(nul_refused(&path)),
        None => Ok(()),
    }
}

/// Refuses a value that will be stored as text when it holds a NUL.
pub fn refuse_nul(field: &str, value: &serde_json::Value) -> Result<(), ApiError> {
    match nul_path(value, field.to_owned()) {
        Some(path) => Err(nul_refused(&path)),
        None => Ok(()),
    }
}

fn nul_refused(field: &str) -> ApiError {
    let field = if field.is_empty() { "the body" } else { field };
    ApiError::bad_request(format!(
        "{field}: contains a NUL character, which the server does not store"
    ))
}

/// The path (`a.b[2]`) of the first string or key in `value` with a NUL.
fn nul_path(value: &serde_json::Value, path: String) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        serde_json::Value::String(text) => text.contains('\0').then_some(path),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{path}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(join(&key.replace('\0', "\\0")))
            } else {
                nul_path(item, join(key))
            }
        }),
        _ => None,
    }
}

/// Gives every error response the JSON error body, the framework's own
/// too: an unknown route (404), a wrong method (405), a body over its limit
/// (413), a wrong content type (415) answer like the handlers do.
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // The dashboard answers people, in pages (and its upload script in
    // plain words): its errors are not the API's.
    let dashboard = request
        .uri()
        .path()
        .starts_with(&format!("{}/", crate::dashboard::BASE));
    let response = next.run(request).await;
    if dashboard {
        return response;
    }
    let status = response.status();
    let is_json_already = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // The dashboard's error pages are for people: HTML, as they are.
    let is_page = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json_already || is_page {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The framework's rejections say what is wrong in a line of text.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned(),
        text => text.to_owned(),
    };
    let code = match status {
        axum::http::StatusCode::NOT_FOUND => "not_found",
        axum::http::StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let body = serde_json::to_vec(&airlift_protocol::ErrorBody {
        code: code.to_owned(),
        message,
    })
    .unwrap_or_default();
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    axum::response::Response::from_parts(parts, axum::body::Body::from(body))
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::BytesRejection(_)
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::TooLarge("request body is too large".into())
            }
            // Well-formed JSON of the right shape whose target expression
            // does not parse: its grammar is content no schema states.
            JsonRejection::JsonDataError(error)
                if error
                    .body_text()
                    .contains(airlift_protocol::target_expr::ERROR_LABEL) =>
            {
                ApiError::Unprocessable("invalid_target_expression", error.body_text())
            }
            other => ApiError::BadRequest("bad_request", other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest("bad_request", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest("bad_request", rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::{is_json, refuse_nul_in_json};

    #[test]
    fn a_nul_anywhere_in_json_is_refused_by_its_field() {
        let error = refuse_nul_in_json(br#"{"attributes":{"site":"a\u0000b"}}"#)
            .expect_err("a NUL in a value");
        assert!(
            error.to_string().starts_with("attributes.site: "),
            "{error}"
        );
        let error = refuse_nul_in_json(br#"{"tags":["ok","x\u0000"]}"#).expect_err("in a list");
        assert!(error.to_string().starts_with("tags[1]: "), "{error}");
        let error = refuse_nul_in_json(br#"{"identity":{"k\u0000":"v"}}"#).expect_err("in a key");
        assert!(error.to_string().starts_with("identity.k\\0: "), "{error}");
        assert!(
            refuse_nul_in_json(br#"{"path":"C:\\u0000"}"#).is_ok(),
            "an escaped backslash, then u0000"
        );
        assert!(refuse_nul_in_json(br#"{"name":"plain"}"#).is_ok());
    }
    use axum::http::{header::CONTENT_TYPE, HeaderMap, HeaderValue};

    fn with(content_type: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json(&with("application/json")));
        assert!(is_json(&with("Application/JSON; charset=utf-8")));
        assert!(is_json(&with("application/merge-patch+json")));
        assert!(!is_json(&with("text/json")));
        assert!(!is_json(&with("application/x-www-form-urlencoded")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
