//! The audit log (admins only, as in the API): who changed what, newest
//! first, filtered by actor and action, paged with the API's `before`
//! cursor.

use super::layout::{self, Nav, PageError, PageInfo};
use super::session::Viewer;
use crate::api;
use crate::extract::ApiQuery;
use crate::state::AppState;
use airlift_protocol::management::AuditEntry;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

/// Entries per page.
const PER_PAGE: u32 = 100;

/// Action families people filter by; any action may be typed.
const FAMILIES: [&str; 4] = ["deployment.", "device.", "package.", "token."];

/// The page's query, kept in the URL.
#[derive(Debug, Default, Deserialize)]
pub struct AuditPageQuery {
    actor: Option<String>,
    action: Option<String>,
    /// Entries with an id below this (an older page).
    before: Option<i64>,
}

impl AuditPageQuery {
    fn given(value: &Option<String>) -> Option<String> {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// A link to this filter, starting before `before`.
    fn link(actor: Option<&str>, action: Option<&str>, before: Option<i64>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(actor) = actor {
            query.append_pair("actor", actor);
        }
        if let Some(action) = action {
            query.append_pair("action", action);
        }
        if let Some(before) = before {
            query.append_pair("before", &before.to_string());
        }
        let query = query.finish();
        if query.is_empty() {
            "/ui/audit".into()
        } else {
            format!("/ui/audit?{query}")
        }
    }
}

/// `GET /ui/audit`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<AuditPageQuery>,
) -> Response {
    if !viewer.can_administer() {
        return layout::admin_only(&viewer, "Audit log", Nav::Audit, "read the audit log");
    }
    match render(state, &viewer, query).await {
        Ok(page) => page.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn render(
    state: AppState,
    viewer: &Viewer,
    query: AuditPageQuery,
) -> Result<Markup, PageError> {
    let actor = AuditPageQuery::given(&query.actor);
    let action = AuditPageQuery::given(&query.action);
    // One more than shown: whether an older page exists.
    let mut entries = api::list_audit(
        State(state),
        viewer.caller.clone(),
        ApiQuery(api::AuditQuery::new(
            PER_PAGE + 1,
            query.before,
            actor.clone(),
            action.clone(),
        )),
    )
    .await?
    .0
    .items;
    let older = entries.len() > PER_PAGE as usize;
    entries.truncate(PER_PAGE as usize);
    let body = html! {
        form.card.filters method="get" action="/ui/audit" {
            div {
                label for="actor" { "Actor" }
                input #actor type="text" name="actor" value=[actor.as_deref()]
                    placeholder="token name";
            }
            div {
                label for="action" { "Action" }
                input #action type="text" name="action" value=[action.as_deref()] list="action-families"
                    placeholder="deployment. or deployment.create";
                datalist #action-families { @for family in FAMILIES { option value=(family) {} } }
            }
            div { button.secondary type="submit" { "Filter" } }
        }
        div.card {
            @if entries.is_empty() {
                (layout::empty(
                    if actor.is_some() || action.is_some() || query.before.is_some() { "No entry matches." } else { "Nothing has been changed yet." },
                    html! { p { "Every change made through the API or this dashboard — uploads, deployments, admissions, tokens — is written here." } },
                ))
            } @else {
                (table(&entries))
            }
            nav.pager aria-label="Pages" {
                @if query.before.is_some() {
                    a href=(AuditPageQuery::link(actor.as_deref(), action.as_deref(), None)) { "← Newest" }
                }
                @if let (true, Some(last)) = (older, entries.last()) {
                    a href=(AuditPageQuery::link(actor.as_deref(), action.as_deref(), Some(last.id))) rel="next" { "Older →" }
                }
            }
        }
    };
    Ok(layout::page(
        viewer,
        PageInfo {
            title: "Audit log",
            nav: Nav::Audit,
            live: None,
        },
        body,
    ))
}

fn table(entries: &[AuditEntry]) -> Markup {
    html! {
        table.audit {
            thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Object" } th.wide-only { "Details" } } }
            tbody {
                @for entry in entries {
                    tr {
                        td { (layout::time(entry.at)) }
                        td { a href=(AuditPageQuery::link(Some(&entry.actor), None, None)) { (entry.actor) } }
                        td.action { a href=(AuditPageQuery::link(None, Some(&entry.action), None)) { (entry.action) } }
                        td { (object(entry)) }
                        td.wide-only.details { code { (details(&entry.details)) } }
                    }
                }
            }
        }
    }
}

/// The changed object, linked to its page when it has one.
fn object(entry: &AuditEntry) -> Markup {
    let family = entry.action.split('.').next().unwrap_or_default();
    let page = match family {
        "deployment" => Some("deployments"),
        "package" => Some("packages"),
        "device" => Some("devices"),
        _ => None,
    };
    // Only an id is linked, so the link stays inside the dashboard.
    let is_id = uuid::Uuid::parse_str(&entry.object).is_ok();
    html! {
        @match page.filter(|_| is_id) {
            Some(page) => a href=(format!("/ui/{page}/{}", entry.object)) { code { (entry.object) } },
            None => code { (entry.object) },
        }
    }
}

/// Details as compact JSON, cut short.
fn details(details: &serde_json::Value) -> String {
    const MAX: usize = 300;
    let text = details.to_string();
    if text.chars().count() > MAX {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str, object: &str) -> AuditEntry {
        AuditEntry {
            id: 7,
            at: chrono::Utc::now(),
            actor: "ci <admin> (token)".into(),
            action: action.into(),
            object: object.into(),
            details: serde_json::json!({"name": "<script>"}),
        }
    }

    #[test]
    fn filters_stay_in_links_and_text_is_escaped() {
        let id = uuid::Uuid::new_v4().to_string();
        let text = table(&[entry("deployment.create", &id)]).into_string();
        assert!(text.contains(&format!("/ui/deployments/{id}")), "{text}");
        assert!(
            text.contains("/ui/audit?actor=ci+%3Cadmin%3E+%28token%29"),
            "{text}"
        );
        assert!(
            text.contains("/ui/audit?action=deployment.create"),
            "{text}"
        );
        assert!(!text.contains("<script>"), "{text}");
        assert!(!text.contains("<admin>"), "{text}");
    }

    #[test]
    fn only_ids_become_links() {
        let text = object(&entry("package.delete", "../../api/v1/tokens")).into_string();
        assert!(!text.contains("href"), "{text}");
    }

    #[test]
    fn long_details_are_cut_short() {
        let long = serde_json::json!({"x": "y".repeat(1000)});
        assert!(details(&long).chars().count() <= 301);
        assert_eq!(AuditPageQuery::link(None, None, None), "/ui/audit");
        assert_eq!(
            AuditPageQuery::link(Some("ci"), Some("token."), Some(9)),
            "/ui/audit?actor=ci&action=token.&before=9"
        );
    }
}
