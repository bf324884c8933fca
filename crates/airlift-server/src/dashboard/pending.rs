//! The admission queue: devices that made first contact and wait for an
//! operator to accept or reject them.

use super::layout::{self, csrf_field, Nav, PageError, PageInfo};
use super::session::{ActionForm, Viewer};
use crate::api;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use airlift_protocol::management::Device;
use airlift_protocol::state::DeviceStatus;
use airlift_protocol::DeviceId;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

/// Devices per page of the queue.
const PER_PAGE: u32 = 100;

/// The queue page's query.
#[derive(Debug, Deserialize)]
pub struct PendingQuery {
    page: Option<u32>,
    /// How many devices the last decision accepted, shown once.
    accepted: Option<u32>,
    /// How many it rejected.
    rejected: Option<u32>,
}

/// `GET /ui/pending`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<PendingQuery>,
) -> Result<Markup, PageError> {
    let page = query.page.unwrap_or(1).max(1);
    let listed = api::list_devices(
        State(state),
        viewer.caller.clone(),
        ApiQuery(api::DeviceQuery {
            status: Some(DeviceStatus::Pending),
            page: Some(page),
            per_page: Some(PER_PAGE),
            ..Default::default()
        }),
    )
    .await?
    .0;
    let body = html! {
        @if let Some(n) = query.accepted {
            div.notice role="status" { "Accepted " (n) " device" @if n != 1 { "s" } "." }
        }
        @if let Some(n) = query.rejected {
            div.notice role="status" { "Rejected " (n) " device" @if n != 1 { "s" } "." }
        }
        div.card data-live-on="devices" {
            @if listed.items.is_empty() {
                (layout::empty(
                    "No device is waiting for admission.",
                    html! {
                        p { "A device appears here when its agent first contacts this server with a key the server does not know. "
                            "Pre-authorise keys with " code { "airlift device preauthorize" } " to admit devices without this step." }
                    },
                ))
            } @else {
                (queue(&viewer, &listed.items))
                (layout::pager("/ui/pending", "", page, PER_PAGE, listed.total))
            }
        }
    };
    Ok(layout::page(
        &viewer,
        PageInfo {
            title: "Pending devices",
            nav: Nav::Pending,
            live: Some("devices".into()),
        },
        body,
    ))
}

fn queue(viewer: &Viewer, devices: &[Device]) -> Markup {
    let operate = viewer.can_operate();
    let table = html! {
        table {
            thead { tr {
                @if operate {
                    th { input type="checkbox" data-select-all="device" aria-label="Select all"; }
                }
                th { "Identity" } th { "Type" } th.wide-only { "Key" } th { "First contact" }
            } }
            tbody {
                @for device in devices {
                    tr {
                        @if operate {
                            td { input type="checkbox" name="device" value=(device.id)
                                aria-label=(format!("Select {}", identity_text(device))); }
                        }
                        td { a href=(format!("/ui/devices/{}", device.id)) { (identity_text(device)) } }
                        td { (device.device_type.as_deref().unwrap_or("—")) }
                        td.wide-only { code { (key_start(&device.public_key)) "…" } }
                        td { (layout::time(device.created_at)) }
                    }
                }
            }
        }
    };
    // A viewer may not decide: the list alone, no form around it.
    if !operate {
        return table;
    }
    html! {
        form method="post" action="/ui/pending/decide" {
            (csrf_field(viewer))
            (table)
            div.actions {
                button type="submit" name="decision" value="accept" { "Accept selected" }
                button.danger type="submit" name="decision" value="reject" { "Reject selected" }
            }
        }
    }
}

/// A device's identity as one line of text (`serial=A1, mac=…`).
pub fn identity_text(device: &Device) -> String {
    if device.identity.is_empty() {
        return device.id.to_string();
    }
    device
        .identity
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_start(key: &str) -> &str {
    let end = key
        .char_indices()
        .nth(16)
        .map_or(key.len(), |(index, _)| index);
    &key[..end]
}

/// Largest selection one decision takes.
const MAX_SELECTION: usize = 1000;

/// `POST /ui/pending/decide`: accepts or rejects the selected devices, each
/// through the API's own handler.
pub async fn decide(State(state): State<AppState>, form: ActionForm) -> Response {
    let accept = match form.value("decision") {
        Some("accept") => true,
        Some("reject") => false,
        _ => {
            return PageError(ApiError::bad_request("decision: must be accept or reject"))
                .into_response()
        }
    };
    let mut ids = Vec::new();
    for value in form.values("device").take(MAX_SELECTION + 1) {
        match value.parse::<DeviceId>() {
            Ok(id) => ids.push(id),
            Err(_) => {
                return PageError(ApiError::bad_request(format!(
                    "device: {value:?} is not a device id"
                )))
                .into_response()
            }
        }
    }
    if ids.len() > MAX_SELECTION {
        return PageError(ApiError::bad_request(format!(
            "device: select at most {MAX_SELECTION} devices at once"
        )))
        .into_response();
    }
    let mut done = 0usize;
    for id in &ids {
        let caller = form.viewer.caller.clone();
        let result = if accept {
            api::accept_device(State(state.clone()), caller, ApiPath(*id)).await
        } else {
            api::reject_device(State(state.clone()), caller, ApiPath(*id)).await
        };
        if let Err(error) = result {
            return PageError(error).into_response();
        }
        done += 1;
    }
    let outcome = if accept { "accepted" } else { "rejected" };
    Redirect::to(&format!("/ui/pending?{outcome}={done}")).into_response()
}
