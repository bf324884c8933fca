//! Running a bootloader tool: arguments passed one by one (never through a
//! shell), output captured, failures reported with the command line and
//! what the tool said.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::Command;

use super::BootError;
use crate::process::{self, display, Run, RunError};

/// A finished, successful run.
#[derive(Debug)]
pub(crate) struct Ran {
    /// The command line, for messages.
    pub command: String,
    /// Standard output, which must be UTF-8.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// Most a tool may print on standard output: the whole of an environment
/// listing is needed, so more is an error rather than a tail.
const MAX_STDOUT: usize = 1024 * 1024;

/// Runs `program args...` with no standard input and `LC_ALL=C` (so what it
/// prints does not depend on the locale), through [`crate::process`] (its
/// own process group; no timeout). A non-zero exit is an error that
/// carries the command line and standard error. `package` is the Debian
/// package providing `program`, for the message when it is missing.
pub(crate) fn run(
    program: &Path,
    package: &'static str,
    args: &[OsString],
) -> Result<Ran, BootError> {
    let command = display(program, args);
    tracing::debug!(%command, "running bootloader tool");
    let mut tool = Command::new(program);
    tool.args(args).env("LC_ALL", "C");
    let output = match process::run(Run::new(tool).capture(MAX_STDOUT)) {
        Ok(output) => output,
        Err(RunError::Spawn { source, .. }) => {
            return Err(BootError::Spawn {
                program: program.to_owned(),
                package,
                source,
            })
        }
        // No input and no timeout: only waiting can fail.
        Err(other) => {
            return Err(BootError::Io {
                action: "running",
                path: program.to_owned(),
                source: io::Error::other(other.to_string()),
            })
        }
    };
    let stderr = output.stderr.text().trim().to_owned();
    if !output.status.success() {
        return Err(BootError::Tool {
            command,
            status: output.status,
            stderr: if stderr.is_empty() {
                "(it printed nothing on standard error)".to_owned()
            } else {
                stderr
            },
        });
    }
    if output.stdout.truncated {
        return Err(BootError::InvalidEnv {
            location: format!("listed by `{command}`"),
            reason: format!("the output is longer than {MAX_STDOUT} bytes"),
        });
    }
    let stdout = String::from_utf8(output.stdout.bytes).map_err(|_| BootError::InvalidEnv {
        location: format!("listed by `{command}`"),
        reason: "the output is not UTF-8".to_owned(),
    })?;
    Ok(Ran {
        command,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_says_which_package_brings_it() {
        let err = run(Path::new("/nonexistent/fw_setenv"), "libubootenv-tool", &[]).err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("/nonexistent/fw_setenv") && message.contains("libubootenv-tool"),
            "{message}"
        );
    }

    #[test]
    fn a_failing_program_reports_its_command_and_stderr() {
        let args = ["-c".into(), "echo 'no such env' >&2; exit 3".into()];
        let err = run(Path::new("sh"), "dash", &args).err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("sh -c") && message.contains("no such env") && message.contains('3'),
            "{message}"
        );
    }
}
