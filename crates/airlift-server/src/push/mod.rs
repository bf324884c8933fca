//! Push: "check in now" nudges to devices that hold a connection.
//!
//! A nudge is raised where the store's change feed says something changed
//! for a device ([`follow`]), on every instance: each instance nudges the
//! devices connected to it over server-sent events ([`events`]), and the
//! instance that made the change also publishes to the MQTT broker, if one
//! is configured ([`mqtt`]). A nudge never carries the update: the device
//! checks in as usual. Polling goes on underneath, so a lost nudge delays a
//! device by one poll interval at most.

pub mod events;
pub mod follow;
pub mod mqtt;

use airlift_protocol::push::{Nudge, NudgeReason};
use airlift_protocol::DeviceId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The devices connected to this instance's push stream.
#[derive(Debug, Clone, Default)]
pub struct PushHub {
    inner: Arc<HubInner>,
}

#[derive(Debug, Default)]
struct HubInner {
    /// Per device, its open streams (a device may briefly hold two while it
    /// reconnects).
    connections: Mutex<HashMap<DeviceId, Vec<Connection>>>,
    next_id: AtomicU64,
    /// Cancelled at shutdown: every stream ends, so a graceful shutdown does
    /// not wait for connections that never end by themselves.
    closing: CancellationToken,
}

#[derive(Debug)]
struct Connection {
    id: u64,
    /// Capacity 1: a nudge waiting to be sent makes any other redundant.
    nudges: mpsc::Sender<Nudge>,
}

/// A device's place in the hub; leaving it (drop) unregisters the stream.
#[derive(Debug)]
pub struct Registration {
    hub: Arc<HubInner>,
    device: DeviceId,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut connections = self.hub.lock();
        if let Some(streams) = connections.get_mut(&self.device) {
            streams.retain(|c| c.id != self.id);
            if streams.is_empty() {
                connections.remove(&self.device);
            }
        }
        metrics::gauge!("airlift_push_connections").decrement(1.0);
    }
}

impl HubInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Vec<Connection>>> {
        // The map is never left half-changed: a poisoned lock's data is fine.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl PushHub {
    /// Registers a stream for `device`; its nudges arrive on the receiver.
    pub fn register(&self, device: DeviceId) -> (Registration, mpsc::Receiver<Nudge>) {
        let (nudges, receiver) = mpsc::channel(1);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .lock()
            .entry(device)
            .or_default()
            .push(Connection { id, nudges });
        metrics::gauge!("airlift_push_connections").increment(1.0);
        let registration = Registration {
            hub: Arc::clone(&self.inner),
            device,
            id,
        };
        (registration, receiver)
    }

    /// Nudges those of `devices` connected here; returns how many streams
    /// were nudged (or already had a nudge waiting).
    pub fn nudge(&self, devices: &[DeviceId], reason: NudgeReason) -> usize {
        let nudge = Nudge { reason };
        let connections = self.inner.lock();
        let mut nudged = 0;
        for device in devices {
            for connection in connections.get(device).into_iter().flatten() {
                // Full: a nudge is already waiting, which says the same.
                if connection.nudges.try_send(nudge).is_ok() || !connection.nudges.is_closed() {
                    nudged += 1;
                }
            }
        }
        drop(connections);
        if nudged > 0 {
            metrics::counter!("airlift_push_nudges_total", "transport" => "events")
                .increment(nudged as u64);
        }
        nudged
    }

    /// Devices with an open stream here.
    pub fn connected(&self) -> usize {
        self.inner.lock().len()
    }

    /// Ends every stream (at shutdown).
    pub fn close(&self) {
        self.inner.closing.cancel();
    }

    /// Resolves when [`close`](Self::close) is called.
    pub fn closing(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.inner.closing.clone().cancelled_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_nudge_reaches_the_connected_device_only_and_coalesces() {
        let hub = PushHub::default();
        let (a, b) = (DeviceId::new(), DeviceId::new());
        let (registration, mut nudges) = hub.register(a);
        assert_eq!(hub.connected(), 1);
        assert_eq!(hub.nudge(&[b], NudgeReason::Deployment), 0);
        assert_eq!(hub.nudge(&[a, b], NudgeReason::Deployment), 1);
        // A second nudge before the first is read changes nothing.
        assert_eq!(hub.nudge(&[a], NudgeReason::Cancelled), 1);
        let first = nudges.recv().await.expect("a nudge");
        assert_eq!(first.reason, NudgeReason::Deployment);
        assert!(nudges.try_recv().is_err(), "the second nudge was coalesced");
        drop(registration);
        assert_eq!(hub.connected(), 0);
        assert_eq!(hub.nudge(&[a], NudgeReason::Device), 0);
    }

    #[tokio::test]
    async fn two_streams_of_one_device_are_both_nudged_and_leave_separately() {
        let hub = PushHub::default();
        let device = DeviceId::new();
        let (old, mut old_nudges) = hub.register(device);
        let (_new, mut new_nudges) = hub.register(device);
        assert_eq!(hub.nudge(&[device], NudgeReason::Requested), 2);
        assert!(old_nudges.recv().await.is_some());
        assert!(new_nudges.recv().await.is_some());
        drop(old);
        assert_eq!(hub.connected(), 1);
        assert_eq!(hub.nudge(&[device], NudgeReason::Requested), 1);
    }

    #[tokio::test]
    async fn closing_resolves_every_waiter() {
        let hub = PushHub::default();
        let waiting = hub.closing();
        hub.close();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("closing resolves");
    }
}
