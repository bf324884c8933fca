//! Live pages: the store's change feed, turned into topics a page listens
//! to (`overview`, `devices`, `device:ID`, `deployments`, `deployment:ID`)
//! and sent to browsers as server-sent events.
//!
//! One task per instance follows the feed (started by the first viewer)
//! and broadcasts topics; each open page holds a receiver and hears only its
//! own topics. An event carries nothing but its name: the page fetches the
//! fragment it shows again, so no viewer polls the database while nothing
//! changes, and `dashboard.js` refreshes a region at most once per 300 ms.

use super::session::Viewer;
use crate::error::ApiError;
use crate::state::AppState;
use airlift_store::StoreEvent;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::Once;
use std::time::Duration;
use tokio::sync::broadcast;

/// Topics a page may listen to at once.
const MAX_TOPICS: usize = 8;
/// How many topics a slow page may fall behind before it is told to
/// refresh everything instead.
const BACKLOG: usize = 1024;

/// What changed, as pages name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Topic {
    /// Anything the overview counts.
    Overview,
    /// The device list (a device's status, tags, inventory or update).
    Devices,
    /// One device.
    Device(airlift_protocol::DeviceId),
    /// The deployment list.
    Deployments,
    /// One deployment (its phases, breaker, or a device's update in it).
    Deployment(airlift_protocol::DeploymentId),
    /// The feed may have missed changes: every page refreshes.
    Everything,
}

impl Topic {
    /// The event name a page listens for.
    pub fn name(&self) -> String {
        match self {
            Topic::Overview => "overview".into(),
            Topic::Devices => "devices".into(),
            Topic::Device(id) => format!("device:{id}"),
            Topic::Deployments => "deployments".into(),
            Topic::Deployment(id) => format!("deployment:{id}"),
            Topic::Everything => "everything".into(),
        }
    }

    fn parse(name: &str) -> Option<Topic> {
        Some(match name.split_once(':') {
            None => match name {
                "overview" => Topic::Overview,
                "devices" => Topic::Devices,
                "deployments" => Topic::Deployments,
                _ => return None,
            },
            Some(("device", id)) => Topic::Device(id.parse().ok()?),
            Some(("deployment", id)) => Topic::Deployment(id.parse().ok()?),
            Some(_) => return None,
        })
    }

    /// The topics a store event touches.
    pub fn of(event: &StoreEvent) -> Vec<Topic> {
        match *event {
            StoreEvent::DeviceChanged(id) | StoreEvent::InventoryChanged(id) => {
                vec![Topic::Overview, Topic::Devices, Topic::Device(id)]
            }
            StoreEvent::DeploymentChanged(id) => {
                vec![Topic::Overview, Topic::Deployments, Topic::Deployment(id)]
            }
            StoreEvent::UpdateChanged { deployment, device } => vec![
                Topic::Overview,
                Topic::Devices,
                Topic::Device(device),
                Topic::Deployments,
                Topic::Deployment(deployment),
            ],
            StoreEvent::ShadowChanged(id) => vec![Topic::Device(id)],
            StoreEvent::CheckInRequested(_) | StoreEvent::Interrupted => Vec::new(),
            // An event this version does not know: refresh to be safe.
            _ => vec![Topic::Everything],
        }
    }
}

/// The instance's broadcast of topics.
#[derive(Debug)]
pub struct LiveHub {
    sender: broadcast::Sender<Topic>,
    following: Once,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
            following: Once::new(),
        }
    }
}

impl LiveHub {
    /// A receiver of every topic, following the store's feed from now on.
    fn subscribe(&self, state: &AppState) -> broadcast::Receiver<Topic> {
        let receiver = self.sender.subscribe();
        self.following.call_once(|| {
            let feed = state.store().changes();
            let sender = self.sender.clone();
            tokio::spawn(follow(feed, sender));
        });
        receiver
    }
}

async fn follow(mut feed: airlift_store::ChangeFeed, sender: broadcast::Sender<Topic>) {
    while let Some(event) = feed.recv().await {
        for topic in Topic::of(&event) {
            // No receiver is no error: nobody is looking right now.
            let _ = sender.send(topic);
        }
    }
}

/// `GET /ui/live?topics=…`'s query.
#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    topics: String,
}

/// `GET /ui/live`: a stream of the named topics' changes.
pub async fn events(
    State(state): State<AppState>,
    _viewer: Viewer,
    Query(query): Query<LiveQuery>,
) -> Response {
    let wanted: BTreeSet<Topic> = query
        .topics
        .split_whitespace()
        .take(MAX_TOPICS)
        .filter_map(Topic::parse)
        .collect();
    if wanted.is_empty() {
        return super::PageError(ApiError::bad_request(
            "topics: name at least one of overview, devices, deployments, device:ID, deployment:ID",
        ))
        .into_response();
    }
    let receiver = state.live().subscribe(&state);
    let connected = ConnectedGauge::new();
    let stream = futures::stream::unfold(
        (receiver, wanted, connected),
        |(mut receiver, wanted, connected)| async move {
            let names = loop {
                match receiver.recv().await {
                    Ok(Topic::Everything) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        break wanted.iter().map(Topic::name).collect::<Vec<_>>();
                    }
                    Ok(topic) if wanted.contains(&topic) => break vec![topic.name()],
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            };
            let events: Vec<Result<Event, std::convert::Infallible>> = names
                .into_iter()
                .map(|name| Ok(Event::default().event(name).data("changed")))
                .collect();
            Some((futures::stream::iter(events), (receiver, wanted, connected)))
        },
    );
    use futures::StreamExt;
    Sse::new(stream.flatten())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Counts open live pages in `/metrics` for as long as it lives.
struct ConnectedGauge;

impl ConnectedGauge {
    fn new() -> Self {
        metrics::gauge!("airlift_dashboard_live_connections").increment(1.0);
        Self
    }
}

impl Drop for ConnectedGauge {
    fn drop(&mut self) {
        metrics::gauge!("airlift_dashboard_live_connections").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_protocol::{DeploymentId, DeviceId};

    #[test]
    fn topic_names_round_trip_and_strangers_are_ignored() {
        for topic in [
            Topic::Overview,
            Topic::Devices,
            Topic::Device(DeviceId::new()),
            Topic::Deployments,
            Topic::Deployment(DeploymentId::new()),
        ] {
            assert_eq!(Topic::parse(&topic.name()), Some(topic));
        }
        for stranger in [
            "",
            "everything",
            "device:",
            "device:x",
            "package:1",
            "deployment",
        ] {
            assert_eq!(Topic::parse(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn a_report_reaches_its_deployment_and_device_pages() {
        let deployment = DeploymentId::new();
        let device = DeviceId::new();
        let topics = Topic::of(&StoreEvent::UpdateChanged { deployment, device });
        assert!(topics.contains(&Topic::Deployment(deployment)));
        assert!(topics.contains(&Topic::Device(device)));
        assert!(topics.contains(&Topic::Overview));
        assert!(Topic::of(&StoreEvent::CheckInRequested(device)).is_empty());
        assert_eq!(Topic::of(&StoreEvent::Listening), vec![Topic::Everything]);
    }
}
