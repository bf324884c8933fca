//! Small read caches for the check-in path, correct with several server
//! instances: packages never change once stored, and the list of active
//! deployments is re-read at least every [`ACTIVE_TTL`], and at once on this
//! instance after it changes one.

use crate::error::{ApiError, ApiResult};
use airlift_package::Manifest;
use airlift_protocol::PackageId;
use airlift_store::{DeploymentRecord, PackageRecord, Store};
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
