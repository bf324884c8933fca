//! How records map to columns, shared by both backends.
//!
//! Rows are read into plain structs of portable column types (`String`,
//! `i64`, `bool`, `Vec<u8>`), which both drivers decode the same way, and
//! turned into records here. A value that does not parse back is
//! [`StoreError::Corrupt`] naming its table and column, never a panic.

use crate::{
    ApiTokenRecord, DeploymentRecord, DeviceDocuments, DeviceRecord, DeviceSummary, PackageRecord,
    StoreError, StoreResult,
};
use airlift_protocol::device::{Inventory, Progress};
use airlift_protocol::management::{
    ApiToken, AuditEntry, Device, DeviceUpdate, Package, UpdateEvent,
};
use airlift_protocol::state::UpdateState;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::Display;
use std::str::FromStr;

// --- writing -----------------------------------------------------------------

/// Milliseconds since the Unix epoch: how every time is stored.
pub(crate) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// A `u64` as a `BIGINT`; values past `i64::MAX` cannot be stored.
pub(crate) fn to_i64(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| {
        StoreError::Database(sqlx::Error::Encode(
            format!("{what} {value} does not fit a signed 64-bit column").into(),
        ))
    })
}

/// A value as JSON text.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| {
        StoreError::Database(sqlx::Error::Encode(format!("{what} as JSON: {e}").into()))
    })
}

/// The digest a check-in compares to tell whether the inventory changed.
pub(crate) fn inventory_sha256(inventory: &Inventory) -> StoreResult<Vec<u8>> {
    Ok(inventory_digest(inventory)?.to_vec())
}

/// SHA-256 of an inventory as the store keeps it
/// ([`DeviceRecord::inventory_sha256`], [`crate::CheckInTime::inventory_sha256`]):
/// equal inventories have equal digests.
pub fn inventory_digest(inventory: &Inventory) -> StoreResult<[u8; 32]> {
    // BTreeMaps serialise in key order, so equal inventories hash equally.
    let json = to_json(inventory, "inventory")?;
    Ok(Sha256::digest(json.as_bytes()).into())
}

/// Tags as a set: sorted, without duplicates (how they are read back).
pub(crate) fn normalise_tags(tags: &[String]) -> Vec<String> {
    let mut tags = tags.to_vec();
    tags.sort();
    tags.dedup();
    tags
}

// --- reading -----------------------------------------------------------------

fn corrupt(column: &str, problem: impl Display) -> StoreError {
    StoreError::Corrupt(format!("{column}: {problem}"))
}

/// Parses an enum, an id or anything else spelled as text.
pub(crate) fn parse<T>(column: &str, text: &str) -> StoreResult<T>
where
    T: FromStr,
    T::Err: Display,
{
    text.parse()
        .map_err(|e: T::Err| corrupt(column, format!("{text:?}: {e}")))
}

/// Parses a stored time.
pub(crate) fn time(column: &str, millis: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| corrupt(column, format!("{millis} is not a time in milliseconds")))
}

fn opt_time(column: &str, millis: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    millis.map(|millis| time(column, millis)).transpose()
}

fn unsigned(column: &str, value: i64) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| corrupt(column, format!("{value} is negative")))
}

pub(crate) fn json<T: DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(column, format!("invalid JSON: {e}")))
}

fn sha256(column: &str, bytes: &[u8]) -> StoreResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| corrupt(column, format!("{} bytes, expected 32", bytes.len())))
}

/// `api_tokens`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: i64,
    pub secret_sha256: Vec<u8>,
}

impl TokenRow {
    pub(crate) fn into_record(self) -> StoreResult<ApiTokenRecord> {
        Ok(ApiTokenRecord {
            secret_sha256: sha256("api_tokens.secret_sha256", &self.secret_sha256)?,
            token: ApiToken {
                id: parse("api_tokens.id", &self.id)?,
                name: self.name,
                role: parse("api_tokens.role", &self.role)?,
                created_at: time("api_tokens.created_at", self.created_at)?,
            },
        })
    }
}

/// `dashboard_sessions` joined with its `api_tokens` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SessionRow {
    #[sqlx(flatten)]
    pub token: TokenRow,
    pub csrf: String,
    pub expires_at: i64,
}

impl SessionRow {
    pub(crate) fn into_record(self) -> StoreResult<crate::SessionRecord> {
        Ok(crate::SessionRecord {
            token: self.token.into_record()?.token,
            csrf: self.csrf,
            expires_at: time("dashboard_sessions.expires_at", self.expires_at)?,
        })
    }
}

/// `audit_log`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub object: String,
    pub details: String,
}

impl AuditRow {
    pub(crate) fn into_entry(self) -> StoreResult<AuditEntry> {
        Ok(AuditEntry {
            id: self.id,
            at: time("audit_log.at", self.at)?,
            actor: self.actor,
            action: self.action,
            object: self.object,
            details: json("audit_log.details", &self.details)?,
        })
    }
}

/// `packages`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PackageRow {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub device_types: String,
    pub security_version: i64,
    pub size: i64,
    pub sha256: String,
    pub signed_by: String,
    pub manifest: String,
    pub provides: String,
    pub blob_key: String,
    pub head: Vec<u8>,
    pub created_at: i64,
}

impl PackageRow {
    pub(crate) fn into_record(self) -> StoreResult<PackageRecord> {
        Ok(PackageRecord {
            package: Package {
                id: parse("packages.id", &self.id)?,
                name: self.name,
                version: self.version,
                description: self.description,
                device_types: json("packages.device_types", &self.device_types)?,
                security_version: unsigned("packages.security_version", self.security_version)?,
                size: unsigned("packages.size", self.size)?,
                sha256: self.sha256,
                signed_by: json("packages.signed_by", &self.signed_by)?,
                manifest: json("packages.manifest", &self.manifest)?,
                created_at: time("packages.created_at", self.created_at)?,
            },
            blob_key: self.blob_key,
            head: self.head,
            provides: json("packages.provides", &self.provides)?,
        })
    }
}

/// `device_records`: a device row with its tags, installed software and
/// attributes aggregated as JSON (a view each backend's migration defines).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeviceRecordRow {
    pub id: String,
    pub status: String,
    pub identity: String,
    pub public_key: String,
    pub device_type: Option<String>,
    pub hardware_revision: Option<String>,
    pub security_version: i64,
    pub created_at: i64,
    pub last_check_in: Option<i64>,
    pub inventory_sha256: Option<Vec<u8>>,
    pub tags: String,
    pub installed: String,
    pub attributes: String,
}

impl DeviceRecordRow {
    pub(crate) fn into_record(self) -> StoreResult<DeviceRecord> {
        let mut tags: Vec<String> = json("device_records.tags", &self.tags)?;
        tags.sort();
        Ok(DeviceRecord {
            inventory_sha256: self
                .inventory_sha256
                .as_deref()
                .map(|bytes| sha256("devices.inventory_sha256", bytes))
                .transpose()?,
            device: Device {
                status: parse("devices.status", &self.status)?,
                identity: json("devices.identity", &self.identity)?,
                public_key: self.public_key,
                tags,
                device_type: self.device_type,
                hardware_revision: self.hardware_revision,
                installed: json("device_records.installed", &self.installed)?,
                security_version: unsigned("devices.security_version", self.security_version)?,
                attributes: json("device_records.attributes", &self.attributes)?,
                created_at: time("devices.created_at", self.created_at)?,
                last_check_in: opt_time("devices.last_check_in", self.last_check_in)?,
                id: parse("devices.id", &self.id)?,
            },
        })
    }
}

/// `device_records`, the columns of a [`DeviceSummary`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeviceSummaryRow {
    pub id: String,
    pub status: String,
    pub inventory_sha256: Option<Vec<u8>>,
    pub tags: String,
}

impl DeviceSummaryRow {
    pub(crate) fn into_summary(self) -> StoreResult<DeviceSummary> {
        let mut tags: Vec<String> = json("device_records.tags", &self.tags)?;
        tags.sort();
        Ok(DeviceSummary {
            id: parse("devices.id", &self.id)?,
            status: parse("devices.status", &self.status)?,
            tags,
            inventory_sha256: self
                .inventory_sha256
                .as_deref()
                .map(|bytes| sha256("devices.inventory_sha256", bytes))
                .transpose()?,
        })
    }
}

/// `device_shadows`: a device's own documents; all `NULL` (empty
/// documents) for a device that has no row there yet.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DocumentsRow {
    pub desired: Option<String>,
    pub desired_meta: Option<String>,
    pub desired_version: Option<i64>,
    pub desired_at: Option<i64>,
    pub reported: Option<String>,
    pub reported_meta: Option<String>,
    pub reported_version: Option<i64>,
    pub reported_at: Option<i64>,
}

impl DocumentsRow {
    pub(crate) fn into_documents(self) -> StoreResult<DeviceDocuments> {
        Ok(DeviceDocuments {
            desired: crate::shadow::from_columns(
                "device_shadows.desired",
                self.desired.as_deref(),
                self.desired_meta.as_deref(),
                self.desired_version,
                self.desired_at,
            )?,
            reported: crate::shadow::from_columns(
                "device_shadows.reported",
                self.reported.as_deref(),
                self.reported_meta.as_deref(),
                self.reported_version,
                self.reported_at,
            )?,
        })
    }
}

/// A device's summary and its own documents, read together.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SummaryWithDocumentsRow {
    #[sqlx(flatten)]
    pub summary: DeviceSummaryRow,
    #[sqlx(flatten)]
    pub documents: DocumentsRow,
}

/// A device's own documents and its last failure to apply them (a row
/// of `devices` joined to `device_shadows`: there is one for every device).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OwnShadowRow {
    #[sqlx(flatten)]
    pub documents: DocumentsRow,
    pub failure: Option<String>,
    pub failure_at: Option<i64>,
}

/// `deployments`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeploymentRow {
    pub id: String,
    pub name: String,
    pub package_id: String,
    pub target: String,
    pub strategy: String,
    pub status: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub phase: i64,
    pub phase_started_at: Option<i64>,
    pub phase_met_at: Option<i64>,
    pub status_reason: Option<String>,
    pub acknowledged_failures: i64,
    pub install_policy: String,
    pub dynamic: bool,
    pub ends_at: Option<i64>,
}

impl DeploymentRow {
    pub(crate) fn into_record(self) -> StoreResult<DeploymentRecord> {
        Ok(DeploymentRecord {
            id: parse("deployments.id", &self.id)?,
            name: self.name,
            package_id: parse("deployments.package_id", &self.package_id)?,
            target: json("deployments.target", &self.target)?,
            strategy: json("deployments.strategy", &self.strategy)?,
            install: json("deployments.install_policy", &self.install_policy)?,
            status: parse("deployments.status", &self.status)?,
            created_at: time("deployments.created_at", self.created_at)?,
            finished_at: opt_time("deployments.finished_at", self.finished_at)?,
            rollout: crate::RolloutState {
                phase: u32::try_from(self.phase).map_err(|_| {
                    StoreError::Corrupt(format!("deployments.phase: {} is not a phase", self.phase))
                })?,
                phase_started_at: opt_time("deployments.phase_started_at", self.phase_started_at)?,
                phase_met_at: opt_time("deployments.phase_met_at", self.phase_met_at)?,
                reason: self.status_reason,
                acknowledged_failures: u64::try_from(self.acknowledged_failures).unwrap_or(0),
            },
            dynamic: self.dynamic,
            ends_at: opt_time("deployments.ends_at", self.ends_at)?,
        })
    }
}

/// `deployment_devices`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeviceUpdateRow {
    pub device_id: String,
    pub state: String,
    pub message: Option<String>,
    pub updated_at: i64,
    pub phase: Option<i64>,
    pub progress_done: Option<i64>,
    pub progress_total: Option<i64>,
    pub progress_at: Option<i64>,
}

impl DeviceUpdateRow {
    pub(crate) fn into_update(self) -> StoreResult<DeviceUpdate> {
        let state: UpdateState = parse("deployment_devices.state", &self.state)?;
        // Progress belongs to the download: once the device is past it, it
        // is no longer shown.
        let (progress, progress_at) = match (
            state,
            self.progress_done,
            self.progress_total,
            self.progress_at,
        ) {
            (UpdateState::Downloading, Some(done), Some(total), Some(at)) => (
                Some(Progress {
                    done: u64::try_from(done).unwrap_or_default(),
                    total: u64::try_from(total).unwrap_or_default(),
                }),
                Some(time("deployment_devices.progress_at", at)?),
            ),
            _ => (None, None),
        };
        Ok(DeviceUpdate {
            device_id: parse("deployment_devices.device_id", &self.device_id)?,
            state,
            message: self.message,
            updated_at: time("deployment_devices.updated_at", self.updated_at)?,
            phase: self.phase.and_then(|p| u32::try_from(p).ok()),
            progress,
            progress_at,
            joined_late: false,
        })
    }
}

/// `deployment_devices` with whether the device joined late (read where a
/// deployment's devices are listed; `columns!(device_updates)` then
/// `joined_late`).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeploymentDeviceRow {
    #[sqlx(flatten)]
    pub update: DeviceUpdateRow,
    pub joined_late: bool,
}

impl DeploymentDeviceRow {
    pub(crate) fn into_update(self) -> StoreResult<DeviceUpdate> {
        Ok(DeviceUpdate {
            joined_late: self.joined_late,
            ..self.update.into_update()?
        })
    }
}

/// `update_events`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub deployment_id: String,
    pub device_id: String,
    pub state: String,
    pub applied: bool,
    pub message: Option<String>,
    pub at: i64,
}

impl EventRow {
    pub(crate) fn into_event(self) -> StoreResult<UpdateEvent> {
        Ok(UpdateEvent {
            deployment_id: parse("update_events.deployment_id", &self.deployment_id)?,
            device_id: parse("update_events.device_id", &self.device_id)?,
            state: parse("update_events.state", &self.state)?,
            applied: self.applied,
            message: self.message,
            at: time("update_events.at", self.at)?,
        })
    }
}

/// Maps a database error: unique violations are `Conflict(conflict)`,
/// foreign-key violations `NotFound(missing)`, the rest stays as it is.
pub(crate) fn classify(error: sqlx::Error, conflict: &str, missing: &str) -> StoreError {
    match &error {
        sqlx::Error::Database(e) if e.is_unique_violation() => {
            StoreError::Conflict(conflict.to_owned())
        }
        sqlx::Error::Database(e) if e.is_foreign_key_violation() => {
            StoreError::NotFound(missing.to_owned())
        }
        _ => StoreError::from(error),
    }
}

/// `$first, $first+1, …` for `count` values.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_count_from_first() {
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(1, 1), "$1");
    }

    #[test]
    fn unreadable_values_name_their_column() {
        let error = parse::<airlift_protocol::state::DeviceStatus>("devices.status", "zombie")
            .expect_err("unknown status");
        assert!(error.to_string().contains("devices.status"), "{error}");
        assert!(matches!(
            time("devices.created_at", i64::MAX),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            unsigned("packages.size", -1),
            Err(StoreError::Corrupt(_))
        ));
    }
}
