//! States, as enums with one spelling on the wire (`snake_case`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownValue {
                        kind: stringify!($name),
                        value: other.chars().take(64).collect(),
                        expected: vec![$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

/// A text that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {kind}; expected one of: {expected}")]
pub struct UnknownValue {
    /// The enum's name.
    pub kind: &'static str,
    /// What was given.
    pub value: String,
    /// The valid spellings.
    pub expected: String,
}

wire_enum!(
    /// Whether a device may talk to the server.
    DeviceStatus {
        /// Asked to join; waits for an operator.
        Pending => "pending",
        /// Known and allowed.
        Accepted => "accepted",
        /// Refused by an operator.
        Rejected => "rejected",
        /// Announced by an operator; accepted on first contact with the same key.
        Preauthorized => "preauthorized",
        /// Retired; its key no longer works.
        Decommissioned => "decommissioned",
    }
);

wire_enum!(
    /// A deployment as a whole.
    DeploymentStatus {
        /// Offering its package to matching devices.
        Active => "active",
        /// A phased rollout held by its circuit breaker, a missed deadline or
        /// an operator: no device is admitted until it resumes; devices
        /// already updating finish.
        Paused => "paused",
        /// Ended by its circuit breaker or an operator: devices not yet
        /// updating are never offered it.
        Aborted => "aborted",
        /// Stopped by an operator; devices not yet done are not offered it any more.
        Cancelled => "cancelled",
        /// Every targeted device reached a final state.
        Finished => "finished",
    }
);

wire_enum!(
    /// One device's progress through one deployment.
    UpdateState {
        /// Targeted, not yet offered or not yet started.
        Pending => "pending",
        /// The package does not fit the device; never offered.
        Incompatible => "incompatible",
        /// The device is downloading.
        Downloading => "downloading",
        /// Downloaded and verified.
        Downloaded => "downloaded",
        /// Writing into the inactive slot.
        Installing => "installing",
        /// Written and read back.
        Installed => "installed",
        /// Rebooting into the new version for a trial boot.
        Rebooting => "rebooting",
        /// The device confirmed a healthy boot of the new version and committed it.
        Success => "success",
        /// The update failed before switching; the old version still runs.
        Failure => "failure",
        /// The new version failed its trial boot; the device went back by itself.
        RolledBack => "rolled_back",
        /// The device already ran this version.
        AlreadyInstalled => "already_installed",
        /// The deployment was cancelled before the device finished.
        Cancelled => "cancelled",
        /// Stuck in one state past the rollout's device timeout; counts as
        /// a failure.
        TimedOut => "timed_out",
    }
);

impl UpdateState {
    /// A final state: nothing the device reports afterwards changes it.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Incompatible
                | Self::Success
                | Self::Failure
                | Self::RolledBack
                | Self::AlreadyInstalled
                | Self::Cancelled
                | Self::TimedOut
        )
    }

    /// A failure for the circuit breaker: the update did not take.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failure | Self::RolledBack | Self::TimedOut)
    }

    /// Whether a device may report this state (the others are the server's).
    pub fn is_reportable(&self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::Incompatible | Self::Cancelled | Self::TimedOut
        )
    }

    /// Position along the update's path; a report never moves a device back.
    pub fn rank(&self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Downloading => 1,
            Self::Downloaded => 2,
            Self::Installing => 3,
            Self::Installed => 4,
            Self::Rebooting => 5,
            Self::Incompatible
            | Self::Success
            | Self::Failure
            | Self::RolledBack
            | Self::AlreadyInstalled
            | Self::Cancelled
            | Self::TimedOut => 6,
        }
    }

    /// Whether a device in `self` may move to `next` on the device's word.
    /// Repeating the current state is allowed (reports are idempotent).
    pub fn accepts_report(&self, next: UpdateState) -> Transition {
        if !next.is_reportable() {
            return Transition::Refused;
        }
        if *self == next {
            return Transition::Repeat;
        }
        if self.is_final() || next.rank() < self.rank() {
            return Transition::Stale;
        }
        Transition::Advance
    }
}

/// What a device's report does to its recorded state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The state moves forward.
    Advance,
    /// Same state again: recorded as progress, state unchanged.
    Repeat,
    /// A late or out-of-order report: kept in history, state unchanged.
    Stale,
    /// Devices may not report this state.
    Refused,
}

wire_enum!(
    /// What a management API token may do.
    Role {
        /// Everything, including tokens.
        Admin => "admin",
        /// Packages, devices and deployments.
        Operator => "operator",
        /// Read only.
        Viewer => "viewer",
    }
);

impl Role {
    /// Whether this role may change packages, devices and deployments.
    pub fn can_operate(&self) -> bool {
        matches!(self, Self::Admin | Self::Operator)
    }

    /// Whether this role may manage tokens and read the audit log.
    pub fn can_administer(&self) -> bool {
        matches!(self, Self::Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for state in UpdateState::ALL {
            assert_eq!(state.as_str().parse::<UpdateState>().ok(), Some(*state));
            assert_eq!(
                serde_json::to_string(state).ok(),
                Some(format!("\"{state}\""))
            );
        }
        let error = "done".parse::<UpdateState>().expect_err("unknown");
        assert!(error.to_string().contains("expected one of: pending"));
    }

    #[test]
    fn late_reports_never_undo_progress() {
        use UpdateState::*;
        assert_eq!(Success.accepts_report(Downloading), Transition::Stale);
        assert_eq!(Installing.accepts_report(Downloading), Transition::Stale);
        assert_eq!(Downloading.accepts_report(Downloading), Transition::Repeat);
        assert_eq!(Pending.accepts_report(Downloading), Transition::Advance);
        assert_eq!(Rebooting.accepts_report(RolledBack), Transition::Advance);
        assert_eq!(Downloading.accepts_report(Failure), Transition::Advance);
        assert_eq!(Failure.accepts_report(Success), Transition::Stale);
        assert_eq!(Cancelled.accepts_report(Success), Transition::Stale);
        assert_eq!(Pending.accepts_report(Incompatible), Transition::Refused);
        assert_eq!(Pending.accepts_report(Cancelled), Transition::Refused);
    }
}
