//! `/api/device/v1`: what a device sends and what it gets back.

use crate::ids::{DeploymentId, DeviceId, PackageId};
use crate::state::UpdateState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Path of the authentication request.
pub const AUTH_PATH: &str = "/api/device/v1/auth";
/// Path of the check-in.
pub const CHECK_IN_PATH: &str = "/api/device/v1/check-in";
/// HTTP header carrying the device's signature over the auth request body.
pub const SIGNATURE_HEADER: &str = "x-airlift-signature";
/// Path of the authentication by client certificate (mutual TLS): the
/// certificate the TLS connection presented is the credential.
pub const CERTIFICATE_AUTH_PATH: &str = "/api/device/v1/auth/certificate";

/// Path to download the package of a deployment's offer.
pub fn download_path(deployment: DeploymentId) -> String {
    format!("/api/device/v1/deployments/{deployment}/download")
}

/// Path to report progress on a deployment.
pub fn status_path(deployment: DeploymentId) -> String {
    format!("/api/device/v1/deployments/{deployment}/status")
}

/// A device asks for a token. The exact body bytes are signed with the
/// device's Ed25519 key; the signature travels in [`SIGNATURE_HEADER`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthRequest {
    /// What identifies the device to people: serial number, MAC address, ….
    #[schema(schema_with = identity_schema)]
    pub identity: BTreeMap<String, String>,
    /// The device's Ed25519 public key, SPKI PEM.
    pub public_key: String,
    /// Seconds since the Unix epoch when the request was made; requests far
    /// from the server's clock are refused.
    pub timestamp: i64,
    /// A random value used once; a repeated nonce is a replay.
    #[schema(min_length = 16, max_length = 128)]
    pub nonce: String,
}

/// A device authenticated by its TLS client certificate asks for a token:
/// no key and no signature, since the handshake proved it holds the
/// certificate's private key. `identity` is what it tells people about
/// itself (serial, MAC, …); the server adds the certificate's subject
/// common name as `certificate_cn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateAuthRequest {
    /// What identifies the device to people: serial number, MAC address, ….
    #[schema(schema_with = identity_schema)]
    pub identity: BTreeMap<String, String>,
}

/// The schema of a device's `identity`: 1–32 attributes, names of 1–128
/// bytes, values up to 1024 bytes.
pub(crate) fn identity_schema() -> utoipa::openapi::Object {
    string_map(
        "What identifies the device to people: serial number, MAC address, …; 1–32 attributes, names of 1–128 bytes, values up to 1024 bytes.",
        1..=32,
        128,
        1024,
    )
}

/// The schema of an inventory map (`installed`, `attributes`).
fn inventory_map_schema(description: &str) -> utoipa::openapi::Object {
    string_map(
        &format!("{description}; at most {MAX_INVENTORY_ENTRIES} entries, names of 1–{MAX_INVENTORY_NAME} bytes, values up to {MAX_INVENTORY_VALUE} bytes."),
        0..=MAX_INVENTORY_ENTRIES,
        MAX_INVENTORY_NAME,
        MAX_INVENTORY_VALUE,
    )
}

fn installed_schema() -> utoipa::openapi::Object {
    inventory_map_schema("Installed software name → version")
}

fn attributes_schema() -> utoipa::openapi::Object {
    inventory_map_schema("Free attributes for targeting and people: kernel, region, …")
}

/// An object of strings with `entries` properties, names of 1–`name` and
/// values of up to `value` characters (the server counts bytes).
pub(crate) fn string_map(
    description: &str,
    entries: std::ops::RangeInclusive<usize>,
    name: usize,
    value: usize,
) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let string = || ObjectBuilder::new().schema_type(Type::String);
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .additional_properties(Some(string().max_length(Some(value))))
        .property_names(Some(string().min_length(Some(1)).max_length(Some(name))))
        .min_properties((*entries.start() > 0).then_some(*entries.start()))
        .max_properties(Some(*entries.end()))
        .build()
}

/// The server's answer to an [`AuthRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AuthResponse {
    /// Accepted: use `token` as a bearer token until it expires, then authenticate again.
    Accepted {
        /// The device's id.
        device_id: DeviceId,
        /// Short-lived bearer token for the device API.
        token: String,
        /// Seconds until `token` expires.
        expires_in_secs: u64,
    },
    /// Known, waiting for an operator to accept it. Retry later.
    Pending {
        /// The device's id.
        device_id: DeviceId,
    },
    /// Refused or decommissioned by an operator.
    Rejected {
        /// The device's id.
        device_id: DeviceId,
    },
}

/// What a device reports about itself at every check-in. The server keeps
/// what the device says it runs as the truth.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Device type, matched against packages' `compatible.device_types`.
    #[schema(min_length = 1, max_length = 128)]
    pub device_type: String,
    /// Hardware revision, if the device knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_revision: Option<String>,
    /// Installed software name → version.
    #[serde(default)]
    #[schema(schema_with = installed_schema)]
    pub installed: BTreeMap<String, String>,
    /// The anti-rollback counter of the running software.
    #[serde(default)]
    pub security_version: u64,
    /// Free attributes for targeting and people: kernel, region, ….
    #[serde(default)]
    #[schema(schema_with = attributes_schema)]
    pub attributes: BTreeMap<String, String>,
}

/// The answer to a check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckInResponse {
    /// Seconds until the next check-in.
    pub poll_interval_secs: u64,
    /// An update to install, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateOffer>,
    /// What differs between the device's desired configuration and what it
    /// reported; absent when nothing does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::shadow::ShadowDelta>,
}

/// An update the device should install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdateOffer {
    /// The deployment offering it; used for download and status.
    pub deployment_id: DeploymentId,
    /// The package.
    pub package_id: PackageId,
    /// Package name and version, for logs.
    pub name: String,
    /// Package version.
    pub version: String,
    /// The package's head — header, manifest and signatures, base64 — so the
    /// device can verify the signature and check compatibility before it
    /// downloads a byte of payload.
    pub signed_manifest: String,
    /// Where to download the whole package (relative to the server URL).
    pub download_path: String,
    /// Package size in bytes.
    pub size: u64,
    /// SHA-256 of the whole package file, hex; also its `ETag`.
    pub sha256: String,
    /// Whether to install once downloaded, or wait at `downloaded` (a
    /// maintenance window, a download-only deployment) [default: now].
    #[serde(default)]
    pub install: crate::install::InstallPermit,
    /// Present for a soft deployment that still lets this device defer:
    /// ask before installing, and how many deferrals are left or until
    /// when. Absent: the offer is forced (`docs/operations.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferral: Option<crate::soft::DeferralAllowance>,
    /// The server's signed timestamp document covering `signed_manifest`
    /// (JSON text; `docs/trust.md`); absent when the server signs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// A device's report on one step of an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// The step reached.
    #[schema(schema_with = reportable_state_schema)]
    pub state: UpdateState,
    /// Download progress, for `downloading`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Why it failed or rolled back: the tail of the log, the failing check's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The states a device reports: [`UpdateState`]s the server does not
/// decide itself.
fn reportable_state_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("The step reached: an update state devices report."))
        .enum_values(Some(
            UpdateState::ALL
                .iter()
                .filter(|state| state.is_reportable())
                .map(|state| state.as_str()),
        ))
        .build()
}

/// Largest `message` the server keeps, in bytes; longer ones are cut from the front.
pub const MAX_STATUS_MESSAGE: usize = 16 * 1024;

/// Largest whole number a device may send (a security version, a download's
/// size): what a signed 64-bit database column holds.
pub const MAX_STORED_INTEGER: u64 = i64::MAX as u64;

/// Longest device type a device may report, in bytes.
pub const MAX_DEVICE_TYPE: usize = 128;
/// Most entries in each of an inventory's maps (`installed`, `attributes`).
pub const MAX_INVENTORY_ENTRIES: usize = 256;
/// Longest name in an inventory map, in bytes.
pub const MAX_INVENTORY_NAME: usize = 128;
/// Longest value in an inventory map, in bytes.
pub const MAX_INVENTORY_VALUE: usize = 1024;

/// Bytes done out of bytes total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Bytes downloaded so far.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// The server's answer to a [`StatusReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusAck {
    /// The state the server now records for this device and deployment.
    pub state: UpdateState,
    /// Whether the report changed it (a late report does not).
    pub applied: bool,
}
