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
    /// A device was created, or its status, identity, tags or inventory
    /// changed. (Moving only its `last_check_in` is not a change here.)
    DeviceChanged(DeviceId),
    /// A deployment was created, cancelled or finished.
    DeploymentChanged(DeploymentId),
    /// The feed hears nothing from now until the next
    /// [`Listening`](Self::Listening): trust nothing derived from the store.
    Interrupted,
    /// The feed hears every change from now on. Changes before may have gone
    /// unheard: forget everything derived from the store until now.
    Listening,
}

impl StoreEvent {
    /// The text a `NOTIFY` carries: `device:<id>` or `deployment:<id>`.
    /// `None` for the feed's own state, which is never sent.
    pub(crate) fn payload(&self) -> Option<String> {
        match self {
            Self::DeviceChanged(id) => Some(format!("device:{id}")),
            Self::DeploymentChanged(id) => Some(format!("deployment:{id}")),
            Self::Interrupted | Self::Listening => None,
        }
    }

    /// Reads a `NOTIFY` payload back; `None` for anything else (a heartbeat,
    /// or a kind of event a newer instance sends).
    pub(crate) fn from_payload(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        match kind {
            "device" => id.parse().ok().map(Self::DeviceChanged),
            "deployment" => id.parse().ok().map(Self::DeploymentChanged),
            _ => None,
        }
    }
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
    events: broadcast::Receiver<StoreEvent>,
    live: Arc<AtomicBool>,
}

impl ChangeFeed {
    /// The next event; `None` once the store is gone.
    ///
    /// A subscriber that fell more than a few thousand events behind gets
    /// [`StoreEvent::Listening`] (or `Interrupted`, if the feed is deaf at
    /// that moment) in place of the events it missed.
    pub async fn recv(&mut self) -> Option<StoreEvent> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        match self.events.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "change feed subscriber fell behind");
                Some(if self.live.load(Ordering::Acquire) {
                    StoreEvent::Listening
                } else {
                    StoreEvent::Interrupted
                })
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// The sending side, shared by a backend and its listener task.
#[derive(Debug)]
pub(crate) struct Hub {
    events: broadcast::Sender<StoreEvent>,
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

    /// Passes a change on to every subscriber (none is fine).
    pub(crate) fn publish(&self, event: StoreEvent) {
        let _ = self.events.send(event);
    }

    /// Records whether the feed hears changes, and tells subscribers.
    pub(crate) fn set_live(&self, live: bool) {
        let _state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.live.store(live, Ordering::Release);
        self.publish(if live {
            StoreEvent::Listening
        } else {
            StoreEvent::Interrupted
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_unknown_ones_are_ignored() {
        for event in [
            StoreEvent::DeviceChanged(DeviceId::new()),
            StoreEvent::DeploymentChanged(DeploymentId::new()),
        ] {
            let payload = event.payload().expect("a change has a payload");
            assert_eq!(StoreEvent::from_payload(&payload), Some(event));
        }
        assert_eq!(StoreEvent::Listening.payload(), None);
        for other in ["", "device:", "device:not-a-uuid", "package:x", "heartbeat"] {
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
        hub.publish(StoreEvent::DeviceChanged(device));
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
            hub.publish(StoreEvent::DeviceChanged(DeviceId::new()));
        }
        assert_eq!(feed.recv().await, Some(StoreEvent::Listening));
    }
}
