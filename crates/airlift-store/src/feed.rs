//! The store's change feed: every committed change to a device record or a
//! deployment, as events, for whoever keeps something derived from them
//! (the server's in-memory device records, and later push to devices).
//!
//! Each backend announces a change inside the transaction that makes it:
//! PostgreSQL with `NOTIFY` on a channel of the schema (delivered at commit,
//! to every server instance listening, this one included); SQLite, which one
//! process uses alone, in-process after the commit. A subscriber reads
//! [`StoreEvent`]s from a [`ChangeFeed`].
//!
//! A feed can go deaf: the PostgreSQL listener's connection drops, or a
//! subscriber falls so far behind that events were dropped for it. It then
//! says so — [`StoreEvent::Interrupted`] while it hears nothing,
//! [`StoreEvent::Listening`] once it hears again — and a subscriber forgets
//! everything it derived, since changes in between went unheard.

use airlift_protocol::{DeploymentId, DeviceId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events a subscriber may be behind by before it is told it missed some.
const BACKLOG: usize = 4096;

/// Something that changed in the store, or a change in what the feed hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreEvent {
    /// A device was created, or its status, identity or tags changed.
    DeviceChanged(DeviceId),
    /// A device reported an inventory that differs from the one stored.
    /// (Moving only its `last_check_in` is not a change here.)
    InventoryChanged(DeviceId),
    /// A deployment was created, cancelled, paused, resumed or finished,
    /// moved to another phase, or admitted devices.
    DeploymentChanged(DeploymentId),
    /// Someone asked the device to check in now; nothing was written.
    CheckInRequested(DeviceId),
    /// A device's update in a deployment moved to another state (a report,
    /// or the server's own decision such as a timeout).
    UpdateChanged {
        /// The deployment.
        deployment: DeploymentId,
        /// The device.
        device: DeviceId,
    },
    /// Devices whose update in this deployment had ended (failed) were
    /// offered it again by an operator (`deployment retry`): a state
    /// remembered as final for this deployment is final no longer.
    UpdatesReopened(DeploymentId),
    /// A device's own desired shadow document or its reported one changed.
    ShadowChanged(DeviceId),
    /// A group's desired shadow document (a tag's, an attribute filter's)
    /// was created, changed or deleted. It names no group: a reader keeps
    /// the groups as one list.
    GroupShadowsChanged,
    /// The feed hears nothing from now until the next
    /// [`Listening`](Self::Listening): trust nothing derived from the store.
    Interrupted,
    /// The feed hears every change from now on. Changes before may have gone
    /// unheard: forget everything derived from the store until now.
    Listening,
}

impl StoreEvent {
    /// The text a `NOTIFY` carries: `<kind>:<id>@<origin>`, where `origin`
    /// names the store (the server instance) that made the change. `None`
    /// for the feed's own state, which is never sent.
    pub(crate) fn payload(&self, origin: &str) -> Option<String> {
        let (kind, id) = match self {
            Self::DeviceChanged(id) => ("device", id.to_string()),
            Self::InventoryChanged(id) => ("inventory", id.to_string()),
            Self::DeploymentChanged(id) => ("deployment", id.to_string()),
            Self::CheckInRequested(id) => ("check-in", id.to_string()),
            Self::UpdateChanged { deployment, device } => {
                ("update", format!("{deployment},{device}"))
            }
            Self::UpdatesReopened(id) => ("reopened", id.to_string()),
            Self::ShadowChanged(id) => ("shadow", id.to_string()),
            Self::GroupShadowsChanged => ("group-shadows", "*".to_owned()),
            Self::Interrupted | Self::Listening => return None,
        };
        Some(format!("{kind}:{id}@{origin}"))
    }

    /// Reads a `NOTIFY` payload back, with its origin (empty if it names
    /// none); `None` for anything else (a heartbeat, or a kind of event a
    /// newer instance sends).
    pub(crate) fn from_payload(payload: &str) -> Option<(Self, &str)> {
        let (payload, origin) = payload.split_once('@').unwrap_or((payload, ""));
        let (kind, id) = payload.split_once(':')?;
        let event = match kind {
            "device" => Self::DeviceChanged(id.parse().ok()?),
            "inventory" => Self::InventoryChanged(id.parse().ok()?),
            "deployment" => Self::DeploymentChanged(id.parse().ok()?),
            "check-in" => Self::CheckInRequested(id.parse().ok()?),
            "reopened" => Self::UpdatesReopened(id.parse().ok()?),
            "shadow" => Self::ShadowChanged(id.parse().ok()?),
            "group-shadows" if id == "*" => Self::GroupShadowsChanged,
            "update" => {
                let (deployment, device) = id.split_once(',')?;
                Self::UpdateChanged {
                    deployment: deployment.parse().ok()?,
                    device: device.parse().ok()?,
                }
            }
            _ => return None,
        };
        Some((event, origin))
    }
}

/// An event as a subscriber hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// What happened.
    pub event: StoreEvent,
    /// Whether this process made the change (always, on SQLite). Work that
    /// must be done once per change, not once per instance — publishing to
    /// an MQTT broker — is done by the instance that made it.
    pub local: bool,
}

/// One subscriber's stream of [`StoreEvent`]s, from
/// [`Store::changes`](crate::Store::changes).
///
/// Its first event says whether the feed hears changes at the moment of
/// subscribing ([`StoreEvent::Listening`]) or not
/// ([`StoreEvent::Interrupted`]).
#[derive(Debug)]
pub struct ChangeFeed {
    first: Option<StoreEvent>,
    events: broadcast::Receiver<Heard>,
    live: Arc<AtomicBool>,
}

impl ChangeFeed {
    /// The next event; `None` once the store is gone.
    ///
    /// A subscriber that fell more than a few thousand events behind gets
    /// [`StoreEvent::Listening`] (or `Interrupted`, if the feed is deaf at
    /// that moment) in place of the events it missed.
    pub async fn recv(&mut self) -> Option<StoreEvent> {
        self.recv_heard().await.map(|heard| heard.event)
    }

    /// [`recv`](Self::recv), saying also whether this process made the
    /// change. The feed's own state (`Listening`, `Interrupted`) is local.
    pub async fn recv_heard(&mut self) -> Option<Heard> {
        let local = |event| Heard { event, local: true };
        if let Some(first) = self.first.take() {
            return Some(local(first));
        }
        match self.events.recv().await {
            Ok(heard) => Some(heard),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "change feed subscriber fell behind");
                Some(local(if self.live.load(Ordering::Acquire) {
                    StoreEvent::Listening
                } else {
                    StoreEvent::Interrupted
                }))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// The sending side, shared by a backend and its listener task.
#[derive(Debug)]
pub(crate) struct Hub {
    events: broadcast::Sender<Heard>,
    /// Names this store in the notifications it sends, so that it can tell
    /// its own changes from other instances'.
    pub(crate) origin: String,
    live: Arc<AtomicBool>,
    /// Held while the state changes or a subscriber joins, so a subscriber's
    /// first event and the events after it agree.
    state: Mutex<()>,
}

impl Hub {
    /// A hub that hears changes (`live`) or not yet.
    pub(crate) fn new(live: bool) -> Arc<Self> {
        let (events, _) = broadcast::channel(BACKLOG);
        Arc::new(Self {
            events,
            origin: uuid::Uuid::new_v4().simple().to_string(),
            live: Arc::new(AtomicBool::new(live)),
            state: Mutex::new(()),
        })
    }

    pub(crate) fn subscribe(&self) -> ChangeFeed {
        let _state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live.load(Ordering::Acquire);
        ChangeFeed {
            first: Some(if live {
                StoreEvent::Listening
            } else {
                StoreEvent::Interrupted
            }),
            events: self.events.subscribe(),
            live: Arc::clone(&self.live),
        }
    }

    /// Passes a change on to every subscriber (none is fine); `local` if
    /// this process made it.
    pub(crate) fn publish(&self, event: StoreEvent, local: bool) {
        let _ = self.events.send(Heard { event, local });
    }

    /// Records whether the feed hears changes, and tells subscribers.
    pub(crate) fn set_live(&self, live: bool) {
        let _state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.live.store(live, Ordering::Release);
        let event = if live {
            StoreEvent::Listening
        } else {
            StoreEvent::Interrupted
        };
        self.publish(event, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_unknown_ones_are_ignored() {
        for event in [
            StoreEvent::DeviceChanged(DeviceId::new()),
            StoreEvent::InventoryChanged(DeviceId::new()),
            StoreEvent::DeploymentChanged(DeploymentId::new()),
            StoreEvent::CheckInRequested(DeviceId::new()),
            StoreEvent::ShadowChanged(DeviceId::new()),
            StoreEvent::GroupShadowsChanged,
            StoreEvent::UpdateChanged {
                deployment: DeploymentId::new(),
                device: DeviceId::new(),
            },
        ] {
            let payload = event.payload("0a1b").expect("a change has a payload");
            assert_eq!(StoreEvent::from_payload(&payload), Some((event, "0a1b")));
        }
        // An older instance's payload names no origin.
        let device = DeviceId::new();
        assert_eq!(
            StoreEvent::from_payload(&format!("device:{device}")),
            Some((StoreEvent::DeviceChanged(device), ""))
        );
        assert_eq!(StoreEvent::Listening.payload("0a1b"), None);
        for other in [
            "",
            "device:",
            "device:not-a-uuid",
            "package:x",
            "update:not-a-pair",
            "shadow:x",
            "group-shadows:tag:x",
            "heartbeat",
            "@x",
        ] {
            assert_eq!(StoreEvent::from_payload(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn a_subscriber_first_hears_the_state_then_the_changes() {
        let hub = Hub::new(false);
        let mut feed = hub.subscribe();
        assert_eq!(feed.recv().await, Some(StoreEvent::Interrupted));
        hub.set_live(true);
        let device = DeviceId::new();
        hub.publish(StoreEvent::DeviceChanged(device), false);
        assert_eq!(feed.recv().await, Some(StoreEvent::Listening));
        assert_eq!(feed.recv().await, Some(StoreEvent::DeviceChanged(device)));
        let mut late = hub.subscribe();
        assert_eq!(late.recv().await, Some(StoreEvent::Listening));
        drop(hub);
        assert_eq!(feed.recv().await, None);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_forget() {
        let hub = Hub::new(true);
        let mut feed = hub.subscribe();
        assert_eq!(feed.recv().await, Some(StoreEvent::Listening));
        for _ in 0..BACKLOG + 10 {
            hub.publish(StoreEvent::DeviceChanged(DeviceId::new()), true);
        }
        assert_eq!(feed.recv().await, Some(StoreEvent::Listening));
    }
}
