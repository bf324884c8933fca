//! The running system as it is, not as the agent remembers it: the version
//! its root filesystem holds, and whether the configured slots fit what
//! runs.
//!
//! The agent's own record (`installed.json`) says what it committed; a
//! device re-flashed in the factory, or booted into the other slot by hand,
//! runs something else. With `system_version_file` (a `KEY=VALUE` file such
//! as `/etc/os-release`, whose `VERSION_ID` — or `system_version_key` — is
//! read) or `system_version_command` (a program printing the version), the
//! version of the running root filesystem is read from the running system
//! and reported as the installed version of `system_software` (by default
//! the name of the one `[slots.NAME]` pair, e.g. `rootfs`), over whatever
//! the record or `installed` says.
//!
//! During a trial boot that is the new version (what really runs); after a
//! rollback, the old one.
//!
//! [`check_slots`] refuses slot devices that cannot be right before any of
//! them is written: a missing device, both slots on one device, or the
//! running root filesystem on the slot the bootloader calls inactive.

use crate::boot::Slot;
use crate::config::SlotPair;
use crate::process::{self, Run, RunError};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The key of `/etc/os-release` that holds the version.
pub const DEFAULT_VERSION_KEY: &str = "VERSION_ID";
/// Largest version file read (os-release files are a few hundred bytes).
const MAX_VERSION_FILE: u64 = 64 * 1024;
/// Longest version accepted (the server takes 1–128-byte values).
const MAX_VERSION_LEN: usize = 128;
/// How long `system_version_command` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Output kept of `system_version_command`.
const COMMAND_CAPTURE: usize = 4096;

/// Where the running system's version comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// A `KEY=VALUE` file (`/etc/os-release`) and the key to read.
    File {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `VERSION_ID`.
        key: String,
    },
    /// A program printing the version on its first line.
    Command(Vec<String>),
}

/// The running root filesystem: which software it is and how to read its
/// version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningSystem {
    /// The installed-software name the version is reported under.
    pub software: String,
    /// Where the version is read.
    pub source: VersionSource,
}

/// Why the running system's version cannot be read. The agent stops on it:
/// a configured source that does not answer is a broken image or config.
#[derive(Debug, thiserror::Error)]
pub enum SystemVersionError {
    /// The file cannot be read.
    #[error("system_version_file {}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a usable value for the key.
    #[error("system_version_file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// The command failed or printed no usable version.
    #[error("system_version_command {command:?}: {reason}")]
    Command {
        command: Vec<String>,
        reason: String,
    },
}

impl RunningSystem {
    /// Reads the version now.
    pub fn version(&self) -> Result<String, SystemVersionError> {
        match &self.source {
            VersionSource::File { path, key } => read_version_file(path, key),
            VersionSource::Command(command) => run_version_command(command),
        }
    }
}

fn read_version_file(path: &Path, key: &str) -> Result<String, SystemVersionError> {
    let read_error = |source| SystemVersionError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_VERSION_FILE + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    let invalid = |reason: String| SystemVersionError::File {
        path: path.to_owned(),
        reason,
    };
    if bytes.len() as u64 > MAX_VERSION_FILE {
        return Err(invalid(format!(
            "it is larger than {MAX_VERSION_FILE} bytes"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| invalid("it is not UTF-8 text".into()))?;
    let value = os_release_value(&text, key).ok_or_else(|| {
        invalid(format!(
            "it sets no {key}= (expected a line like {key}=2.4.0)"
        ))
    })?;
    check_version(&value).map_err(invalid)
}

/// The value of `key` in os-release syntax (`KEY=value`, `KEY="value"` or
/// `KEY='value'`, `#` comments); the last assignment wins, as in a shell.
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((name, raw)) = line.split_once('=') else {
            continue;
        };
        if name.trim() == key {
            found = Some(unquote(raw.trim()));
        }
    }
    found
}

/// Removes os-release quoting: `"…"` with `\"`, `\\`, `\$` and `` \` ``
/// escapes, or `'…'` taken as it is.
fn unquote(raw: &str) -> String {
    if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return raw.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('"' | '\\' | '$' | '`'))) => {
                out.push(next);
                chars.next();
            }
            (c, _) => out.push(c),
        }
    }
    out
}

/// A version as the server takes it: 1–128 bytes, no spaces or control
/// characters.
fn check_version(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("the version is empty".into());
    }
    if value.len() > MAX_VERSION_LEN {
        return Err(format!(
            "the version is longer than {MAX_VERSION_LEN} bytes"
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the version {value:?} contains spaces or control characters"
        ));
    }
    Ok(value.to_owned())
}

fn run_version_command(command: &[String]) -> Result<String, SystemVersionError> {
    let failed = |reason: String| SystemVersionError::Command {
        command: command.to_vec(),
        reason,
    };
    let Some((program, args)) = command.split_first() else {
        return Err(failed("it is empty".into()));
    };
    let mut child = Command::new(program);
    child.args(args);
    let run = Run::new(child)
        .timeout(COMMAND_TIMEOUT)
        .capture(COMMAND_CAPTURE);
    let output = process::run(run).map_err(|e| match e {
        RunError::Spawn { source, .. } => failed(format!("cannot start it: {source}")),
        other => failed(other.to_string()),
    })?;
    if !output.status.success() {
        let stderr = process::last_lines(&output.stderr.text(), 3, 300);
        return Err(failed(format!(
            "it exited with {}: {stderr}",
            output.status
        )));
    }
    let text = output.stdout.text();
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    let first = first.ok_or_else(|| failed("it printed nothing".into()))?;
    check_version(first).map_err(failed)
}

/// Why the configured slots cannot be the device's.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// A slot's device or file does not exist.
    #[error("[slots.{set}] {slot} = {}: {source}; is the partition there, and is the path right?", path.display())]
    Missing {
        set: String,
        slot: Slot,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Both slots name one device.
    #[error("[slots.{set}]: a and b are the same device ({}); the slots must be two different partitions", path.display())]
    SameDevice { set: String, path: PathBuf },
    /// The running root filesystem is on the slot an update would write.
    #[error("[slots.{set}] {slot} = {} holds the running root filesystem ({how}), but the bootloader says slot {running} is running: an update would overwrite the running system; fix the slot devices in the config or the bootloader's airlift.slot", path.display(), running = slot.other())]
    RunningRootInactive {
        set: String,
        /// The slot the config calls inactive.
        slot: Slot,
        path: PathBuf,
        /// How it was found (the kernel's `root=`, or the root mount's device).
        how: String,
    },
}

/// Where the running root filesystem comes from, for [`check_slots`].
#[derive(Debug, Clone, Default)]
pub struct RunningRoot {
    /// The kernel command line's `root=` when it names a path (`/dev/sda2`).
    pub cmdline_root: Option<PathBuf>,
    /// The device number of the file system mounted at `/` (`st_dev`).
    pub mounted_dev: Option<u64>,
}

impl RunningRoot {
    /// What this system says: `root=` from the kernel command line file
    /// `cmdline` (if given and readable) and the device of `/`.
    pub fn read(cmdline: Option<&Path>) -> Self {
        let cmdline_root = cmdline
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| cmdline_root(&String::from_utf8_lossy(&bytes)));
        let mounted_dev = std::fs::metadata("/").ok().map(|m| m.dev());
        Self {
            cmdline_root,
            mounted_dev,
        }
    }
}

/// The `root=` parameter when it is a path (not `PARTUUID=…` or `LABEL=…`).
pub fn cmdline_root(cmdline: &str) -> Option<PathBuf> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|param| param.strip_prefix("root="))
        .next_back()
        .filter(|value| value.starts_with('/'))
        .map(PathBuf::from)
}

/// Checks every slot pair before anything is written: both devices exist,
/// they differ, and the slot that is not `running` does not hold the
/// running root filesystem.
pub fn check_slots(
    slots: &BTreeMap<String, SlotPair>,
    running: Slot,
    root: &RunningRoot,
) -> Result<(), SlotError> {
    for (set, pair) in slots {
        let mut identities = Vec::new();
        for slot in [Slot::A, Slot::B] {
            let path = match slot {
                Slot::A => &pair.a,
                Slot::B => &pair.b,
            };
            let metadata = std::fs::metadata(path).map_err(|source| SlotError::Missing {
                set: set.clone(),
                slot,
                path: path.clone(),
                source,
            })?;
            identities.push((metadata.dev(), metadata.ino(), metadata));
        }
        if (identities[0].0, identities[0].1) == (identities[1].0, identities[1].1) {
            return Err(SlotError::SameDevice {
                set: set.clone(),
                path: pair.a.clone(),
            });
        }
        let inactive = running.other();
        let (path, metadata) = match inactive {
            Slot::A => (&pair.a, &identities[0].2),
            Slot::B => (&pair.b, &identities[1].2),
        };
        let holds_root = |how: String| SlotError::RunningRootInactive {
            set: set.clone(),
            slot: inactive,
            path: path.clone(),
            how,
        };
        if let Some(root_path) = &root.cmdline_root {
            if same_file(root_path, path) {
                return Err(holds_root(format!(
                    "the kernel command line says root={}",
                    root_path.display()
                )));
            }
        }
        if let Some(dev) = root.mounted_dev {
            if metadata.file_type().is_block_device() && metadata.rdev() == dev {
                return Err(holds_root("it is the device mounted at /".into()));
            }
        }
    }
    Ok(())
}

/// Whether two paths name the same file (after symbolic links).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn reads_os_release_values_as_a_shell_would() {
        let text = "NAME=\"Acme OS\"\n# VERSION_ID=0.0.1\nVERSION_ID=2.4.0\nID=acme\n\
                    BUILD='b 7'\nQUOTED=\"say \\\"hi\\\" \\$HOME\"\nVERSION_ID=\"2.4.1\"\n";
        assert_eq!(
            os_release_value(text, "VERSION_ID").as_deref(),
            Some("2.4.1")
        );
        assert_eq!(os_release_value(text, "NAME").as_deref(), Some("Acme OS"));
        assert_eq!(os_release_value(text, "BUILD").as_deref(), Some("b 7"));
        assert_eq!(
            os_release_value(text, "QUOTED").as_deref(),
            Some("say \"hi\" $HOME")
        );
        assert_eq!(os_release_value(text, "VERSION"), None);
        assert_eq!(os_release_value(text, "ID").as_deref(), Some("acme"));
    }

    #[test]
    fn a_version_file_is_read_by_its_key_and_refused_with_the_reason() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("os-release");
        let system = |key: &str| RunningSystem {
            software: "rootfs".into(),
            source: VersionSource::File {
                path: path.clone(),
                key: key.into(),
            },
        };
        let missing = system(DEFAULT_VERSION_KEY)
            .version()
            .err()
            .map(|e| e.to_string());
        assert!(
            missing
                .as_deref()
                .is_some_and(|m| m.contains("cannot read")),
            "{missing:?}"
        );
        std::fs::write(
            &path,
            "ID=acme\nVERSION_ID=\"3.1.0\"\nIMAGE_VERSION=2024.1\n",
        )?;
        assert_eq!(system(DEFAULT_VERSION_KEY).version()?, "3.1.0");
        assert_eq!(system("IMAGE_VERSION").version()?, "2024.1");
        let absent = system("BUILD_ID").version().err().map(|e| e.to_string());
        assert!(
            absent
                .as_deref()
                .is_some_and(|m| m.contains("sets no BUILD_ID=")),
            "{absent:?}"
        );
        for bad in [
            "VERSION_ID=\n",
            "VERSION_ID=\"two words\"\n",
            "\u{ff}\u{fe}\n",
        ] {
            std::fs::write(&path, bad)?;
            assert!(system(DEFAULT_VERSION_KEY).version().is_err(), "{bad:?}");
        }
        std::fs::write(&path, "x".repeat(MAX_VERSION_FILE as usize + 1))?;
        assert!(system(DEFAULT_VERSION_KEY).version().is_err(), "too large");
        Ok(())
    }

    #[test]
    fn a_version_command_gives_its_first_line_or_a_reason() {
        let system = |command: &[&str]| RunningSystem {
            software: "rootfs".into(),
            source: VersionSource::Command(command.iter().map(|s| s.to_string()).collect()),
        };
        let version = system(&["sh", "-c", "echo; echo ' 5.0.1 '; echo extra"]).version();
        assert_eq!(version.ok().as_deref(), Some("5.0.1"));
        for (command, expected) in [
            (&["sh", "-c", "echo oops >&2; exit 3"][..], "oops"),
            (&["sh", "-c", "true"][..], "printed nothing"),
            (&["/nonexistent/version"][..], "cannot start"),
        ] {
            let error = system(command).version().err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(expected)),
                "{command:?}: {error:?}"
            );
        }
    }

    #[test]
    fn cmdline_root_is_taken_only_as_a_path() {
        assert_eq!(
            cmdline_root("console=ttyS0 root=/dev/vda3 ro airlift.slot=a"),
            Some(PathBuf::from("/dev/vda3"))
        );
        assert_eq!(cmdline_root("root=PARTUUID=1234-02 ro"), None);
        assert_eq!(cmdline_root("ro quiet"), None);
    }

    fn pair(dir: &Path) -> Result<SlotPair, std::io::Error> {
        let (a, b) = (dir.join("a.img"), dir.join("b.img"));
        std::fs::write(&a, b"a")?;
        std::fs::write(&b, b"b")?;
        Ok(SlotPair { a, b })
    }

    #[test]
    fn slots_that_fit_pass() -> TestResult {
        let dir = tempfile::tempdir()?;
        let pair = pair(dir.path())?;
        let root = RunningRoot {
            cmdline_root: Some(pair.a.clone()),
            mounted_dev: None,
        };
        let slots = BTreeMap::from([("rootfs".to_owned(), pair)]);
        check_slots(&slots, Slot::A, &root)?;
        check_slots(&slots, Slot::A, &RunningRoot::read(None))?;
        Ok(())
    }

    #[test]
    fn slots_that_cannot_be_right_are_refused_by_name() -> TestResult {
        let dir = tempfile::tempdir()?;
        let good = pair(dir.path())?;
        let none = RunningRoot::default();
        let missing = SlotPair {
            b: dir.path().join("absent"),
            ..good.clone()
        };
        let same = SlotPair {
            b: good.a.clone(),
            ..good.clone()
        };
        let root_on_b = RunningRoot {
            cmdline_root: Some(good.b.clone()),
            mounted_dev: None,
        };
        let cases = [
            (missing, Slot::A, &none, "[slots.rootfs] b = "),
            (same, Slot::A, &none, "the same device"),
            (
                good,
                Slot::A,
                &root_on_b,
                "holds the running root filesystem",
            ),
        ];
        for (pair, running, root, expected) in cases {
            let slots = BTreeMap::from([("rootfs".to_owned(), pair)]);
            let error = check_slots(&slots, running, root)
                .err()
                .map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(expected)),
                "{expected}: {error:?}"
            );
        }
        Ok(())
    }
}
