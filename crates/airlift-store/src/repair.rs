//! Repairing a rollout: the fleet-wide automatic rollback a circuit
//! breaker starts, offering a deployment again to its failed devices, and
//! resetting a device stuck in one state. A supertrait of
//! [`Store`](crate::Store), so `Arc<dyn Store>` has these methods too; its
//! SQL is in `sql/repair.rs`, written once for both backends.

use crate::{DeploymentRecord, RolloutState, StoreResult};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// A rollback deployment to create, with its devices (all `pending`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRollback {
    /// The deployment; its target lists exactly `devices`.
    pub deployment: DeploymentRecord,
    /// The devices it rolls back.
    pub devices: Vec<DeviceId>,
}

/// How a deployment and automatic rollbacks are linked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollbackLinks {
    /// The deployment whose breaker started this one.
    pub rollback_of: Option<DeploymentId>,
    /// The rollback deployments this one's breaker started, oldest first.
    pub rolled_back_by: Vec<DeploymentId>,
}

/// What offering a deployment again to its failed devices did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOutcome {
    /// Devices moved back to `pending`.
    pub retried: Vec<DeviceId>,
    /// Failed devices left as they are: they reached the retry limit.
    pub at_limit: u64,
    /// Whether a finished deployment was opened again for them.
    pub reopened: bool,
}

/// A device's update moved back to `pending` by an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetOutcome {
    /// The state it was stuck in.
    pub was: UpdateState,
    /// When it had reached that state.
    pub since: DateTime<Utc>,
}

/// States a device may be retried from: it failed, rolled back or timed out.
pub const RETRYABLE: [UpdateState; 3] = [
    UpdateState::Failure,
    UpdateState::RolledBack,
    UpdateState::TimedOut,
];

/// States a device can be stuck in (working on the update, not done).
pub const RESETTABLE: [UpdateState; 5] = [
    UpdateState::Downloading,
    UpdateState::Downloaded,
    UpdateState::Installing,
    UpdateState::Installed,
    UpdateState::Rebooting,
];

/// Rollback, retry and reset; every method is one atomic operation.
#[async_trait]
pub trait FleetRepair {
    /// For each of `devices`, the package of the release it last committed
    /// (`success` or `already_installed`) in a deployment other than
    /// `except` and of a package other than `not_package`; devices with no
    /// such release are absent.
    async fn previous_releases(
        &self,
        devices: &[DeviceId],
        except: DeploymentId,
        not_package: PackageId,
    ) -> StoreResult<BTreeMap<DeviceId, PackageId>>;

    /// Moves `original` from status `from` to `aborted` with `rollout`
    /// (cancelling its devices not yet done) and creates `rollbacks`,
    /// linked to it, in one transaction. `false` (and nothing written) if
    /// the deployment was no longer in status `from`: another instance got
    /// there first.
    async fn start_rollback(
        &self,
        original: DeploymentId,
        from: DeploymentStatus,
        rollout: &RolloutState,
        rollbacks: &[NewRollback],
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// How `id` is linked to automatic rollbacks.
    async fn rollback_links(&self, id: DeploymentId) -> StoreResult<RollbackLinks>;

    /// Offers deployment `id` again to its devices in a [`RETRYABLE`]
    /// state that were retried fewer than `limit` times: back to `pending`
    /// (keeping the phase that admitted them), their retry count up by
    /// one, their soft deferrals back to none (a retry is a new offer), a
    /// history event with `message`. A finished deployment becomes
    /// active again; the circuit breaker forgets as many acknowledged
    /// failures as devices were retried. `NotFound` for no such
    /// deployment, `Conflict` for an aborted or cancelled one.
    async fn retry_failed(
        &self,
        id: DeploymentId,
        limit: u32,
        message: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<RetryOutcome>;

    /// Moves `device` in deployment `id` from a [`RESETTABLE`] state it
    /// reached at or before `stuck_since` back to `pending`, with `reason`
    /// as its message and in its history. `None` if it is not in such a
    /// state, or reached it later (it moved meanwhile).
    async fn reset_update(
        &self,
        id: DeploymentId,
        device: DeviceId,
        reason: &str,
        stuck_since: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<ResetOutcome>>;

    /// How many times each device of deployment `id` was retried (devices
    /// never retried are absent).
    async fn retries(&self, id: DeploymentId) -> StoreResult<BTreeMap<DeviceId, u32>>;
}
