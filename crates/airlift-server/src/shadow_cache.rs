//! The shadow delta of a check-in without database round trips.
//!
//! Every check-in answers the device's shadow delta. Read from the store it
//! costs two queries (the device's documents, the groups that reach it);
//! this cache keeps, per instance, the groups, so that a device it does not
//! hold costs one ([`ShadowStore::device_documents`]), and keeps:
//!
//! - **the group documents, all of them, as one list** (their number is
//!   bounded by `--shadow-max-groups`), each with its rule
//!   ([`GroupRule`], an expression parsed once): which of them reach a
//!   device is decided in memory from the facts the check-in has at hand
//!   — the device's tags and status, and the type, attributes and
//!   installed versions it reports in this very check-in — by the rule
//!   the store applies (a tag the device carries; attribute pairs the
//!   device has every one of; an expression it matches). So a device
//!   whose installed version moves past an expression's bound leaves (or
//!   joins) that group at the check-in that reports it, with nothing to
//!   invalidate. A change to a tag of 10 000 devices drops one entry, not
//!   10 000;
//! - **each device's own desired and reported documents**, bounded by
//!   their size in bytes (`--shadow-cache-mib`, quick_cache's CLOCK-Pro
//!   eviction keeps the most used).
//!
//! Both are kept only **while the store's change feed listens**, as the
//! device records of [`crate::cache`] are: a shadow write through any
//! instance announces [`StoreEvent::ShadowChanged`] or
//! [`StoreEvent::GroupShadowsChanged`] in its transaction (a `NOTIFY` on
//! PostgreSQL), which drops what it concerns; while the feed is deaf
//! nothing is kept, and everything is dropped when it listens again. A
//! read that began before an invalidation never stores its result after
//! it: every invalidation moves an epoch, and a result is kept only if the
//! epoch is the one seen before the read.
//!
//! `/metrics`: `airlift_cache_shadow_lookups_total{result="hit"|"miss"}`,
//! `airlift_cache_shadow_devices` and `airlift_cache_shadow_bytes` (held),
//! `airlift_cache_shadow_bytes_capacity`.

use airlift_protocol::shadow::{self as merge, Document, GroupRule, GroupShadow};
use airlift_protocol::shadow::{DeviceShadow, VersionedDocument};
use airlift_protocol::target_expr::DeviceFacts;
use airlift_protocol::DeviceId;
use airlift_store::{ChangeFeed, DeviceDocuments, ShadowStore, StoreEvent, StoreResult};
use std::future::Future;
use std::sync::{Arc, Once, RwLock, Weak};

/// Most group documents read into the list; with more in the store (a
/// lowered `--shadow-max-groups` leaves the old ones), check-ins read the
/// store instead of holding a partial list.
const MAX_GROUPS_HELD: u32 = crate::config::shadow::MAX_GROUPS as u32;

/// Bytes counted per device entry beyond its documents (keys, maps, `Arc`).
const ENTRY_OVERHEAD: u64 = 256;

/// The two reads the cache makes of the store: every store has them
/// ([`ShadowStore`]); a test counts them.
pub trait ShadowReads: Send + Sync {
    /// [`ShadowStore::device_shadow`].
    fn device_shadow(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = StoreResult<Option<DeviceShadow>>> + Send;
    /// [`ShadowStore::device_documents`].
    fn device_documents(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = StoreResult<Option<DeviceDocuments>>> + Send;
    /// [`ShadowStore::list_group_shadows`].
    fn list_group_shadows(
        &self,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<GroupShadow>>> + Send;
}

impl<S: ShadowStore + ?Sized> ShadowReads for S {
    fn device_shadow(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = StoreResult<Option<DeviceShadow>>> + Send {
        ShadowStore::device_shadow(self, device)
    }

    fn device_documents(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = StoreResult<Option<DeviceDocuments>>> + Send {
        ShadowStore::device_documents(self, device)
    }

    fn list_group_shadows(
        &self,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<GroupShadow>>> + Send {
        ShadowStore::list_group_shadows(self, limit)
    }
}

/// When a read of a device's documents began: the cache's epoch then
/// ([`ShadowCache::read_begins`]).
#[derive(Debug, Clone, Copy)]
pub struct ReadBegan(Option<u64>);

/// A device's own documents, as the check-in needs them.
#[derive(Debug)]
pub struct OwnDocuments {
    desired: VersionedDocument,
    reported: Document,
    /// Approximate bytes held, for the cache's bound.
    bytes: u64,
}

/// Weighs a device entry by the size of its documents.
#[derive(Debug, Clone, Copy)]
struct ByBytes;

impl quick_cache::Weighter<DeviceId, Arc<OwnDocuments>> for ByBytes {
    fn weight(&self, _device: &DeviceId, own: &Arc<OwnDocuments>) -> u64 {
        own.bytes
    }
}

/// A group document with the rule of whom it reaches.
#[derive(Debug)]
struct HeldGroup {
    shadow: GroupShadow,
    rule: GroupRule,
}

/// What is kept only while the change feed listens.
#[derive(Debug, Default)]
struct Held {
    listening: bool,
    /// Moves at every invalidation.
    epoch: u64,
    /// Every group document, by id; `None` until read.
    groups: Option<Arc<Vec<HeldGroup>>>,
}

#[derive(Debug)]
struct Shared {
    held: RwLock<Held>,
    devices: quick_cache::sync::Cache<DeviceId, Arc<OwnDocuments>, ByBytes>,
}

/// One instance's cache of shadow documents for check-ins.
#[derive(Debug)]
pub struct ShadowCache {
    shared: Arc<Shared>,
    following: Once,
}

/// Where a delta came from (for tests and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Everything was in memory.
    Hit,
    /// Something was read from the store.
    Miss,
}

impl ShadowCache {
    /// An empty cache holding device documents up to `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> Self {
        metrics::gauge!("airlift_cache_shadow_bytes_capacity").set(capacity_bytes as f64);
        // quick_cache sizes its tables from an item estimate: a few KiB each.
        let estimate = usize::try_from(capacity_bytes / 4096).unwrap_or(usize::MAX);
        Self {
            shared: Arc::new(Shared {
                held: RwLock::default(),
                devices: quick_cache::sync::Cache::with_weighter(
                    estimate.clamp(16, 1 << 20),
                    capacity_bytes.max(1),
                    ByBytes,
                ),
            }),
            following: Once::new(),
        }
    }

    /// Starts following the store's change feed (once; `subscribe` is
    /// called only the first time). Until the feed's first event says it
    /// listens, nothing is kept.
    pub fn follow(&self, subscribe: impl FnOnce() -> ChangeFeed) {
        self.following.call_once(|| {
            let feed = subscribe();
            tokio::spawn(follow(feed, Arc::downgrade(&self.shared)));
        });
    }

    /// The device's delta (`None` when it has converged, or there is no
    /// such device), given what it is and reports now (`facts`: which
    /// group documents reach it).
    pub async fn delta<S: ShadowReads + ?Sized>(
        &self,
        store: &S,
        device: DeviceId,
        facts: &DeviceFacts<'_>,
    ) -> StoreResult<(Option<Document>, Lookup)> {
        let (groups, groups_lookup) = self.groups(store).await?;
        let Some(groups) = groups else {
            // More groups than are held: the store merges them.
            let shadow = store.device_shadow(device).await?;
            return Ok((
                shadow.map(|s| s.delta).filter(|d| !d.is_empty()),
                Lookup::Miss,
            ));
        };
        let (own, own_lookup) = self.own(store, device).await?;
        let Some(own) = own else {
            return Ok((None, Lookup::Miss));
        };
        let reaching: Vec<GroupShadow> = groups
            .iter()
            .filter(|g| g.rule.reaches(facts))
            .map(|g| g.shadow.clone())
            .collect();
        let (effective, _) = merge::effective(&own.desired, &reaching);
        let delta = merge::delta(&effective, &own.reported);
        let lookup = if groups_lookup == Lookup::Hit && own_lookup == Lookup::Hit {
            Lookup::Hit
        } else {
            Lookup::Miss
        };
        let result = match lookup {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
        };
        metrics::counter!("airlift_cache_shadow_lookups_total", "result" => result).increment(1);
        Ok(((!delta.is_empty()).then_some(delta), lookup))
    }

    /// Call after this instance wrote the device's documents: its next
    /// check-in reads them again even before the feed's event arrives.
    pub fn forget_device(&self, device: DeviceId) {
        if let Ok(mut held) = self.shared.held.write() {
            held.epoch += 1;
            self.shared.devices.remove(&device);
        }
    }

    /// Call after this instance wrote a group's document.
    pub fn forget_groups(&self) {
        if let Ok(mut held) = self.shared.held.write() {
            held.epoch += 1;
            held.groups = None;
        }
    }

    /// How many devices' documents are held now.
    pub fn devices_held(&self) -> usize {
        self.shared.devices.len()
    }

    /// The epoch to compare after a read; `None` if the read must not be
    /// kept (the feed is deaf).
    fn epoch(&self) -> Option<u64> {
        let held = self.shared.held.read().ok()?;
        held.listening.then_some(held.epoch)
    }

    async fn groups<S: ShadowReads + ?Sized>(
        &self,
        store: &S,
    ) -> StoreResult<(Option<Arc<Vec<HeldGroup>>>, Lookup)> {
        if let Some(groups) = self.shared.held.read().ok().and_then(|h| h.groups.clone()) {
            return Ok((Some(groups), Lookup::Hit));
        }
        let epoch = self.epoch();
        let list = store.list_group_shadows(MAX_GROUPS_HELD).await?;
        if list.len() >= MAX_GROUPS_HELD as usize {
            return Ok((None, Lookup::Miss));
        }
        let list: Arc<Vec<HeldGroup>> = Arc::new(
            list.into_iter()
                .map(|shadow| {
                    let rule = GroupRule::of(&shadow.group);
                    if rule == GroupRule::Expression(None) {
                        tracing::warn!(group = %shadow.group, "shadow: a group's expression does not parse; it reaches no device");
                    }
                    HeldGroup { shadow, rule }
                })
                .collect(),
        );
        if let Ok(mut held) = self.shared.held.write() {
            if epoch == Some(held.epoch) && held.listening {
                held.groups = Some(Arc::clone(&list));
            }
        }
        Ok((Some(list), Lookup::Miss))
    }

    async fn own<S: ShadowReads + ?Sized>(
        &self,
        store: &S,
        device: DeviceId,
    ) -> StoreResult<(Option<Arc<OwnDocuments>>, Lookup)> {
        if let Some(own) = self.shared.devices.get(&device) {
            return Ok((Some(own), Lookup::Hit));
        }
        let epoch = self.read_begins();
        let Some(documents) = store.device_documents(device).await? else {
            return Ok((None, Lookup::Miss));
        };
        Ok((Some(self.keep_read(device, documents, epoch)), Lookup::Miss))
    }

    /// Call before reading a device's documents elsewhere (with its
    /// record: [`crate::cache::Caches::device_with_documents`]); give what
    /// it returns to [`Self::keep_read`].
    pub fn read_begins(&self) -> ReadBegan {
        ReadBegan(self.epoch())
    }

    /// Keeps the device's documents read since `began`, unless something
    /// was invalidated in between or the feed is deaf.
    pub fn keep_read(
        &self,
        device: DeviceId,
        documents: DeviceDocuments,
        began: ReadBegan,
    ) -> Arc<OwnDocuments> {
        let own = Arc::new(own_documents(documents));
        // A read lock is enough: an invalidation takes the write lock, so it
        // cannot slip in between the epoch check and the insert.
        if let Ok(held) = self.shared.held.read() {
            if began.0 == Some(held.epoch) && held.listening {
                self.shared.devices.insert(device, Arc::clone(&own));
                metrics::gauge!("airlift_cache_shadow_devices")
                    .set(self.shared.devices.len() as f64);
                metrics::gauge!("airlift_cache_shadow_bytes")
                    .set(self.shared.devices.weight() as f64);
            }
        }
        own
    }
}

impl Shared {
    /// Applies an event of the store's change feed.
    fn apply(&self, event: StoreEvent) {
        let Ok(mut held) = self.held.write() else {
            return;
        };
        match event {
            StoreEvent::ShadowChanged(device) => {
                held.epoch += 1;
                self.devices.remove(&device);
            }
            StoreEvent::GroupShadowsChanged => {
                held.epoch += 1;
                held.groups = None;
            }
            StoreEvent::Listening | StoreEvent::Interrupted => {
                held.epoch += 1;
                held.groups = None;
                self.devices.clear();
                held.listening = event == StoreEvent::Listening;
            }
            // What a device is and reports is the check-in's to give;
            // nothing else touches a shadow.
            StoreEvent::DeviceChanged(_)
            | StoreEvent::InventoryChanged(_)
            | StoreEvent::DeploymentChanged(_)
            | StoreEvent::CheckInRequested(_)
            | StoreEvent::UpdateChanged { .. } => {}
            other => {
                // An event this version does not know: forget all to be safe.
                tracing::debug!(?other, "unknown store event");
                held.epoch += 1;
                held.groups = None;
                self.devices.clear();
            }
        }
    }
}

/// Applies the feed to the cache until the store closes it or the cache
/// is gone.
async fn follow(mut feed: ChangeFeed, shared: Weak<Shared>) {
    while let Some(event) = feed.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.apply(event);
    }
}

fn own_documents(shadow: DeviceDocuments) -> OwnDocuments {
    let json_bytes = |document: &Document| serde_json::to_vec(document).map_or(0, |b| b.len());
    let bytes = json_bytes(&shadow.desired.document)
        .saturating_add(json_bytes(&shadow.reported.document))
        // Per-key times of the desired document.
        .saturating_add(shadow.desired.metadata.len().saturating_mul(48));
    OwnDocuments {
        desired: shadow.desired,
        reported: shadow.reported.document,
        bytes: u64::try_from(bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(ENTRY_OVERHEAD),
    }
}

#[cfg(test)]
#[path = "shadow_cache/tests.rs"]
mod tests;
