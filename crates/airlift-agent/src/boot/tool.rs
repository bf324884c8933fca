//! Running a bootloader tool: arguments passed one by one (never through a
//! shell), output captured, failures reported with the command line and
//! what the tool said.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Stdio};

use super::BootError;

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

/// Runs `program args...` with no standard input and `LC_ALL=C` (so what it
/// prints does not depend on the locale). A non-zero exit is an error that
/// carries the command line and standard error. `package` is the Debian
/// package providing `program`, for the message when it is missing.
pub(crate) fn run(
    program: &Path,
    package: &'static str,
    args: &[OsString],
) -> Result<Ran, BootError> {
    let command = display(program, args);
    tracing::debug!(%command, "running bootloader tool");
    let output = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BootError::Spawn {
            program: program.to_owned(),
            package,
            source,
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
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
    let stdout = String::from_utf8(output.stdout).map_err(|_| BootError::InvalidEnv {
        location: format!("listed by `{command}`"),
        reason: "the output is not UTF-8".to_owned(),
    })?;
    Ok(Ran {
        command,
        stdout,
        stderr,
    })
}

/// `program arg...` as a person would type it, quoting what needs quoting.
pub(crate) fn display(program: &Path, args: &[OsString]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_a_command_a_person_can_paste() {
        let args: Vec<OsString> = ["/boot/grub/grubenv", "set", "a=1", "it's here", ""]
            .into_iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            display(Path::new("grub-editenv"), &args),
            r#"grub-editenv /boot/grub/grubenv set a=1 'it'\''s here' ''"#
        );
    }

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
