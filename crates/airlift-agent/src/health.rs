//! Health checks after a trial boot: configured commands, each with a
//! timeout, and — for an update from the server — the built-in check that
//! the new version reaches the server. Any failure or timeout means the new
//! version is not healthy.

use crate::process::{self, Run, RunError};
use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// One check: a command that exits 0 when the system is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// A name for reports.
    pub name: String,
    /// Program and arguments (no shell).
    pub command: Vec<String>,
    /// Seconds before the check counts as failed [default: 60].
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    60
}

/// Longest output kept from a failing check.
const OUTPUT_TAIL: usize = 4096;

/// Why the system is not healthy: which check, and what it said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health check '{name}' failed: {reason}\n{output}")]
pub struct Unhealthy {
    pub name: String,
    /// Exit status, timeout, or why it could not run.
    pub reason: String,
    /// The tail of its stdout and stderr.
    pub output: String,
}

/// Runs every check in order; the first failure is the verdict.
pub fn run_all(checks: &[HealthCheck]) -> Result<(), Unhealthy> {
    checks.iter().try_for_each(run)
}

/// Runs one check: no standard input, its standard output and error kept
/// together (their last [`OUTPUT_TAIL`] bytes), its process group killed
/// when it overruns its timeout. Anything but exit status 0 is unhealthy.
pub fn run(check: &HealthCheck) -> Result<(), Unhealthy> {
    let unhealthy = |reason: String, output: String| Unhealthy {
        name: check.name.clone(),
        reason,
        output,
    };
    let Some((program, args)) = check.command.split_first() else {
        return Err(unhealthy("the check has no command".into(), String::new()));
    };
    let mut command = Command::new(PathBuf::from(program));
    command.args(args);
    let timeout = Duration::from_secs(check.timeout_secs);
    let ran = process::run(
        Run::new(command)
            .timeout(timeout)
            .merge_stderr()
            .capture(OUTPUT_TAIL),
    );
    match ran {
        Ok(finished) if finished.status.success() => Ok(()),
        Ok(finished) => Err(unhealthy(
            format!("exited with {}", finished.status),
            finished.stdout.text(),
        )),
        Err(RunError::TimedOut { stdout, .. }) => Err(unhealthy(
            format!("timed out after {} s", check.timeout_secs),
            stdout.text(),
        )),
        Err(RunError::Spawn { source, .. }) => Err(unhealthy(
            format!("cannot start {program}: {source}"),
            String::new(),
        )),
        Err(error) => Err(unhealthy(error.to_string(), String::new())),
    }
}

/// The name reports give the built-in server check.
pub const SERVER_CHECK: &str = "server";

/// The built-in check: `attempt` (one authenticated exchange with the
/// server, saying why it failed) succeeds within `timeout`. Tries are
/// spaced by exponential backoff with jitter, from ½ s up to 10 s, and the
/// last one is made when the time is up, so a network that comes up late in
/// the boot still counts.
pub fn reach_server(
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<(), String>,
) -> Result<(), Unhealthy> {
    let deadline = Instant::now() + timeout;
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
        .with_jitter()
        .build();
    let mut tries = 0u32;
    loop {
        tries += 1;
        let error = match attempt() {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Unhealthy {
                name: SERVER_CHECK.into(),
                reason: format!(
                    "the new version could not reach the server within {} s ({tries} tries)",
                    timeout.as_secs()
                ),
                output: format!("last error: {error}"),
            });
        }
        tracing::info!(%error, left_secs = left.as_secs(), "the server is not reached yet");
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        std::thread::sleep(delay.min(left));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(script: &str, timeout_secs: u64) -> HealthCheck {
        HealthCheck {
            name: "test".into(),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout_secs,
        }
    }

    #[test]
    fn passing_checks_pass() {
        assert_eq!(run_all(&[check("exit 0", 5), check("true", 5)]), Ok(()));
    }

    #[test]
    fn a_failing_check_reports_its_output() {
        let error = run_all(&[
            check("true", 5),
            check("echo 'database down' >&2; exit 3", 5),
        ])
        .expect_err("unhealthy");
        assert!(error.reason.contains("exit status: 3"), "{error}");
        assert!(error.output.contains("database down"), "{error}");
    }

    #[test]
    fn a_hanging_check_times_out() {
        let started = std::time::Instant::now();
        let error = run(&check("echo started; sleep 30", 1)).expect_err("timed out");
        assert!(error.reason.contains("timed out"), "{error}");
        assert!(error.output.contains("started"));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn the_server_check_passes_once_an_attempt_gets_through() {
        let mut attempts = 0;
        let verdict = reach_server(Duration::from_secs(60), || {
            attempts += 1;
            if attempts < 3 {
                Err("connection refused".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(verdict, Ok(()));
        assert_eq!(attempts, 3);
    }

    #[test]
    fn the_server_check_fails_with_the_last_error_when_time_is_up() {
        let mut attempts = 0;
        let error = reach_server(Duration::from_millis(1200), || {
            attempts += 1;
            Err(format!("attempt {attempts}: connection refused"))
        })
        .expect_err("never reached");
        assert_eq!(error.name, SERVER_CHECK);
        assert!(
            error.reason.contains("could not reach the server"),
            "{error}"
        );
        assert!(attempts >= 2, "tried again before giving up: {attempts}");
        assert!(
            error.output.contains(&format!("attempt {attempts}:")),
            "{error}"
        );
    }

    #[test]
    fn a_hanging_check_is_killed_with_what_it_started() {
        let error = run(&check("sleep 30 & echo $!; wait", 1)).expect_err("timed out");
        let pid = error.output.trim();
        let gone = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            stat.is_empty() || state.is_some_and(|s| s.starts_with(['Z', 'X']))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone() {
            assert!(
                Instant::now() < deadline,
                "the background sleep {pid} survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_missing_program_is_unhealthy() {
        let error = run(&HealthCheck {
            name: "x".into(),
            command: vec!["/nonexistent/check".into()],
            timeout_secs: 5,
        })
        .expect_err("cannot run");
        assert!(error.reason.contains("cannot start"), "{error}");
    }
}
