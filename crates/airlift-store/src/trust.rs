//! Trust roots in the store: the [`TrustRootStore`] trait (a supertrait of
//! [`Store`](crate::Store)) and its records. The SQL is in `sql/trust.rs`.
//! The store checks no signature (it knows nothing of keys): the server
//! verifies each root against the previous one before inserting it, and
//! the store keeps the versions consecutive.

use crate::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// A stored root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRootRecord {
    /// Its version (1, 2, …).
    pub version: u64,
    /// When it expires, unix seconds.
    pub expires: u64,
    /// SHA-256 of `document`, hex.
    pub sha256: String,
    /// The signed envelope, exactly as uploaded.
    pub document: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// Trust roots and what the server's timestamps vouch for.
#[async_trait]
pub trait TrustRootStore {
    /// Stores `root`, which must be version 1 when none is stored, else
    /// exactly one more than the newest ([`StoreError::Conflict`](crate::StoreError::Conflict)
    /// otherwise, also when another upload of that version won).
    async fn insert_trust_root(&self, root: &TrustRootRecord) -> StoreResult<()>;

    /// The newest root, if any.
    async fn latest_trust_root(&self) -> StoreResult<Option<TrustRootRecord>>;

    /// The roots after version `after`, oldest first, at most `limit`.
    async fn trust_roots_after(&self, after: u64, limit: u32) -> StoreResult<Vec<TrustRootRecord>>;

    /// The highest security version of any stored package (0 if none).
    async fn latest_security_version(&self) -> StoreResult<u64>;
}
