//! Deferrals of soft deployments: how many times each device put an
//! install off ("not now", from its `defer_command`). The
//! [`DeferralStore`] trait is a supertrait of [`Store`](crate::Store); its
//! SQL is in `sql/deferral.rs`, written once for both backends.
//!
//! The store keeps the count and the rule that makes it safe to repeat a
//! report: deferral number `n` is counted only when `n - 1` are, and a
//! number already counted is acknowledged without counting it again. The
//! soft policy (limits, deadline) is the server's business; the store only
//! enforces the limit it is handed, atomically with the count.

use crate::StoreResult;
use airlift_protocol::state::UpdateState;
use airlift_protocol::{DeploymentId, DeviceId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// What recording a deferral did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferralOutcome {
    /// The deferral is counted: by this call (`counted`), or already (a
    /// repeated report). `deferred` is the count now.
    Counted { deferred: u32, counted: bool },
    /// Refused: the device is not waiting to install (it is in this state).
    NotWaiting(UpdateState),
    /// Refused: the device has used the `limit` deferrals it had.
    Exhausted { deferred: u32 },
    /// Refused: the number skips ahead; the next one is `deferred + 1`.
    OutOfOrder { deferred: u32 },
}

/// How much a deployment's devices deferred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeferralTotals {
    /// Deferrals of all its devices together.
    pub deferrals: u64,
    /// Devices that deferred at least once.
    pub devices: u64,
    /// The most any one device deferred.
    pub most: u32,
}

/// The deferral count of each device in a soft deployment.
#[async_trait]
pub trait DeferralStore {
    /// How many times `device` deferred `deployment`; `None` if it is not
    /// in the deployment.
    async fn deferrals(
        &self,
        deployment: DeploymentId,
        device: DeviceId,
    ) -> StoreResult<Option<u32>>;

    /// Counts deferral number `deferral` (1 for the first) of a device
    /// waiting at `downloaded`, unless it has used `limit` deferrals, and
    /// appends it to the device's history with `message` (an event in state
    /// `downloaded`, not applied: the device's state does not change).
    /// One atomic operation; `None` if the device is not in the deployment.
    async fn record_deferral(
        &self,
        deployment: DeploymentId,
        device: DeviceId,
        deferral: u32,
        limit: Option<u32>,
        message: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<DeferralOutcome>>;

    /// How much the devices of `deployment` deferred (one query).
    async fn deferral_totals(&self, deployment: DeploymentId) -> StoreResult<DeferralTotals>;
}
