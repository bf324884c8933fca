//! `airlift deployment create --soft …`: a soft deployment, whose devices
//! may put the install off (their `defer_command` answers "not now") up to
//! `--max-deferrals` times and/or until `--deadline`, after which it is
//! forced; and how `deployment show` describes one.

use airlift_protocol::install::InstallPolicy;
use airlift_protocol::soft::{DeferralSummary, SoftInstall, MAX_DEFERRALS};
use chrono::{DateTime, Utc};
use clap::Args;

/// The flags of a soft deployment.
#[derive(Debug, Clone, Default, Args)]
pub struct SoftArgs {
    /// Let each device defer the install (its agent's defer_command answers
    /// "not now") within --max-deferrals and/or --deadline; then it is
    /// forced. Without it, devices install as soon as permitted.
    #[arg(long)]
    pub soft: bool,
    /// With --soft: how many times each device may defer (1 to 100).
    #[arg(long, value_name = "N", requires = "soft",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DEFERRALS)))]
    pub max_deferrals: Option<u32>,
    /// With --soft: when deferring ends and every device installs — a time
    /// in RFC 3339 (2026-12-31T00:00:00Z) or a duration from now (7d, 36h).
    #[arg(long, value_name = "TIME_OR_DURATION", requires = "soft", value_parser = parse_deadline)]
    pub deadline: Option<Deadline>,
}

/// A deadline as given: an instant, or a duration counted from when the
/// deployment is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    At(DateTime<Utc>),
    In(std::time::Duration),
}

impl Deadline {
    /// The instant, with a duration counted from `now`.
    fn at(self, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        match self {
            Deadline::At(at) => Ok(at),
            Deadline::In(wait) => chrono::Duration::from_std(wait)
                .ok()
                .and_then(|wait| now.checked_add_signed(wait))
                .ok_or_else(|| format!("--deadline: {wait:?} from now is too far")),
        }
    }
}

/// `2026-12-31T00:00:00Z` (or with an offset), or a duration (`7d`).
fn parse_deadline(text: &str) -> Result<Deadline, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(Deadline::At(at.with_timezone(&Utc)));
    }
    humantime::parse_duration(text.trim())
        .map(Deadline::In)
        .map_err(|_| {
            format!("{text:?} is neither a time nor a duration: write 2026-12-31T00:00:00Z or 7d")
        })
}

impl SoftArgs {
    /// The soft policy the flags describe, if any, its deadline counted
    /// from `now`.
    pub fn policy(&self, now: DateTime<Utc>) -> Result<Option<SoftInstall>, String> {
        if !self.soft {
            return Ok(None);
        }
        if self.max_deferrals.is_none() && self.deadline.is_none() {
            return Err(
                "--soft needs --max-deferrals N, --deadline TIME, or both, so that every device installs in the end"
                    .into(),
            );
        }
        Ok(Some(SoftInstall {
            max_deferrals: self.max_deferrals,
            deadline: self.deadline.map(|d| d.at(now)).transpose()?,
        }))
    }
}

/// "forced" or what the soft policy allows, for `deployment show`.
pub fn mode(install: &InstallPolicy) -> String {
    match &install.soft {
        Some(soft) => soft.to_string(),
        None => "forced: devices install as soon as permitted".into(),
    }
}

/// "5 by 3 devices (at most 2 by one device)".
pub fn deferrals(summary: &DeferralSummary) -> String {
    if summary.deferrals == 0 {
        return "none yet".into();
    }
    let devices = if summary.devices == 1 {
        "1 device".to_owned()
    } else {
        format!("{} devices", summary.devices)
    };
    format!(
        "{} by {devices} (at most {} by one device)",
        summary.deferrals, summary.most
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
            .single()
            .expect("a time")
    }

    #[test]
    fn a_deadline_is_a_time_or_a_duration_from_now() {
        let at = parse_deadline("2026-12-31T00:00:00Z").expect("a time");
        assert_eq!(
            at.at(now()),
            Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0)
                .single()
                .ok_or_else(String::new)
        );
        let week = parse_deadline("7d").expect("a duration");
        assert_eq!(week.at(now()), Ok(now() + chrono::Duration::days(7)));
        let error = parse_deadline("next week").expect_err("neither");
        assert!(error.contains("7d"), "{error}");
    }

    #[test]
    fn soft_needs_a_bound_and_forced_needs_nothing() {
        assert_eq!(SoftArgs::default().policy(now()), Ok(None));
        let unbounded = SoftArgs {
            soft: true,
            ..SoftArgs::default()
        };
        assert!(unbounded.policy(now()).is_err());
        let bounded = SoftArgs {
            soft: true,
            max_deferrals: Some(3),
            deadline: None,
        };
        assert_eq!(
            bounded.policy(now()),
            Ok(Some(SoftInstall {
                max_deferrals: Some(3),
                deadline: None
            }))
        );
    }

    #[test]
    fn the_mode_and_deferrals_read_as_sentences() {
        assert!(mode(&InstallPolicy::default()).starts_with("forced"));
        let summary = DeferralSummary {
            deferrals: 5,
            devices: 3,
            most: 2,
        };
        assert_eq!(
            deferrals(&summary),
            "5 by 3 devices (at most 2 by one device)"
        );
        assert_eq!(deferrals(&DeferralSummary::default()), "none yet");
    }
}
