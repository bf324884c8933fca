//! `--phase`, `--failure-threshold` and friends: a phased rollout strategy
//! from the command line, checked before anything is sent.

use airlift_protocol::strategy::{
    Advance, BreakerAction, FailureThreshold, Phase, PhaseDevices, Phased, Strategy,
};
use airlift_protocol::DeviceId;
use std::time::Duration;

/// Parses one `--phase`: `tag=NAME`, `devices=ID+ID…` or `percent=N`, then
/// optional `,soak=DURATION`, `,success=PERCENT`, `,deadline=DURATION`,
/// `,name=TEXT`.
pub fn parse_phase(text: &str) -> Result<Phase, String> {
    let mut parts = text.split(',');
    let first = parts.next().unwrap_or_default();
    let (kind, value) = first
        .split_once('=')
        .ok_or_else(|| format!("{first:?}: start with tag=NAME, devices=ID+ID or percent=N"))?;
    let devices = match kind.trim() {
        "tag" => PhaseDevices::Tag(value.trim().to_owned()),
        "devices" => PhaseDevices::Devices(
            value
                .split('+')
                .map(|id| {
                    id.trim()
                        .parse::<DeviceId>()
                        .map_err(|_| format!("{id:?} is not a device id"))
                })
                .collect::<Result<_, _>>()?,
        ),
        "percent" => PhaseDevices::Percent(
            value
                .trim()
                .trim_end_matches('%')
                .parse()
                .map_err(|_| format!("percent={value}: give a whole number 1–100"))?,
        ),
        other => {
            return Err(format!(
                "{other:?}: a phase starts with tag=NAME, devices=ID+ID or percent=N"
            ))
        }
    };
    let mut phase = Phase {
        name: None,
        devices,
        soak_secs: 0,
        success_percent: 100,
        deadline_secs: None,
    };
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
        match key.trim() {
            "soak" => phase.soak_secs = duration(value)?.as_secs(),
            "deadline" => phase.deadline_secs = Some(duration(value)?.as_secs()),
            "success" => {
                phase.success_percent = value
                    .trim()
                    .trim_end_matches('%')
                    .parse()
                    .map_err(|_| format!("success={value}: give a whole number 0–100"))?
            }
            "name" => phase.name = Some(value.trim().to_owned()),
            other => {
                return Err(format!(
                    "{other:?}: phase options are soak=, success=, deadline= and name="
                ))
            }
        }
    }
    Ok(phase)
}

/// `20%` is a share of the admitted devices, `3` a count.
pub fn parse_threshold(text: &str) -> Result<FailureThreshold, String> {
    let text = text.trim();
    if let Some(percent) = text.strip_suffix('%') {
        return percent
            .trim()
            .parse()
            .map(FailureThreshold::Percent)
            .map_err(|_| format!("{text:?}: give a share like 10% or a count like 3"));
    }
    text.parse()
        .map(FailureThreshold::Count)
        .map_err(|_| format!("{text:?}: give a share like 10% or a count like 3"))
}

/// `90s`, `30m`, `6h`, `2d`, `1h 30m`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?}: {e} (e.g. 30m, 6h, 2d)"))
}

/// The strategy the flags describe: `all` without phases, else phased and
/// checked.
pub fn strategy(
    phases: &[Phase],
    threshold: Option<FailureThreshold>,
    on_failure: BreakerAction,
    manual: bool,
    device_timeout: Option<Duration>,
) -> Result<Strategy, String> {
    if phases.is_empty() {
        if threshold.is_some() || manual || device_timeout.is_some() {
            return Err(
                "--failure-threshold, --manual and --device-timeout need --phase".to_owned(),
            );
        }
        if on_failure != BreakerAction::Pause {
            return Err(
                "--on-failure needs --phase: an all-at-once deployment has no circuit breaker"
                    .to_owned(),
            );
        }
        return Ok(Strategy::All);
    }
    let phased = Phased {
        phases: phases.to_vec(),
        failure_threshold: threshold
            .ok_or("a phased rollout needs --failure-threshold (e.g. 10% or 3)")?,
        on_failure,
        advance: if manual {
            Advance::Manual
        } else {
            Advance::Automatic
        },
        device_timeout_secs: device_timeout.map_or(6 * 3600, |d| d.as_secs()),
        rollback_package: None,
    };
    phased.validate().map_err(|e| e.to_string())?;
    Ok(Strategy::Phased(phased))
}

/// Names the package a tripped breaker rolls back to (`--rollback-package`),
/// which only a phased rollout with `--on-failure rollback` has.
pub fn set_rollback_package(
    strategy: &mut Strategy,
    package: Option<airlift_protocol::PackageId>,
) -> Result<(), String> {
    let Some(package) = package else {
        return Ok(());
    };
    match strategy {
        Strategy::Phased(phased) if phased.on_failure == BreakerAction::Rollback => {
            phased.rollback_package = Some(package);
            Ok(())
        }
        _ => Err("--rollback-package needs --phase … and --on-failure rollback".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_package_needs_a_rollback_breaker() {
        let phases = [parse_phase("percent=100").expect("phase")];
        let threshold = Some(FailureThreshold::Count(1));
        let package = airlift_protocol::PackageId::new();
        let mut rollback = strategy(&phases, threshold, BreakerAction::Rollback, false, None)
            .expect("a rollback strategy");
        assert_eq!(set_rollback_package(&mut rollback, Some(package)), Ok(()));
        let Strategy::Phased(phased) = &rollback else {
            panic!("not phased");
        };
        assert_eq!(phased.rollback_package, Some(package));
        let mut pause = strategy(&phases, threshold, BreakerAction::Pause, false, None)
            .expect("a pausing strategy");
        assert!(set_rollback_package(&mut pause, Some(package)).is_err());
        let error = strategy(&[], None, BreakerAction::Rollback, false, None)
            .expect_err("no breaker without phases");
        assert!(error.contains("--on-failure needs --phase"), "{error}");
    }

    #[test]
    fn phases_parse_with_their_options() {
        let phase = parse_phase("tag=canary,soak=1h,success=95%,deadline=1d").expect("parses");
        assert_eq!(phase.devices, PhaseDevices::Tag("canary".into()));
        assert_eq!(
            (phase.soak_secs, phase.success_percent, phase.deadline_secs),
            (3600, 95, Some(86_400))
        );
        assert_eq!(
            parse_phase("percent=10%").map(|p| p.devices),
            Ok(PhaseDevices::Percent(10))
        );
        for bad in [
            "canary",
            "percent=ten",
            "tag=x,soak=forever",
            "tag=x,speed=2",
        ] {
            assert!(parse_phase(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn thresholds_are_shares_or_counts() {
        assert_eq!(parse_threshold("20%"), Ok(FailureThreshold::Percent(20)));
        assert_eq!(parse_threshold("3"), Ok(FailureThreshold::Count(3)));
        assert!(parse_threshold("many").is_err());
    }

    #[test]
    fn the_strategy_is_checked_before_it_is_sent() {
        let phases = [parse_phase("percent=50").expect("parses")];
        let error = strategy(
            &phases,
            Some(FailureThreshold::Count(1)),
            BreakerAction::Pause,
            false,
            None,
        )
        .expect_err("the last phase is not 100 %");
        assert!(error.contains("percent\": 100"), "{error}");
        assert_eq!(
            strategy(&[], None, BreakerAction::Pause, false, None),
            Ok(Strategy::All)
        );
        assert!(strategy(&[], None, BreakerAction::Pause, true, None).is_err());
    }
}
