//! Signing in to the dashboard with an API token, the session cookie that
//! stands for it, and the CSRF check on every state-changing request.
//!
//! The browser holds a random session secret in an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure` over TLS); the store holds only its
//! SHA-256 with the token it stands for, so every instance knows the session
//! and revoking the token ends it. Each session has its own CSRF token,
//! which forms carry as `_csrf` and htmx requests as `X-CSRF-Token`; posts
//! another site makes (by `Sec-Fetch-Site` or `Origin`) are refused before
//! that.

use super::layout::{self, PageError};
use crate::auth::{hash_secret, random_hex, ApiCaller};
use crate::error::ApiError;
use crate::state::AppState;
use airlift_store::NewSession;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Query, Request, State};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const SESSION_COOKIE: &str = "airlift_session";
/// How long a sign-in lasts.
pub const SESSION_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(12);
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";
/// The header htmx requests carry it in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Largest form body the dashboard reads (bulk selections of a full page).
const FORM_LIMIT: usize = 256 * 1024;

/// Who is looking: the session's caller, as the API would see its token.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The API caller the session stands for; actions run as it.
    pub caller: ApiCaller,
    /// This session's CSRF token, for the forms a page renders.
    pub csrf: String,
    session_sha256: [u8; 32],
}

impl Viewer {
    /// Whether the page should offer changes (the server checks anyway).
    pub fn can_operate(&self) -> bool {
        self.caller.role.can_operate()
    }

    /// Whether the page should offer admin actions.
    pub fn can_administer(&self) -> bool {
        self.caller.role.can_administer()
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(secret) = session_secret(&parts.headers) else {
            return Err(to_sign_in(parts));
        };
        let session_sha256 = hash_secret(&secret);
        let found = state
            .store()
            .session_by_hash(&session_sha256, Utc::now())
            .await
            .map_err(|e| PageError::from(ApiError::from(e)).into_response())?;
        let Some(session) = found else {
            return Err(to_sign_in(parts));
        };
        Ok(Viewer {
            caller: ApiCaller {
                token_id: session.token.id,
                name: session.token.name,
                role: session.token.role,
            },
            csrf: session.csrf,
            session_sha256,
        })
    }
}

/// A state-changing request's form: the viewer, the fields, and proof that
/// it came from one of our pages (same origin and the session's CSRF token).
#[derive(Debug)]
pub struct ActionForm {
    /// Who sent it.
    pub viewer: Viewer,
    /// Its fields in order; a name may repeat (a bulk selection).
    pub fields: Vec<(String, String)>,
}

impl ActionForm {
    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    }

    /// Every value of `name`.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

impl FromRequest<AppState> for ActionForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        refuse_cross_site(&parts.headers).map_err(IntoResponse::into_response)?;
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let request = Request::from_parts(parts, body);
        let header_token = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(request.into_body(), FORM_LIMIT)
            .await
            .map_err(|_| {
                PageError::from(ApiError::TooLarge("the form is too large".into())).into_response()
            })?;
        let fields: Vec<(String, String)> = form_urlencoded::parse(&body)
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        let sent = header_token.or_else(|| {
            fields
                .iter()
                .find(|(name, _)| name == CSRF_FIELD)
                .map(|(_, value)| value.clone())
        });
        check_csrf(&viewer, sent.as_deref()).map_err(IntoResponse::into_response)?;
        Ok(ActionForm { viewer, fields })
    }
}

/// A state-changing request whose body is not a form (a package upload):
/// same checks as [`ActionForm`], the CSRF token in the header.
#[derive(Debug)]
pub struct ActionBody {
    /// Who sent it.
    pub viewer: Viewer,
    /// The body, unread.
    pub body: axum::body::Body,
}

impl FromRequest<AppState> for ActionBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        refuse_cross_site(&parts.headers).map_err(IntoResponse::into_response)?;
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok());
        check_csrf(&viewer, sent).map_err(IntoResponse::into_response)?;
        Ok(ActionBody { viewer, body })
    }
}

fn check_csrf(viewer: &Viewer, sent: Option<&str>) -> Result<(), PageError> {
    let matches =
        sent.is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(viewer.csrf.as_bytes())));
    if matches {
        Ok(())
    } else {
        Err(PageError::from(ApiError::Forbidden(
            "this form is stale or did not come from this dashboard (its CSRF token is missing or wrong); reload the page and try again".into(),
        )))
    }
}

/// Refuses a request another site made the browser send.
fn refuse_cross_site(headers: &HeaderMap) -> Result<(), PageError> {
    let refused = || {
        PageError::from(ApiError::Forbidden(
            "cross-site requests are refused: use the dashboard's own pages".into(),
        ))
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return Err(refused());
        }
    }
    if let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
        let origin_host = origin
            .split_once("://")
            .map_or(origin, |(_, rest)| rest)
            .trim_end_matches('/');
        let host = headers.get(HOST).and_then(|v| v.to_str().ok());
        if origin == "null" || host != Some(origin_host) {
            return Err(refused());
        }
    }
    Ok(())
}

fn session_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == SESSION_COOKIE)
        .map(|cookie| cookie.value().to_owned())
        .filter(|value| value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Where a signed-out viewer goes: the sign-in page, coming back here after.
fn to_sign_in(parts: &Parts) -> Response {
    // The dashboard is nested under /ui, so `parts.uri` has lost that
    // prefix; the original URI is the address the viewer asked for.
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    let here = uri
        .path_and_query()
        .map_or("/ui/", |p| p.as_str())
        .to_owned();
    let target = format!(
        "/ui/sign-in?next={}",
        form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>()
    );
    if parts.headers.contains_key("hx-request") {
        // htmx follows this header with a full page load.
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        if let Ok(value) = HeaderValue::from_str(&target) {
            response.headers_mut().insert("hx-redirect", value);
        }
        response
    } else {
        Redirect::to(&target).into_response()
    }
}

/// Only a path of ours: `next` must not send the viewer to another site
/// (`//host`, `/\\host` and `scheme://` all leave it), and must be a
/// valid `Location` (visible ASCII only).
fn local_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if next.starts_with("/ui/")
                && next.len() <= MAX_NEXT
                && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            next
        }
        _ => "/ui/",
    }
}

/// The longest return address kept; a longer one leads to the overview.
const MAX_NEXT: usize = 2048;

/// The sign-in page's query.
#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
}

/// `GET /ui/sign-in`.
pub async fn sign_in_page(Query(query): Query<SignInQuery>) -> Response {
    sign_in_form(local_next(query.next.as_deref()), None, StatusCode::OK)
}

fn sign_in_form(next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        main.sign-in {
            h1 { "Sign in to Airlift" }
            div.card {
                form method="post" action="/ui/sign-in" {
                    input type="hidden" name="next" value=(next);
                    label for="token" { "API token" }
                    input #token type="password" name="token" autocomplete="current-password"
                        required aria-invalid=[error.map(|_| "true")] aria-describedby="token-help";
                    @if let Some(error) = error {
                        p.field-error role="alert" { (error) }
                    }
                    div #token-help .muted {
                        p { "An API token of any role: admin, operator or viewer." }
                        p {
                            "The server printed the first admin token once, on its first start (it keeps only a hash, so it cannot show it again). Lost it? Start the server with "
                            code { "AIRLIFT_ADMIN_TOKEN" } " set to a new secret (" code { "airlift-server --help" }
                            " says how); it becomes an admin token."
                        }
                        p {
                            "An admin makes tokens for others on the Tokens page, or with "
                            code { "airlift token create --name NAME --role viewer" } "."
                        }
                    }
                    button type="submit" { "Sign in" }
                }
            }
        }
    };
    (status, layout::bare("Sign in", body)).into_response()
}

/// `POST /ui/sign-in`: exchanges a token for a session cookie.
pub async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = refuse_cross_site(&headers) {
        return refused.into_response();
    }
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.trim().to_owned())
    };
    let next = field("next");
    let next = local_next(next.as_deref());
    let token = field("token").unwrap_or_default();
    let store = state.store();
    let found = match store.api_token_by_hash(&hash_secret(&token)).await {
        Ok(found) => found,
        Err(error) => return PageError::from(ApiError::from(error)).into_response(),
    };
    let Some(record) = found.filter(|_| !token.is_empty()) else {
        return sign_in_form(
            next,
            Some(
                "That token is not known here, or it was revoked. Check that you copied it whole.",
            ),
            StatusCode::UNAUTHORIZED,
        );
    };
    match start_session(&state, record.token.id).await {
        Ok(cookie) => {
            let mut response = Redirect::to(next).into_response();
            response.headers_mut().insert(SET_COOKIE, cookie);
            response
        }
        Err(error) => error.into_response(),
    }
}

async fn start_session(
    state: &AppState,
    token_id: airlift_protocol::TokenId,
) -> Result<HeaderValue, PageError> {
    let secret = random_hex(32)?;
    let now = Utc::now();
    let session = NewSession {
        secret_sha256: hash_secret(&secret),
        token_id,
        csrf: random_hex(32)?,
        created_at: now,
        expires_at: now + SESSION_LIFETIME,
    };
    let store = state.store();
    // Expired rows are of no use to anyone; signing in is rare enough to
    // sweep them here.
    if let Err(error) = store.delete_expired_sessions(now).await {
        tracing::warn!(%error, "forgetting expired dashboard sessions failed");
    }
    store
        .insert_session(&session)
        .await
        .map_err(ApiError::from)?;
    let cookie = cookie::Cookie::build((SESSION_COOKIE, secret))
        .path("/ui")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(state.settings().secure_cookies)
        .max_age(cookie::time::Duration::seconds(
            SESSION_LIFETIME.num_seconds(),
        ))
        .build();
    HeaderValue::from_str(&cookie.to_string()).map_err(|e| PageError::from(ApiError::internal(e)))
}

/// `POST /ui/sign-out`.
pub async fn sign_out(State(state): State<AppState>, form: ActionForm) -> Response {
    if let Err(error) = state
        .store()
        .delete_session(&form.viewer.session_sha256)
        .await
    {
        return PageError::from(ApiError::from(error)).into_response();
    }
    let gone = cookie::Cookie::build((SESSION_COOKIE, ""))
        .path("/ui")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::ZERO)
        .build();
    let mut response = Redirect::to("/ui/sign-in").into_response();
    if let Ok(value) = HeaderValue::from_str(&gone.to_string()) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[test]
    fn posts_from_another_site_are_refused_and_our_own_pass() {
        assert!(refuse_cross_site(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(refuse_cross_site(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(refuse_cross_site(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "airlift.example")
        ]))
        .is_err());
        assert!(refuse_cross_site(&headers(&[("origin", "null"), ("host", "a")])).is_err());
        assert!(refuse_cross_site(&headers(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ]))
        .is_ok());
        assert!(
            refuse_cross_site(&HeaderMap::new()).is_ok(),
            "curl sends neither"
        );
    }

    #[test]
    fn next_never_leaves_the_dashboard() {
        assert_eq!(local_next(Some("/ui/devices?page=2")), "/ui/devices?page=2");
        assert_eq!(local_next(Some("https://evil.example/")), "/ui/");
        assert_eq!(local_next(Some("//evil.example/ui/")), "/ui/");
        assert_eq!(local_next(Some("/api/v1/tokens")), "/ui/");
        assert_eq!(local_next(Some("/\\evil.example")), "/ui/");
        assert_eq!(local_next(Some("/ui/\\evil.example")), "/ui/");
        assert_eq!(local_next(Some("/ui/x\r\nSet-Cookie: a=b")), "/ui/");
        assert_eq!(local_next(Some("/ui/devices?search=a b")), "/ui/");
        assert_eq!(
            local_next(Some(&format!("/ui/{}", "a".repeat(MAX_NEXT)))),
            "/ui/"
        );
        assert_eq!(local_next(None), "/ui/");
    }

    #[test]
    fn only_a_well_formed_session_cookie_is_read() {
        let good = "ab".repeat(32);
        let found = session_secret(&headers(&[(
            "cookie",
            &format!("theme=dark; {SESSION_COOKIE}={good}"),
        )]));
        assert_eq!(found.as_deref(), Some(good.as_str()));
        let short = session_secret(&headers(&[("cookie", &format!("{SESSION_COOKIE}=abc"))]));
        assert_eq!(short, None);
    }
}
