//! Wire types of Airlift's HTTP APIs, shared by the server, the agent, the
//! CLI and the simulator so that both ends of a request agree by
//! construction.
//!
//! - [`device`]: `/api/device/v1`, what a device sends and receives.
//! - [`management`]: `/api/v1`, what operators and scripts send and receive.
//! - [`install`]: when devices may install (maintenance window, download-only).
//! - [`state`]: the states of devices, deployments and a device's update.
//! - [`auth`]: how a device signs its authentication request.
//! - [`target_expr`]: target expressions (`tag:lab AND installed.rootfs < 2.4.0`).
//!
//! This crate must not know about storage, HTTP frameworks or async
//! runtimes: it is serde types, their invariants, and the device-request
//! signature, nothing more.

pub mod auth;
pub mod device;
pub mod ids;
pub mod install;
pub mod management;
pub mod push;
pub mod repair;
pub mod shadow;
pub mod soft;
pub mod state;
pub mod strategy;
pub mod target_expr;
pub mod trust;

pub use ids::{DeploymentId, DeviceId, PackageId, TokenId};

/// The device API's path prefix.
pub const DEVICE_API: &str = "/api/device/v1";
/// The management API's path prefix.
pub const MANAGEMENT_API: &str = "/api/v1";

/// The body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`unauthorized`, `not_found`, `deployment_cancelled`, …).
    pub code: String,
    /// What went wrong and what to do, for a person.
    pub message: String,
}
