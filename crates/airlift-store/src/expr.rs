//! Target expressions in the store: the [`VersionKeyStore`] trait (a
//! supertrait of [`Store`](crate::Store)) that keeps the order keys of
//! installed versions filled, and the filter hook
//! ([`DeviceFilter::expression`](crate::DeviceFilter::expression)) that
//! compiles an expression to SQL (`sql/expr.rs`) for device listings,
//! counts and the walk over a deployment's target.
//!
//! Every inventory the store records carries its versions' keys
//! ([`version_key`](airlift_protocol::target_expr::version_key)); rows
//! recorded before migration 0015 are keyed by
//! [`VersionKeyStore::fill_version_keys`], which [`open`](crate::open)
//! runs, so `installed.rootfs < 2.4.0` in SQL sees every device that the
//! same expression in memory sees.

use crate::StoreResult;
use async_trait::async_trait;

/// Distinct versions keyed per statement by
/// [`VersionKeyStore::fill_version_keys`].
pub(crate) const FILL_BATCH: u32 = 500;

/// The order keys of installed versions.
#[async_trait]
pub trait VersionKeyStore {
    /// Keys every installed version that has no key yet (recorded before
    /// the keys existed); returns how many were keyed. Safe to run from
    /// several processes at once: a row is only ever given the key of its
    /// own version.
    async fn fill_version_keys(&self) -> StoreResult<u64>;
}
