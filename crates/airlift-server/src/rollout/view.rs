//! The rollout engine's memory of the deployments it advances, so that a
//! tick costs what changed rather than what the deployment holds.
//!
//! For each deployment whose lease the engine holds it keeps what
//! [`plan`](super::plan::plan) reads: every device's state, when it
//! changed, the phase that admitted it and when it last reported
//! download progress, and the canaries of each phase. The view is read
//! whole when the engine takes the deployment on (first tick, lease
//! regained, after an error); after that each tick asks the store only for
//! the rows changed since its last read
//! ([`DeploymentChanges`](airlift_store::DeploymentChanges): the database
//! stamps every write to a row's state, `updated_at`, phase or progress,
//! and every insert — a device joining a dynamic deployment — on its own
//! clock). A 100 000-device rollout thus reads the few rows its devices'
//! reports changed each second, instead of 100 000.
//!
//! What a tick may not see from changed rows alone makes it read whole
//! again: an operator's action on the deployment (resume, retry, release,
//! a new strategy), a pause longer than the lease, and every
//! [`WHOLE_READ_EVERY`] regardless.

use super::engine::tagged;
use airlift_protocol::install::InstallPolicy;
use airlift_protocol::management::DeviceUpdate;
use airlift_protocol::state::DeploymentStatus;
use airlift_protocol::strategy::{PhaseDevices, Phased};
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::{ChangeMark, DeploymentRecord, Store, StoreResult};
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How much earlier than the database's clock at the last read the next
/// read asks from. A row is stamped when written but visible when its
/// transaction commits; a transaction that commits within this of its
/// write is seen by the next tick. Instances' clocks do not matter: the
/// stamps and the mark are both the database's.
const OVERLAP: Duration = Duration::from_secs(5);

/// How often a view is read whole again, whatever changed: the safety net
/// for what changed rows cannot show — a transaction that committed more
/// than [`OVERLAP`] after its writes (a bulk write under load; statements
/// may run up to the database statement timeout), the database's clock
/// stepped back, rows written by hand past the triggers — and for the
/// canaries of phases naming a tag, which follow devices' tags and
/// status, not the deployment's rows. Five minutes: a 100 000-device
/// deployment then costs 333 rows a second on average, a hundredth of
/// reading it every tick, and a missed row is corrected within minutes.
const WHOLE_READ_EVERY: Duration = Duration::from_secs(300);

/// A view not refreshed for this long is read whole: the engine may have
/// lost the deployment's lease meanwhile (its instance stalled past the
/// lease's 30 s) without a tick noticing.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// How a tick read a deployment's devices, for its report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DevicesRead {
    /// Device rows read from the store.
    pub rows: usize,
    /// Whether every row was read (the view was loaded or reloaded),
    /// rather than only the rows changed since the last tick.
    pub whole: bool,
}

/// The views of the deployments this engine advances.
#[derive(Debug)]
pub(super) struct Views {
    by_deployment: HashMap<DeploymentId, DeploymentView>,
    /// [`OVERLAP`], but for tests that show which rows a tick reads.
    overlap: Duration,
}

impl Default for Views {
    fn default() -> Self {
        Self {
            by_deployment: HashMap::new(),
            overlap: OVERLAP,
        }
    }
}

/// What the engine knows of one deployment between ticks.
///
/// Memory: per device, one [`DeviceUpdate`] without its message (no heap
/// behind it): `size_of::<DeviceUpdate>()`, 104 bytes on x86-64 (see the
/// test below), so about 10 MB for a 100 000-device deployment (up to
/// twice that in spare capacity once devices joined), plus the
/// canaries: at most one set entry (a few dozen bytes) per device, and only
/// for phases naming devices or a tag. Nothing else grows with the fleet.
#[derive(Debug)]
pub(super) struct DeploymentView {
    /// Every device of the deployment, sorted by id, without messages.
    pub(super) devices: Vec<DeviceUpdate>,
    /// For each phase, the canaries it names that are in the target (empty
    /// for percentage phases).
    pub(super) canaries: Vec<BTreeSet<DeviceId>>,
    /// Where the next read of changed rows asks from.
    since: ChangeMark,
    /// When the view was last read whole.
    read_whole_at: Instant,
    /// When the view was last refreshed.
    refreshed_at: Instant,
    /// What the view was read under.
    basis: Basis,
}

/// The parts of a deployment an operator changes together with many of
/// its device rows in one transaction (a retry moves the failed devices
/// back to `pending` and lowers the failures the breaker acknowledged; a
/// release restarts the waiting devices' clocks): when they differ from
/// what the view was read under, it is read whole, so the breaker or the
/// device timeout never acts on half an operator's action. Also the
/// strategy, which the canaries follow.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Basis {
    status: DeploymentStatus,
    acknowledged_failures: u64,
    install: InstallPolicy,
    strategy: Phased,
}

impl Basis {
    fn of(deployment: &DeploymentRecord, strategy: &Phased) -> Self {
        Self {
            status: deployment.status,
            acknowledged_failures: deployment.rollout.acknowledged_failures,
            install: deployment.install.clone(),
            strategy: strategy.clone(),
        }
    }
}

impl Views {
    /// Views whose reads of changed rows overlap by `overlap`: zero lets a
    /// test see exactly the rows written since the last tick.
    #[cfg(test)]
    pub(super) fn with_overlap(overlap: Duration) -> Self {
        Self {
            overlap,
            ..Self::default()
        }
    }

    /// Keeps only the views of deployments `keep` says the engine still
    /// advances (open, phased): those that ended are dropped.
    pub(super) fn retain(&mut self, keep: impl Fn(DeploymentId) -> bool) {
        self.by_deployment.retain(|id, _| keep(*id));
    }

    /// Drops a deployment's view: its lease went to another instance, or
    /// a tick failed on it. The next tick that advances it reads it whole.
    pub(super) fn forget(&mut self, id: DeploymentId) {
        self.by_deployment.remove(&id);
    }

    /// How many deployments have a view.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_deployment.len()
    }

    /// The deployment's view brought up to date: its changed rows read
    /// and merged in, or read whole (see the module's docs for when). A
    /// failed read leaves no view behind, so the next tick reads it whole.
    pub(super) async fn refresh(
        &mut self,
        store: &dyn Store,
        deployment: &DeploymentRecord,
        strategy: &Phased,
    ) -> StoreResult<(&DeploymentView, DevicesRead)> {
        let basis = Basis::of(deployment, strategy);
        let kept = self
            .by_deployment
            .remove(&deployment.id)
            .filter(|view| !view.needs_whole_read(&basis));
        let (view, read) = match kept {
            Some(mut view) => {
                let rows = view
                    .read_changes(store, deployment.id, strategy, self.overlap)
                    .await?;
                (view, DevicesRead { rows, whole: false })
            }
            None => {
                let view =
                    DeploymentView::read_whole(store, deployment.id, strategy, basis, self.overlap)
                        .await?;
                let rows = view.devices.len();
                (view, DevicesRead { rows, whole: true })
            }
        };
        let view = match self.by_deployment.entry(deployment.id) {
            Entry::Vacant(slot) => slot.insert(view),
            Entry::Occupied(slot) => {
                let slot = slot.into_mut();
                *slot = view;
                slot
            }
        };
        tracing::debug!(
            deployment_id = %deployment.id,
            rows = read.rows,
            whole = read.whole,
            "rollout view refreshed"
        );
        Ok((view, read))
    }
}

impl DeploymentView {
    fn needs_whole_read(&self, basis: &Basis) -> bool {
        self.basis != *basis
            || self.read_whole_at.elapsed() >= WHOLE_READ_EVERY
            || self.refreshed_at.elapsed() >= STALE_AFTER
    }

    /// Every device of the deployment and its canaries.
    async fn read_whole(
        store: &dyn Store,
        id: DeploymentId,
        strategy: &Phased,
        basis: Basis,
        overlap: Duration,
    ) -> StoreResult<Self> {
        let read = store.rollout_devices(id, None).await?;
        let mut devices = read.devices;
        // The store sorts by id already; the merge's lookups rely on it.
        devices.sort_unstable_by_key(|d| d.device_id);
        let canaries = canaries(store, strategy, &devices).await?;
        let now = Instant::now();
        Ok(Self {
            devices,
            canaries,
            since: read.read_at.earlier_by(overlap),
            read_whole_at: now,
            refreshed_at: now,
            basis,
        })
    }

    /// Merges the rows changed since the last read; returns how many.
    async fn read_changes(
        &mut self,
        store: &dyn Store,
        id: DeploymentId,
        strategy: &Phased,
        overlap: Duration,
    ) -> StoreResult<usize> {
        let read = store.rollout_devices(id, Some(self.since)).await?;
        let rows = read.devices.len();
        let mut joined = Vec::new();
        for row in read.devices {
            match self
                .devices
                .binary_search_by_key(&row.device_id, |d| d.device_id)
            {
                Ok(at) => self.devices[at] = row,
                Err(_) => joined.push(row),
            }
        }
        if !joined.is_empty() {
            self.devices.extend(joined);
            self.devices.sort_unstable_by_key(|d| d.device_id);
            // Canaries named by id may have joined; those named by tag
            // are found at the next whole read.
            for (phase, canaries) in strategy.phases.iter().zip(&mut self.canaries) {
                if let PhaseDevices::Devices(ids) = &phase.devices {
                    *canaries = in_target(ids.iter().copied(), &self.devices);
                }
            }
        }
        self.since = read.read_at.earlier_by(overlap);
        self.refreshed_at = Instant::now();
        Ok(rows)
    }
}

/// The canary devices each phase names, among the deployment's `devices`
/// (sorted by id).
async fn canaries(
    store: &dyn Store,
    strategy: &Phased,
    devices: &[DeviceUpdate],
) -> StoreResult<Vec<BTreeSet<DeviceId>>> {
    let mut canaries = Vec::with_capacity(strategy.phases.len());
    for phase in &strategy.phases {
        canaries.push(match &phase.devices {
            PhaseDevices::Devices(ids) => in_target(ids.iter().copied(), devices),
            PhaseDevices::Tag(tag) => {
                in_target(tagged(store, tag).await?.into_iter().map(|d| d.id), devices)
            }
            PhaseDevices::Percent(_) => BTreeSet::new(),
        });
    }
    Ok(canaries)
}

/// Those of `ids` that are among `devices` (sorted by id).
fn in_target(ids: impl Iterator<Item = DeviceId>, devices: &[DeviceUpdate]) -> BTreeSet<DeviceId> {
    ids.filter(|id| devices.binary_search_by_key(id, |d| d.device_id).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_costs_the_view_what_its_docs_say() {
        // The memory note on `DeploymentView` counts 104 bytes a device;
        // a field added to `DeviceUpdate` should update it.
        assert!(
            std::mem::size_of::<DeviceUpdate>() <= 112,
            "DeviceUpdate is {} bytes: update the memory note on DeploymentView",
            std::mem::size_of::<DeviceUpdate>()
        );
    }
}
