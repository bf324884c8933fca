//! What keeps the steady-state check-in free of database round trips,
//! correct with several server instances:
//!
//! - packages never change once stored, nor does a device's final state in a
//!   deployment: both are kept once read;
//! - device records (with the digest of the inventory last stored) and the
//!   list of active deployments are kept **for as long as the store's change
//!   feed listens** ([`airlift_store::Store::changes`], followed by
//!   [`follow_changes`]): a change made through any instance drops the
//!   record concerned when its event arrives, this instance's own changes
//!   drop it at once ([`Caches::forget_device`],
//!   [`Caches::deployments_changed`]), and while the feed is deaf nothing is
//!   kept at all — every read goes to the store, and everything is dropped
//!   again when it listens anew;
//! - an unchanged inventory is not written at each check-in: its
//!   `last_check_in` time is written behind, once per [`FLUSH_PERIOD`], in
//!   one transaction, by [`Caches::flush_check_ins`]. A changed inventory is
//!   written at once.
//!
//! A read that started before an invalidation never puts its (possibly
//! older) result into the cache after it: every invalidation moves an epoch,
//! and a result is kept only if the epoch is still the one seen before the
//! read.

use crate::error::{ApiError, ApiResult};
use airlift_package::Manifest;
use airlift_protocol::state::UpdateState;
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use airlift_store::{
    ChangeFeed, CheckInTime, DeploymentRecord, DeviceRecord, PackageRecord, Store, StoreEvent,
};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How often unchanged inventories' check-in times are written.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);

/// A stored package with its manifest parsed once.
#[derive(Debug)]
pub struct CachedPackage {
    /// The stored record.
    pub record: PackageRecord,
    /// Its verified manifest, parsed.
    pub manifest: Manifest,
}

/// Caches shared by all requests of one instance.
#[derive(Debug, Default)]
pub struct Caches {
    packages: RwLock<HashMap<PackageId, Arc<CachedPackage>>>,
    final_states: RwLock<HashMap<(DeploymentId, DeviceId), UpdateState>>,
    derived: RwLock<Derived>,
    pending: Mutex<HashMap<DeviceId, QueuedTime>>,
}

/// A check-in time waiting to be written: the digest of the inventory it
/// came with, and when.
type QueuedTime = ([u8; 32], DateTime<Utc>);

/// What is kept only while the change feed listens.
#[derive(Debug, Default)]
struct Derived {
    /// Whether the change feed hears changes now.
    listening: bool,
    /// Moves at every invalidation.
    epoch: u64,
    devices: HashMap<DeviceId, Arc<DeviceRecord>>,
    active: Option<Arc<Vec<DeploymentRecord>>>,
}

impl Derived {
    /// Drops everything and moves the epoch.
    fn clear(&mut self) {
        self.epoch += 1;
        self.devices.clear();
        self.active = None;
    }
}

impl Caches {
    /// A package by id, from memory when seen before.
    pub async fn package(
        &self,
        store: &dyn Store,
        id: PackageId,
    ) -> ApiResult<Option<Arc<CachedPackage>>> {
        if let Some(hit) = self.packages.read().map_err(poisoned)?.get(&id) {
            return Ok(Some(Arc::clone(hit)));
        }
        let Some(record) = store.package(id).await? else {
            return Ok(None);
        };
        let manifest: Manifest =
            serde_json::from_value(record.package.manifest.clone()).map_err(|e| {
                ApiError::internal(format!("stored manifest of package {id} unreadable: {e}"))
            })?;
        let cached = Arc::new(CachedPackage { record, manifest });
        self.packages
            .write()
            .map_err(poisoned)?
            .insert(id, Arc::clone(&cached));
        Ok(Some(cached))
    }

    /// Forgets a deleted package.
    pub fn forget_package(&self, id: PackageId) {
        if let Ok(mut packages) = self.packages.write() {
            packages.remove(&id);
        }
    }

    /// The epoch to compare after a read, or `None` if the read must not be
    /// kept (the feed is deaf).
    fn epoch(&self) -> ApiResult<Option<u64>> {
        let derived = self.derived.read().map_err(poisoned)?;
        Ok(derived.listening.then_some(derived.epoch))
    }

    /// Active deployments, oldest first.
    pub async fn active_deployments(
        &self,
        store: &dyn Store,
    ) -> ApiResult<Arc<Vec<DeploymentRecord>>> {
        if let Some(list) = &self.derived.read().map_err(poisoned)?.active {
            return Ok(Arc::clone(list));
        }
        let epoch = self.epoch()?;
        let list = Arc::new(store.active_deployments().await?);
        let mut derived = self.derived.write().map_err(poisoned)?;
        if epoch == Some(derived.epoch) && derived.listening {
            derived.active = Some(Arc::clone(&list));
        }
        Ok(list)
    }

    /// A device's record, and the digest of the inventory last stored.
    pub async fn device(
        &self,
        store: &dyn Store,
        id: DeviceId,
    ) -> ApiResult<Option<Arc<DeviceRecord>>> {
        if let Some(hit) = self.derived.read().map_err(poisoned)?.devices.get(&id) {
            return Ok(Some(Arc::clone(hit)));
        }
        let epoch = self.epoch()?;
        let Some(record) = store.device_record(id).await? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        self.keep_device(epoch, Arc::clone(&record))?;
        Ok(Some(record))
    }

    /// Keeps a record read from the store unless something was invalidated
    /// since the read began (at `epoch`) or the feed is deaf.
    fn keep_device(&self, epoch: Option<u64>, record: Arc<DeviceRecord>) -> ApiResult<()> {
        let mut derived = self.derived.write().map_err(poisoned)?;
        if epoch == Some(derived.epoch) && derived.listening {
            derived.devices.insert(record.device.id, record);
        }
        Ok(())
    }

    /// Call after this instance changed a device (status, identity, tags,
    /// inventory): the next read goes to the store.
    pub fn forget_device(&self, id: DeviceId) {
        if let Ok(mut derived) = self.derived.write() {
            derived.epoch += 1;
            derived.devices.remove(&id);
        }
    }

    /// Call after creating, cancelling or finishing a deployment.
    pub fn deployments_changed(&self) {
        if let Ok(mut derived) = self.derived.write() {
            derived.epoch += 1;
            derived.active = None;
        }
    }

    /// Applies an event of the store's change feed.
    pub fn apply(&self, event: StoreEvent) {
        match event {
            StoreEvent::DeviceChanged(id) | StoreEvent::InventoryChanged(id) => {
                self.forget_device(id)
            }
            StoreEvent::DeploymentChanged(_) => self.deployments_changed(),
            StoreEvent::CheckInRequested(_) => {}
            StoreEvent::Listening | StoreEvent::Interrupted => {
                if let Ok(mut derived) = self.derived.write() {
                    derived.clear();
                    derived.listening = event == StoreEvent::Listening;
                }
            }
            other => {
                // An event this version does not know: forget all to be safe.
                tracing::debug!(?other, "unknown store event");
                if let Ok(mut derived) = self.derived.write() {
                    derived.clear();
                }
            }
        }
    }

    /// Whether device records and active deployments are being kept.
    pub fn listening(&self) -> bool {
        self.derived.read().map(|d| d.listening).unwrap_or(false)
    }

    /// A device's final state in a deployment, if known to be final.
    pub fn final_state(&self, deployment: DeploymentId, device: DeviceId) -> Option<UpdateState> {
        self.final_states
            .read()
            .ok()?
            .get(&(deployment, device))
            .copied()
    }

    /// Remembers a final state (it never changes again).
    pub fn remember_final(&self, deployment: DeploymentId, device: DeviceId, state: UpdateState) {
        if state.is_final() {
            if let Ok(mut states) = self.final_states.write() {
                states.insert((deployment, device), state);
            }
        }
    }

    /// Queues the time of a check-in whose inventory is the one stored, for
    /// [`Caches::flush_check_ins`].
    pub fn queue_check_in(&self, id: DeviceId, digest: [u8; 32], at: DateTime<Utc>) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, (digest, at));
        }
    }

    /// Drops a queued time (the device's inventory was just written in full).
    pub fn unqueue_check_in(&self, id: DeviceId) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
    }

    /// Writes the queued check-in times in one transaction. The store moves
    /// only those whose inventory is still the one queued with them.
    pub async fn flush_check_ins(&self, store: &dyn Store) -> ApiResult<usize> {
        let pending = std::mem::take(&mut *self.pending.lock().map_err(poisoned)?);
        let times: Vec<CheckInTime> = pending
            .into_iter()
            .map(|(device, (inventory_sha256, at))| CheckInTime {
                device,
                inventory_sha256,
                at,
            })
            .collect();
        store.record_check_in_times(&times).await?;
        Ok(times.len())
    }
}

/// Applies the store's change feed to the state's caches until the store
/// closes it. Subscribe (`store.changes()`) before serving, so no change
/// made after the start is missed.
pub async fn follow_changes(mut feed: ChangeFeed, state: crate::AppState) {
    while let Some(event) = feed.recv().await {
        match event {
            StoreEvent::Interrupted => {
                tracing::warn!("store change feed interrupted: device records are not cached");
                metrics::gauge!("airlift_store_change_feed_listening").set(0.0);
            }
            StoreEvent::Listening => {
                tracing::info!("store change feed listening");
                metrics::gauge!("airlift_store_change_feed_listening").set(1.0);
            }
            _ => {}
        }
        state.caches().apply(event);
    }
}

fn poisoned<T>(_: T) -> ApiError {
    ApiError::internal("a cache lock was poisoned by a panic")
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_protocol::management::Device;
    use airlift_protocol::state::DeviceStatus;
    use std::collections::BTreeMap;

    fn record(id: DeviceId, status: DeviceStatus) -> DeviceRecord {
        DeviceRecord {
            device: Device {
                id,
                status,
                identity: BTreeMap::new(),
                public_key: String::new(),
                tags: Vec::new(),
                device_type: None,
                hardware_revision: None,
                installed: BTreeMap::new(),
                security_version: 0,
                attributes: BTreeMap::new(),
                created_at: Utc::now(),
                last_check_in: None,
            },
            inventory_sha256: None,
        }
    }

    /// Offers a record as a read that began at `epoch` would.
    fn keep(caches: &Caches, epoch: Option<u64>, record: DeviceRecord) {
        caches.keep_device(epoch, Arc::new(record)).expect("lock");
    }

    fn cached(caches: &Caches, id: DeviceId) -> Option<DeviceStatus> {
        let derived = caches.derived.read().expect("lock");
        derived.devices.get(&id).map(|r| r.device.status)
    }

    #[test]
    fn nothing_is_kept_until_the_feed_listens() {
        let caches = Caches::default();
        let id = DeviceId::new();
        keep(
            &caches,
            caches.epoch().expect("epoch"),
            record(id, DeviceStatus::Accepted),
        );
        assert_eq!(cached(&caches, id), None);
        caches.apply(StoreEvent::Listening);
        keep(
            &caches,
            caches.epoch().expect("epoch"),
            record(id, DeviceStatus::Accepted),
        );
        assert_eq!(cached(&caches, id), Some(DeviceStatus::Accepted));
    }

    #[test]
    fn a_change_event_drops_the_record_and_an_interruption_drops_all() {
        let caches = Caches::default();
        caches.apply(StoreEvent::Listening);
        let (a, b) = (DeviceId::new(), DeviceId::new());
        for id in [a, b] {
            keep(
                &caches,
                caches.epoch().expect("epoch"),
                record(id, DeviceStatus::Accepted),
            );
        }
        caches.apply(StoreEvent::DeviceChanged(a));
        assert_eq!(cached(&caches, a), None);
        assert_eq!(cached(&caches, b), Some(DeviceStatus::Accepted));
        caches.apply(StoreEvent::Interrupted);
        assert_eq!(cached(&caches, b), None);
        assert!(!caches.listening());
        keep(
            &caches,
            caches.epoch().expect("epoch"),
            record(b, DeviceStatus::Accepted),
        );
        assert_eq!(cached(&caches, b), None, "not kept while deaf");
    }

    #[test]
    fn a_read_from_before_an_invalidation_is_not_kept() {
        let caches = Caches::default();
        caches.apply(StoreEvent::Listening);
        let id = DeviceId::new();
        // A check-in starts reading the device; meanwhile it is rejected
        // (here or elsewhere) and the record dropped; the read, which saw it
        // accepted, ends after.
        let before = caches.epoch().expect("epoch");
        caches.forget_device(id);
        keep(&caches, before, record(id, DeviceStatus::Accepted));
        assert_eq!(cached(&caches, id), None);
        let before = caches.epoch().expect("epoch");
        caches.apply(StoreEvent::DeviceChanged(DeviceId::new()));
        keep(&caches, before, record(id, DeviceStatus::Accepted));
        assert_eq!(cached(&caches, id), None);
    }

    #[test]
    fn deployment_events_drop_the_active_list() {
        let caches = Caches::default();
        caches.apply(StoreEvent::Listening);
        caches.derived.write().expect("lock").active = Some(Arc::new(Vec::new()));
        caches.apply(StoreEvent::DeploymentChanged(DeploymentId::new()));
        assert!(caches.derived.read().expect("lock").active.is_none());
    }

    #[test]
    fn queued_times_keep_the_latest_and_can_be_dropped() {
        let caches = Caches::default();
        let id = DeviceId::new();
        let (early, late) = (Utc::now(), Utc::now() + chrono::Duration::seconds(1));
        caches.queue_check_in(id, [1; 32], early);
        caches.queue_check_in(id, [1; 32], late);
        assert_eq!(
            caches.pending.lock().expect("lock").get(&id),
            Some(&([1; 32], late))
        );
        caches.unqueue_check_in(id);
        assert!(caches.pending.lock().expect("lock").is_empty());
    }
}
