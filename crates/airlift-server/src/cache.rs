//! What keeps the steady-state check-in free of database round trips,
//! correct with several server instances:
//!
//! - packages never change once stored, nor does a device's final state in a
//!   deployment: both are kept once read;
//! - devices — what the device routes read of them ([`CachedDevice`]: status,
//!   tags, the digest of the inventory last stored) — and the
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
//!   written at once. The same flush adds this instance's check-ins per
//!   minute to the store's counts, which every instance adds to (the
//!   dashboard's check-ins per minute).
//!
//! A read that started before an invalidation never puts its (possibly
//! older) result into the cache after it: every invalidation moves an epoch,
//! and a result is kept only if the epoch is still the one seen before the
//! read.
//!
//! Devices and final states are bounded ([`CacheLimits`]; devices by
//! weight, a device with many tags weighing as several:
//! [`device::RECORD_BUDGET_BYTES`]): an instance in front of a million
//! devices keeps the most used ones (quick_cache's CLOCK-Pro eviction) and
//! reads the rest from the store; `/metrics` counts hits and misses and
//! shows how many are held.

mod device;

pub use device::{CachedDevice, RECORD_BUDGET_BYTES};

use crate::error::{ApiError, ApiResult};
use crate::shadow_cache::ShadowCache;
use airlift_package::Manifest;
use airlift_protocol::state::UpdateState;
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use airlift_store::{
    ChangeFeed, CheckInCount, CheckInTime, DeploymentRecord, PackageRecord, Store, StoreEvent,
};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How often unchanged inventories' check-in times are written.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);

/// How long the store keeps check-ins per minute.
pub const CHECK_IN_COUNTS_KEPT: chrono::TimeDelta = chrono::TimeDelta::hours(48);

/// A stored package with its manifest parsed once.
#[derive(Debug)]
pub struct CachedPackage {
    /// The stored record.
    pub record: PackageRecord,
    /// Its verified manifest, parsed.
    pub manifest: Manifest,
}

/// How much the caches may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Devices, in records of [`RECORD_BUDGET_BYTES`] (a typical device,
    /// its entry about 110 bytes with the cache's bookkeeping, weighs one).
    pub devices: usize,
    /// Final per-device deployment states (a few dozen bytes each).
    pub final_states: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            devices: 100_000,
            final_states: 1_000_000,
        }
    }
}

/// Caches shared by all requests of one instance.
#[derive(Debug)]
pub struct Caches {
    packages: RwLock<HashMap<PackageId, Arc<CachedPackage>>>,
    final_states: quick_cache::sync::Cache<(DeploymentId, DeviceId), UpdateState>,
    derived: RwLock<Derived>,
    /// Tag sets shared between cached devices.
    tag_sets: device::TagSets,
    pending: Mutex<HashMap<DeviceId, QueuedTime>>,
    /// Check-ins not yet counted in the store, by the start of their
    /// minute (milliseconds since the epoch).
    check_ins: Mutex<BTreeMap<i64, u64>>,
}

impl Default for Caches {
    fn default() -> Self {
        Self::new(CacheLimits::default())
    }
}

/// A check-in time waiting to be written: the digest of the inventory it
/// came with, and when.
type QueuedTime = ([u8; 32], DateTime<Utc>);

/// What is kept only while the change feed listens.
#[derive(Debug)]
struct Derived {
    /// Whether the change feed hears changes now.
    listening: bool,
    /// Moves at every invalidation.
    epoch: u64,
    devices: quick_cache::sync::Cache<DeviceId, CachedDevice, device::ByRecords>,
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
    /// Empty caches that hold at most `limits`.
    pub fn new(limits: CacheLimits) -> Self {
        metrics::gauge!("airlift_cache_device_records_capacity").set(limits.devices as f64);
        Self {
            packages: RwLock::default(),
            final_states: quick_cache::sync::Cache::new(limits.final_states.max(1)),
            derived: RwLock::new(Derived {
                listening: false,
                epoch: 0,
                devices: quick_cache::sync::Cache::with_weighter(
                    limits.devices.max(1),
                    limits.devices.max(1) as u64,
                    device::ByRecords,
                ),
                active: None,
            }),
            tag_sets: device::TagSets::default(),
            pending: Mutex::default(),
            check_ins: Mutex::default(),
        }
    }

    /// How many devices are held now.
    pub fn devices_held(&self) -> usize {
        self.derived.read().map(|d| d.devices.len()).unwrap_or(0)
    }

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

    /// What the device routes need of a device: its status, its tags and
    /// the digest of the inventory last stored. A device not held is read
    /// with its own shadow documents, in one query, and those are offered
    /// to `shadows`: the check-in that follows answers its shadow delta
    /// without a second round trip (a device not held is usually held by
    /// neither).
    pub async fn device_with_documents(
        &self,
        store: &dyn Store,
        shadows: &ShadowCache,
        id: DeviceId,
    ) -> ApiResult<Option<CachedDevice>> {
        if let Some(hit) = self.held_device(id)? {
            return Ok(Some(hit));
        }
        let epoch = self.epoch()?;
        let shadow_read = shadows.read_begins();
        let Some((summary, documents)) = store.device_summary_with_documents(id).await? else {
            return Ok(None);
        };
        shadows.keep_read(id, documents, shadow_read);
        let device = CachedDevice::new(summary, &self.tag_sets);
        self.keep_device(epoch, device.clone())?;
        Ok(Some(device))
    }

    /// The device if this instance holds it, counting the lookup.
    fn held_device(&self, id: DeviceId) -> ApiResult<Option<CachedDevice>> {
        let hit = self.derived.read().map_err(poisoned)?.devices.get(&id);
        let result = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!("airlift_cache_device_lookups_total", "result" => result).increment(1);
        Ok(hit)
    }

    /// Keeps a device read from the store unless something was invalidated
    /// since the read began (at `epoch`) or the feed is deaf.
    fn keep_device(&self, epoch: Option<u64>, device: CachedDevice) -> ApiResult<()> {
        // A read lock is enough: the cache inserts through `&self`, and an
        // invalidation (which takes the write lock) cannot slip in between
        // the epoch check and the insert.
        let derived = self.derived.read().map_err(poisoned)?;
        if epoch == Some(derived.epoch) && derived.listening {
            derived.devices.insert(device.id, device);
            metrics::gauge!("airlift_cache_device_records").set(derived.devices.len() as f64);
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
            // A final state moves again only by an operator's reset or
            // retry (`api::repair`); a report never moves it.
            StoreEvent::UpdateChanged { deployment, device } => {
                self.final_states.remove(&(deployment, device));
            }
            StoreEvent::UpdatesReopened(deployment) => {
                // Rare (an operator's retry), so a walk of the cache is fine.
                self.final_states.retain(|(d, _), _| *d != deployment);
            }
            // Shadows are kept apart, by `shadow_cache`.
            StoreEvent::ShadowChanged(_) | StoreEvent::GroupShadowsChanged => {}
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
        self.final_states.get(&(deployment, device))
    }

    /// Remembers a final state (only an operator's retry or reset moves it
    /// again, and both are announced on the change feed).
    pub fn remember_final(&self, deployment: DeploymentId, device: DeviceId, state: UpdateState) {
        if state.is_final() {
            self.final_states.insert((deployment, device), state);
        }
    }

    /// Queues the time of a check-in whose inventory is the one stored, for
    /// [`Caches::flush_check_ins`].
    pub fn queue_check_in(&self, id: DeviceId, digest: [u8; 32], at: DateTime<Utc>) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, (digest, at));
        }
    }

    /// Counts a check-in (any: its time written behind or at once) for
    /// [`Caches::flush_check_ins`] to add to the store's per-minute counts.
    pub fn count_check_in(&self, at: DateTime<Utc>) {
        let minute = at.timestamp_millis().div_euclid(60_000) * 60_000;
        if let Ok(mut counts) = self.check_ins.lock() {
            *counts.entry(minute).or_insert(0) += 1;
        }
    }

    /// The check-ins counted since the last call, per minute.
    fn take_check_in_counts(&self) -> ApiResult<Vec<CheckInCount>> {
        let counts = std::mem::take(&mut *self.check_ins.lock().map_err(poisoned)?);
        Ok(counts
            .into_iter()
            .filter_map(|(minute, check_ins)| {
                Some(CheckInCount {
                    minute: DateTime::from_timestamp_millis(minute)?,
                    check_ins,
                })
            })
            .collect())
    }

    /// Puts counts that could not be stored back, to be tried again.
    fn restore_check_in_counts(&self, counts: &[CheckInCount]) {
        if let Ok(mut kept) = self.check_ins.lock() {
            for count in counts {
                *kept.entry(count.minute.timestamp_millis()).or_insert(0) += count.check_ins;
            }
        }
    }

    /// The check-in times queued since the last call.
    fn take_check_in_times(&self) -> ApiResult<Vec<CheckInTime>> {
        let pending = std::mem::take(&mut *self.pending.lock().map_err(poisoned)?);
        Ok(pending
            .into_iter()
            .map(|(device, (inventory_sha256, at))| CheckInTime {
                device,
                inventory_sha256,
                at,
            })
            .collect())
    }

    /// Puts times that could not be stored back, to be tried again, unless
    /// the device checked in again meanwhile: the newer time is kept (and
    /// the store never moves a time backwards, so a late retry is harmless).
    fn restore_check_in_times(&self, times: &[CheckInTime]) {
        if let Ok(mut pending) = self.pending.lock() {
            for time in times {
                pending
                    .entry(time.device)
                    .or_insert((time.inventory_sha256, time.at));
            }
        }
    }

    /// Drops a queued time (the device's inventory was just written in full).
    pub fn unqueue_check_in(&self, id: DeviceId) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
    }

    /// Writes the queued check-in times in one transaction. The store moves
    /// only those whose inventory is still the one queued with them. Then
    /// adds the check-ins counted per minute to the store's counts (and
    /// forgets the counts older than [`CHECK_IN_COUNTS_KEPT`]); counts that
    /// could not be stored are kept for the next flush.
    pub async fn flush_check_ins(&self, store: &dyn Store) -> ApiResult<usize> {
        let times = self.take_check_in_times()?;
        if let Err(error) = store.record_check_in_times(&times).await {
            self.restore_check_in_times(&times);
            return Err(error.into());
        }
        let counts = self.take_check_in_counts()?;
        if !counts.is_empty() {
            let forget_before = Utc::now() - CHECK_IN_COUNTS_KEPT;
            if let Err(error) = store.add_check_ins(&counts, forget_before).await {
                self.restore_check_in_counts(&counts);
                return Err(error.into());
            }
        }
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
    use airlift_store::DeviceRecord;
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
        let device = CachedDevice::new(record, &caches.tag_sets);
        caches.keep_device(epoch, device).expect("lock");
    }

    fn cached(caches: &Caches, id: DeviceId) -> Option<DeviceStatus> {
        let derived = caches.derived.read().expect("lock");
        derived.devices.get(&id).map(|d| d.status)
    }

    #[test]
    fn device_records_stay_within_their_limit() {
        let caches = Caches::new(CacheLimits {
            devices: 100,
            final_states: 100,
        });
        caches.apply(StoreEvent::Listening);
        let ids: Vec<DeviceId> = (0..1_000).map(|_| DeviceId::new()).collect();
        for id in &ids {
            let epoch = caches.epoch().expect("lock");
            keep(&caches, epoch, record(*id, DeviceStatus::Accepted));
        }
        let held = caches.devices_held();
        assert!(held <= 100, "{held} records held past a limit of 100");
        assert!(held > 0, "the most recent records are kept");
        for (n, id) in ids.iter().enumerate() {
            caches.remember_final(DeploymentId::new(), *id, UpdateState::Success);
            assert!(n < 100 || caches.final_states.len() <= 100);
        }
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
    fn check_ins_are_counted_per_minute_and_restored_when_not_stored() {
        let caches = Caches::default();
        let at = |secs: i64| DateTime::from_timestamp(1_700_000_040 + secs, 0).expect("time");
        caches.count_check_in(at(0));
        caches.count_check_in(at(59));
        caches.count_check_in(at(60));
        let counts = caches.take_check_in_counts().expect("counts");
        let minutes: Vec<(i64, u64)> = counts
            .iter()
            .map(|c| (c.minute.timestamp(), c.check_ins))
            .collect();
        assert_eq!(minutes, vec![(1_700_000_040, 2), (1_700_000_100, 1)]);
        assert!(caches.take_check_in_counts().expect("none").is_empty());
        caches.restore_check_in_counts(&counts);
        caches.count_check_in(at(1));
        let again = caches.take_check_in_counts().expect("again");
        assert_eq!(again[0].check_ins, 3);
        assert_eq!(again[1].check_ins, 1);
    }

    #[test]
    fn times_not_stored_are_queued_again_behind_newer_ones() {
        let caches = Caches::default();
        let (kept, newer) = (DeviceId::new(), DeviceId::new());
        let (early, late) = (Utc::now(), Utc::now() + chrono::Duration::seconds(1));
        caches.queue_check_in(kept, [1; 32], early);
        caches.queue_check_in(newer, [2; 32], early);
        let times = caches.take_check_in_times().expect("times");
        assert!(caches.pending.lock().expect("lock").is_empty());
        caches.queue_check_in(newer, [3; 32], late);
        caches.restore_check_in_times(&times);
        let pending = caches.pending.lock().expect("lock");
        assert_eq!(pending.get(&kept), Some(&([1; 32], early)));
        assert_eq!(pending.get(&newer), Some(&([3; 32], late)));
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
