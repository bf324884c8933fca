//! Bulk actions on the device list's selection: accept, reject, add or
//! remove a tag, each device through the API's own handler, in the
//! caller's name (so roles, validation and audit are the API's). The first
//! refusal stops the run and is shown on the list, next to the field it
//! names, with the selection and the tag as they were sent.

use super::devices::{placed, render, ListQuery, Sent};
use super::layout::{self, PageError};
use super::session::{ActionForm, Viewer};
use crate::api;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use airlift_protocol::management::SetTagsRequest;
use airlift_protocol::DeviceId;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

/// Largest selection one bulk action takes.
const MAX_SELECTION: usize = 1000;

/// What a bulk action does to one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bulk {
    Accept,
    Reject,
    AddTag,
    RemoveTag,
}

impl Bulk {
    fn parse(word: Option<&str>) -> Option<Bulk> {
        Some(match word? {
            "accept" => Bulk::Accept,
            "reject" => Bulk::Reject,
            "add-tag" => Bulk::AddTag,
            "remove-tag" => Bulk::RemoveTag,
            _ => return None,
        })
    }

    fn word(self) -> &'static str {
        match self {
            Bulk::Accept => "accept",
            Bulk::Reject => "reject",
            Bulk::AddTag => "add-tag",
            Bulk::RemoveTag => "remove-tag",
        }
    }
}

/// Applies `bulk` to one device through the API's handler.
async fn apply(
    state: &AppState,
    viewer: &Viewer,
    bulk: Bulk,
    id: DeviceId,
    tag: &str,
) -> Result<(), ApiError> {
    let caller = viewer.caller.clone();
    match bulk {
        Bulk::Accept => api::accept_device(State(state.clone()), caller, ApiPath(id))
            .await
            .map(drop),
        Bulk::Reject => api::reject_device(State(state.clone()), caller, ApiPath(id))
            .await
            .map(drop),
        Bulk::AddTag | Bulk::RemoveTag => {
            let device = state
                .store()
                .device(id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no device {id}")))?;
            let mut tags = device.tags;
            if bulk == Bulk::AddTag {
                tags.push(tag.to_owned());
            } else {
                tags.retain(|t| t != tag);
            }
            let request = SetTagsRequest { tags };
            api::set_device_tags(State(state.clone()), caller, ApiPath(id), ApiJson(request))
                .await
                .map(drop)
        }
    }
}

/// `POST /ui/devices/bulk`: accepts, rejects, tags or untags the selected
/// devices, one by one through the API's handlers; stops at the first
/// refusal and shows it on the list.
pub async fn bulk(State(state): State<AppState>, form: ActionForm) -> Response {
    let back = ListQuery::parse(form.value("back").unwrap_or_default());
    let mut sent = Sent {
        tag: form.value("tag").unwrap_or_default().to_owned(),
        ..Sent::default()
    };
    let Some(action) = Bulk::parse(form.value("action")) else {
        return PageError(ApiError::bad_request(
            "action: must be accept, reject, add-tag or remove-tag",
        ))
        .into_response();
    };
    for value in form.values("device").take(MAX_SELECTION + 1) {
        match value.parse::<DeviceId>() {
            Ok(id) => {
                sent.selected.insert(id);
            }
            Err(_) => {
                sent.error = Some((Some("device"), format!("{value:?} is not a device id")));
                return render(&state, &form.viewer, &back, sent).await;
            }
        }
    }
    if sent.selected.len() > MAX_SELECTION {
        sent.error = Some((
            Some("device"),
            format!("select at most {MAX_SELECTION} devices at once"),
        ));
    } else if sent.selected.is_empty() {
        sent.error = Some((Some("device"), "select at least one device".into()));
    }
    if sent.error.is_some() {
        let mut response = render(&state, &form.viewer, &back, sent).await;
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    }
    let mut done = 0usize;
    for id in sent.selected.clone() {
        if let Err(error) = apply(&state, &form.viewer, action, id, &sent.tag).await {
            if !error.status().is_client_error() {
                return PageError(error).into_response();
            }
            let status = error.status();
            let (field, words) = placed(layout::error_words(&error));
            let words = if done > 0 {
                format!(
                    "{words} (after {done} of {} devices were changed)",
                    sent.selected.len()
                )
            } else {
                words
            };
            sent.error = Some((field, words));
            let mut response = render(&state, &form.viewer, &back, sent).await;
            *response.status_mut() = status;
            return response;
        }
        done += 1;
    }
    let mut target = back.encode_with_page();
    if !target.is_empty() {
        target.push('&');
    }
    target.push_str(&format!("done={}&count={done}", action.word()));
    Redirect::to(&format!("/ui/devices?{target}")).into_response()
}
