//! Forced and soft deployments, as hawkBit has them.
//!
//! A deployment is *forced* unless its [`InstallPolicy`](crate::install::InstallPolicy)
//! carries a [`SoftInstall`]: then a device that has downloaded the update
//! asks its owner first (the agent's `defer_command`) and may answer "not
//! now" — at most `max_deferrals` times and/or until `deadline`. When either
//! runs out the offer turns forced: the device installs without asking.
//!
//! The server keeps the count per device; each offer tells the device what
//! is left ([`DeferralAllowance`]), and the device reports each deferral
//! ([`DeferralReport`]) numbered, so that a report sent twice counts once.
//!
//! ```
//! use airlift_protocol::soft::SoftInstall;
//! use chrono::{TimeZone, Utc};
//!
//! let soft = SoftInstall { max_deferrals: Some(2), deadline: None };
//! let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
//! assert_eq!(soft.allowance(0, now).unwrap().remaining, Some(2));
//! assert_eq!(soft.allowance(1, now).unwrap().remaining, Some(1));
//! assert!(soft.allowance(2, now).is_none(), "two deferrals used: forced");
//! ```

use crate::strategy::StrategyError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Path to report a deferral of a deployment's update.
pub fn deferral_path(deployment: crate::DeploymentId) -> String {
    format!("/api/device/v1/deployments/{deployment}/deferral")
}

/// Most deferrals a soft deployment may allow each device.
pub const MAX_DEFERRALS: u32 = 100;

/// The exit code with which a device's `defer_command` answers "not now"
/// (`EX_TEMPFAIL` of `sysexits.h`).
pub const DEFER_EXIT_CODE: i32 = 75;

/// How long a soft deployment lets its devices put the install off. At least
/// one bound is required, so that every update lands in the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SoftInstall {
    /// How many times each device may defer (1–100); unlimited until the
    /// deadline when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_deferrals: Option<u32>,
    /// When deferring ends and every device installs (RFC 3339); bounded by
    /// `max_deferrals` alone when absent. Must be in the future when the
    /// deployment is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
}

/// What an offer of a soft deployment lets the device do: ask before
/// installing, and defer. Absent from an offer that is forced (a forced
/// deployment, or a soft one whose deferrals or time ran out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeferralAllowance {
    /// How many times this device has deferred this update so far; its next
    /// [`DeferralReport`] is number `deferred + 1`.
    pub deferred: u32,
    /// How many more deferrals it has; unlimited until `until` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// When deferring ends (the deployment's deadline), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// A device's report that it put a soft update off ("not now").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeferralReport {
    /// Which deferral this is: the offer's `deferred + 1`. A report whose
    /// number is already counted is acknowledged and not counted again.
    #[schema(minimum = 1, maximum = 1000000)]
    pub deferral: u32,
    /// Why, as the device's hook said it (its first line of output), for
    /// the device's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub message: Option<String>,
}

/// Highest [`DeferralReport::deferral`] number: far above what a deadline
/// allows a device polling every few minutes, and below any overflow.
pub const MAX_DEFERRAL_NUMBER: u32 = 1_000_000;

/// Longest [`DeferralReport::message`], in characters.
pub const MAX_DEFERRAL_MESSAGE: usize = 256;

/// The server's answer to a [`DeferralReport`] it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeferralAck {
    /// How many deferrals the server now counts for this device.
    pub deferred: u32,
    /// Whether this report added one (false for a repeated report).
    pub counted: bool,
}

/// How much a soft deployment's devices deferred, in its detail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeferralSummary {
    /// Deferrals of all its devices together.
    pub deferrals: u64,
    /// Devices that deferred at least once.
    pub devices: u64,
    /// The most any one device deferred (each device's own count is in its
    /// history: `airlift device history`).
    pub most: u32,
}

impl SoftInstall {
    /// Whether the bounds can be carried out; names the field that cannot.
    /// (Whether the deadline is still ahead is checked when a deployment is
    /// created: it depends on the clock.)
    pub fn validate(&self) -> Result<(), StrategyError> {
        let refuse = |field: &str, message: String| {
            Err(StrategyError {
                field: format!("install.soft{field}"),
                message,
            })
        };
        match (self.max_deferrals, self.deadline) {
            (None, None) => refuse(
                "",
                "a soft deployment needs max_deferrals, a deadline, or both, so that every device installs in the end".into(),
            ),
            (Some(n), _) if n == 0 || n > MAX_DEFERRALS => refuse(
                ".max_deferrals",
                format!("{n} is out of range: allow 1 to {MAX_DEFERRALS} deferrals"),
            ),
            _ => Ok(()),
        }
    }

    /// What a device that has deferred `deferred` times may still do at
    /// `now`; `None` once the offer is forced.
    pub fn allowance(&self, deferred: u32, now: DateTime<Utc>) -> Option<DeferralAllowance> {
        let remaining = match self.max_deferrals {
            Some(max) if deferred >= max => return None,
            Some(max) => Some(max - deferred),
            None => None,
        };
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            return None;
        }
        Some(DeferralAllowance {
            deferred,
            remaining,
            until: self.deadline,
        })
    }
}

impl std::fmt::Display for SoftInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.max_deferrals, self.deadline) {
            (Some(n), Some(deadline)) => write!(
                f,
                "soft: up to {n} deferrals per device, until {}",
                deadline.to_rfc3339()
            ),
            (Some(n), None) => write!(f, "soft: up to {n} deferrals per device"),
            (None, Some(deadline)) => write!(f, "soft: deferrable until {}", deadline.to_rfc3339()),
            (None, None) => f.write_str("soft"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, 12, 0, 0)
            .single()
            .expect("a valid time")
    }

    #[test]
    fn a_deadline_turns_the_offer_forced() {
        let soft = SoftInstall {
            max_deferrals: None,
            deadline: Some(at(10)),
        };
        let allowed = soft.allowance(7, at(9)).expect("before the deadline");
        assert_eq!(allowed.remaining, None);
        assert_eq!(allowed.until, Some(at(10)));
        assert_eq!(allowed.deferred, 7);
        assert!(soft.allowance(0, at(10)).is_none(), "at the deadline");
        assert!(soft.allowance(0, at(11)).is_none(), "after it");
    }

    #[test]
    fn whichever_bound_runs_out_first_forces() {
        let soft = SoftInstall {
            max_deferrals: Some(3),
            deadline: Some(at(10)),
        };
        assert_eq!(soft.allowance(2, at(9)).and_then(|a| a.remaining), Some(1));
        assert!(soft.allowance(3, at(9)).is_none());
        assert!(soft.allowance(0, at(10)).is_none());
    }

    #[test]
    fn bounds_are_required_and_limited() {
        let unbounded = SoftInstall::default();
        assert_eq!(
            unbounded.validate().expect_err("unbounded").field,
            "install.soft"
        );
        for n in [0, MAX_DEFERRALS + 1] {
            let soft = SoftInstall {
                max_deferrals: Some(n),
                deadline: None,
            };
            let error = soft.validate().expect_err("out of range");
            assert_eq!(error.field, "install.soft.max_deferrals");
        }
        for n in [1, MAX_DEFERRALS] {
            let soft = SoftInstall {
                max_deferrals: Some(n),
                deadline: None,
            };
            assert!(soft.validate().is_ok(), "{n}");
        }
    }

    #[test]
    fn the_wire_form_leaves_out_what_is_absent() {
        let soft: SoftInstall =
            serde_json::from_str(r#"{"deadline": "2026-12-31T00:00:00Z"}"#).expect("soft");
        assert_eq!(soft.max_deferrals, None);
        assert_eq!(
            serde_json::to_value(soft).expect("json"),
            serde_json::json!({"deadline": "2026-12-31T00:00:00Z"})
        );
        assert!(serde_json::from_str::<SoftInstall>(r#"{"max": 3}"#).is_err());
        let report: DeferralReport = serde_json::from_str(r#"{"deferral": 1}"#).expect("report");
        assert_eq!(report.message, None);
    }
}
