//! What changed among a deployment's devices since a given moment, so that
//! the rollout engine, which looks at every device of the deployments it
//! advances each second, reads only those rows rather than all of them.
//! A supertrait of [`Store`](crate::Store), so `Arc<dyn Store>` has it too;
//! its SQL is in `sql/deployment_changes.rs`, written once for both
//! backends.
//!
//! Every row of `deployment_devices` carries `changed_at`: when it was
//! inserted, or its state, `updated_at`, admitting phase or download
//! progress last written, on the database's own clock (migration 0018
//! stamps it with triggers, so no write can forget it). A reader asks for
//! the rows changed at or after a [`ChangeMark`] it got from the database's
//! clock at its previous read.
//!
//! A row is stamped when written but seen when its transaction commits: a
//! transaction that commits after a read, yet stamped its rows before that
//! read's mark, is missed by a reader asking from that exact mark. Readers
//! therefore ask from a few seconds earlier ([`ChangeMark::earlier_by`]),
//! and re-read everything now and then for transactions longer than that.

use crate::StoreResult;
use airlift_protocol::management::DeviceUpdate;
use airlift_protocol::DeploymentId;
use async_trait::async_trait;
use std::time::Duration;

/// A moment on the database's own clock, in milliseconds since the Unix
/// epoch: the time `changed_at` stamps are compared with. Not a server
/// instance's clock, so instances whose clocks disagree still agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeMark(i64);

impl ChangeMark {
    /// The mark at `millis` since the Unix epoch on the database's clock.
    pub fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// The mark `overlap` earlier: where to ask from, so that a transaction
    /// that committed up to `overlap` after stamping its rows is not missed.
    #[must_use]
    pub fn earlier_by(self, overlap: Duration) -> Self {
        let overlap = i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(overlap))
    }
}

/// A deployment's devices as a rollout decides on them, read at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChanges {
    /// The rows read, by device id: every one, or those changed at or after
    /// the mark asked from. Without their messages (a failure's message
    /// may be a 16 KiB log tail, and no rollout decision reads it).
    pub devices: Vec<DeviceUpdate>,
    /// The database's clock just before the rows were read: what to ask
    /// from next time (less an overlap, see the module's docs).
    pub read_at: ChangeMark,
}

/// Reading a deployment's devices by what changed; every method is one
/// atomic read.
#[async_trait]
pub trait DeploymentChanges {
    /// A deployment's devices without their messages — all of them with
    /// `since` `None`, else those whose row changed at or after `since` —
    /// and the database's clock just before the read. A deployment
    /// without devices, or that does not exist, has none.
    async fn rollout_devices(
        &self,
        id: DeploymentId,
        since: Option<ChangeMark>,
    ) -> StoreResult<DeviceChanges>;
}
