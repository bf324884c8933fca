//! `/api/v1`: what operators and scripts send and receive.

use crate::ids::{DeploymentId, DeviceId, PackageId, TokenId};
use crate::install::InstallPolicy;
use crate::state::{DeploymentStatus, DeviceStatus, Role, UpdateState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An uploaded, verified package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Package {
    /// Its id.
    pub id: PackageId,
    /// From the manifest.
    pub name: String,
    /// From the manifest.
    pub version: String,
    /// From the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Device types it fits.
    pub device_types: Vec<String>,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// Size of the package file in bytes.
    pub size: u64,
    /// SHA-256 of the package file, hex.
    pub sha256: String,
    /// Key ids of the trusted keys that signed it.
    pub signed_by: Vec<String>,
    /// The verified manifest.
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
    /// When it was uploaded.
    pub created_at: DateTime<Utc>,
}

/// A device as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Device {
    /// Its id.
    pub id: DeviceId,
    /// Admission status.
    pub status: DeviceStatus,
    /// Identity attributes it authenticates with.
    pub identity: BTreeMap<String, String>,
    /// Its public key, PEM.
    pub public_key: String,
    /// Operator-assigned tags.
    pub tags: Vec<String>,
    /// Device type, as last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Hardware revision, as last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_revision: Option<String>,
    /// Installed software, as last reported.
    pub installed: BTreeMap<String, String>,
    /// Security version, as last reported.
    pub security_version: u64,
    /// Free inventory attributes, as last reported.
    pub attributes: BTreeMap<String, String>,
    /// When it first made contact or was pre-authorised.
    pub created_at: DateTime<Utc>,
    /// Its last check-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_in: Option<DateTime<Utc>>,
}

/// One device and its update history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceDetail {
    /// The device.
    #[serde(flatten)]
    pub device: Device,
    /// Every update event ever recorded for it.
    pub history: Vec<UpdateEvent>,
}

/// One step of one device's update, as reported or decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdateEvent {
    /// The deployment.
    pub deployment_id: DeploymentId,
    /// The device.
    pub device_id: DeviceId,
    /// The state reported or decided.
    pub state: UpdateState,
    /// Whether it changed the recorded state (late reports do not).
    pub applied: bool,
    /// Log tail or reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// Items matching the query in all.
    pub total: u64,
    /// 1-based page number.
    pub page: u32,
    /// Items per page.
    pub per_page: u32,
}

/// Announce a device before it first connects; it is accepted on first
/// contact when it presents this public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreauthorizeRequest {
    /// Identity attributes the device will send.
    #[schema(schema_with = crate::device::identity_schema)]
    pub identity: BTreeMap<String, String>,
    /// Its Ed25519 public key, SPKI PEM.
    pub public_key: String,
    /// Tags to start with.
    #[serde(default)]
    #[schema(schema_with = tags_schema)]
    pub tags: Vec<String>,
}

/// Replace a device's tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTagsRequest {
    /// The new tags.
    #[schema(schema_with = tags_schema)]
    pub tags: Vec<String>,
}

/// The schema of a device's tags: at most 64, each 1–64 characters of
/// A–Z, a–z, 0–9, `-`, `_`, `.`, `:`.
fn tags_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .description(Some(
            "Tags: at most 64, each 1–64 characters of A–Z, a–z, 0–9, '-', '_', '.', ':'.",
        ))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z0-9._:-]{1,64}$")),
        )
        .max_items(Some(64))
        .build()
}

/// Most `key=value` pairs one filter on inventory attributes or installed
/// software may hold (a device list's query, a deployment's
/// `target.attributes`): each is a join the database must do.
pub const MAX_FILTER_PAIRS: usize = 16;
/// Longest tag, in bytes.
pub const MAX_TAG: usize = 64;

/// Which devices a deployment is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// These devices.
    Devices(Vec<DeviceId>),
    /// Devices carrying this tag, now and later.
    Tag(String),
    /// Devices whose inventory attributes equal all of these, now and later.
    /// `device_type` is matched against the reported device type.
    Attributes(BTreeMap<String, String>),
    /// Devices matching this target expression, now and later
    /// (docs/targets.md): `tag:lab AND installed.rootfs < 2.4.0`.
    Expression(crate::target_expr::TargetExpr),
}

pub use crate::strategy::Strategy;

/// Create a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeploymentRequest {
    /// A name for people: 1–128 bytes, not only spaces.
    #[schema(min_length = 1, max_length = 128, pattern = r"\S")]
    pub name: String,
    /// The package to install.
    pub package_id: PackageId,
    /// Which devices.
    pub target: Target,
    /// How to roll out; all at once by default.
    #[serde(default = "default_strategy")]
    pub strategy: Strategy,
    /// When devices may install: a daily window, download-only [default:
    /// any time, at once].
    #[serde(default)]
    pub install: InstallPolicy,
    /// Whether the deployment takes in devices that join its target later
    /// (a device tagged, or reporting matching attributes, after it was
    /// created) and stays active until an operator ends it
    /// (`POST /deployments/{id}/end`) or `ends_at` passes, rather than
    /// finishing once every device it has is done. Phases' shares count the
    /// devices that joined late. [default: true for a tag or attributes
    /// target; a list of devices cannot grow, so `true` is refused there].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<bool>,
    /// When a dynamic deployment stops taking in devices; it then finishes
    /// once the devices it has are done. Must be in the future; only for a
    /// dynamic deployment [default: none, until an operator ends it].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
}

/// Whether a deployment to `target` is dynamic when its request says
/// `dynamic`: a tag or attributes target is unless told otherwise; a list
/// of devices never is.
pub fn is_dynamic(target: &Target, dynamic: Option<bool>) -> bool {
    match target {
        Target::Devices(_) => false,
        Target::Tag(_) | Target::Attributes(_) | Target::Expression(_) => dynamic.unwrap_or(true),
    }
}

fn default_strategy() -> Strategy {
    Strategy::All
}

/// A deployment with its per-state counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deployment {
    /// Its id.
    pub id: DeploymentId,
    /// Name for people.
    pub name: String,
    /// The package.
    pub package_id: PackageId,
    /// Which devices.
    pub target: Target,
    /// How it rolls out.
    pub strategy: Strategy,
    /// When devices may install.
    #[serde(default)]
    pub install: InstallPolicy,
    /// Overall status.
    pub status: DeploymentStatus,
    /// Where a phased rollout stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::strategy::RolloutProgress>,
    /// Devices per update state.
    pub counts: BTreeMap<UpdateState, u64>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it finished or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether it takes in devices that join its target later, until it
    /// ends (see `ends_at`).
    #[serde(default)]
    pub dynamic: bool,
    /// When a dynamic deployment stops (in the future) or stopped (in the
    /// past: ended by an operator or by its end date) taking in devices;
    /// absent while it takes them in until an operator ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// How many of its devices joined the target after it was created.
    #[serde(default)]
    pub joined_late: u64,
}

/// A deployment with what is known of it as a whole: counts per state and
/// phase, rollback links, deferrals. Its devices' states are not in it —
/// a deployment may reach a hundred thousand devices, and this is read
/// every few seconds by watchers — but a page at a time under
/// `GET /deployments/{id}/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeploymentDetail {
    /// The deployment.
    #[serde(flatten)]
    pub deployment: Deployment,
    /// The deployment whose circuit breaker started this one, if it is an
    /// automatic rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<DeploymentId>,
    /// The rollback deployments its circuit breaker started (one per
    /// release the devices go back to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled_back_by: Vec<DeploymentId>,
    /// For a soft deployment: how much its devices deferred the install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferrals: Option<crate::soft::DeferralSummary>,
}

/// One device's state in a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceUpdate {
    /// The device.
    pub device_id: DeviceId,
    /// Its state.
    pub state: UpdateState,
    /// The last message it sent (failure reason, log tail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the state last changed.
    pub updated_at: DateTime<Utc>,
    /// The rollout phase that admitted the device (phased deployments;
    /// absent until it is admitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<u32>,
    /// While `downloading`: how far, as the device last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<crate::device::Progress>,
    /// When that progress was reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_at: Option<DateTime<Utc>>,
    /// Whether the device joined the target after the deployment was
    /// created (a dynamic deployment took it in at a later check-in).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joined_late: bool,
}

/// Create a management API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// A name for people (who or what uses it): 1–128 bytes, not only spaces.
    #[schema(min_length = 1, max_length = 128, pattern = r"\S")]
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// A management API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiToken {
    /// Its id.
    pub id: TokenId,
    /// Name for people.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A new token: the secret is shown this once and stored only hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The token.
    #[serde(flatten)]
    pub token: ApiToken,
    /// The bearer secret.
    pub secret: String,
}

/// One audited change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who: the token's name and id.
    pub actor: String,
    /// What: `package.upload`, `device.accept`, ….
    pub action: String,
    /// The object changed.
    pub object: String,
    /// Extra detail.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}
