//! The page shell and the small pieces every page uses: navigation,
//! timestamps, pagination, empty states, field errors, and the error page.

use super::assets;
use super::session::{Viewer, CSRF_FIELD};
use crate::error::ApiError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

/// A navigation entry: which page is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/ui/`.
    Overview,
    /// `/ui/devices`.
    Devices,
    /// `/ui/pending`.
    Pending,
    /// `/ui/packages`.
    Packages,
    /// `/ui/deployments`.
    Deployments,
    /// `/ui/tokens` (admins only).
    Tokens,
    /// `/ui/audit` (admins only).
    Audit,
}

impl Nav {
    const ALL: [Nav; 7] = [
        Nav::Overview,
        Nav::Devices,
        Nav::Pending,
        Nav::Packages,
        Nav::Deployments,
        Nav::Tokens,
        Nav::Audit,
    ];

    fn href(self) -> &'static str {
        match self {
            Nav::Overview => "/ui/",
            Nav::Devices => "/ui/devices",
            Nav::Pending => "/ui/pending",
            Nav::Packages => "/ui/packages",
            Nav::Deployments => "/ui/deployments",
            Nav::Tokens => "/ui/tokens",
            Nav::Audit => "/ui/audit",
        }
    }

    /// Whether `viewer` may open this page: the admin pages are left out
    /// of the navigation for everyone else (the server refuses them anyway).
    fn shown_to(self, viewer: &Viewer) -> bool {
        !matches!(self, Nav::Tokens | Nav::Audit) || viewer.can_administer()
    }

    fn label(self) -> &'static str {
        match self {
            Nav::Overview => "Overview",
            Nav::Devices => "Devices",
            Nav::Pending => "Pending",
            Nav::Packages => "Packages",
            Nav::Deployments => "Deployments",
            Nav::Tokens => "Tokens",
            Nav::Audit => "Audit log",
        }
    }
}

/// What a page is: its title, its place in the navigation, and the live
/// topics it listens to (see [`super::live`]).
#[derive(Debug, Clone)]
pub struct PageInfo<'a> {
    /// The `<title>` and `<h1>`.
    pub title: &'a str,
    /// Which entry is current.
    pub nav: Nav,
    /// Space-separated topics, e.g. `"overview"` or `"deployment:ID"`.
    pub live: Option<String>,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // No eval, no injected <style>: what the CSP allows.
            meta name="htmx-config" content=r#"{"allowEval":false,"includeIndicatorStyles":false,"allowScriptTags":false,"historyCacheSize":0}"#;
            title { (title) " · Airlift" }
            link rel="stylesheet" href=(assets::STYLE);
            script src=(assets::HTMX) defer {}
            script src=(assets::SCRIPT) defer {}
        }
    }
}

/// A page for a signed-in viewer.
pub fn page(viewer: &Viewer, info: PageInfo<'_>, body: Markup) -> Markup {
    let csrf_header = format!(r#"{{"X-CSRF-Token": "{}"}}"#, viewer.csrf);
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(info.title))
            body data-live=[info.live.as_deref()] data-csrf=(viewer.csrf) hx-headers=(csrf_header) {
                header.bar {
                    a.brand href="/ui/" { "Airlift" }
                    nav aria-label="Main" {
                        @for entry in Nav::ALL {
                            @if entry.shown_to(viewer) {
                                a href=(entry.href()) aria-current=[(entry == info.nav).then_some("page")] {
                                    (entry.label())
                                }
                            }
                        }
                    }
                    div.who {
                        span { (viewer.caller.name) " · " (viewer.caller.role) }
                        form.inline method="post" action="/ui/sign-out" {
                            (csrf_field(viewer))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    h1 { (info.title) @if info.live.is_some() { span.live-indicator.muted {} } }
                    (body)
                }
            }
        }
    }
}

/// The answer to a signed-in viewer whose role may not open an admin
/// page: a 403 page in words, with the navigation to go elsewhere.
pub fn admin_only(viewer: &Viewer, title: &str, nav: Nav, what: &str) -> Response {
    let body = html! {
        div.notice.bad role="alert" {
            p { strong { "403 Forbidden" } }
            p {
                "Only an admin token may " (what) ". You are signed in as "
                strong { (viewer.caller.name) } ", whose role is " (viewer.caller.role) "."
            }
            p { "Ask an admin for an admin token, or sign out and sign in with one." }
        }
    };
    let page = page(
        viewer,
        PageInfo {
            title,
            nav,
            live: None,
        },
        body,
    );
    (StatusCode::FORBIDDEN, page).into_response()
}

/// A page with no navigation (sign-in).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { (body) }
        }
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf); }
}

/// A timestamp: UTC in the page (so it reads without JavaScript), the
/// viewer's local time once `dashboard.js` has run, UTC on hover.
pub fn time(at: DateTime<Utc>) -> Markup {
    let utc = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! { time datetime=(at.to_rfc3339()) title=(utc) { (utc) } }
}

/// An optional timestamp, or a dash.
pub fn time_or_never(at: Option<DateTime<Utc>>, never: &str) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { span.muted { (never) } },
    }
}

/// A state word with its colour class (`status-accepted`, …).
pub fn status(word: impl std::fmt::Display) -> Markup {
    let word = word.to_string();
    html! { span class=(format!("status status-{word}")) { (word) } }
}

/// What to show where a list is empty: what to do next.
pub fn empty(what: &str, next: Markup) -> Markup {
    html! { div.empty { p { (what) } (next) } }
}

/// An API error message split at the field it names (`"target.tag: must
/// not be empty"` → `("target.tag", "must not be empty")`), so a form can
/// show it next to that field. The API's messages name fields this way.
pub fn field_of(message: &str) -> Option<(&str, &str)> {
    let (field, rest) = message.split_once(": ")?;
    let is_field = !field.is_empty()
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
    is_field.then_some((field, rest))
}

/// Human-readable bytes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Previous/next links for a page-numbered list whose other query
/// parameters are `query` (already encoded, without `page`).
pub fn pager(path: &str, query: &str, page: u32, per_page: u32, total: u64) -> Markup {
    let pages = total.div_ceil(u64::from(per_page.max(1))).max(1);
    let link = |page: u32| {
        if query.is_empty() {
            format!("{path}?page={page}")
        } else {
            format!("{path}?{query}&page={page}")
        }
    };
    html! {
        nav.pager aria-label="Pages" {
            @if page > 1 { a href=(link(page - 1)) rel="prev" { "← Previous" } }
            span.muted { "Page " (page) " of " (pages) " · " (total) " in all" }
            @if u64::from(page) < pages { a href=(link(page + 1)) rel="next" { "Next →" } }
        }
    }
}

/// An error as a page (or, for htmx, as the fragment it swaps in): the
/// API's words and status; a 401 leads to the sign-in page.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<airlift_store::StoreError> for PageError {
    fn from(error: airlift_store::StoreError) -> Self {
        Self(ApiError::from(error))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status == StatusCode::UNAUTHORIZED {
            return axum::response::Redirect::to("/ui/sign-in").into_response();
        }
        let message = error_words(&self.0);
        let body = html! {
            main {
                div.notice.bad role="alert" {
                    p { strong { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) } }
                    p { (message) }
                    p { a href="/ui/" { "Back to the overview" } }
                }
            }
        };
        (status, bare("Error", body)).into_response()
    }
}

/// The message an [`ApiError`] shows a person: its own words for 4xx, the
/// safe words for 5xx (whose detail goes to the log).
pub fn error_words(error: &ApiError) -> String {
    match error {
        ApiError::Internal(detail) => {
            tracing::error!(error = %detail, "dashboard action failed");
            "Internal server error; the server log has the details.".into()
        }
        ApiError::Unavailable(_, detail) => {
            tracing::warn!(error = %detail, "dashboard action failed: the database is unavailable");
            "The database is slow or unavailable; try again shortly.".into()
        }
        ApiError::InsufficientStorage(detail) => {
            tracing::error!(error = %detail, "dashboard action failed: the disk is full");
            "The server's disk is full, so nothing was stored.".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_messages_split_at_the_field_they_name() {
        assert_eq!(
            field_of("target.tag: must not be empty"),
            Some(("target.tag", "must not be empty"))
        );
        assert_eq!(
            field_of("strategy.phases[1].percent: must be between 1 and 100"),
            Some(("strategy.phases[1].percent", "must be between 1 and 100"))
        );
        assert_eq!(field_of("no such route"), None);
        assert_eq!(field_of("already exists: package x 1.0"), None);
    }

    #[test]
    fn device_reported_text_is_escaped() {
        let markup = html! { td { ("<script>alert(1)</script>") } }.into_string();
        assert!(!markup.contains("<script>"), "{markup}");
        assert!(markup.contains("&lt;script&gt;"));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
