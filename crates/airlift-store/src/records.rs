//! The records the [`Store`](crate::Store) reads and writes, and the
//! filters and pages it takes: plain data, no behaviour.

use airlift_protocol::management::{ApiToken, Device, DeviceUpdate};
use airlift_protocol::state::{DeviceStatus, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId, TokenId};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// A management API token as stored: its secret only as a SHA-256 hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    /// Public part.
    pub token: ApiToken,
    /// SHA-256 of the bearer secret.
    pub secret_sha256: [u8; 32],
}

/// A dashboard sign-in to store: the browser holds the secret, the store
/// only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// SHA-256 of the cookie's secret.
    pub secret_sha256: [u8; 32],
    /// The API token the browser signed in with; its role is the session's.
    pub token_id: TokenId,
    /// The form token that state-changing requests of this session carry.
    pub csrf: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// A live dashboard session, with the token it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The API token (its role decides what the session may do).
    pub token: ApiToken,
    /// The form token of this session.
    pub csrf: String,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// A change to record in the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who (token name and id).
    pub actor: String,
    /// What (`package.upload`, `device.accept`, …).
    pub action: String,
    /// Which object.
    pub object: String,
    /// Extra detail.
    pub details: serde_json::Value,
}

/// A stored package: its metadata, where its bytes are, and its signed head.
#[derive(Debug, Clone, PartialEq)]
pub struct PackageRecord {
    /// The API view (id, name, version, manifest, size, digest, …).
    pub package: airlift_protocol::management::Package,
    /// Key of the package file in the blob store.
    pub blob_key: String,
    /// Header + manifest + signatures, as in the file: sent in offers.
    pub head: Vec<u8>,
    /// `provides` of the manifest: software name → version.
    pub provides: BTreeMap<String, String>,
}

/// A device as stored, with the digest of the inventory it last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The API view.
    pub device: Device,
    /// [`inventory_digest`] of the inventory last stored; `None` before the
    /// first check-in.
    pub inventory_sha256: Option<[u8; 32]>,
}

/// What the device routes keep of a device: its status, its tags and the
/// digest of the inventory last stored. Read in one light query
/// ([`crate::Store::device_summary_with_documents`]): without the installed
/// versions and attributes a check-in brings anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    pub id: DeviceId,
    pub status: DeviceStatus,
    /// Sorted.
    pub tags: Vec<String>,
    /// [`inventory_digest`] of the inventory last stored; `None` before the
    /// first check-in.
    pub inventory_sha256: Option<[u8; 32]>,
}

impl From<DeviceRecord> for DeviceSummary {
    fn from(record: DeviceRecord) -> Self {
        Self {
            id: record.device.id,
            status: record.device.status,
            tags: record.device.tags,
            inventory_sha256: record.inventory_sha256,
        }
    }
}

/// A check-in whose inventory was unchanged: only its time is to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInTime {
    pub device: DeviceId,
    /// [`inventory_digest`] of the inventory it reported.
    pub inventory_sha256: [u8; 32],
    /// When it checked in.
    pub at: DateTime<Utc>,
}

/// Filters for listing devices; `None`/empty means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Admission status.
    pub status: Option<DeviceStatus>,
    /// Reported device type.
    pub device_type: Option<String>,
    /// Carries this tag.
    pub tag: Option<String>,
    /// Reported attributes equal to all of these.
    pub attributes: BTreeMap<String, String>,
    /// Reported installed software equal to all of these (name → version).
    pub installed: BTreeMap<String, String>,
    /// Identity text (names and values) containing this, ignoring ASCII
    /// case; or the device with exactly this id.
    pub search: Option<String>,
    /// Last heard of (its last check-in, or its first contact if it never
    /// checked in) before this: silent since then.
    pub silent_since: Option<DateTime<Utc>>,
    /// Last heard of at or after this.
    pub heard_since: Option<DateTime<Utc>>,
    /// Has an update matching this (in one deployment's row).
    pub update: Option<UpdateFilter>,
    /// Matches this target expression (as well as everything above).
    pub expression: Option<airlift_protocol::target_expr::TargetExpr>,
    /// The order of the listing (ties: creation, then id).
    pub sort: DeviceSort,
    /// Whether that order is reversed.
    pub descending: bool,
}

/// Which of a device's updates (its rows in deployments) a device listing
/// asks for; every condition given holds for the same update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateFilter {
    /// In this deployment.
    pub deployment: Option<DeploymentId>,
    /// In one of these states; empty means any.
    pub states: Vec<UpdateState>,
    /// Whose last message (a failure's reason) is exactly this.
    pub message: Option<String>,
}

/// What a device listing is ordered by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceSort {
    /// When it first made contact or was pre-authorised.
    #[default]
    CreatedAt,
    /// Its identity (as stored: names and values, the first 128 characters).
    Identity,
    /// Its reported device type; devices that reported none come last.
    DeviceType,
    /// Its admission status.
    Status,
    /// Its last check-in; devices that never checked in come first.
    LastCheckIn,
}

/// Devices per admission status, and how many accepted ones are silent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    /// Devices per status; statuses no device has are absent.
    pub by_status: BTreeMap<DeviceStatus, u64>,
    /// Accepted devices not heard of since the time asked about.
    pub offline: u64,
}

/// How many devices report one version of one installed software name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCount {
    /// The software's name (`rootfs`, `app`, …).
    pub name: String,
    /// One of its versions.
    pub version: String,
    /// Devices reporting this version.
    pub devices: u64,
    /// Devices reporting any version of this name.
    pub name_devices: u64,
}

/// How many devices of an open deployment are in one state, by the phase
/// that admitted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateCount {
    /// The deployment (active or paused).
    pub deployment: DeploymentId,
    /// The state.
    pub state: UpdateState,
    /// The rollout phase that admitted them; `None`: not admitted.
    pub phase: Option<u32>,
    /// How many devices.
    pub devices: u64,
}

/// Failures that gave the same reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGroup {
    /// The reason the device or the server gave; `None` if none.
    pub reason: Option<String>,
    /// How many failures (failed, rolled back or timed out).
    pub failures: u64,
    /// Of how many devices.
    pub devices: u64,
    /// In how many deployments.
    pub deployments: u64,
    /// The latest.
    pub last_at: DateTime<Utc>,
}

/// Successful installs of one package version on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallCount {
    /// Midnight UTC of the day.
    pub day: DateTime<Utc>,
    /// The package's name; `None` once the package is deleted.
    pub name: Option<String>,
    /// The package's version; `None` once the package is deleted.
    pub version: Option<String>,
    /// Devices that confirmed a healthy boot of it that day.
    pub installs: u64,
}

/// Check-ins in one minute, counted by every server instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInCount {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// How many check-ins it saw.
    pub check_ins: u64,
}

/// A device's update that tells where it stands: the one of a deployment
/// still under way, else its latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUpdate {
    /// Its deployment.
    pub deployment: DeploymentId,
    /// The device's state there.
    pub update: DeviceUpdate,
}

/// Which page of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// 1-based.
    pub page: u32,
    /// 1..=1000.
    pub per_page: u32,
}

/// Filters for the audit log; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Who: the whole actor (`name (token id)`) or just the token's name.
    pub actor: Option<String>,
    /// What: exactly this action (`deployment.create`), or every action of
    /// a family when it ends with a dot (`deployment.`).
    pub action: Option<String>,
    /// On which object: exactly this (a deployment's or device's id, …).
    pub object: Option<String>,
    /// When: at or after `since`, before `until`.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// What a status report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportOutcome {
    /// The state recorded after the report.
    pub state: UpdateState,
    /// Whether the report changed it.
    pub applied: bool,
}
