//! `GET /api/device/v1/push`: a device's stream of nudges, as server-sent
//! events, until its token expires (it reconnects with a fresh one) or the
//! server shuts down.

use crate::auth::DeviceCaller;
use crate::error::ApiResult;
use crate::state::AppState;
use airlift_protocol::push::{Nudge, KEEPALIVE_SECS, NUDGE_EVENT};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use std::convert::Infallible;
use std::time::Duration;

/// Hold a stream of "check in now" nudges.
///
/// Each event (`event: check-in`, data `{"reason": …}`) asks the device to
/// check in; it carries nothing else. A comment line is sent every 15
/// seconds on an idle stream. The stream ends when the device token
/// expires: authenticate again and reconnect.
#[utoipa::path(
    get,
    path = "/api/device/v1/push",
    tag = "device",
    security(("device_token" = [])),
    responses(
        (status = 200, description = "A stream of server-sent events, each a nudge (the schema is one event's)", content_type = "text/event-stream", body = crate::openapi::NudgeEvent),
        (status = 401, description = "No device token, an invalid or expired one, or the device is no longer accepted: authenticate again", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn push(
    State(state): State<AppState>,
    caller: DeviceCaller,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let (registration, nudges) = state.push().register(caller.device_id);
    let token_left = caller.expires_at - chrono::Utc::now().timestamp();
    let expired = tokio::time::sleep(Duration::from_secs(token_left.max(0) as u64));
    let ends = futures::future::select(Box::pin(expired), Box::pin(state.push().closing()));
    let events = futures::stream::unfold(
        (nudges, registration),
        |(mut nudges, registration)| async move {
            let nudge = nudges.recv().await?;
            Some((Ok(event(nudge)), (nudges, registration)))
        },
    )
    .take_until(ends);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(KEEPALIVE_SECS))))
}

fn event(nudge: Nudge) -> Event {
    let data = serde_json::to_string(&nudge).unwrap_or_default();
    Event::default().event(NUDGE_EVENT).data(data)
}
