//! `module:<name>` payloads: handed to an external update module, an
//! executable that knows how to update one kind of thing (containers,
//! microcontroller firmware, configuration), called once per state.
//!
//! # The update module protocol
//!
//! A module is an executable regular file `<modules_dir>/<name>` for payload
//! type `module:<name>` (names with `/` or a leading `.` are refused). For
//! each payload the agent runs it as
//!
//! ```text
//! <modules_dir>/<name> STATE WORK_DIR
//! ```
//!
//! with no shell in between, in the directory `WORK_DIR`, a directory of its
//! own for this payload. `WORK_DIR` is created empty before `download`, kept
//! across restarts and reboots, and removed after the final `commit` or
//! `rollback` succeeded. `STATE` is one of:
//!
//! | state      | when                                                   | standard input | the module must                                                  |
//! |------------|--------------------------------------------------------|----------------|------------------------------------------------------------------|
//! | `download` | first                                                  | the payload    | read standard input to its end and stage what it needs; change nothing live |
//! | `install`  | after `download` succeeded and the bytes were verified | empty          | apply the staged update; print `reboot` (see below) if it takes effect only after its `reboot` step |
//! | `reboot`   | after `install`, only if it printed `reboot`           | empty          | make the update take effect: restart the service or the microcontroller, or reboot the device (then the call need not return) |
//! | `commit`   | when the update is kept                                | empty          | make it permanent: drop what a rollback would need               |
//! | `rollback` | when the update is abandoned, after any failure of the states above or a failed health check | empty | restore what was there before `download`, and delete anything staged |
//!
//! For one update the agent calls `download` and `install` for each module
//! payload in manifest order, `reboot` for those that asked for it, and then
//! `commit` for every payload in order, or `rollback` for every payload in
//! reverse order. `rollback` may come after a `download` or `install` that
//! failed or was killed, so it must cope with a half-done state.
//!
//! **Standard input in `download`** carries exactly the payload's installed
//! bytes (decrypted and decompressed, `AIRLIFT_PAYLOAD_SIZE` of them), then
//! end-of-file. They stream straight from the download; the agent checks
//! them against the signed digest only at their end. If they do not match,
//! or the download breaks off, the agent kills the module and will call
//! `rollback`: this is why `download` must not make anything live. Exiting
//! with 0 before reading all of standard input is a failure.
//!
//! **Exit status**: 0 is success; anything else is a failure, reported with
//! the last 20 lines the module wrote to standard error.
//!
//! **Standard output** is logged. In the `install` state, a line that is
//! exactly `reboot` means the update needs the module's `reboot` step; it
//! means nothing in other states.
//!
//! **Environment**: the agent's own, plus
//! - `AIRLIFT_STATE`: the state, as in the first argument;
//! - `AIRLIFT_TARGET`: the payload's target, as the manifest gives it (the
//!   module's own argument: a container name, a device, a path);
//! - `AIRLIFT_PACKAGE_NAME`, `AIRLIFT_PACKAGE_VERSION`: the package's name
//!   and version;
//! - `AIRLIFT_PAYLOAD_SIZE`, `AIRLIFT_PAYLOAD_SHA256`: the installed bytes'
//!   size and SHA-256 (hex), from the signed manifest.
//!
//! **Timeout**: each call may take [`DEFAULT_MODULE_TIMEOUT`] (configurable)
//! without progress — in `download`, counted from the start, from each chunk
//! of input the module accepts and from the end of the input; in the other
//! states, from the start. A module that overruns is killed with `SIGKILL`,
//! together with everything it started (it runs in its own process group),
//! and the call fails.
//!
//! **Repetition**: after a power cut or a restart of the agent, `commit` and
//! `rollback` may be called again for a payload whose earlier call had
//! already succeeded; both must be idempotent.
//!
//! A minimal module that installs a configuration file:
//!
//! ```sh
//! #!/bin/sh
//! set -eu
//! case "$1" in
//!   download) cat > "$2/new" ;;
//!   install)  cp /etc/app.conf "$2/old"; mv "$2/new" /etc/app.conf ;;
//!   reboot)   ;;
//!   commit)   ;;
//!   rollback) if [ -f "$2/old" ]; then cp "$2/old" /etc/app.conf; fi ;;
//! esac
//! ```

use super::journal::{self, Journal, PackageId, Phase};
use super::{InstallError, InstallOutcome, Installer, PayloadRef, Reboot};
use crate::process::{self, Finished, Run, RunError};
use airlift_package::{PayloadType, Sha256Digest};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long a module call may go without progress unless configured
/// otherwise: 10 minutes.
pub const DEFAULT_MODULE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The journal's file name in the work directory.
const JOURNAL: &str = "modules.json";
/// The line a module prints in `install` to ask for its `reboot` step.
const REBOOT_MARKER: &str = "reboot";
/// Lines of standard error kept for error messages.
const STDERR_TAIL_LINES: usize = 20;
/// Characters of one stderr line kept for error messages.
const MAX_TAIL_LINE_CHARS: usize = 300;

/// The states a module is called for; the protocol is in the [module
/// documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleState {
    /// Receive the payload on standard input and stage it.
    Download,
    /// Apply the staged payload.
    Install,
    /// Make the installed payload take effect.
    Reboot,
    /// Make the update permanent.
    Commit,
    /// Undo the update.
    Rollback,
}

impl ModuleState {
    /// The name passed as the module's first argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Install => "install",
            Self::Reboot => "reboot",
            Self::Commit => "commit",
            Self::Rollback => "rollback",
        }
    }
}

impl fmt::Display for ModuleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs update modules for `module:<name>` payloads, following the protocol
/// above, and keeps a journal so that `reboot`, `commit` and `rollback`
/// reach the right modules after a restart.
#[derive(Debug, Clone)]
pub struct ModuleInstaller {
    modules_dir: PathBuf,
    work_dir: PathBuf,
    timeout: Duration,
}

/// One module payload, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleEntry {
    module: String,
    target: String,
    index: usize,
    size: u64,
    sha256: Sha256Digest,
    work_dir: PathBuf,
    /// `install` succeeded.
    installed: bool,
    /// `install` printed `reboot`.
    reboot: bool,
    /// `reboot` succeeded.
    rebooted: bool,
    /// This phase's `commit` or `rollback` succeeded.
    done: bool,
}

impl ModuleInstaller {
    /// Modules are looked up in `modules_dir`; the journal and the modules'
    /// work directories live in `work_dir`.
    pub fn new(modules_dir: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            modules_dir: modules_dir.into(),
            work_dir: work_dir.into(),
            timeout: DEFAULT_MODULE_TIMEOUT,
        }
    }

    /// Sets how long one call may go without progress.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where the journal is kept.
    pub fn journal_path(&self) -> PathBuf {
        self.work_dir.join(JOURNAL)
    }

    /// The executable of module `name`, checked to be usable.
    fn program(&self, name: &str) -> Result<PathBuf, InstallError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(InstallError::ModuleName {
                name: name.to_owned(),
            });
        }
        let path = self.modules_dir.join(name);
        let unusable = |problem: String| InstallError::ModuleUnusable {
            path: path.clone(),
            problem,
        };
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(unusable("does not exist".into()))
            }
            Err(e) => return Err(unusable(format!("cannot be inspected: {e}"))),
        };
        if !meta.is_file() {
            return Err(unusable("is not a regular file".into()));
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(unusable("is not executable".into()));
        }
        Ok(path)
    }

    /// Runs module `entry.module` for `state`.
    fn call(
        &self,
        state: ModuleState,
        package: &PackageId,
        entry: &ModuleEntry,
        input: Option<&mut dyn Read>,
    ) -> Result<Finished, InstallError> {
        let program = self.program(&entry.module)?;
        fs::create_dir_all(&entry.work_dir).map_err(InstallError::io(
            "creating module work directory",
            &entry.work_dir,
        ))?;
        tracing::info!(module = %entry.module, state = %state, target_name = %entry.target, "calling update module");
        let mut command = Command::new(&program);
        command
            .arg(state.as_str())
            .arg(&entry.work_dir)
            .current_dir(&entry.work_dir)
            .env("AIRLIFT_STATE", state.as_str())
            .env("AIRLIFT_TARGET", &entry.target)
            .env("AIRLIFT_PACKAGE_NAME", &package.name)
            .env("AIRLIFT_PACKAGE_VERSION", &package.version)
            .env("AIRLIFT_PAYLOAD_SIZE", entry.size.to_string())
            .env("AIRLIFT_PAYLOAD_SHA256", entry.sha256.to_string());
        let ran = process::run(
            Run::new(command)
                .input(input)
                .timeout(self.timeout)
                .marker(REBOOT_MARKER)
                .log_lines(format!("{} {state}", entry.module)),
        );
        let finished = ran.map_err(|e| match e {
            RunError::Spawn { source, .. } => InstallError::Io {
                action: "running update module",
                path: program.clone(),
                source,
            },
            RunError::Wait { source, .. } => InstallError::Io {
                action: "waiting for update module",
                path: program.clone(),
                source,
            },
            RunError::Input { source, .. } => InstallError::Payload {
                index: entry.index,
                target: entry.target.clone(),
                source,
            },
            RunError::TimedOut { stderr, .. } => InstallError::ModuleTimeout {
                module: entry.module.clone(),
                state: state.as_str(),
                timeout: self.timeout,
                stderr: stderr_tail(&stderr),
            },
        })?;
        let failed = |status: String| InstallError::ModuleFailed {
            module: entry.module.clone(),
            state: state.as_str(),
            status,
            stderr: stderr_tail(&finished.stderr),
        };
        if !finished.status.success() {
            return Err(failed(finished.status.to_string()));
        }
        if !finished.input_complete {
            return Err(failed(format!(
                "it exited successfully without reading all of its standard input: {} of {} bytes",
                finished.written, entry.size
            )));
        }
        Ok(finished)
    }

    /// Calls `state` for every entry not yet done, in order (or in reverse),
    /// recording each success; goes on after a failure and returns the
    /// first. Cleans up once all are done.
    fn finish(&self, state: ModuleState, phase: Phase, reverse: bool) -> Result<(), InstallError> {
        let path = self.journal_path();
        let Some(mut journal) = journal::load_for_finish::<ModuleEntry>(&path, phase)? else {
            return Ok(());
        };
        let mut order: Vec<usize> = (0..journal.entries.len()).collect();
        if reverse {
            order.reverse();
        }
        let mut first_error = None;
        for i in order {
            if journal.entries[i].done {
                continue;
            }
            match self.call(state, &journal.package, &journal.entries[i], None) {
                Ok(_) => {
                    journal.entries[i].done = true;
                    journal::store(&path, &journal)?;
                }
                Err(e) => {
                    tracing::error!(module = %journal.entries[i].module, state = %state, error = %e, "update module failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for entry in &journal.entries {
            remove_work_dir(&entry.work_dir)?;
        }
        journal::remove(&path)
    }
}

/// What a failing module said: the last [`STDERR_TAIL_LINES`] lines of its
/// standard error, each cut to [`MAX_TAIL_LINE_CHARS`] characters.
fn stderr_tail(stderr: &process::Captured) -> String {
    process::last_lines(&stderr.text(), STDERR_TAIL_LINES, MAX_TAIL_LINE_CHARS)
}

fn remove_work_dir(dir: &Path) -> Result<(), InstallError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InstallError::io("removing module work directory", dir)(e)),
    }
}

impl Installer for ModuleInstaller {
    fn install(
        &mut self,
        payload: PayloadRef<'_>,
        installed: &mut dyn Read,
    ) -> Result<InstallOutcome, InstallError> {
        let entry = payload.entry();
        let PayloadType::Module(name) = &entry.kind else {
            return Err(InstallError::Unsupported {
                kind: entry.kind.to_string(),
            });
        };
        self.program(name)?;
        let path = self.journal_path();
        let package = payload.package_id();
        let mut journal: Journal<ModuleEntry> = journal::load_for_install(&path, &package)?;
        let record = ModuleEntry {
            module: name.clone(),
            target: entry.target.clone(),
            index: payload.index(),
            size: entry.installed.size,
            sha256: entry.installed.sha256,
            work_dir: self
                .work_dir
                .join("modules")
                .join(format!("{}-{name}", payload.index())),
            installed: false,
            reboot: false,
            rebooted: false,
            done: false,
        };
        let slot = match journal.entries.iter().position(|e| e.index == record.index) {
            Some(i) => {
                journal.entries[i] = record;
                i
            }
            None => {
                journal.entries.push(record);
                journal.entries.len() - 1
            }
        };
        journal::store(&path, &journal)?;
        let work_dir = journal.entries[slot].work_dir.clone();
        remove_work_dir(&work_dir)?;
        fs::create_dir_all(&work_dir).map_err(InstallError::io(
            "creating module work directory",
            &work_dir,
        ))?;

        let downloaded = self.call(
            ModuleState::Download,
            &package,
            &journal.entries[slot],
            Some(installed),
        )?;
        let applied = self.call(ModuleState::Install, &package, &journal.entries[slot], None)?;
        let entry = &mut journal.entries[slot];
        entry.installed = true;
        entry.reboot = applied.marker_seen;
        let reboot = entry.reboot;
        journal::store(&path, &journal)?;
        Ok(InstallOutcome {
            reboot: if reboot {
                Reboot::Installer
            } else {
                Reboot::NotNeeded
            },
            bytes: downloaded.written,
        })
    }

    fn reboot(&mut self) -> Result<(), InstallError> {
        let path = self.journal_path();
        let Some(mut journal) = journal::load::<ModuleEntry>(&path)? else {
            return Ok(());
        };
        if journal.phase != Phase::Installing {
            return Ok(());
        }
        for i in 0..journal.entries.len() {
            let entry = &journal.entries[i];
            if !entry.installed || !entry.reboot || entry.rebooted {
                continue;
            }
            self.call(ModuleState::Reboot, &journal.package, entry, None)?;
            journal.entries[i].rebooted = true;
            journal::store(&path, &journal)?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), InstallError> {
        self.finish(ModuleState::Commit, Phase::Committing, false)
    }

    fn rollback(&mut self) -> Result<(), InstallError> {
        self.finish(ModuleState::Rollback, Phase::RollingBack, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::testutil::{self, Spec};
    use std::time::Instant;

    /// A module that logs each call and acts on its target's name.
    struct Setup {
        _dir: tempfile::TempDir,
        modules: PathBuf,
        work: PathBuf,
        log: PathBuf,
        out: PathBuf,
    }

    const SCRIPT: &str = r#"#!/bin/sh
set -eu
echo "$1 $AIRLIFT_TARGET $AIRLIFT_PACKAGE_NAME $AIRLIFT_PACKAGE_VERSION $(basename "$2") $AIRLIFT_PAYLOAD_SIZE" >> "@LOG@"
[ "$AIRLIFT_STATE" = "$1" ] && [ "$(pwd)" = "$2" ]
case "$1/$AIRLIFT_TARGET" in
  download/early-exit) exit 0 ;;
  download/stall) sleep 30 ;;
  download/*) cat > "$2/payload" ;;
  install/fail) echo "unpacking into /var/lib/thing" >&2; echo "no space left on device" >&2; exit 3 ;;
  install/hang) echo "waiting for the container runtime" >&2; sleep 30 ;;
  install/needs-reboot) cp "$2/payload" "@OUT@/$AIRLIFT_TARGET"; echo "flashing done"; echo reboot ;;
  install/*) cp "$2/payload" "@OUT@/$AIRLIFT_TARGET" ;;
esac
"#;

    impl Setup {
        fn new() -> testutil::Result<Self> {
            let dir = tempfile::tempdir()?;
            let (modules, work, out) = (
                dir.path().join("modules"),
                dir.path().join("work"),
                dir.path().join("out"),
            );
            let log = dir.path().join("calls.log");
            fs::create_dir_all(&modules)?;
            fs::create_dir_all(&out)?;
            let script = SCRIPT
                .replace("@LOG@", &log.to_string_lossy())
                .replace("@OUT@", &out.to_string_lossy());
            let module = modules.join("demo");
            fs::write(&module, script)?;
            fs::set_permissions(&module, fs::Permissions::from_mode(0o755))?;
            Ok(Self {
                _dir: dir,
                modules,
                work,
                log,
                out,
            })
        }

        fn installer(&self) -> ModuleInstaller {
            ModuleInstaller::new(&self.modules, &self.work)
        }

        /// The calls so far, as `state target`.
        fn calls(&self) -> testutil::Result<Vec<String>> {
            let log = match fs::read_to_string(&self.log) {
                Ok(log) => log,
                Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e.into()),
            };
            Ok(log
                .lines()
                .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
                .collect())
        }
    }

    fn demo() -> PayloadType {
        PayloadType::Module("demo".into())
    }

    #[test]
    fn calls_download_install_reboot_commit_in_order() -> testutil::Result {
        let setup = Setup::new()?;
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let package = testutil::package(&[
            Spec::zstd(demo(), "web", &big),
            Spec::plain(demo(), "needs-reboot", b"mcu firmware"),
        ])?;

        let mut installer = setup.installer();
        let outcomes = package.install_all(&mut installer)?;
        assert_eq!(outcomes[0].reboot, Reboot::NotNeeded);
        assert_eq!(outcomes[0].bytes, big.len() as u64);
        assert_eq!(outcomes[1].reboot, Reboot::Installer);
        assert_eq!(fs::read(setup.out.join("web"))?, big);
        assert_eq!(fs::read(setup.out.join("needs-reboot"))?, b"mcu firmware");
        let first_call = fs::read_to_string(&setup.log)?;
        assert!(
            first_call.starts_with("download web testpkg 1.0.0 0-demo 300000\n"),
            "{first_call}"
        );

        installer.reboot()?;
        installer.reboot()?; // already done: not called again
        installer.commit()?;
        assert_eq!(
            setup.calls()?,
            [
                "download web",
                "install web",
                "download needs-reboot",
                "install needs-reboot",
                "reboot needs-reboot",
                "commit web",
                "commit needs-reboot",
            ]
        );
        assert!(!installer.journal_path().exists());
        assert!(
            !setup.work.join("modules/0-demo").exists(),
            "work directories removed"
        );
        Ok(())
    }

    #[test]
    fn rollback_after_a_restart_calls_every_module_in_reverse() -> testutil::Result {
        let setup = Setup::new()?;
        let package = testutil::package(&[
            Spec::plain(demo(), "first", b"1"),
            Spec::plain(demo(), "second", b"2"),
        ])?;
        package.install_all(&mut setup.installer())?;

        let mut restarted = setup.installer();
        restarted.rollback()?;
        restarted.rollback()?; // nothing left to do
        let calls = setup.calls()?;
        assert_eq!(calls[4..], ["rollback second", "rollback first"]);
        assert!(!restarted.journal_path().exists());
        Ok(())
    }

    #[test]
    fn a_failing_module_reports_its_stderr_and_is_rolled_back() -> testutil::Result {
        let setup = Setup::new()?;
        let package = testutil::package(&[Spec::plain(demo(), "fail", b"x")])?;
        let mut installer = setup.installer();
        let error = package.install_all(&mut installer).err();
        assert!(
            matches!(
                error,
                Some(InstallError::ModuleFailed {
                    state: "install",
                    ..
                })
            ),
            "{error:?}"
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("exit status: 3"), "{message}");
        assert!(
            message.contains("unpacking into /var/lib/thing\nno space left on device"),
            "{message}"
        );

        installer.rollback()?;
        assert_eq!(
            setup.calls()?,
            ["download fail", "install fail", "rollback fail"]
        );
        Ok(())
    }

    #[test]
    fn a_module_that_hangs_is_killed_after_the_timeout() -> testutil::Result {
        let setup = Setup::new()?;
        let package = testutil::package(&[Spec::plain(demo(), "hang", b"x")])?;
        let mut installer = setup.installer().with_timeout(Duration::from_millis(500));
        let started = Instant::now();
        let error = package.install_all(&mut installer).err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}: the module's sleep was not killed",
            started.elapsed()
        );
        assert!(
            matches!(
                error,
                Some(InstallError::ModuleTimeout {
                    state: "install",
                    ..
                })
            ),
            "{error:?}"
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("waiting for the container runtime"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn a_module_that_stops_reading_its_input_is_killed_after_the_timeout() -> testutil::Result {
        let setup = Setup::new()?;
        let content = vec![3u8; 1024 * 1024];
        let package = testutil::package(&[Spec::plain(demo(), "stall", &content)])?;
        let mut installer = setup.installer().with_timeout(Duration::from_millis(500));
        let started = Instant::now();
        let error = package.install_all(&mut installer).err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(
                error,
                Some(InstallError::ModuleTimeout {
                    state: "download",
                    ..
                })
            ),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn a_download_breaking_off_kills_the_module_mid_read() -> testutil::Result {
        let setup = Setup::new()?;
        let content = vec![5u8; 1024 * 1024];
        let package = testutil::package(&[Spec::zstd(demo(), "web", &content)])?;
        let mut installer = setup.installer();
        let error = package
            .install_all_through(&mut installer, Some(200_000))
            .err();
        assert!(
            matches!(error, Some(InstallError::Payload { .. })),
            "{error:?}"
        );
        assert_eq!(setup.calls()?, ["download web"]);
        installer.rollback()?;
        assert_eq!(setup.calls()?, ["download web", "rollback web"]);
        Ok(())
    }

    #[test]
    fn a_payload_failing_its_digest_never_reaches_install() -> testutil::Result {
        let setup = Setup::new()?;
        let content = vec![7u8; 200_000];
        let mut package = testutil::package(&[Spec::plain(demo(), "web", &content)])?;
        package.corrupt_last_byte();
        let mut installer = setup.installer();
        let error = package.install_all(&mut installer).err();
        assert!(
            matches!(error, Some(InstallError::Payload { .. })),
            "{error:?}"
        );
        // The payload is one block (format version 2): the reader fails
        // before the module gets a byte, so the module may be stopped
        // before it logs its download; it never gets to install.
        let calls = setup.calls()?;
        assert!(calls.is_empty() || calls == ["download web"], "{calls:?}");
        assert!(!setup.out.join("web").exists());
        installer.rollback()?;
        assert_eq!(
            setup.calls()?.last().map(String::as_str),
            Some("rollback web")
        );
        Ok(())
    }

    #[test]
    fn a_module_that_does_not_read_its_input_fails() -> testutil::Result {
        let setup = Setup::new()?;
        let content = vec![1u8; 1024 * 1024];
        let package = testutil::package(&[Spec::plain(demo(), "early-exit", &content)])?;
        let error = package.install_all(&mut setup.installer()).err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("without reading all of its standard input"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn refuses_missing_unexecutable_and_escaping_modules() -> testutil::Result {
        let setup = Setup::new()?;
        let installer = setup.installer();
        let missing = installer
            .program("absent")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("absent does not exist"), "{missing}");

        fs::write(setup.modules.join("plain"), b"#!/bin/sh\n")?;
        let plain = installer
            .program("plain")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(plain.contains("is not executable"), "{plain}");

        for name in ["../demo", "..", ".hidden", "a/b"] {
            let error = installer.program(name).err();
            assert!(
                matches!(error, Some(InstallError::ModuleName { .. })),
                "{name}: {error:?}"
            );
        }
        assert!(installer.program("demo").is_ok());
        Ok(())
    }
}
