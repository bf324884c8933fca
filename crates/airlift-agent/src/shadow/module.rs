//! The `config` module: writes the whole configuration document to
//! `[shadow] file` atomically and runs the optional reload command with a
//! timeout; if the reload fails, the previous document is written back so
//! the file always holds what the device reports as applied.

use super::ShadowConfig;
use crate::process::{self, Run, RunError};
use airlift_protocol::shadow::Document;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Bytes of the reload command's output kept for the reason of a failure.
const OUTPUT_TAIL: usize = 2048;

/// Applies `wanted` (the device had `applied`); the reason it could not.
pub fn apply(config: &ShadowConfig, applied: &Document, wanted: &Document) -> Result<(), String> {
    let Some(file) = &config.file else {
        return Err(
            "this device takes no configuration: its agent.toml has no [shadow] file".into(),
        );
    };
    write(file, wanted)?;
    let Some((program, args)) = config.reload_command.as_ref().and_then(|c| c.split_first()) else {
        return Ok(());
    };
    let mut command = Command::new(PathBuf::from(program));
    command.args(args).env("AIRLIFT_CONFIG_FILE", file);
    let ran = process::run(
        Run::new(command)
            .timeout(Duration::from_secs(config.reload_timeout_secs.max(1)))
            .merge_stderr()
            .capture(OUTPUT_TAIL),
    );
    let failed = match ran {
        Ok(finished) if finished.status.success() => return Ok(()),
        Ok(finished) => format!(
            "the reload command {program} {}: {}",
            finished.status,
            finished.stdout.text().trim()
        ),
        Err(RunError::TimedOut { stdout, .. }) => format!(
            "the reload command {program} timed out after {} s: {}",
            config.reload_timeout_secs,
            stdout.text().trim()
        ),
        Err(error) => format!("the reload command: {error}"),
    };
    // The file goes back to what the device reports as applied.
    write(file, applied).map_err(|restore| format!("{failed}; then {restore}"))?;
    Err(failed)
}

fn write(file: &std::path::Path, document: &Document) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(document).map_err(|e| e.to_string())?;
    crate::boot::atomic_write(file, &bytes)
        .map_err(|e| format!("writing the configuration file {}: {e}", file.display()))
}
