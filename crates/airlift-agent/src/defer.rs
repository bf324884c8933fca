//! The deferral hook: before a *soft* update installs, the agent asks the
//! device's owner through `defer_command` whether now is a good time.
//!
//! The command runs with the offer in its environment
//! ([`HookContext::environment`]), a timeout and bounded output. Its answer:
//!
//! | the command                                   | the agent          |
//! |-----------------------------------------------|--------------------|
//! | exits 0                                       | installs now       |
//! | exits 75 (`EX_TEMPFAIL`, [`DEFER_EXIT_CODE`]) | defers: "not now"  |
//! | exits otherwise, is killed, times out, or cannot start | installs now |
//!
//! Only an explicit "not now" defers. A hook that cannot answer — no one
//! at the screen, a crashed helper, a typo in the path — must not hold back
//! a fleet's updates: soft is a courtesy to people, and a deadline-only soft
//! deployment would otherwise wait for weeks on a broken script.
//!
//! When the hook runs is decided by [`ask_hook`], without I/O: only for an
//! offer that lets the device defer (soft, not exhausted, the install
//! permitted now — never while a window or download-only holds it), and
//! never sooner than one poll interval after the last "not now".
//!
//! ```
//! use airlift_agent::defer::{ask_hook, HookDecision};
//! use airlift_protocol::soft::DeferralAllowance;
//! use std::time::Duration;
//!
//! let allowance = DeferralAllowance { deferred: 0, remaining: Some(2), until: None };
//! let poll = Duration::from_secs(60);
//! assert_eq!(ask_hook(Some(&allowance), true, None, poll), HookDecision::Ask);
//! // Asked 10 s ago and told "not now": wait for the poll interval.
//! let last = Some(Duration::from_secs(10));
//! assert_eq!(ask_hook(Some(&allowance), true, last, poll), HookDecision::Wait);
//! // A forced offer never asks.
//! assert_eq!(ask_hook(None, true, None, poll), HookDecision::Install);
//! ```

use crate::process::{self, Run, RunError};
pub use airlift_protocol::soft::DEFER_EXIT_CODE;
use airlift_protocol::soft::{DeferralAllowance, MAX_DEFERRAL_MESSAGE};
use airlift_protocol::DeploymentId;
use std::process::Command;
use std::time::Duration;

/// Bytes of the hook's output kept: its first line is the reason reported.
const OUTPUT_KEPT: usize = 4096;

/// Longest `defer_timeout_secs`: the agent does nothing else while it waits.
pub const MAX_DEFER_TIMEOUT_SECS: u64 = 3600;

/// Whether to run the hook before installing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookDecision {
    /// Install without asking: the offer is forced, or no hook is configured.
    Install,
    /// Run the hook.
    Ask,
    /// Keep waiting: the hook said "not now" less than a poll interval ago.
    Wait,
}

/// Decides whether to ask: `allowance` is what the latest offer for the
/// update allows (`None`: forced), `configured` whether a `defer_command`
/// is set, `since_not_now` how long ago the hook last said "not now" for
/// this deployment.
pub fn ask_hook(
    allowance: Option<&DeferralAllowance>,
    configured: bool,
    since_not_now: Option<Duration>,
    poll_interval: Duration,
) -> HookDecision {
    if allowance.is_none() || !configured {
        return HookDecision::Install;
    }
    match since_not_now {
        Some(since) if since < poll_interval => HookDecision::Wait,
        _ => HookDecision::Ask,
    }
}

/// What the hook is told about the update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookContext {
    pub deployment_id: DeploymentId,
    pub name: String,
    pub version: String,
    pub allowance: DeferralAllowance,
}

impl HookContext {
    /// The hook's environment: `AIRLIFT_DEPLOYMENT_ID`,
    /// `AIRLIFT_UPDATE_NAME`, `AIRLIFT_UPDATE_VERSION`,
    /// `AIRLIFT_DEFERRALS_USED`, and when bounded `AIRLIFT_DEFERRALS_LEFT`
    /// and `AIRLIFT_DEFER_UNTIL` (RFC 3339).
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("AIRLIFT_DEPLOYMENT_ID", self.deployment_id.to_string()),
            ("AIRLIFT_UPDATE_NAME", self.name.clone()),
            ("AIRLIFT_UPDATE_VERSION", self.version.clone()),
            (
                "AIRLIFT_DEFERRALS_USED",
                self.allowance.deferred.to_string(),
            ),
        ];
        if let Some(left) = self.allowance.remaining {
            env.push(("AIRLIFT_DEFERRALS_LEFT", left.to_string()));
        }
        if let Some(until) = self.allowance.until {
            env.push(("AIRLIFT_DEFER_UNTIL", until.to_rfc3339()));
        }
        env
    }
}

/// The hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAnswer {
    /// Install now; why (for the log): it said yes, or could not answer.
    Install(String),
    /// "Not now", with the first line it printed (at most 256 bytes).
    NotNow(Option<String>),
}

/// Runs `command` (program and arguments, no shell) for `context`, killing
/// it after `timeout`.
pub fn run_hook(command: &[String], timeout: Duration, context: &HookContext) -> HookAnswer {
    let Some((program, args)) = command.split_first() else {
        return HookAnswer::Install("no defer_command".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (key, value) in context.environment() {
        cmd.env(key, value);
    }
    let ran = process::run(
        Run::new(cmd)
            .timeout(timeout)
            .capture(OUTPUT_KEPT)
            .log_lines(format!("defer_command {program}")),
    );
    match ran {
        Ok(finished) if finished.status.code() == Some(DEFER_EXIT_CODE) => {
            HookAnswer::NotNow(first_line(&finished.stdout.text()))
        }
        Ok(finished) if finished.status.success() => HookAnswer::Install("it said yes".into()),
        Ok(finished) => HookAnswer::Install(format!(
            "it exited with {} (only {DEFER_EXIT_CODE} defers)",
            finished.status
        )),
        Err(RunError::TimedOut { timeout, .. }) => {
            HookAnswer::Install(format!("it gave no answer within {} s", timeout.as_secs()))
        }
        Err(error) => HookAnswer::Install(error.to_string()),
    }
}

/// The first non-empty line, trimmed, cut to [`MAX_DEFERRAL_MESSAGE`]
/// bytes on a character boundary.
fn first_line(output: &str) -> Option<String> {
    let line = output.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut end = line.len().min(MAX_DEFERRAL_MESSAGE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    Some(line[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn context() -> HookContext {
        HookContext {
            deployment_id: "00000000-0000-4000-8000-000000005eed"
                .parse()
                .expect("an id"),
            name: "rootfs".into(),
            version: "2.0.0".into(),
            allowance: DeferralAllowance {
                deferred: 1,
                remaining: Some(2),
                until: None,
            },
        }
    }

    fn script(dir: &tempfile::TempDir, body: &str) -> Vec<String> {
        let path = dir.path().join("hook");
        let mut file = std::fs::File::create(&path).expect("create");
        writeln!(file, "#!/bin/sh\n{body}").expect("write");
        drop(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        vec![path.display().to_string()]
    }

    #[test]
    fn only_exit_75_defers_and_its_first_line_is_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let timeout = Duration::from_secs(10);
        let hook = script(&dir, "echo\necho '  in a video call  '\necho more\nexit 75");
        assert_eq!(
            run_hook(&hook, timeout, &context()),
            HookAnswer::NotNow(Some("in a video call".into()))
        );
        let yes = script(&dir, "exit 0");
        assert!(matches!(
            run_hook(&yes, timeout, &context()),
            HookAnswer::Install(_)
        ));
        let broken = script(&dir, "exit 3");
        assert!(matches!(
            run_hook(&broken, timeout, &context()),
            HookAnswer::Install(why) if why.contains("exit")
        ));
        let missing = vec![dir.path().join("nothing").display().to_string()];
        assert!(matches!(
            run_hook(&missing, timeout, &context()),
            HookAnswer::Install(_)
        ));
    }

    #[test]
    fn a_hook_that_hangs_is_killed_and_the_update_installs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hook = script(&dir, "sleep 30\nexit 75");
        let started = std::time::Instant::now();
        let answer = run_hook(&hook, Duration::from_secs(1), &context());
        assert!(matches!(answer, HookAnswer::Install(why) if why.contains("no answer")));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn the_hook_is_told_the_offer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hook = script(
            &dir,
            "echo \"$AIRLIFT_UPDATE_NAME $AIRLIFT_UPDATE_VERSION $AIRLIFT_DEFERRALS_USED $AIRLIFT_DEFERRALS_LEFT ${AIRLIFT_DEFER_UNTIL-none} $AIRLIFT_DEPLOYMENT_ID\"\nexit 75",
        );
        assert_eq!(
            run_hook(&hook, Duration::from_secs(10), &context()),
            HookAnswer::NotNow(Some(
                "rootfs 2.0.0 1 2 none 00000000-0000-4000-8000-000000005eed".into()
            ))
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let line = format!("{}z", "é".repeat(MAX_DEFERRAL_MESSAGE));
        let cut = first_line(&line).expect("a line");
        assert!(cut.len() <= MAX_DEFERRAL_MESSAGE);
        assert!(cut.starts_with('é'));
        assert_eq!(first_line(" \n\n"), None);
    }

    #[test]
    fn forced_offers_and_unconfigured_devices_never_ask() {
        let allowance = context().allowance;
        let poll = Duration::from_secs(60);
        assert_eq!(ask_hook(None, true, None, poll), HookDecision::Install);
        assert_eq!(
            ask_hook(Some(&allowance), false, None, poll),
            HookDecision::Install
        );
        assert_eq!(
            ask_hook(Some(&allowance), true, Some(poll), poll),
            HookDecision::Ask,
            "a poll interval after the last 'not now', ask again"
        );
    }
}
