//! The one implementation of [`Store`](crate::Store) in SQL, instantiated
//! for each backend by [`impl_store!`].
//!
//! Every query is written once, with `$1, $2, …` placeholders (the SQLite
//! driver reads `$N` as the N-th argument) or built by `sqlx::QueryBuilder`,
//! and run at run time: there is no database at build time. Where the
//! dialects differ, the difference lives in the migrations.
//!
//! Rules that must hold under concurrency are kept without long
//! transactions:
//!
//! - a report is one conditional `UPDATE … WHERE state IN (states it may
//!   advance from)`, so a late report can never move a device backwards;
//! - a statement that must see the outcome of a concurrent one first locks
//!   the row they share with a no-op `UPDATE … SET column = column` (a row
//!   lock on PostgreSQL; on SQLite every write transaction starts with
//!   `BEGIN IMMEDIATE` and so holds the write lock): deleting a package
//!   against creating a deployment for it, replacing a device's tags.

/// Column lists, as literals so `concat!` can build constant SQL.
macro_rules! columns {
    (tokens) => {
        "id, name, role, created_at, secret_sha256"
    };
    (audit) => {
        "id, at, actor, action, object, details"
    };
    (packages) => {
        "id, name, version, description, device_types, security_version, size, sha256, \
         signed_by, manifest, provides, blob_key, head, created_at"
    };
    (devices) => {
        "id, status, identity, public_key, device_type, hardware_revision, security_version, \
         created_at"
    };
    (device_records) => {
        "id, status, identity, public_key, device_type, hardware_revision, security_version, \
         created_at, last_check_in, inventory_sha256, tags, installed, attributes"
    };
    (deployments) => {
        "id, name, package_id, target, strategy, status, created_at, finished_at, \
         phase, phase_started_at, phase_met_at, status_reason, acknowledged_failures, \
         install_policy, dynamic, ends_at"
    };
    (deployment_devices) => {
        "device_id, state, message, updated_at, phase, progress_done, progress_total, \
         progress_at, joined_late"
    };
    (device_updates) => {
        "device_id, state, message, updated_at, phase, progress_done, progress_total, \
         progress_at"
    };
    (events) => {
        "deployment_id, device_id, state, applied, message, at"
    };
}

/// Rows per multi-row `INSERT`, well below either backend's limit on bound
/// values.
pub(crate) const INSERT_CHUNK: usize = 200;

/// Check-in times written by one statement (three parameters each, well
/// under both backends' limits).
pub(crate) const CHECK_IN_TIME_CHUNK: usize = 1000;

/// Implements [`Store`](crate::Store) for `$store`, a struct with a
/// `pool: sqlx::Pool<$db>` field; `$begin` starts a write transaction.
macro_rules! impl_store {
    ($store:ident, $db:ty, $begin:literal) => {
        use airlift_protocol::device::{Inventory, Progress};
        use airlift_protocol::install::InstallPolicy;
        use airlift_protocol::management::{
            ApiToken, AuditEntry, Device, DeviceUpdate, UpdateEvent,
        };
        use airlift_protocol::state::{DeploymentStatus, DeviceStatus, Transition, UpdateState};
        use airlift_protocol::{DeploymentId, DeviceId, PackageId, TokenId};
        use chrono::{DateTime, Utc};
        use sqlx::QueryBuilder;
        use std::collections::BTreeMap;
        use $crate::codec::{
            classify, inventory_sha256, millis, normalise_tags, parse, placeholders, to_i64,
            to_json, AuditRow, DeploymentDeviceRow, DeploymentRow, DeviceRecordRow,
            DeviceUpdateRow, EventRow, PackageRow, SessionRow, SummaryWithDocumentsRow, TokenRow,
        };
        use $crate::sql::{CHECK_IN_TIME_CHUNK, INSERT_CHUNK};
        use $crate::{
            ApiTokenRecord, ChangeFeed, CheckInTime, DeploymentRecord, DeviceFilter, DeviceRecord,
            DeviceSummary, NewAuditEntry, NewSession, PackageRecord, PageRequest, ReportOutcome,
            SessionRecord, Store, StoreError, StoreEvent, StoreResult,
        };
        use $crate::{
            CheckInCount, CurrentUpdate, DeviceCounts, FailureGroup, InstallCount, UpdateCount,
            VersionCount,
        };

        type Conn = <$db as sqlx::Database>::Connection;

        $crate::sql::sql_common!($store, $db, $begin);
        $crate::sql::sql_tokens!($store, $db, $begin);
        $crate::sql::sql_packages!($store, $db, $begin);
        $crate::sql::sql_devices!($store, $db, $begin);
        $crate::sql::sql_expr!($store, $db, $begin);
        $crate::sql::sql_fleet!($store, $db, $begin);
        $crate::sql::sql_deployments!($store, $db, $begin);
        $crate::sql::sql_updates!($store, $db, $begin);
        $crate::sql::sql_sessions!($store, $db, $begin);
        $crate::sql::sql_uploads!($store, $db, $begin);
        $crate::sql::sql_shadow!($store, $db, $begin);
        $crate::sql::sql_repair!($store, $db, $begin);
        $crate::sql::sql_trust!($store, $db, $begin);
        $crate::sql::sql_certificates!($store, $db, $begin);
        $crate::sql::sql_deferral!($store, $db, $begin);
        $crate::sql::sql_deployment_changes!($store, $db, $begin);

        // Each method is the inherent method of the same name, which its
        // area's macro defines (inherent methods win over trait methods).
        #[async_trait::async_trait]
        impl Store for $store {
            fn changes(&self) -> ChangeFeed {
                self.hub.subscribe()
            }

            async fn request_check_in(&self, id: DeviceId) -> StoreResult<()> {
                self.request_check_in(id).await
            }

            async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
                self.setting(key).await
            }

            async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
                self.setting_or_insert(key, value).await
            }

            async fn count_api_tokens(&self) -> StoreResult<u64> {
                self.count_api_tokens().await
            }

            async fn insert_api_token(&self, token: &ApiTokenRecord) -> StoreResult<()> {
                self.insert_api_token(token).await
            }

            async fn api_token_by_hash(
                &self,
                secret_sha256: &[u8; 32],
            ) -> StoreResult<Option<ApiTokenRecord>> {
                self.api_token_by_hash(secret_sha256).await
            }

            async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
                self.list_api_tokens().await
            }

            async fn list_api_tokens_page(
                &self,
                page: PageRequest,
            ) -> StoreResult<(Vec<ApiToken>, u64)> {
                self.list_api_tokens_page(page).await
            }

            async fn delete_api_token(&self, id: TokenId) -> StoreResult<bool> {
                self.delete_api_token(id).await
            }

            async fn append_audit(&self, entry: &NewAuditEntry) -> StoreResult<()> {
                self.append_audit(entry).await
            }

            async fn list_audit(
                &self,
                filter: &$crate::AuditFilter,
                limit: u32,
                before: Option<i64>,
            ) -> StoreResult<Vec<AuditEntry>> {
                self.list_audit(filter, limit, before).await
            }

            async fn list_audit_page(
                &self,
                filter: &$crate::AuditFilter,
                before: Option<i64>,
                page: PageRequest,
            ) -> StoreResult<(Vec<AuditEntry>, u64)> {
                self.list_audit_page(filter, before, page).await
            }

            async fn insert_session(&self, session: &NewSession) -> StoreResult<()> {
                self.insert_session(session).await
            }

            async fn session_by_hash(
                &self,
                secret_sha256: &[u8; 32],
                now: DateTime<Utc>,
            ) -> StoreResult<Option<SessionRecord>> {
                self.session_by_hash(secret_sha256, now).await
            }

            async fn delete_session(&self, secret_sha256: &[u8; 32]) -> StoreResult<bool> {
                self.delete_session(secret_sha256).await
            }

            async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
                self.delete_expired_sessions(now).await
            }

            async fn insert_package(&self, record: &PackageRecord) -> StoreResult<()> {
                self.insert_package(record).await
            }

            async fn package(&self, id: PackageId) -> StoreResult<Option<PackageRecord>> {
                self.package(id).await
            }

            async fn list_packages(&self) -> StoreResult<Vec<PackageRecord>> {
                self.list_packages().await
            }

            async fn list_packages_page(
                &self,
                page: PageRequest,
            ) -> StoreResult<(Vec<PackageRecord>, u64)> {
                self.list_packages_page(page).await
            }

            async fn delete_package(&self, id: PackageId) -> StoreResult<PackageRecord> {
                self.delete_package(id).await
            }

            async fn insert_device(&self, device: &Device) -> StoreResult<()> {
                self.insert_device(device).await
            }

            async fn device(&self, id: DeviceId) -> StoreResult<Option<Device>> {
                self.device(id).await
            }

            async fn device_record(&self, id: DeviceId) -> StoreResult<Option<DeviceRecord>> {
                self.device_record(id).await
            }

            async fn device_summary_with_documents(
                &self,
                id: DeviceId,
            ) -> StoreResult<Option<(DeviceSummary, $crate::DeviceDocuments)>> {
                self.device_summary_with_documents(id).await
            }

            async fn device_by_public_key(&self, public_key: &str) -> StoreResult<Option<Device>> {
                self.device_by_public_key(public_key).await
            }

            async fn list_devices(
                &self,
                filter: &DeviceFilter,
                page: PageRequest,
            ) -> StoreResult<(Vec<Device>, u64)> {
                self.list_devices(filter, page).await
            }

            async fn devices_after(
                &self,
                filter: &DeviceFilter,
                after: Option<DeviceId>,
                limit: u32,
            ) -> StoreResult<Vec<Device>> {
                self.devices_after(filter, after, limit).await
            }

            async fn set_device_status(
                &self,
                id: DeviceId,
                status: DeviceStatus,
            ) -> StoreResult<bool> {
                self.set_device_status(id, status).await
            }

            async fn transition_device_status(
                &self,
                id: DeviceId,
                from: DeviceStatus,
                to: DeviceStatus,
                identity: Option<&BTreeMap<String, String>>,
            ) -> StoreResult<bool> {
                self.transition_device_status(id, from, to, identity).await
            }

            async fn set_device_identity(
                &self,
                id: DeviceId,
                identity: &BTreeMap<String, String>,
            ) -> StoreResult<bool> {
                self.set_device_identity(id, identity).await
            }

            async fn set_device_tags(&self, id: DeviceId, tags: &[String]) -> StoreResult<bool> {
                self.set_device_tags(id, tags).await
            }

            async fn record_check_in(
                &self,
                id: DeviceId,
                inventory: &Inventory,
                at: DateTime<Utc>,
            ) -> StoreResult<()> {
                self.record_check_in(id, inventory, at).await
            }

            async fn record_check_in_times(&self, times: &[CheckInTime]) -> StoreResult<u64> {
                self.record_check_in_times(times).await
            }

            async fn device_counts(
                &self,
                silent_since: DateTime<Utc>,
            ) -> StoreResult<DeviceCounts> {
                self.device_counts(silent_since).await
            }

            async fn installed_versions(
                &self,
                names: u32,
                versions: u32,
            ) -> StoreResult<Vec<VersionCount>> {
                self.installed_versions(names, versions).await
            }

            async fn open_deployment_counts(&self) -> StoreResult<Vec<UpdateCount>> {
                self.open_deployment_counts().await
            }

            async fn recent_failures(
                &self,
                since: DateTime<Utc>,
                limit: u32,
            ) -> StoreResult<Vec<FailureGroup>> {
                self.recent_failures(since, limit).await
            }

            async fn installs_per_day(
                &self,
                since: DateTime<Utc>,
            ) -> StoreResult<Vec<InstallCount>> {
                self.installs_per_day(since).await
            }

            async fn add_check_ins(
                &self,
                counts: &[CheckInCount],
                forget_before: DateTime<Utc>,
            ) -> StoreResult<()> {
                self.add_check_ins(counts, forget_before).await
            }

            async fn check_ins_per_minute(
                &self,
                since: DateTime<Utc>,
            ) -> StoreResult<Vec<CheckInCount>> {
                self.check_ins_per_minute(since).await
            }

            async fn current_updates(
                &self,
                devices: &[DeviceId],
            ) -> StoreResult<Vec<CurrentUpdate>> {
                self.current_updates(devices).await
            }

            async fn use_nonce(
                &self,
                nonce: &str,
                expires_at: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                self.use_nonce(nonce, expires_at, now).await
            }

            async fn insert_deployment(
                &self,
                deployment: &DeploymentRecord,
                devices: &[(DeviceId, UpdateState)],
            ) -> StoreResult<()> {
                self.insert_deployment(deployment, devices).await
            }

            async fn deployment(&self, id: DeploymentId) -> StoreResult<Option<DeploymentRecord>> {
                self.deployment(id).await
            }

            async fn list_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
                self.list_deployments().await
            }

            async fn list_deployments_page(
                &self,
                filter: &$crate::DeploymentFilter,
                page: PageRequest,
            ) -> StoreResult<(Vec<DeploymentRecord>, u64)> {
                self.list_deployments_page(filter, page).await
            }

            async fn deployment_tallies(
                &self,
                ids: &[DeploymentId],
            ) -> StoreResult<Vec<$crate::UpdateCount>> {
                self.deployment_tallies(ids).await
            }

            async fn deployment_failures(
                &self,
                id: DeploymentId,
                limit: u32,
            ) -> StoreResult<Vec<$crate::FailureGroup>> {
                self.deployment_failures(id, limit).await
            }

            async fn deployment_devices_page(
                &self,
                id: DeploymentId,
                filter: &$crate::DeploymentDevicesFilter,
                page: PageRequest,
            ) -> StoreResult<Vec<DeviceUpdate>> {
                self.deployment_devices_page(id, filter, page).await
            }

            async fn count_deployment_devices(
                &self,
                id: DeploymentId,
                filter: &$crate::DeploymentDevicesFilter,
            ) -> StoreResult<u64> {
                self.count_deployment_devices(id, filter).await
            }

            async fn active_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
                self.active_deployments().await
            }

            async fn deployment_counts(
                &self,
                id: DeploymentId,
            ) -> StoreResult<BTreeMap<UpdateState, u64>> {
                self.deployment_counts(id).await
            }

            async fn deployment_devices(&self, id: DeploymentId) -> StoreResult<Vec<DeviceUpdate>> {
                self.deployment_devices(id).await
            }

            async fn cancel_deployment(
                &self,
                id: DeploymentId,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                self.cancel_deployment(id, at).await
            }

            async fn release_install(
                &self,
                id: DeploymentId,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                self.release_install(id, at).await
            }

            async fn open_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
                self.open_deployments().await
            }

            async fn update_rollout(
                &self,
                id: DeploymentId,
                from: DeploymentStatus,
                status: DeploymentStatus,
                rollout: &$crate::RolloutState,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                self.update_rollout(id, from, status, rollout, at).await
            }

            async fn admit_devices(
                &self,
                id: DeploymentId,
                phase: u32,
                devices: &[DeviceId],
            ) -> StoreResult<u64> {
                self.admit_devices(id, phase, devices).await
            }

            async fn take_rollout_lease(
                &self,
                id: DeploymentId,
                owner: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> StoreResult<bool> {
                self.take_rollout_lease(id, owner, now, until).await
            }

            async fn finish_deployment_if_done(
                &self,
                id: DeploymentId,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                self.finish_deployment_if_done(id, at).await
            }

            async fn end_deployment(
                &self,
                id: DeploymentId,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                self.end_deployment(id, at).await
            }

            async fn late_joiners(
                &self,
                ids: &[DeploymentId],
            ) -> StoreResult<BTreeMap<DeploymentId, u64>> {
                self.late_joiners(ids).await
            }

            async fn device_update(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
            ) -> StoreResult<Option<DeviceUpdate>> {
                self.device_update(deployment, device).await
            }

            async fn add_device_to_deployment(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
                state: UpdateState,
                message: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<DeviceUpdate> {
                self.add_device_to_deployment(deployment, device, state, message, at)
                    .await
            }

            async fn record_update_state(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
                state: UpdateState,
                message: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<ReportOutcome> {
                self.record_update_state(deployment, device, state, message, at)
                    .await
            }

            async fn record_progress(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
                progress: Progress,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                self.record_progress(deployment, device, progress, at).await
            }

            async fn decide_update_state(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
                state: UpdateState,
                message: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<ReportOutcome> {
                self.decide_update_state(deployment, device, state, message, at)
                    .await
            }

            async fn device_history(&self, device: DeviceId) -> StoreResult<Vec<UpdateEvent>> {
                self.device_history(device).await
            }

            async fn record_upload(&self, upload: &$crate::UploadRecord) -> StoreResult<()> {
                self.record_upload(upload).await
            }

            async fn forget_upload(&self, object_key: &str, upload_id: &str) -> StoreResult<bool> {
                self.forget_upload(object_key, upload_id).await
            }

            async fn stale_uploads(
                &self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> StoreResult<Vec<$crate::StaleUpload>> {
                self.stale_uploads(before, limit).await
            }
        }
    };
}

pub(crate) mod certificates;
mod common;
pub(crate) mod deferral;
pub(crate) mod deployment_changes;
mod deployments;
mod devices;
mod expr;
mod fleet;
mod packages;
pub(crate) mod repair;
mod sessions;
pub(crate) mod shadow;
mod tokens;
pub(crate) mod trust;
mod updates;
pub(crate) mod uploads;

pub(crate) use certificates::sql_certificates;
pub(crate) use common::sql_common;
pub(crate) use deferral::sql_deferral;
pub(crate) use deployment_changes::sql_deployment_changes;
pub(crate) use deployments::sql_deployments;
pub(crate) use devices::{sql_devices, DeviceSource};
pub(crate) use expr::sql_expr;
pub(crate) use fleet::sql_fleet;
pub(crate) use packages::sql_packages;
pub(crate) use repair::sql_repair;
pub(crate) use sessions::sql_sessions;
pub(crate) use shadow::sql_shadow;
pub(crate) use tokens::sql_tokens;
pub(crate) use trust::sql_trust;
pub(crate) use updates::sql_updates;
pub(crate) use uploads::sql_uploads;
pub(crate) use {columns, impl_store};
