//! Airlift's storage: the [`Store`] trait the server talks to, and its two
//! backends — SQLite (embedded, the default) and PostgreSQL (for fleets and
//! several server instances). Each backend owns its migrations (added, never
//! edited); one conformance suite (`tests/it`) runs against both.
//!
//! This crate must not know about HTTP, request parsing or how a device
//! installs anything. It stores records and enforces the few rules that must
//! hold under concurrency (a late report never moves a device backwards; a
//! package in use cannot be deleted; one token hash, one device key).
//!
//! Times are stored as milliseconds since the Unix epoch (so they read back
//! at millisecond precision), ids as text, maps as rows of their own (so
//! both backends filter them with the same SQL). Tags are a set: they read
//! back sorted, without duplicates.
//!
//! Every write that changes a device or a deployment is announced on the
//! store's change feed ([`Store::changes`], [`StoreEvent`]) in the same
//! transaction, so a server instance can keep device records in memory and
//! still see a rejection made through another instance at once: PostgreSQL
//! carries the events with `LISTEN`/`NOTIFY` between instances; SQLite, used
//! by one process, in-process.
//!
//! The conformance suite runs every test against a fresh SQLite file, and
//! against PostgreSQL too when `AIRLIFT_TEST_POSTGRES_URL` names a database
//! (`postgres://postgres@127.0.0.1:5432/test`): each test then gets a schema
//! of its own, reached with `?options=-csearch_path%3D<schema>` on that URL,
//! dropped at the end. Set but unreachable, it fails the tests.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let url = airlift_store::DatabaseUrl::parse("sqlite:///var/lib/airlift/airlift.db")?;
//! let store = airlift_store::open(&url).await?;
//! let secret = store.setting_or_insert("device_token_secret", "fresh random value").await?;
//! let mut changes = store.changes();
//! while let Some(event) = changes.recv().await {
//!     println!("{event:?}"); // Listening first, then DeviceChanged(…), …
//! #   break;
//! }
//! # let _ = secret; Ok(()) }
//! ```

use airlift_protocol::device::{Inventory, Progress};
use airlift_protocol::management::{ApiToken, AuditEntry, Device, DeviceUpdate, UpdateEvent};
use airlift_protocol::state::{DeploymentStatus, DeviceStatus, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId, PackageId, TokenId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;

mod certificates;
mod codec;
mod deferral;
mod deployment;
mod deployment_changes;
mod expr;
mod feed;
mod open;
mod postgres;
mod records;
mod repair;
mod shadow;
mod sql;
mod sqlite;
mod trust;
pub use certificates::{CertificateRegistration, CertificateStore, DeviceCertificate};
pub use codec::inventory_digest;
pub use deferral::{DeferralOutcome, DeferralStore, DeferralTotals};
pub use deployment::{
    DeploymentDevicesFilter, DeploymentFilter, DeploymentRecord, ReasonMatch, RolloutState,
};
pub use deployment_changes::{ChangeMark, DeploymentChanges, DeviceChanges};
pub use expr::VersionKeyStore;
pub use feed::{ChangeFeed, Heard, StoreEvent};
pub use open::{open, open_with, DatabaseUrl, InvalidDatabaseUrl, OpenOptions};
pub use records::*;
pub use repair::{
    FleetRepair, NewRollback, ResetOutcome, RetryOutcome, RollbackLinks, RESETTABLE, RETRYABLE,
};
pub use shadow::{DesiredChange, DeviceDocuments, ShadowLimits, ShadowStore, ShadowWrite};
pub use sql::uploads::{StaleUpload, UploadRecord};
pub use trust::{TrustRootRecord, TrustRootStore};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value already exists (package name+version, device key, …).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The thing to change does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The change is refused because something depends on it.
    #[error("in use: {0}")]
    InUse(String),
    /// A stored value could not be read back (corrupt row, unknown enum text).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Connecting or migrating failed.
    #[error("database setup: {0}")]
    Setup(String),
    /// The database did not answer in time or is away: the pool had no
    /// connection to give, a statement ran past its timeout, the connection
    /// broke. Worth trying again shortly.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row kept changing under a conditional update, more often than it
    /// is retried.
    #[error("contention: {0}")]
    Contention(String),
    /// The database's disk is full: nothing was written.
    #[error("database disk full: {0}")]
    Full(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(error.to_string())
            }
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // query_canceled (statement_timeout), admin_shutdown,
                // crash_shutdown, cannot_connect_now, connection exceptions.
                Some(code)
                    if matches!(code, "57014" | "57P01" | "57P02" | "57P03")
                        || code.starts_with("08") =>
                {
                    Self::Unavailable(error.to_string())
                }
                // PostgreSQL disk_full; SQLite SQLITE_FULL.
                Some("53100" | "13") => Self::Full(error.to_string()),
                _ => Self::Database(error),
            },
            _ => Self::Database(error),
        }
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The storage the server needs. Every method is one atomic operation.
#[async_trait]
pub trait Store:
    DeferralStore
    + DeploymentChanges
    + FleetRepair
    + ShadowStore
    + TrustRootStore
    + CertificateStore
    + VersionKeyStore
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    // --- change feed ------------------------------------------------------

    /// Subscribes to the changes committed from now on, by this process or
    /// (PostgreSQL) any other using the same database: see [`StoreEvent`]
    /// for what is announced. Every write below that changes a device's
    /// status, identity, tags or inventory announces
    /// [`StoreEvent::DeviceChanged`] ([`StoreEvent::InventoryChanged`] for
    /// the inventory); every write to a deployment's status, phase or
    /// admitted devices announces [`StoreEvent::DeploymentChanged`].
    fn changes(&self) -> ChangeFeed;

    /// Announces [`StoreEvent::CheckInRequested`] for the device to every
    /// subscriber, on every instance; writes nothing.
    async fn request_check_in(&self, id: DeviceId) -> StoreResult<()>;

    // --- settings -------------------------------------------------------

    /// A server setting (e.g. the device-token signing secret).
    async fn setting(&self, key: &str) -> StoreResult<Option<String>>;
    /// Stores `value` under `key` unless a value is there already; returns
    /// the value in force. Safe when several instances race on first start.
    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String>;

    // --- management API tokens and audit ---------------------------------

    /// How many API tokens exist (zero on a fresh database).
    async fn count_api_tokens(&self) -> StoreResult<u64>;
    /// Stores a token. `Conflict` if its hash exists.
    async fn insert_api_token(&self, token: &ApiTokenRecord) -> StoreResult<()>;
    /// The token whose secret hashes to `secret_sha256`.
    async fn api_token_by_hash(
        &self,
        secret_sha256: &[u8; 32],
    ) -> StoreResult<Option<ApiTokenRecord>>;
    /// Every token, oldest first.
    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>>;
    /// One page of tokens, oldest first, and how many there are.
    /// Page 0 reads as page 1; `per_page` is clamped to 1..=1000.
    async fn list_api_tokens_page(&self, page: PageRequest) -> StoreResult<(Vec<ApiToken>, u64)>;
    /// Deletes a token; false if there was none.
    async fn delete_api_token(&self, id: TokenId) -> StoreResult<bool>;
    /// Appends to the audit log.
    async fn append_audit(&self, entry: &NewAuditEntry) -> StoreResult<()>;
    /// Audit entries matching `filter`, newest first, at most `limit`, with
    /// id below `before` if given.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: u32,
        before: Option<i64>,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// One page of the audit entries matching `filter` (and with id below
    /// `before`, if given: pages that stay put while the log grows), newest
    /// first, and how many match. Page 0 reads as page 1; `per_page` is
    /// clamped to 1..=1000.
    async fn list_audit_page(
        &self,
        filter: &AuditFilter,
        before: Option<i64>,
        page: PageRequest,
    ) -> StoreResult<(Vec<AuditEntry>, u64)>;

    // --- dashboard sessions -------------------------------------------------

    /// Stores a session. `Conflict` if its hash exists, `NotFound`-like
    /// failure if its token does not.
    async fn insert_session(&self, session: &NewSession) -> StoreResult<()>;
    /// The unexpired session whose secret hashes to `secret_sha256`, with the
    /// token it stands for; none once that token is revoked.
    async fn session_by_hash(
        &self,
        secret_sha256: &[u8; 32],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SessionRecord>>;
    /// Ends a session (sign-out); false if there was none.
    async fn delete_session(&self, secret_sha256: &[u8; 32]) -> StoreResult<bool>;
    /// Forgets sessions expired by `now`; how many.
    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    // --- packages ---------------------------------------------------------

    /// Stores a package. `Conflict` if one with the same name and version exists.
    async fn insert_package(&self, package: &PackageRecord) -> StoreResult<()>;
    /// One package.
    async fn package(&self, id: PackageId) -> StoreResult<Option<PackageRecord>>;
    /// Every package, newest first.
    async fn list_packages(&self) -> StoreResult<Vec<PackageRecord>>;
    /// One page of packages, newest first, and how many there are.
    /// Page 0 reads as page 1; `per_page` is clamped to 1..=1000.
    async fn list_packages_page(&self, page: PageRequest)
        -> StoreResult<(Vec<PackageRecord>, u64)>;
    /// Deletes a package. `InUse` while a deployment that is not cancelled or
    /// finished uses it; `NotFound` if absent. Returns the deleted record (for its blob).
    async fn delete_package(&self, id: PackageId) -> StoreResult<PackageRecord>;

    // --- devices ----------------------------------------------------------

    /// Stores a new device (first contact or pre-authorisation). `Conflict`
    /// if a device with the same public key exists.
    async fn insert_device(&self, device: &Device) -> StoreResult<()>;
    /// One device (one query).
    async fn device(&self, id: DeviceId) -> StoreResult<Option<Device>>;
    /// One device with the digest of its stored inventory (one query).
    async fn device_record(&self, id: DeviceId) -> StoreResult<Option<DeviceRecord>>;
    /// What the device routes keep of a device (lighter than
    /// [`Store::device_record`]: no installed versions, no attributes) and
    /// its own shadow documents ([`ShadowStore::device_documents`]), in one
    /// query: what a check-in of a device an instance does not hold needs.
    async fn device_summary_with_documents(
        &self,
        id: DeviceId,
    ) -> StoreResult<Option<(DeviceSummary, DeviceDocuments)>>;
    /// The device with this public key (PEM, exactly as stored).
    async fn device_by_public_key(&self, public_key: &str) -> StoreResult<Option<Device>>;
    /// Devices matching `filter`, in its order (oldest first by default),
    /// one page, and the total count.
    /// Page 0 reads as page 1; `per_page` is clamped to 1..=1000.
    async fn list_devices(
        &self,
        filter: &DeviceFilter,
        page: PageRequest,
    ) -> StoreResult<(Vec<Device>, u64)>;
    /// Up to `limit` (1..=1000) devices matching `filter`, ordered by id
    /// (its sort ignored), after `after`: every match, page by page, at the
    /// same cost on the last page as on the first, and no count.
    async fn devices_after(
        &self,
        filter: &DeviceFilter,
        after: Option<DeviceId>,
        limit: u32,
    ) -> StoreResult<Vec<Device>>;
    /// Sets admission status; false if no such device.
    async fn set_device_status(&self, id: DeviceId, status: DeviceStatus) -> StoreResult<bool>;
    /// Moves a device from status `from` to `to` (and, if given, replaces its
    /// identity) in one conditional statement: false, changing nothing, when
    /// it is not at `from` any more — an operator's decision in between wins.
    async fn transition_device_status(
        &self,
        id: DeviceId,
        from: DeviceStatus,
        to: DeviceStatus,
        identity: Option<&BTreeMap<String, String>>,
    ) -> StoreResult<bool>;
    /// Replaces identity attributes (a pre-authorised device's first contact); false if none.
    async fn set_device_identity(
        &self,
        id: DeviceId,
        identity: &BTreeMap<String, String>,
    ) -> StoreResult<bool>;
    /// Replaces tags; false if no such device.
    async fn set_device_tags(&self, id: DeviceId, tags: &[String]) -> StoreResult<bool>;
    /// Records a check-in: what the device reports replaces what was known,
    /// and `last_check_in` moves to `at`.
    async fn record_check_in(
        &self,
        id: DeviceId,
        inventory: &Inventory,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Moves `last_check_in` forward to each time given, in one transaction,
    /// for the devices whose stored inventory still has the digest given;
    /// returns how many moved. A device whose inventory changed meanwhile
    /// (through another server instance) keeps what was stored: its next
    /// check-in there compares against the new inventory. Announces nothing.
    async fn record_check_in_times(&self, times: &[CheckInTime]) -> StoreResult<u64>;

    // --- fleet aggregates (the dashboard; one query each) ---------------------

    /// Devices per status, and the accepted ones last heard of before
    /// `silent_since` (their last check-in, or first contact if none).
    async fn device_counts(&self, silent_since: DateTime<Utc>) -> StoreResult<DeviceCounts>;
    /// The `names` installed software names most devices report, each with
    /// its `versions` most reported versions, most devices first.
    async fn installed_versions(&self, names: u32, versions: u32)
        -> StoreResult<Vec<VersionCount>>;
    /// Devices per state and admitting phase of every active or paused
    /// deployment.
    async fn open_deployment_counts(&self) -> StoreResult<Vec<UpdateCount>>;
    /// Failures (failed, rolled back, timed out) recorded since `since`,
    /// grouped by reason, the `limit` largest groups first.
    async fn recent_failures(
        &self,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<FailureGroup>>;
    /// Successful installs per UTC day and package version since `since`.
    async fn installs_per_day(&self, since: DateTime<Utc>) -> StoreResult<Vec<InstallCount>>;
    /// Adds check-ins to their minutes' counts, and forgets the minutes
    /// before `forget_before`, in one transaction.
    async fn add_check_ins(
        &self,
        counts: &[CheckInCount],
        forget_before: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Check-ins per minute since `since`, oldest first; minutes without
    /// any are absent.
    async fn check_ins_per_minute(&self, since: DateTime<Utc>) -> StoreResult<Vec<CheckInCount>>;
    /// Where each of these devices stands: its update in a deployment still
    /// under way (the latest changed, if several), else its latest update;
    /// devices never targeted are absent.
    async fn current_updates(&self, devices: &[DeviceId]) -> StoreResult<Vec<CurrentUpdate>>;

    // --- device authentication ---------------------------------------------

    /// Remembers `nonce` until `expires_at`; false if it was already seen
    /// (a replay). Forgets expired nonces.
    async fn use_nonce(
        &self,
        nonce: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    // --- deployments --------------------------------------------------------

    /// Stores a deployment and the initial state of each device it targets,
    /// in one transaction. `NotFound` if the package or a listed device does
    /// not exist, `Conflict` if the id does. Initial states are not history.
    async fn insert_deployment(
        &self,
        deployment: &DeploymentRecord,
        devices: &[(DeviceId, UpdateState)],
    ) -> StoreResult<()>;
    /// One deployment.
    async fn deployment(&self, id: DeploymentId) -> StoreResult<Option<DeploymentRecord>>;
    /// Every deployment, newest first.
    async fn list_deployments(&self) -> StoreResult<Vec<DeploymentRecord>>;
    /// One page of the deployments matching `filter`, newest first, and
    /// how many match. Page 0 reads as page 1; `per_page` is clamped to
    /// 1..=1000.
    async fn list_deployments_page(
        &self,
        filter: &DeploymentFilter,
        page: PageRequest,
    ) -> StoreResult<(Vec<DeploymentRecord>, u64)>;
    /// Devices per state and admitting phase of each of these deployments,
    /// in one query (a page of deployments is counted at once).
    async fn deployment_tallies(&self, ids: &[DeploymentId]) -> StoreResult<Vec<UpdateCount>>;
    /// A deployment's devices in a failed state (failed, rolled back,
    /// timed out) grouped by their last message, the `limit` largest
    /// groups first.
    async fn deployment_failures(
        &self,
        id: DeploymentId,
        limit: u32,
    ) -> StoreResult<Vec<FailureGroup>>;
    /// One page of a deployment's devices matching `filter`, by device id.
    /// Page 0 reads as page 1; `per_page` is clamped to 1..=1000.
    async fn deployment_devices_page(
        &self,
        id: DeploymentId,
        filter: &DeploymentDevicesFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<DeviceUpdate>>;
    /// How many of a deployment's devices match `filter` (without a reason
    /// to match, [`Store::deployment_tallies`] already says).
    async fn count_deployment_devices(
        &self,
        id: DeploymentId,
        filter: &DeploymentDevicesFilter,
    ) -> StoreResult<u64>;
    /// Deployments with status `active`, oldest first.
    async fn active_deployments(&self) -> StoreResult<Vec<DeploymentRecord>>;
    /// Devices per state; states no device is in are absent.
    async fn deployment_counts(&self, id: DeploymentId) -> StoreResult<BTreeMap<UpdateState, u64>>;
    /// Every device's state in a deployment.
    async fn deployment_devices(&self, id: DeploymentId) -> StoreResult<Vec<DeviceUpdate>>;
    /// Cancels an active or paused deployment: status `cancelled`, and every device not
    /// in a final state moves to `cancelled` (with a history event). False if
    /// it was not active.
    async fn cancel_deployment(&self, id: DeploymentId, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Releases the install of a download-only active or paused deployment:
    /// `download_only` becomes false, and the devices waiting at
    /// `downloaded` start their state's clock afresh at `at` (the wait was
    /// the deployment's, not theirs). False if it was not held or not open.
    async fn release_install(&self, id: DeploymentId, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Deployments that are `active` or `paused`, oldest first.
    async fn open_deployments(&self) -> StoreResult<Vec<DeploymentRecord>>;
    /// Moves a deployment from status `from` to `status` with `rollout`,
    /// atomically; false if it was not in `from` (someone else moved it).
    /// `aborted`, like a cancel, moves every device not in a final state to
    /// `cancelled`.
    async fn update_rollout(
        &self,
        id: DeploymentId,
        from: DeploymentStatus,
        status: DeploymentStatus,
        rollout: &RolloutState,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Marks the devices admitted by rollout phase `phase`, those not
    /// admitted yet; returns how many were.
    async fn admit_devices(
        &self,
        id: DeploymentId,
        phase: u32,
        devices: &[DeviceId],
    ) -> StoreResult<u64>;
    /// Takes (or renews) the right to advance a deployment's rollout until
    /// `until`, unless another owner holds it past `now`. Several servers on
    /// one database thereby take turns.
    async fn take_rollout_lease(
        &self,
        id: DeploymentId,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Marks an active deployment `finished` if every device is in a final
    /// state (a deployment without devices is done) and, if it is dynamic,
    /// its end has come by `at`.
    async fn finish_deployment_if_done(
        &self,
        id: DeploymentId,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Ends an active or paused dynamic deployment at `at`: it takes in no
    /// more devices (its `ends_at` becomes `at`) and finishes once the
    /// devices it has are done. False if it is not dynamic, not active or
    /// paused, or ended already.
    async fn end_deployment(&self, id: DeploymentId, at: DateTime<Utc>) -> StoreResult<bool>;
    /// How many devices joined each of these deployments after it was
    /// created, in one query; deployments none joined are absent.
    async fn late_joiners(&self, ids: &[DeploymentId]) -> StoreResult<BTreeMap<DeploymentId, u64>>;

    // --- one device in one deployment ----------------------------------------

    /// The device's state in the deployment, if it is targeted.
    async fn device_update(
        &self,
        deployment: DeploymentId,
        device: DeviceId,
    ) -> StoreResult<Option<DeviceUpdate>>;
    /// Adds the device to the deployment in `state`, marked as joined late,
    /// unless it is there already (a device that joined a tag later);
    /// returns its state.
    async fn add_device_to_deployment(
        &self,
        deployment: DeploymentId,
        device: DeviceId,
        state: UpdateState,
        message: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<DeviceUpdate>;
    /// Applies a report or a server decision following
    /// [`UpdateState::accepts_report`] rules — atomically, so a late report can
    /// never move the device backwards — and appends it to the device's history
    /// either way. `NotFound` if the device is not in the deployment. A
    /// repeat, late or refused report leaves the state and its message as
    /// they are and answers `applied: false` with the state in force.
    async fn record_update_state(
        &self,
        deployment: DeploymentId,
        device: DeviceId,
        state: UpdateState,
        message: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<ReportOutcome>;
    /// Keeps a downloading device's latest progress (bytes done of total)
    /// and when it came, for operators to see and for the rollout's device
    /// timeout (a download still moving is not stuck). Not history, no
    /// change-feed event, and the state and `updated_at` stay as they are;
    /// `false` if the device is not `downloading` in the deployment.
    async fn record_progress(
        &self,
        deployment: DeploymentId,
        device: DeviceId,
        progress: Progress,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Forces a state decided by the server (incompatible, already_installed,
    /// cancelled) regardless of ordering, unless the current state is final,
    /// and records it in history.
    async fn decide_update_state(
        &self,
        deployment: DeploymentId,
        device: DeviceId,
        state: UpdateState,
        message: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<ReportOutcome>;
    /// The device's update history (every event), newest first.
    async fn device_history(&self, device: DeviceId) -> StoreResult<Vec<UpdateEvent>>;

    // --- multipart uploads into the blob store under way ---------------------

    /// Records a multipart upload before its first part is sent, so that a
    /// sweep can abort it should its instance die.
    async fn record_upload(&self, upload: &UploadRecord) -> StoreResult<()>;
    /// Forgets a recorded upload once committed or aborted; `false` if it
    /// was not recorded (another instance's sweep forgot it first).
    async fn forget_upload(&self, object_key: &str, upload_id: &str) -> StoreResult<bool>;
    /// Up to `limit` recorded uploads started before `before`, oldest first,
    /// each with whether a package row holds its blob key.
    async fn stale_uploads(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<StaleUpload>>;
}

/// The store as the server holds it.
pub type SharedStore = Arc<dyn Store>;
