//! `/api/v1` bodies for repairing a rollout: offering a deployment again
//! to its failed devices, and resetting a device stuck in one state.

use crate::ids::{DeploymentId, DeviceId};
use crate::state::UpdateState;
use serde::{Deserialize, Serialize};

/// Most times one device may be offered one deployment again.
pub const MAX_RETRY_LIMIT: u32 = 100;
/// How many times a device is offered a deployment again unless the
/// request says otherwise.
pub const DEFAULT_RETRY_LIMIT: u32 = 3;
/// Longest reason for a reset, in bytes.
pub const MAX_REASON: usize = 1024;

/// Offer a deployment again to its failed devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Devices already retried this many times are left as they are
    /// (1–100) [default: 3].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// What a retry did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetryResult {
    /// The deployment.
    pub deployment_id: DeploymentId,
    /// Devices moved back to `pending`: they are offered it at their next
    /// check-in (a phased rollout keeps the phase that admitted them).
    pub retried: Vec<DeviceId>,
    /// Failed devices left as they are: retried `limit` times already.
    pub at_limit: u64,
    /// The limit applied.
    pub limit: u32,
    /// Whether a finished deployment became active again for them.
    pub reopened: bool,
}

/// Reset a device stuck in one state of its update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// Why, for the audit log and the device's history: 1–1024 bytes.
    #[schema(min_length = 1, max_length = 1024)]
    pub reason: String,
    /// Reset it even though it has not been in its state for the
    /// deployment's device timeout yet (the operator knows it is stuck:
    /// re-imaged, replaced) [default: false].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// What a reset did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResetResult {
    /// The deployment the device was stuck in.
    pub deployment_id: DeploymentId,
    /// The device.
    pub device_id: DeviceId,
    /// The state it was stuck in.
    pub was: UpdateState,
    /// How long it had been in it, in seconds.
    pub stuck_secs: u64,
    /// Whether it was reset before the device timeout (`force`).
    #[serde(default)]
    pub forced: bool,
    /// Its state now: `pending`, offered the update again.
    pub state: UpdateState,
}
