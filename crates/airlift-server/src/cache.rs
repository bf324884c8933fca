//! Caches that keep the steady-state check-in free of database round trips,
//! correct with several server instances:
//!
//! - packages never change once stored;
//! - the list of active deployments and each device's record (status, tags)
//!   are re-read at least every [`ACTIVE_TTL`], and at once on this instance
//!   after it changes them — so a rejection made on another instance takes
//!   effect within a second;
//! - a device's final state in a deployment never changes;
//! - an unchanged inventory is not written at each check-in: its
//!   `last_check_in` time is written behind, once per [`ACTIVE_TTL`], by
//!   [`flush_check_ins`]. A changed inventory is written at once.

use crate::error::{ApiError, ApiResult};
use airlift_package::Manifest;
use airlift_protocol::device::Inventory;
use airlift_protocol::management::Device;
use airlift_protocol::state::UpdateState;
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use airlift_store::{DeploymentRecord, PackageRecord, Store};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How stale another instance's view of active deployments may be.
pub const ACTIVE_TTL: Duration = Duration::from_secs(1);

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
    active: Mutex<Option<(Instant, Arc<Vec<DeploymentRecord>>)>>,
    devices: RwLock<HashMap<DeviceId, (Instant, Arc<Device>)>>,
    final_states: RwLock<HashMap<(DeploymentId, DeviceId), UpdateState>>,
    inventories: Mutex<Inventories>,
}

/// What this instance knows the store holds, and what it still has to write.
#[derive(Debug, Default)]
struct Inventories {
    stored: HashMap<DeviceId, [u8; 32]>,
    pending: HashMap<DeviceId, (Arc<Inventory>, DateTime<Utc>)>,
}

/// SHA-256 of an inventory's JSON (maps serialise in key order).
fn inventory_digest(inventory: &Inventory) -> [u8; 32] {
    Sha256::digest(serde_json::to_vec(inventory).unwrap_or_default()).into()
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

    /// Active deployments, oldest first, at most [`ACTIVE_TTL`] old.
    pub async fn active_deployments(
        &self,
        store: &dyn Store,
    ) -> ApiResult<Arc<Vec<DeploymentRecord>>> {
        if let Some((at, list)) = self.active.lock().map_err(poisoned)?.as_ref() {
            if at.elapsed() < ACTIVE_TTL {
                return Ok(Arc::clone(list));
            }
        }
        let list = Arc::new(store.active_deployments().await?);
        *self.active.lock().map_err(poisoned)? = Some((Instant::now(), Arc::clone(&list)));
        Ok(list)
    }

    /// A device's record, at most [`ACTIVE_TTL`] old.
    pub async fn device(&self, store: &dyn Store, id: DeviceId) -> ApiResult<Option<Arc<Device>>> {
        if let Some((at, device)) = self.devices.read().map_err(poisoned)?.get(&id) {
            if at.elapsed() < ACTIVE_TTL {
                return Ok(Some(Arc::clone(device)));
            }
        }
        let Some(device) = store.device(id).await? else {
            self.forget_device(id);
            return Ok(None);
        };
        let device = Arc::new(device);
        self.devices
            .write()
            .map_err(poisoned)?
            .insert(id, (Instant::now(), Arc::clone(&device)));
        Ok(Some(device))
    }

    /// Call after changing a device's status or tags.
    pub fn forget_device(&self, id: DeviceId) {
        if let Ok(mut devices) = self.devices.write() {
            devices.remove(&id);
        }
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

    /// Records a check-in: a changed inventory is written now; an unchanged
    /// one only queues its time for [`flush_check_ins`].
    pub async fn record_check_in(
        &self,
        store: &dyn Store,
        id: DeviceId,
        inventory: Inventory,
        at: DateTime<Utc>,
    ) -> ApiResult<()> {
        let digest = inventory_digest(&inventory);
        {
            let mut known = self.inventories.lock().map_err(poisoned)?;
            if known.stored.get(&id) == Some(&digest) {
                known.pending.insert(id, (Arc::new(inventory), at));
                return Ok(());
            }
            known.pending.remove(&id);
        }
        store.record_check_in(id, &inventory, at).await?;
        self.inventories
            .lock()
            .map_err(poisoned)?
            .stored
            .insert(id, digest);
        Ok(())
    }

    /// Writes the queued check-in times. The store re-checks each inventory's
    /// digest, so one changed through another instance is written in full.
    pub async fn flush_check_ins(&self, store: &dyn Store) -> ApiResult<usize> {
        let pending = std::mem::take(&mut self.inventories.lock().map_err(poisoned)?.pending);
        let count = pending.len();
        for (id, (inventory, at)) in pending {
            if let Err(error) = store.record_check_in(id, &inventory, at).await {
                tracing::warn!(device_id = %id, %error, "could not record a check-in time");
            }
        }
        Ok(count)
    }

    /// Call after creating, cancelling or finishing a deployment.
    pub fn deployments_changed(&self) {
        if let Ok(mut active) = self.active.lock() {
            *active = None;
        }
    }
}

fn poisoned<T>(_: T) -> ApiError {
    ApiError::internal("a cache lock was poisoned by a panic")
}
