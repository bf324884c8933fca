//! How a deployment rolls out: all at once, or in phases — canaries, then
//! growing shares of the target — with soak times, success thresholds,
//! deadlines and a circuit breaker.
//!
//! ```
//! use airlift_protocol::strategy::{Strategy, Phased};
//!
//! let strategy: Strategy = serde_json::from_str(r#"{
//!     "type": "phased",
//!     "phases": [
//!         {"devices": {"tag": "canary"}, "soak_secs": 3600},
//!         {"devices": {"percent": 10}, "soak_secs": 3600, "success_percent": 95},
//!         {"devices": {"percent": 100}}
//!     ],
//!     "failure_threshold": {"percent": 5},
//!     "on_failure": "abort"
//! }"#).unwrap();
//! let Strategy::Phased(phased) = &strategy else { unreachable!() };
//! assert!(phased.validate().is_ok());
//! ```

use crate::ids::DeviceId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a deployment rolls out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Strategy {
    /// Every targeted device at once.
    All,
    /// In phases, each admitting more of the target once the one before
    /// it proved healthy.
    Phased(Phased),
}

/// A phased rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Phased {
    /// The phases, in order. The last must admit the whole target
    /// (`{"percent": 100}`).
    #[schema(min_items = 1, max_items = 20)]
    pub phases: Vec<Phase>,
    /// When failures trip the circuit breaker: more failed, rolled-back or
    /// timed-out devices than this, among the devices admitted so far.
    pub failure_threshold: FailureThreshold,
    /// What the breaker does [default: pause].
    #[serde(default)]
    pub on_failure: BreakerAction,
    /// Whether phases advance by themselves when their conditions hold, or
    /// wait for an operator [default: automatic].
    #[serde(default)]
    pub advance: Advance,
    /// A device that stays in one unfinished state (downloading, rebooting,
    /// …) this long is marked `timed_out`, which counts as a failure; a
    /// download counts from its latest progress report [default: 6 hours].
    #[serde(default = "six_hours")]
    #[schema(minimum = 1)]
    pub device_timeout_secs: u64,
    /// With `on_failure: rollback`, the package to roll back to [default:
    /// the release each device last committed before this deployment].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_package: Option<crate::ids::PackageId>,
}

fn six_hours() -> u64 {
    6 * 3600
}

/// One phase of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// A name for people [default: "canary" or "N %"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which devices the phase admits.
    pub devices: PhaseDevices,
    /// How long the phase must stay healthy, once its success threshold is
    /// met, before the next one starts [default: 0].
    #[serde(default)]
    pub soak_secs: u64,
    /// The share of the phase's devices (those the package fits) that must
    /// have confirmed a healthy boot of the new version [default: 100].
    #[serde(default = "hundred")]
    #[schema(maximum = 100)]
    pub success_percent: u8,
    /// If the success threshold is not met this long after the phase
    /// started, the rollout pauses for an operator [default: none].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub deadline_secs: Option<u64>,
}

fn hundred() -> u8 {
    100
}

impl Phase {
    /// Its name, or one made from what it admits.
    pub fn display_name(&self) -> String {
        match (&self.name, &self.devices) {
            (Some(name), _) => name.clone(),
            (None, PhaseDevices::Percent(p)) => format!("{p} %"),
            (None, _) => "canary".to_owned(),
        }
    }
}

/// Which devices a phase admits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PhaseDevices {
    /// Canaries by id (they must be in the target).
    Devices(Vec<DeviceId>),
    /// Canaries by tag: the target's devices carrying it.
    Tag(String),
    /// This share of the whole target, cumulative: a later phase's
    /// percentage includes the earlier ones'. Devices are taken in a stable
    /// order (a hash of the deployment and the device), so a phase is the
    /// same set on every look.
    Percent(u8),
}

/// When the circuit breaker trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FailureThreshold {
    /// More than this share of the admitted devices failed (0–100).
    Percent(u8),
    /// More than this many admitted devices failed.
    Count(u64),
}

impl FailureThreshold {
    /// Whether `failed` of `admitted` devices crosses the threshold.
    pub fn crossed(&self, failed: u64, admitted: u64) -> bool {
        match *self {
            // failed / admitted > percent / 100, in integers.
            FailureThreshold::Percent(percent) => {
                failed > 0 && failed * 100 > u64::from(percent) * admitted
            }
            FailureThreshold::Count(count) => failed > count,
        }
    }
}

/// What the circuit breaker does when it trips.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerAction {
    /// Stop admitting devices and wait for an operator to resume or abort.
    #[default]
    Pause,
    /// End the deployment: devices not yet updating are never offered it.
    Abort,
    /// End the deployment and roll back the devices that installed it (or
    /// were installing it): the server creates a rollback deployment of
    /// `rollback_package` — or, without one, of the release each device
    /// last committed before — to exactly those devices, through the same
    /// phases. The rollback deployment's own breaker pauses it.
    Rollback,
}

/// Whether phases advance by themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Advance {
    /// As soon as the phase's success threshold held for its soak time.
    #[default]
    Automatic,
    /// Only on `POST /deployments/{id}/advance`.
    Manual,
}

/// A strategy that cannot be carried out, and which field says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct StrategyError {
    /// The JSON path of the field, e.g. `strategy.phases[2].devices.percent`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Most phases a rollout may have.
pub const MAX_PHASES: usize = 20;

impl Phased {
    /// Checks what serde cannot: phases present and at most
    /// [`MAX_PHASES`], canaries before percentages, percentages in 1–100
    /// and rising, the last phase at 100 %, thresholds within 0–100.
    pub fn validate(&self) -> Result<(), StrategyError> {
        let error = |field: String, message: &str| StrategyError {
            field: format!("strategy.{field}"),
            message: message.to_owned(),
        };
        if self.phases.is_empty() || self.phases.len() > MAX_PHASES {
            return Err(error(
                "phases".into(),
                &format!("give 1 to {MAX_PHASES} phases"),
            ));
        }
        let mut last_percent = 0u8;
        for (i, phase) in self.phases.iter().enumerate() {
            if phase.success_percent > 100 {
                return Err(error(
                    format!("phases[{i}].success_percent"),
                    "must be within 0–100",
                ));
            }
            if phase.deadline_secs == Some(0) {
                return Err(error(
                    format!("phases[{i}].deadline_secs"),
                    "must be at least 1 second (or left out)",
                ));
            }
            match &phase.devices {
                PhaseDevices::Percent(p) => {
                    if *p == 0 || *p > 100 {
                        return Err(error(
                            format!("phases[{i}].devices.percent"),
                            "must be within 1–100",
                        ));
                    }
                    if *p <= last_percent {
                        return Err(error(
                            format!("phases[{i}].devices.percent"),
                            &format!(
                                "percentages are cumulative and must rise: {p} follows {last_percent}"
                            ),
                        ));
                    }
                    last_percent = *p;
                }
                PhaseDevices::Devices(_) | PhaseDevices::Tag(_) if last_percent > 0 => {
                    return Err(error(
                        format!("phases[{i}].devices"),
                        "canary phases (devices, tag) come before percentage phases",
                    ));
                }
                PhaseDevices::Devices(ids) if ids.is_empty() => {
                    return Err(error(
                        format!("phases[{i}].devices.devices"),
                        "list at least one canary device",
                    ));
                }
                PhaseDevices::Tag(tag) if tag.trim().is_empty() => {
                    return Err(error(
                        format!("phases[{i}].devices.tag"),
                        "must not be empty",
                    ));
                }
                PhaseDevices::Devices(_) | PhaseDevices::Tag(_) => {}
            }
        }
        if last_percent != 100 {
            return Err(error(
                format!("phases[{}].devices", self.phases.len() - 1),
                "the last phase must admit the whole target: {\"percent\": 100}",
            ));
        }
        if let FailureThreshold::Percent(p) = self.failure_threshold {
            if p > 100 {
                return Err(error(
                    "failure_threshold.percent".into(),
                    "must be within 0–100",
                ));
            }
        }
        if self.device_timeout_secs == 0 {
            return Err(error(
                "device_timeout_secs".into(),
                "must be at least 1 second",
            ));
        }
        if self.rollback_package.is_some() && self.on_failure != BreakerAction::Rollback {
            return Err(error(
                "rollback_package".into(),
                "only with \"on_failure\": \"rollback\"",
            ));
        }
        Ok(())
    }
}

/// Where a phased rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutProgress {
    /// The phase under way (0-based).
    pub phase: usize,
    /// When it started.
    pub phase_started_at: DateTime<Utc>,
    /// When its success threshold was first met (its soak started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_met_at: Option<DateTime<Utc>>,
    /// Why the rollout is paused or was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each phase's devices.
    pub phases: Vec<PhaseProgress>,
}

/// The devices of one phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PhaseProgress {
    /// The phase's name.
    pub name: String,
    /// Devices admitted by this phase.
    pub admitted: u64,
    /// Of those, confirmed healthy on the new version.
    pub succeeded: u64,
    /// Of those, failed, rolled back or timed out.
    pub failed: u64,
    /// Of those, the package does not fit or they already ran it.
    pub skipped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phased(phases: serde_json::Value) -> Result<Phased, String> {
        let strategy: Strategy = serde_json::from_value(serde_json::json!({
            "type": "phased",
            "phases": phases,
            "failure_threshold": {"percent": 10},
        }))
        .map_err(|e| e.to_string())?;
        match strategy {
            Strategy::Phased(p) => Ok(p),
            Strategy::All => Err("not phased".into()),
        }
    }

    #[test]
    fn a_canary_then_rising_percentages_is_valid() {
        let p = phased(serde_json::json!([
            {"devices": {"tag": "canary"}},
            {"devices": {"percent": 10}},
            {"devices": {"percent": 50}},
            {"devices": {"percent": 100}}
        ]))
        .expect("parses");
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.on_failure, BreakerAction::Pause);
        assert_eq!(p.phases[1].success_percent, 100);
        assert_eq!(p.phases[0].display_name(), "canary");
        assert_eq!(p.phases[2].display_name(), "50 %");
    }

    #[test]
    fn each_mistake_names_its_field() {
        let cases = [
            (serde_json::json!([]), "strategy.phases"),
            (
                serde_json::json!([{"devices": {"percent": 50}}, {"devices": {"percent": 50}}]),
                "strategy.phases[1].devices.percent",
            ),
            (
                serde_json::json!([{"devices": {"percent": 0}}, {"devices": {"percent": 100}}]),
                "strategy.phases[0].devices.percent",
            ),
            (
                serde_json::json!([{"devices": {"percent": 101}}]),
                "strategy.phases[0].devices.percent",
            ),
            (
                serde_json::json!([{"devices": {"percent": 50}}]),
                "strategy.phases[0].devices",
            ),
            (
                serde_json::json!([{"devices": {"percent": 10}}, {"devices": {"tag": "c"}}, {"devices": {"percent": 100}}]),
                "strategy.phases[1].devices",
            ),
            (
                serde_json::json!([{"devices": {"percent": 100}, "success_percent": 120}]),
                "strategy.phases[0].success_percent",
            ),
            (
                serde_json::json!([{"devices": {"devices": []}}, {"devices": {"percent": 100}}]),
                "strategy.phases[0].devices.devices",
            ),
        ];
        for (phases, field) in cases {
            let error = phased(phases.clone())
                .expect("parses")
                .validate()
                .expect_err("invalid");
            assert_eq!(error.field, field, "{phases}: {error}");
        }
        let mut p = phased(serde_json::json!([{"devices": {"percent": 100}}])).expect("parses");
        p.failure_threshold = FailureThreshold::Percent(101);
        assert_eq!(
            p.validate().map_err(|e| e.field),
            Err("strategy.failure_threshold.percent".to_owned())
        );
    }

    #[test]
    fn the_breaker_trips_only_past_the_threshold() {
        let percent = FailureThreshold::Percent(20);
        assert!(!percent.crossed(0, 0));
        assert!(!percent.crossed(1, 5), "exactly 20 % is not past 20 %");
        assert!(percent.crossed(2, 5));
        assert!(percent.crossed(1, 4));
        assert!(!FailureThreshold::Percent(0).crossed(0, 10));
        assert!(FailureThreshold::Percent(0).crossed(1, 10));
        let count = FailureThreshold::Count(2);
        assert!(!count.crossed(2, 100));
        assert!(count.crossed(3, 100));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let top: Result<Strategy, _> = serde_json::from_value(serde_json::json!({
            "type": "phased",
            "phases": [{"devices": {"percent": 100}}],
            "failure_threshold": {"count": 1},
            "breaker": "pause",
        }));
        let error = top.expect_err("unknown field").to_string();
        assert!(error.contains("breaker"), "{error}");
        let error = phased(serde_json::json!([{"devices": {"percent": 100}, "soak": 5}]))
            .expect_err("unknown field");
        assert!(error.contains("soak"), "{error}");
    }
}
