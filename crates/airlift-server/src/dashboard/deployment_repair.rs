//! The repair side of a deployment's page: the links between a deployment
//! and the automatic rollbacks its circuit breaker started (both ways,
//! with the breaker's reason), the Retry form for its failed devices, and
//! the Reset form on a device row stuck past the deployment's device
//! timeout. Each action is the management API's own handler
//! (`POST /deployments/{id}/retry`, `POST /deployments/{id}/devices/{device}/reset`),
//! run as the session's caller: an operator or admin, with the session's
//! CSRF token, audited as the CLI's calls are.

use super::deployment::{render, DetailQuery};
use super::deployments::path_id;
use super::layout::{csrf_field, error_words, PageError};
use super::session::{ActionForm, Viewer};
use crate::api;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use airlift_protocol::management::{Deployment, DeviceUpdate};
use airlift_protocol::repair::{DEFAULT_RETRY_LIMIT, MAX_REASON, MAX_RETRY_LIMIT};
use airlift_protocol::state::DeploymentStatus;
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::{DeploymentRecord, RESETTABLE, RETRYABLE};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup};

/// A deployment linked to this one, with the reason its breaker tripped.
struct Linked {
    id: DeploymentId,
    name: String,
    reason: Option<String>,
}

/// "Rollback of …" and "Rolled back by …", each linked, with the reason the
/// breaker gave; nothing when the deployment has no such link.
pub(super) async fn rollback_links(
    state: &AppState,
    id: DeploymentId,
) -> Result<Markup, PageError> {
    let links = state.store().rollback_links(id).await?;
    let rollback_of = match links.rollback_of {
        Some(of) => linked(state, of).await?,
        None => None,
    };
    let mut rolled_back_by = Vec::new();
    for by in &links.rolled_back_by {
        rolled_back_by.extend(linked(state, *by).await?);
    }
    let this = match rolled_back_by.is_empty() {
        true => None,
        false => linked(state, id).await?,
    };
    let own_reason = this.as_ref().and_then(|t| t.reason.as_deref());
    Ok(links_markup(
        rollback_of.as_ref(),
        &rolled_back_by,
        own_reason,
    ))
}

/// The notices of [`rollback_links`]: `own_reason` is why this
/// deployment's breaker tripped.
fn links_markup(
    rollback_of: Option<&Linked>,
    rolled_back_by: &[Linked],
    own_reason: Option<&str>,
) -> Markup {
    html! {
        @if let Some(of) = rollback_of {
            div.notice #rollback-of role="note" {
                "Automatic rollback of " (link(of)) ": its circuit breaker tripped"
                @if let Some(reason) = &of.reason { " (" (reason) ")" }
                ". It brings the devices that installed it back to the release they ran before."
            }
        }
        @if !rolled_back_by.is_empty() {
            div.notice.bad #rolled-back-by role="note" {
                "Rolled back by "
                @for (n, by) in rolled_back_by.iter().enumerate() {
                    @if n > 0 { ", " }
                    (link(by))
                }
                ": the circuit breaker tripped"
                @if let Some(reason) = own_reason { " (" (reason) ")" }
                " and the devices that installed this release are taken back."
            }
        }
    }
}

async fn linked(state: &AppState, id: DeploymentId) -> Result<Option<Linked>, PageError> {
    let Some(record) = state.store().deployment(id).await? else {
        return Ok(None);
    };
    let deployment = api::with_counts(state, record).await?;
    Ok(Some(Linked {
        id,
        name: deployment.name,
        reason: deployment.rollout.and_then(|r| r.reason),
    }))
}

fn link(linked: &Linked) -> Markup {
    html! {
        a href=(format!("/ui/deployments/{}", linked.id)) { (linked.name) }
        " (" code { (short(linked.id)) } ")"
    }
}

fn short(id: DeploymentId) -> String {
    id.to_string().chars().take(8).collect()
}

/// The Retry form, when the deployment has failed devices and can be
/// retried (an aborted or cancelled one cannot).
pub(super) fn retry_form(viewer: &Viewer, deployment: &Deployment) -> Markup {
    let failed: u64 = RETRYABLE
        .iter()
        .filter_map(|state| deployment.counts.get(state))
        .sum();
    let retryable = !matches!(
        deployment.status,
        DeploymentStatus::Aborted | DeploymentStatus::Cancelled
    );
    html! {
        @if viewer.can_operate() && retryable && failed > 0 {
            form.actions #retry method="post" action=(format!("/ui/deployments/{}/retry", deployment.id)) {
                (csrf_field(viewer))
                label for="retry-limit" {
                    "Offer it again to the " (failed) " failed, rolled-back or timed-out devices, except those already retried"
                }
                input #retry-limit type="number" name="limit" min="1" max=(MAX_RETRY_LIMIT)
                    value=(DEFAULT_RETRY_LIMIT) required;
                span { " times." }
                button type="submit" { "Retry failed devices" }
                p.muted {
                    "Each device goes back to pending and is offered the update at its next check-in. "
                    "A device that has failed this many retries stays as it is, so a device that can never take it is not retried for ever. "
                    "A finished deployment becomes active again."
                }
            }
        }
    }
}

/// The Reset form of a device row: only for a device in a state a reset
/// applies to, there for longer than the deployment's device timeout
/// (counted from its latest sign of life, as the API counts it).
pub(super) fn reset_cell(
    viewer: &Viewer,
    record: &DeploymentRecord,
    update: &DeviceUpdate,
    now: DateTime<Utc>,
) -> Markup {
    if !viewer.can_operate() || !stuck(record, update, now) {
        return html! {};
    }
    html! {
        form.reset method="post"
            action=(format!("/ui/deployments/{}/devices/{}/reset", record.id, update.device_id)) {
            (csrf_field(viewer))
            label for=(format!("reset-{}", update.device_id)) {
                "Stuck " (update.state) " past its timeout. Reason (for the audit log):"
            }
            input id=(format!("reset-{}", update.device_id)) type="text" name="reason"
                maxlength=(MAX_REASON) required placeholder="e.g. re-imaged by hand";
            button.secondary type="submit" { "Reset" }
        }
    }
}

/// Whether the device has been in a resettable state past the timeout.
fn stuck(record: &DeploymentRecord, update: &DeviceUpdate, now: DateTime<Utc>) -> bool {
    if !RESETTABLE.contains(&update.state) {
        return false;
    }
    let alive = update
        .progress_at
        .map_or(update.updated_at, |p| p.max(update.updated_at));
    alive
        .checked_add_signed(api::device_timeout(record))
        .is_some_and(|due| due <= now)
}

/// `POST /ui/deployments/{id}/retry`.
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: ActionForm,
) -> Response {
    let id: DeploymentId = match path_id(&id, "deployment") {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let mut body = serde_json::Map::new();
    if let Some(limit) = form.value("limit").map(str::trim).filter(|l| !l.is_empty()) {
        match limit.parse::<u32>() {
            Ok(limit) => body.insert("limit".into(), limit.into()),
            Err(_) => {
                let words = format!("limit: a whole number of retries, 1–{MAX_RETRY_LIMIT}");
                return refused(
                    &state,
                    &form.viewer,
                    id,
                    words,
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        };
    }
    let caller = form.viewer.caller.clone();
    match api::retry_deployment(State(state.clone()), caller, ApiPath(id), ApiJson(body)).await {
        Ok(axum::Json(result)) => {
            let done = format!(
                "/ui/deployments/{id}?retried={}&at_limit={}",
                result.retried.len(),
                result.at_limit
            );
            Redirect::to(&done).into_response()
        }
        Err(error) => {
            refused(
                &state,
                &form.viewer,
                id,
                error_words(&error),
                error.status(),
            )
            .await
        }
    }
}

/// `POST /ui/deployments/{id}/devices/{device_id}/reset`.
pub async fn reset(
    State(state): State<AppState>,
    Path((id, device)): Path<(String, String)>,
    form: ActionForm,
) -> Response {
    let (id, device): (DeploymentId, DeviceId) =
        match (path_id(&id, "deployment"), path_id(&device, "device")) {
            (Ok(id), Ok(device)) => (id, device),
            (Err(error), _) | (_, Err(error)) => return error.into_response(),
        };
    let mut body = serde_json::Map::new();
    body.insert(
        "reason".into(),
        form.value("reason").unwrap_or_default().into(),
    );
    let caller = form.viewer.caller.clone();
    let outcome = api::reset_deployment_device(
        State(state.clone()),
        caller,
        ApiPath((id, device)),
        ApiJson(body),
    )
    .await;
    match outcome {
        Ok(_) => {
            Redirect::to(&format!("/ui/deployments/{id}?reset={device}#devices")).into_response()
        }
        Err(error) => {
            refused(
                &state,
                &form.viewer,
                id,
                error_words(&error),
                error.status(),
            )
            .await
        }
    }
}

/// The page again, saying why the action was refused.
async fn refused(
    state: &AppState,
    viewer: &Viewer,
    id: DeploymentId,
    words: String,
    status: axum::http::StatusCode,
) -> Response {
    render(
        state,
        viewer,
        id,
        &DetailQuery::default(),
        Some(Err(words)),
        status,
    )
    .await
}

/// The notice after a retry or a reset, from the page's query.
pub(super) fn done_words(query: &DetailQuery) -> Option<String> {
    if let Some(retried) = query.retried {
        let at_limit = query.at_limit.unwrap_or(0);
        let retried: u64 = retried.try_into().unwrap_or(u64::MAX);
        return Some(match (retried, at_limit) {
            (0, 0) => "No device was retried: none had failed.".to_owned(),
            (0, n) => format!("No device was retried: the {n} failed devices reached the retry limit."),
            (r, 0) => format!("{r} devices are offered the update again at their next check-in."),
            (r, n) => format!("{r} devices are offered the update again at their next check-in; {n} reached the retry limit and stay as they are."),
        });
    }
    query.reset.map(|device| {
        format!("Device {device} was reset to pending: it is offered the update again at its next check-in.")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollbacks_are_linked_both_ways_with_the_breakers_reason_escaped() {
        let linked = |name: &str, reason: Option<&str>| Linked {
            id: DeploymentId::new(),
            name: name.to_owned(),
            reason: reason.map(str::to_owned),
        };
        assert_eq!(links_markup(None, &[], None).into_string(), "");
        let bad = linked("rootfs 2.1.0", Some("2 failures <of> 4"));
        let of = links_markup(Some(&bad), &[], None).into_string();
        assert!(of.contains("Automatic rollback of"), "{of}");
        assert!(
            of.contains(&format!("href=\"/ui/deployments/{}\"", bad.id)),
            "{of}"
        );
        assert!(of.contains("(2 failures &lt;of&gt; 4)"), "{of}");
        let back = [
            linked("rollback to 2.0.0", None),
            linked("rollback to 1.9.0", None),
        ];
        let by = links_markup(None, &back, Some("breaker: 3 of 10 failed")).into_string();
        assert!(by.contains("Rolled back by"), "{by}");
        for rollback in &back {
            assert!(
                by.contains(&format!("/ui/deployments/{}", rollback.id)),
                "{by}"
            );
            assert!(by.contains(&rollback.name), "{by}");
        }
        assert!(by.contains("(breaker: 3 of 10 failed)"), "{by}");
    }

    #[test]
    fn the_done_notice_says_what_the_retry_did() {
        let query = |retried: usize, at_limit: u64| -> DetailQuery {
            serde_json::from_value(serde_json::json!({"retried": retried, "at_limit": at_limit}))
                .unwrap_or_default()
        };
        assert!(done_words(&query(2, 0)).is_some_and(|w| w.starts_with("2 devices")));
        assert!(done_words(&query(0, 3)).is_some_and(|w| w.contains("reached the retry limit")));
        assert_eq!(done_words(&DetailQuery::default()), None);
    }
}
