//! A deployment as the store keeps it: its record, where its phased
//! rollout stands, whether it still takes in devices that join its target,
//! and the filters for listing deployments and their devices.

use airlift_protocol::install::InstallPolicy;
use airlift_protocol::management::{Strategy, Target};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::{DeploymentId, PackageId};
use chrono::{DateTime, Utc};

/// A stored deployment, without counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRecord {
    pub id: DeploymentId,
    /// Name for people.
    pub name: String,
    pub package_id: PackageId,
    /// Which devices.
    pub target: Target,
    /// How it rolls out.
    pub strategy: Strategy,
    /// When its devices may install.
    pub install: InstallPolicy,
    /// Overall status.
    pub status: DeploymentStatus,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When it finished or was cancelled.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where its phased rollout stands (defaults for all-at-once).
    pub rollout: RolloutState,
    /// Whether it takes in devices that join its target later and stays
    /// active until it ends, rather than finishing once its devices are done.
    pub dynamic: bool,
    /// When a dynamic deployment stops taking in devices (an operator
    /// ending it sets it to then); `None`: not before an operator ends it.
    pub ends_at: Option<DateTime<Utc>>,
}

impl DeploymentRecord {
    /// Whether, at `now`, the deployment takes in a device that joins its
    /// target: dynamic, active or paused, and not past its end.
    pub fn takes_in_devices(&self, now: DateTime<Utc>) -> bool {
        self.dynamic
            && matches!(
                self.status,
                DeploymentStatus::Active | DeploymentStatus::Paused
            )
            && self.ends_at.is_none_or(|ends| now < ends)
    }

    /// Whether a dynamic deployment's end has come by `now`, so it may
    /// finish once its devices are done (always true of one that is not
    /// dynamic).
    pub fn may_finish(&self, now: DateTime<Utc>) -> bool {
        !self.dynamic || self.ends_at.is_some_and(|ends| ends <= now)
    }
}

/// Where a phased rollout stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutState {
    /// The phase under way (0-based).
    pub phase: u32,
    /// When it started.
    pub phase_started_at: Option<DateTime<Utc>>,
    /// When its success threshold was first met (its soak started).
    pub phase_met_at: Option<DateTime<Utc>>,
    /// Why the deployment is paused or was aborted.
    pub reason: Option<String>,
    /// Failures an operator saw and resumed past: the circuit breaker
    /// counts only those beyond.
    pub acknowledged_failures: u64,
}

/// Filters for listing deployments; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentFilter {
    /// Overall status.
    pub status: Option<DeploymentStatus>,
}

/// Which of a deployment's devices to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentDevicesFilter {
    /// In one of these states; empty means any.
    pub states: Vec<UpdateState>,
    /// Whose last message (a failure's reason) matches this.
    pub reason: Option<ReasonMatch>,
}

/// How a device's last message is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasonMatch {
    /// It has none.
    Missing,
    /// It starts with this (a reason may be a 16 KiB log tail, too long
    /// to carry whole in a link).
    StartsWith(String),
}
