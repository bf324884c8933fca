//! Device configuration (the device's shadow): what the agent does with the
//! delta a check-in answer carries.
//!
//! The server sends the keys whose desired value differs from what the
//! device reported (`null`: remove the key). The agent merges them into
//! the document it applied last (kept in its data directory as
//! `shadow.json`) and hands the result to the `config` module
//! ([`module`]): the whole document is written, as JSON, to `[shadow]
//! file` atomically (a reader sees the old document or the new, never a
//! mix), then the optional `reload_command` runs, with a timeout. Then the
//! agent reports the document in force through
//! `PUT /api/device/v1/shadow/reported`.
//!
//! A failure (no `file` configured, the file cannot be written, the reload
//! command fails or overruns) puts the previous file back, is reported with
//! its reason alongside the previous document, and is tried again after a
//! backoff that doubles from `retry_min_secs` to `retry_max_secs` (with
//! jitter) — check-ins and nudges in between do not retry it, so a broken
//! module never runs in a loop. A new delta waits for the backoff too.
//!
//! ```toml
//! [shadow]
//! file = "/etc/myapp/config.json"
//! reload_command = ["systemctl", "reload", "myapp"]
//! reload_timeout_secs = 30
//! retry_min_secs = 10
//! retry_max_secs = 600
//! ```

pub mod module;

use airlift_protocol::shadow::{apply, Document, ReportedShadow};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `[shadow]` in `agent.toml`: the `config` module.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Where the applied configuration document is written, as JSON. Unset:
    /// the device takes no configuration, and says so when it is sent some.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Run after the file is written, e.g. `["systemctl", "reload", "app"]`;
    /// its environment has `AIRLIFT_CONFIG_FILE`. A failure (exit status
    /// other than 0, or overrunning its timeout) puts the previous file back.
    #[serde(default)]
    pub reload_command: Option<Vec<String>>,
    /// Seconds the reload command may run [default: 30].
    #[serde(default = "thirty")]
    pub reload_timeout_secs: u64,
    /// Seconds before the first retry of a failed apply [default: 10].
    #[serde(default = "ten")]
    pub retry_min_secs: u64,
    /// Most seconds between retries [default: 600].
    #[serde(default = "six_hundred")]
    pub retry_max_secs: u64,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            file: None,
            reload_command: None,
            reload_timeout_secs: thirty(),
            retry_min_secs: ten(),
            retry_max_secs: six_hundred(),
        }
    }
}

fn thirty() -> u64 {
    30
}

fn ten() -> u64 {
    10
}

fn six_hundred() -> u64 {
    600
}

/// The agent's side of its shadow: the applied document, the backoff after
/// failures, and a report still to be delivered.
#[derive(Debug)]
pub struct Shadow {
    config: ShadowConfig,
    /// `shadow.json` in the data directory: the document applied last.
    record: PathBuf,
    /// Failed applies in a row.
    failures: u32,
    /// No apply before this, after a failure.
    retry_at: Option<Instant>,
    /// A report the server has not taken yet.
    unsent: Option<ReportedShadow>,
}

impl Shadow {
    /// The shadow of an agent whose data directory keeps its record at `record`.
    pub fn new(config: ShadowConfig, record: PathBuf) -> Self {
        Self {
            config,
            record,
            failures: 0,
            retry_at: None,
            unsent: None,
        }
    }

    /// What to report after a check-in whose answer carried `delta`
    /// (`None`: nothing differs): applies it if it is time to, and returns
    /// the report to send, if any. `random` spreads the backoff.
    pub fn on_delta(
        &mut self,
        delta: Option<&Document>,
        now: Instant,
        random: u64,
    ) -> Option<ReportedShadow> {
        let Some(delta) = delta.filter(|d| !d.is_empty()) else {
            return self.unsent.clone();
        };
        if self.retry_at.is_some_and(|at| now < at) {
            tracing::debug!("configuration: waiting to retry");
            return self.unsent.clone();
        }
        let applied = self.applied();
        let mut wanted = applied.clone();
        apply(&mut wanted, delta);
        if wanted == applied {
            // The server's record is behind (e.g. a report was lost).
            return self.sent_later(ReportedShadow {
                document: applied,
                error: None,
            });
        }
        let outcome =
            module::apply(&self.config, &applied, &wanted).and_then(|()| self.remember(&wanted));
        let report = match outcome {
            Ok(()) => {
                tracing::info!(keys = delta.len(), "configuration applied");
                self.failures = 0;
                self.retry_at = None;
                ReportedShadow {
                    document: wanted,
                    error: None,
                }
            }
            Err(reason) => {
                self.failures = self.failures.saturating_add(1);
                let wait = backoff(&self.config, self.failures, random);
                self.retry_at = Some(now + wait);
                tracing::warn!(%reason, retry_in_secs = wait.as_secs(), "configuration not applied");
                ReportedShadow {
                    document: applied,
                    error: Some(reason),
                }
            }
        };
        self.sent_later(report)
    }

    /// The server took the report.
    pub fn delivered(&mut self) {
        self.unsent = None;
    }

    fn sent_later(&mut self, report: ReportedShadow) -> Option<ReportedShadow> {
        self.unsent = Some(report.clone());
        Some(report)
    }

    /// The document applied last; empty before the first (or if the
    /// record is unreadable: the next delta is then whole again).
    pub fn applied(&self) -> Document {
        read_record(&self.record)
    }

    fn remember(&self, document: &Document) -> Result<(), String> {
        let bytes = serde_json::to_vec(document).map_err(|e| e.to_string())?;
        crate::boot::atomic_write(&self.record, &bytes).map_err(|e| {
            format!(
                "recording the applied document {}: {e}",
                self.record.display()
            )
        })
    }
}

fn read_record(path: &Path) -> Document {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), %error, "the applied configuration record is unreadable");
            Document::new()
        }),
        Err(_) => Document::new(),
    }
}

/// The wait after `failures` failed applies in a row: doubling from
/// `retry_min_secs`, at most `retry_max_secs`, the upper half jittered.
pub fn backoff(config: &ShadowConfig, failures: u32, random: u64) -> Duration {
    let min = config.retry_min_secs.max(1);
    let max = config.retry_max_secs.max(min);
    let doubled = min.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    let wait_ms = doubled.min(max).saturating_mul(1000);
    let half = wait_ms / 2;
    Duration::from_millis(half + random % (half + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(value: serde_json::Value) -> Document {
        value.as_object().cloned().unwrap_or_default()
    }

    fn config(dir: &Path, reload: Option<Vec<&str>>) -> ShadowConfig {
        ShadowConfig {
            file: Some(dir.join("app.json")),
            reload_command: reload.map(|r| r.iter().map(|s| s.to_string()).collect()),
            reload_timeout_secs: 5,
            retry_min_secs: 10,
            retry_max_secs: 60,
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_and_keeps_at_least_half() {
        let config = ShadowConfig {
            retry_min_secs: 10,
            retry_max_secs: 60,
            ..ShadowConfig::default()
        };
        assert_eq!(backoff(&config, 1, 0), Duration::from_secs(5));
        assert_eq!(backoff(&config, 2, 0), Duration::from_secs(10));
        assert_eq!(backoff(&config, 3, 0), Duration::from_secs(20));
        assert_eq!(backoff(&config, 9, 0), Duration::from_secs(30));
        assert_eq!(
            backoff(&config, 99, u64::MAX),
            backoff(&config, 99, u64::MAX)
        );
        assert!(backoff(&config, 99, 12_345) <= Duration::from_secs(60));
    }

    #[test]
    fn a_delta_is_merged_written_and_reported_and_nothing_happens_without_one() {
        let dir = tempfile::tempdir().expect("dir");
        let mut shadow = Shadow::new(config(dir.path(), None), dir.path().join("shadow.json"));
        let now = Instant::now();
        assert_eq!(shadow.on_delta(None, now, 0), None);
        let report = shadow
            .on_delta(Some(&doc(json!({"level": "debug", "port": 80}))), now, 0)
            .expect("report");
        assert_eq!(report.error, None);
        let written: Document =
            serde_json::from_slice(&std::fs::read(dir.path().join("app.json")).expect("file"))
                .expect("json");
        assert_eq!(written, doc(json!({"level": "debug", "port": 80})));
        shadow.delivered();
        let report = shadow
            .on_delta(Some(&doc(json!({"port": null}))), now, 0)
            .expect("report");
        assert_eq!(report.document, doc(json!({"level": "debug"})));
        assert_eq!(shadow.applied(), doc(json!({"level": "debug"})));
    }

    #[test]
    fn a_failing_reload_restores_the_file_reports_why_and_waits_before_retrying() {
        let dir = tempfile::tempdir().expect("dir");
        let mut shadow = Shadow::new(
            config(
                dir.path(),
                Some(vec!["sh", "-c", "echo bad value >&2; exit 3"]),
            ),
            dir.path().join("shadow.json"),
        );
        let now = Instant::now();
        let delta = doc(json!({"level": "debug"}));
        let report = shadow.on_delta(Some(&delta), now, 0).expect("report");
        let reason = report.error.expect("failure");
        assert!(
            reason.contains("exit") && reason.contains("bad value"),
            "{reason}"
        );
        assert!(report.document.is_empty());
        let file = std::fs::read(dir.path().join("app.json")).expect("file");
        assert_eq!(file, b"{}");
        shadow.delivered();
        // Within the backoff: not tried again.
        assert_eq!(
            shadow.on_delta(Some(&delta), now + Duration::from_secs(4), 0),
            None
        );
        let again = shadow
            .on_delta(Some(&delta), now + Duration::from_secs(6), 0)
            .expect("retried");
        assert!(again.error.is_some());
        assert_eq!(shadow.failures, 2);
    }

    #[test]
    fn without_a_file_the_device_says_it_takes_no_configuration() {
        let dir = tempfile::tempdir().expect("dir");
        let mut shadow = Shadow::new(ShadowConfig::default(), dir.path().join("shadow.json"));
        let report = shadow
            .on_delta(Some(&doc(json!({"a": 1}))), Instant::now(), 0)
            .expect("report");
        assert!(report.error.is_some_and(|e| e.contains("[shadow] file")));
    }
}
