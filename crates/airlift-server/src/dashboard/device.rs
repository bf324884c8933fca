//! One device: identity and key id, inventory (installed software,
//! security version, hardware revision, attributes), tags (editable), where
//! its update stands (with download progress), its update history as a
//! timeline with every failure's full reason, and the controls its status
//! allows: accept, reject, decommission, check in now.
//!
//! The device is read through `GET /api/v1/devices/{id}`'s handler and
//! every control calls the API's handler for it. The page is live on the
//! device's topic; the tag form sits outside the live region, so a refresh
//! never wipes what an operator is typing.

use super::devices::{percent, update_cell};
use super::layout::{self, csrf_field, Nav, PageError, PageInfo};
use super::pending::identity_text;
use super::session::{ActionForm, Viewer};
use crate::api;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use airlift_package::PublicKey;
use airlift_protocol::management::{DeviceDetail, SetTagsRequest, UpdateEvent};
use airlift_protocol::state::DeviceStatus;
use airlift_protocol::DeviceId;
use airlift_store::{CurrentUpdate, DeploymentRecord};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

/// History events shown; the API has them all.
const HISTORY_SHOWN: usize = 500;

/// The key id of an Ed25519 public key in PEM form, as `airlift device
/// show` prints it.
pub fn key_id(pem: &str) -> Option<String> {
    PublicKey::from_pem(pem.trim())
        .ok()
        .map(|key| key.key_id().to_string())
}

fn device_id(text: &str) -> Result<DeviceId, PageError> {
    text.parse().map_err(|_| {
        PageError(ApiError::bad_request(format!(
            "{text:?} is not a device id"
        )))
    })
}

/// What the page shows besides the device: a notice after an action, and
/// the tag form as it was sent when the API refused it.
#[derive(Debug, Default)]
struct Shown {
    notice: Option<Result<String, String>>,
    tags_sent: Option<(String, String)>,
}

/// Everything the page reads.
struct Read {
    detail: DeviceDetail,
    current: Option<CurrentUpdate>,
    deployment: Option<DeploymentRecord>,
    offline_before: DateTime<Utc>,
    shadow: Option<airlift_protocol::shadow::DeviceShadow>,
}

async fn read(state: &AppState, viewer: &Viewer, id: DeviceId) -> Result<Read, PageError> {
    let detail = api::get_device(State(state.clone()), viewer.caller.clone(), ApiPath(id))
        .await?
        .0;
    let current = state.store().current_updates(&[id]).await?.pop();
    let deployment = match &current {
        Some(current) => state.store().deployment(current.deployment).await?,
        None => None,
    };
    Ok(Read {
        detail,
        current,
        deployment,
        offline_before: api::offline_cutoff(state),
        shadow: state.store().device_shadow(id).await?,
    })
}

/// The detail page's query: what an action just did.
#[derive(Debug, Deserialize)]
pub struct DetailQuery {
    done: Option<String>,
}

/// `GET /ui/devices/{id}`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Response {
    let id = match device_id(&id) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let notice = match query.done.as_deref() {
        Some("accept") => Some(Ok("Accepted.".to_owned())),
        Some("reject") => Some(Ok("Rejected.".to_owned())),
        Some("decommission") => Some(Ok("Decommissioned: its key no longer works.".to_owned())),
        Some("check-in") => Some(Ok(
            "Asked it to check in now: at once if it holds a push connection, else at its next poll."
                .to_owned(),
        )),
        Some("tags") => Some(Ok("Tags saved.".to_owned())),
        _ => None,
    };
    render(
        &state,
        &viewer,
        id,
        Shown {
            notice,
            ..Shown::default()
        },
        StatusCode::OK,
    )
    .await
}

/// `GET /ui/devices/{id}/fragment`: the live region alone.
pub async fn fragment(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let id = device_id(&id)?;
    let read = read(&state, &viewer, id).await?;
    Ok(live_region(&viewer, &read))
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    id: DeviceId,
    shown: Shown,
    status: StatusCode,
) -> Response {
    let read = match read(state, viewer, id).await {
        Ok(read) => read,
        Err(error) => return error.into_response(),
    };
    let title = identity_text(&read.detail.device);
    let body = html! {
        p { a href="/ui/devices" { "← All devices" } }
        @match &shown.notice {
            Some(Ok(words)) => div.notice role="status" { (words) },
            Some(Err(words)) => div.notice.bad role="alert" { (words) },
            None => {},
        }
        (live_region(viewer, &read))
        h2 #tags-heading { "Tags" }
        (tags(viewer, &read, shown.tags_sent.as_ref()))
    };
    let markup = layout::page(
        viewer,
        PageInfo {
            title: &title,
            nav: Nav::Devices,
            live: Some(format!("device:{id}")),
        },
        body,
    );
    (status, markup).into_response()
}

fn live_region(viewer: &Viewer, read: &Read) -> Markup {
    let device = &read.detail.device;
    html! {
        div #device data-live-on=(format!("device:{} everything", device.id))
            data-live-src=(format!("/ui/devices/{}/fragment", device.id)) {
            div.grid {
                section.card aria-labelledby="facts-heading" {
                    h2 #facts-heading { "Device" }
                    (facts(read))
                }
                section.card aria-labelledby="now-heading" {
                    h2 #now-heading { "Update under way" }
                    (current(read))
                    @if viewer.can_operate() { (controls(viewer, device.id, device.status)) }
                }
            }
            section.card aria-labelledby="inventory-heading" {
                h2 #inventory-heading { "Inventory" }
                (inventory(read))
            }
            @if let Some(shadow) = &read.shadow {
                section.card aria-labelledby="config-heading" {
                    h2 #config-heading { "Configuration" }
                    (super::device_shadow::section(shadow))
                }
            }
            h2 #history-heading { "Update history" }
            section.card aria-labelledby="history-heading" { (history(&read.detail.history)) }
        }
    }
}

fn facts(read: &Read) -> Markup {
    let device = &read.detail.device;
    let heard = device.last_check_in.unwrap_or(device.created_at);
    let offline = device.status == DeviceStatus::Accepted && heard < read.offline_before;
    html! {
        dl.facts {
            dt { "Id" } dd { code { (device.id) } }
            dt { "Status" } dd {
                (layout::status(device.status))
                @if offline {
                    " " span.status.status-offline { "offline" }
                    span.muted { " (not heard of for " (api::OFFLINE_POLLS) " poll intervals)" }
                }
            }
            @for (name, value) in &device.identity {
                dt { (name) } dd { (value) }
            }
            dt { "Key id" } dd {
                @match key_id(&device.public_key) {
                    Some(id) => code { (id) },
                    None => span.muted { "not an Ed25519 key this server reads" },
                }
            }
            dt { "Tags" } dd {
                @for tag in &device.tags { span.tag { (tag) } }
                @if device.tags.is_empty() { span.muted { "none" } }
            }
            dt { "First contact" } dd { (layout::time(device.created_at)) }
            dt { "Last check-in" } dd { (layout::time_or_never(device.last_check_in, "never")) }
        }
    }
}

fn current(read: &Read) -> Markup {
    let Some(current) = &read.current else {
        return layout::empty(
            "This device is in no deployment.",
            html! { p { "A deployment that targets it (by id, tag or attributes) shows here." } },
        );
    };
    let update = &current.update;
    html! {
        dl.facts {
            dt { "Deployment" } dd {
                a href=(format!("/ui/deployments/{}", current.deployment)) {
                    @match &read.deployment {
                        Some(d) => (d.name),
                        None => code { (current.deployment) },
                    }
                }
                @if let Some(d) = &read.deployment { " " (layout::status(d.status)) }
            }
            dt { "State" } dd { (update_cell(Some(current))) }
            dt { "Since" } dd { (layout::time(update.updated_at)) }
            @if let Some(progress) = update.progress {
                dt { "Downloaded" } dd {
                    (layout::bytes(progress.done)) " of " (layout::bytes(progress.total))
                    " (" (percent(progress.done, progress.total)) " %)"
                    @if let Some(at) = update.progress_at { span.muted { ", reported " (layout::time(at)) } }
                }
            }
            @if let Some(message) = &update.message {
                dt { "Message" } dd { pre.reason { (message) } }
            }
        }
    }
}

/// The status changes a device's status allows (the API refuses the rest).
fn allowed(status: DeviceStatus) -> (bool, bool, bool, bool) {
    // (accept, reject, decommission, check in)
    match status {
        DeviceStatus::Pending => (true, true, true, false),
        DeviceStatus::Accepted => (false, true, true, true),
        DeviceStatus::Rejected => (true, false, true, false),
        DeviceStatus::Preauthorized => (false, true, true, false),
        DeviceStatus::Decommissioned => (false, false, false, false),
    }
}

fn controls(viewer: &Viewer, id: DeviceId, status: DeviceStatus) -> Markup {
    let (accept, reject, decommission, check_in) = allowed(status);
    let action = format!("/ui/devices/{id}/action");
    html! {
        form.actions method="post" action=(action) {
            (csrf_field(viewer))
            @if check_in { button type="submit" name="action" value="check-in" { "Check in now" } }
            @if accept { button type="submit" name="action" value="accept" { "Accept" } }
            @if reject { button.danger type="submit" name="action" value="reject" { "Reject" } }
        }
        @if decommission {
            details {
                summary { "Decommission…" }
                form method="post" action=(action) {
                    (csrf_field(viewer))
                    p.muted { "Retires the device for good: its key stops working, and it cannot be accepted again. "
                        "A replacement needs a key of its own." }
                    button.danger type="submit" name="action" value="decommission" { "Decommission this device" }
                }
            }
        }
    }
}

fn inventory(read: &Read) -> Markup {
    let device = &read.detail.device;
    html! {
        dl.facts {
            dt { "Device type" } dd { (device.device_type.as_deref().unwrap_or("not reported")) }
            dt { "Hardware revision" } dd { (device.hardware_revision.as_deref().unwrap_or("not reported")) }
            dt { "Security version" } dd { (device.security_version) }
        }
        div.grid {
            div {
                h3 { "Installed software" }
                (pairs(&device.installed, "Name", "Version", "Nothing reported yet."))
            }
            div {
                h3 { "Attributes" }
                (pairs(&device.attributes, "Name", "Value", "None reported."))
            }
        }
    }
}

fn pairs(
    map: &std::collections::BTreeMap<String, String>,
    key: &str,
    value: &str,
    none: &str,
) -> Markup {
    html! {
        @if map.is_empty() {
            p.muted { (none) }
        } @else {
            table {
                thead { tr { th { (key) } th { (value) } } }
                tbody { @for (k, v) in map { tr { td { (k) } td { (v) } } } }
            }
        }
    }
}

fn history(events: &[UpdateEvent]) -> Markup {
    if events.is_empty() {
        return layout::empty("No update has been recorded for this device.", html! {});
    }
    html! {
        ol.timeline reversed {
            @for event in events.iter().take(HISTORY_SHOWN) {
                li {
                    (layout::time(event.at)) " · " (layout::status(event.state))
                    " in deployment "
                    a href=(format!("/ui/deployments/{}", event.deployment_id)) {
                        code { (event.deployment_id.to_string().get(..8).unwrap_or_default()) }
                    }
                    @if !event.applied { span.muted { " (a late or repeated report: kept, not applied)" } }
                    @if let Some(message) = &event.message {
                        @if event.state.is_failure() {
                            pre.reason { (message) }
                        } @else {
                            div.muted { (message) }
                        }
                    }
                }
            }
        }
        @if events.len() > HISTORY_SHOWN {
            p.muted { (events.len() - HISTORY_SHOWN) " older events are not shown; "
                code { "GET /api/v1/devices/ID" } " has them all." }
        }
    }
}

fn tags(viewer: &Viewer, read: &Read, sent: Option<&(String, String)>) -> Markup {
    let device = &read.detail.device;
    if !viewer.can_operate() {
        return html! {
            div.card {
                @for tag in &device.tags { span.tag { (tag) } }
                @if device.tags.is_empty() { p.muted { "No tags." } }
            }
        };
    }
    let (value, error) = match sent {
        Some((typed, error)) => (typed.clone(), Some(error.as_str())),
        None => (device.tags.join(" "), None),
    };
    html! {
        form.card method="post" action=(format!("/ui/devices/{}/tags", device.id)) {
            (csrf_field(viewer))
            label for="tags" { "Tags, separated by spaces or commas" }
            input #tags type="text" name="tags" value=(value) aria-invalid=[error.map(|_| "true")]
                aria-describedby=(if error.is_some() { "tags-error tags-help" } else { "tags-help" });
            @if let Some(error) = error {
                p.field-error #tags-error role="alert" { (error) }
            }
            p.muted #tags-help { "Deployments can target a tag; a device that gains one joins them at its next check-in." }
            button type="submit" { "Save tags" }
        }
    }
}

/// `POST /ui/devices/{id}/tags`: replaces the tags through the API.
pub async fn set_tags(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: ActionForm,
) -> Response {
    let id = match device_id(&id) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let typed = form.value("tags").unwrap_or_default().to_owned();
    let tags: Vec<String> = typed
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let caller = form.viewer.caller.clone();
    let result = api::set_device_tags(
        State(state.clone()),
        caller,
        ApiPath(id),
        ApiJson(SetTagsRequest { tags }),
    )
    .await;
    match result {
        Ok(_) => Redirect::to(&format!("/ui/devices/{id}?done=tags")).into_response(),
        Err(error)
            if error.status().is_client_error() && error.status() != StatusCode::NOT_FOUND =>
        {
            let words = layout::error_words(&error);
            let words = match layout::field_of(&words) {
                Some(("tags", rest)) => rest.to_owned(),
                _ => words.clone(),
            };
            let shown = Shown {
                tags_sent: Some((typed, words)),
                ..Shown::default()
            };
            render(&state, &form.viewer, id, shown, error.status()).await
        }
        Err(error) => PageError(error).into_response(),
    }
}

/// `POST /ui/devices/{id}/action`: accept, reject, decommission or ask to
/// check in, through the API's handler.
pub async fn action(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: ActionForm,
) -> Response {
    let id = match device_id(&id) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let caller = form.viewer.caller.clone();
    let s = || State(state.clone());
    let (word, result) = match form.value("action") {
        Some("accept") => (
            "accept",
            api::accept_device(s(), caller, ApiPath(id)).await.map(drop),
        ),
        Some("reject") => (
            "reject",
            api::reject_device(s(), caller, ApiPath(id)).await.map(drop),
        ),
        Some("decommission") => (
            "decommission",
            api::decommission_device(s(), caller, ApiPath(id))
                .await
                .map(drop),
        ),
        Some("check-in") => (
            "check-in",
            api::request_check_in(s(), caller, ApiPath(id))
                .await
                .map(drop),
        ),
        _ => {
            return PageError(ApiError::bad_request(
                "action: must be accept, reject, decommission or check-in",
            ))
            .into_response()
        }
    };
    match result {
        Ok(()) => Redirect::to(&format!("/ui/devices/{id}?done={word}")).into_response(),
        Err(error)
            if error.status().is_client_error() && error.status() != StatusCode::NOT_FOUND =>
        {
            let shown = Shown {
                notice: Some(Err(layout::error_words(&error))),
                ..Shown::default()
            };
            render(&state, &form.viewer, id, shown, error.status()).await
        }
        Err(error) => PageError(error).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_id_is_the_one_the_cli_shows() {
        let key = airlift_package::SigningKey::generate().expect("key");
        let pem = key.public_key().to_pem().expect("pem");
        assert_eq!(key_id(&pem), Some(key.public_key().key_id().to_string()));
        assert_eq!(key_id("not a key"), None);
    }

    #[test]
    fn controls_follow_the_status_and_a_retired_device_has_none() {
        assert_eq!(allowed(DeviceStatus::Pending), (true, true, true, false));
        assert_eq!(allowed(DeviceStatus::Accepted), (false, true, true, true));
        assert_eq!(
            allowed(DeviceStatus::Decommissioned),
            (false, false, false, false)
        );
    }

    #[test]
    fn failure_reasons_are_shown_whole_and_escaped() {
        let reason = "health check failed:\n<script>alert(1)</script>\nexit 3";
        let event = UpdateEvent {
            deployment_id: airlift_protocol::DeploymentId::new(),
            device_id: DeviceId::new(),
            state: airlift_protocol::state::UpdateState::RolledBack,
            applied: true,
            message: Some(reason.into()),
            at: Utc::now(),
        };
        let markup = history(&[event]).into_string();
        assert!(!markup.contains("<script>"), "{markup}");
        assert!(
            markup.contains("&lt;script&gt;alert(1)&lt;/script&gt;\nexit 3"),
            "{markup}"
        );
        assert!(markup.contains("<pre class=\"reason\">"), "{markup}");
    }
}
