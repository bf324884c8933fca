//! When a device may install an update it has downloaded: a daily
//! maintenance window, and download-only deployments that hold every device
//! at `downloaded` until an operator releases the install.
//!
//! Downloading is always allowed: it writes only the inactive slot (or a
//! staging file) and changes nothing the device runs. The install — the
//! switch, the reboot, the in-place replace — is what waits.
//!
//! ```
//! use airlift_protocol::install::{InstallPolicy, InstallPermit};
//! use chrono::{TimeZone, Utc};
//!
//! let policy: InstallPolicy = serde_json::from_str(
//!     r#"{"window": {"start": "22:00", "end": "04:00"}}"#,
//! ).unwrap();
//! assert!(policy.validate().is_ok());
//! let midnight = Utc.with_ymd_and_hms(2026, 11, 26, 0, 30, 0).unwrap();
//! assert_eq!(policy.permit(midnight), InstallPermit::Now);
//! let noon = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
//! assert!(matches!(policy.permit(noon), InstallPermit::Later { .. }));
//! ```

use crate::strategy::StrategyError;
use chrono::{DateTime, NaiveTime, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// When the devices of a deployment may install.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallPolicy {
    /// Install only inside this daily window; any time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<InstallWindow>,
    /// Download now, install only once an operator releases the deployment
    /// (`POST /api/v1/deployments/{id}/install`), and then only inside the
    /// window if there is one [default: false].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub download_only: bool,
    /// A soft deployment: each device may defer the install, within these
    /// bounds, before it turns forced; forced (install as soon as the
    /// policy permits) when absent. See [`crate::soft`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft: Option<crate::soft::SoftInstall>,
}

/// A daily time-of-day range, in UTC, `"HH:MM"` to `"HH:MM"`. A window whose
/// end is before its start runs over midnight (`22:00`–`04:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallWindow {
    /// When it opens, UTC, `"HH:MM"`.
    #[serde(with = "hh_mm")]
    #[schema(value_type = String, example = "02:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub start: NaiveTime,
    /// When it closes, UTC, `"HH:MM"` (not included).
    #[serde(with = "hh_mm")]
    #[schema(value_type = String, example = "04:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub end: NaiveTime,
}

/// What an offer tells the device about installing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "when", rename_all = "snake_case")]
pub enum InstallPermit {
    /// Download, then install at once.
    #[default]
    Now,
    /// Download and verify, then wait at `downloaded` and keep checking in
    /// until an offer says `now`.
    Later {
        /// Why, for logs and people.
        reason: String,
        /// When the wait should end — the install window's next opening — so
        /// the device can check in then rather than at its next poll. Absent
        /// when the wait is for a person (download-only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
    },
}

impl InstallPolicy {
    /// Whether the policy can be carried out; names the field that cannot.
    pub fn validate(&self) -> Result<(), StrategyError> {
        if let Some(soft) = &self.soft {
            soft.validate()?;
        }
        match &self.window {
            Some(window) if window.start == window.end => Err(StrategyError {
                field: "install.window".into(),
                message: format!(
                    "the window opens and closes at {}: give a range, or leave the window out to allow any time",
                    window.start.format("%H:%M")
                ),
            }),
            _ => Ok(()),
        }
    }

    /// What devices are told at `now`.
    pub fn permit(&self, now: DateTime<Utc>) -> InstallPermit {
        if self.download_only {
            return InstallPermit::Later {
                reason: "download-only deployment: the install waits for an operator to release it"
                    .into(),
                until: None,
            };
        }
        match &self.window {
            Some(window) if !window.contains(now.time()) => InstallPermit::Later {
                reason: format!("outside the install window {window}"),
                until: Some(window.next_opening(now)),
            },
            _ => InstallPermit::Now,
        }
    }
}

impl InstallWindow {
    /// Whether `time` (UTC) falls inside the window.
    pub fn contains(&self, time: NaiveTime) -> bool {
        // Minutes, so that seconds inside the closing minute count as closed.
        let minute = |t: NaiveTime| t.hour() * 60 + t.minute();
        let (start, end, now) = (minute(self.start), minute(self.end), minute(time));
        if start <= end {
            start <= now && now < end
        } else {
            now >= start || now < end
        }
    }
}

impl InstallWindow {
    /// The first time after `now` that the window opens.
    pub fn next_opening(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.last_opened(now) + chrono::Duration::days(1)
    }

    /// The last time at or before `now` that the window opened.
    pub fn last_opened(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let today = now.date_naive().and_time(self.start).and_utc();
        if today <= now {
            today
        } else {
            today - chrono::Duration::days(1)
        }
    }
}

impl std::fmt::Display for InstallWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}–{} UTC",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

impl std::str::FromStr for InstallWindow {
    type Err = String;

    /// `"HH:MM-HH:MM"`, as the CLI takes it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (start, end) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?}: expected HH:MM-HH:MM, e.g. 02:00-04:00"))?;
        Ok(Self {
            start: hh_mm::parse(start.trim())?,
            end: hh_mm::parse(end.trim())?,
        })
    }
}

/// `NaiveTime` as `"HH:MM"`: minutes are the resolution of a window.
mod hh_mm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Exactly `HH:MM`, as the API documents it: chrono alone also takes
    /// `2:5` and `02: 00`.
    pub fn parse(text: &str) -> Result<NaiveTime, String> {
        let refused = || format!("{text:?} is not a time of day: expected HH:MM (00:00 to 23:59)");
        let bytes = text.as_bytes();
        let shaped = bytes.len() == 5
            && bytes[2] == b':'
            && [0, 1, 3, 4].iter().all(|&i| bytes[i].is_ascii_digit());
        if !shaped {
            return Err(refused());
        }
        NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| refused())
    }

    pub fn serialize<S: Serializer>(time: &NaiveTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&time.format("%H:%M"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, hour, minute, 0)
            .single()
            .expect("a valid time")
    }

    fn window(text: &str) -> InstallWindow {
        text.parse().expect("a window")
    }

    #[test]
    fn times_are_exactly_hh_mm() {
        assert!(hh_mm::parse("02:05").is_ok());
        assert!(hh_mm::parse("23:59").is_ok());
        for bad in [
            "2:05", " 2:5", "02: 00", "24:00", "02:60", "0205", "02:05:00", "",
        ] {
            assert!(hh_mm::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_window_includes_its_start_and_excludes_its_end() {
        let w = window("02:00-04:00");
        assert!(!w.contains(at(1, 59).time()));
        assert!(w.contains(at(2, 0).time()));
        assert!(w.contains(at(3, 59).time()));
        assert!(!w.contains(at(4, 0).time()));
    }

    #[test]
    fn a_window_may_run_over_midnight() {
        let w = window("22:30-01:15");
        assert!(w.contains(at(23, 0).time()));
        assert!(w.contains(at(0, 0).time()));
        assert!(w.contains(at(1, 14).time()));
        assert!(!w.contains(at(1, 15).time()));
        assert!(!w.contains(at(12, 0).time()));
        assert!(!w.contains(at(22, 29).time()));
    }

    #[test]
    fn download_only_holds_even_inside_the_window() {
        let policy = InstallPolicy {
            window: Some(window("00:00-23:59")),
            download_only: true,
            soft: None,
        };
        assert!(matches!(
            policy.permit(at(12, 0)),
            InstallPermit::Later { .. }
        ));
        let released = InstallPolicy {
            download_only: false,
            ..policy
        };
        assert_eq!(released.permit(at(12, 0)), InstallPermit::Now);
        assert_eq!(
            released.permit(at(23, 59)),
            InstallPermit::Later {
                reason: "outside the install window 00:00–23:59 UTC".into(),
                until: Some(at(0, 0) + chrono::Duration::days(1)),
            },
            "outside: wait until it next opens"
        );
        assert!(
            matches!(
                policy.permit(at(12, 0)),
                InstallPermit::Later { until: None, .. }
            ),
            "download-only waits for a person, not a time"
        );
    }

    #[test]
    fn a_window_last_opened_today_or_yesterday_and_opens_next_within_a_day() {
        let w = window("22:00-04:00");
        assert_eq!(w.last_opened(at(23, 0)), at(22, 0));
        assert_eq!(w.last_opened(at(22, 0)), at(22, 0));
        assert_eq!(
            w.last_opened(at(3, 0)),
            at(22, 0) - chrono::Duration::days(1)
        );
        assert_eq!(w.next_opening(at(5, 0)), at(22, 0));
        assert_eq!(
            w.next_opening(at(23, 0)),
            at(22, 0) + chrono::Duration::days(1)
        );
    }

    #[test]
    fn no_policy_installs_at_once() {
        assert_eq!(
            InstallPolicy::default().permit(at(3, 0)),
            InstallPermit::Now
        );
    }

    #[test]
    fn bad_windows_are_refused_with_the_field_named() {
        let empty = InstallPolicy {
            window: Some(window("02:00-02:00")),
            download_only: false,
            soft: None,
        };
        let error = empty.validate().expect_err("an empty window");
        assert_eq!(error.field, "install.window");
        for text in ["25:00-01:00", "2am-4am", "02:00", "02:00-4"] {
            assert!(text.parse::<InstallWindow>().is_err(), "{text}");
        }
        let json = r#"{"window": {"start": "02:00", "end": "24:00"}}"#;
        let error = serde_json::from_str::<InstallPolicy>(json).expect_err("24:00");
        assert!(error.to_string().contains("HH:MM"), "{error}");
    }

    #[test]
    fn the_wire_form_is_hh_mm_and_the_permit_is_tagged() {
        let policy = InstallPolicy {
            window: Some(window("02:05-04:00")),
            download_only: true,
            soft: None,
        };
        let json = serde_json::to_value(&policy).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"window": {"start": "02:05", "end": "04:00"}, "download_only": true})
        );
        assert_eq!(
            serde_json::to_value(InstallPermit::Now).expect("json"),
            serde_json::json!({"when": "now"})
        );
    }
}
