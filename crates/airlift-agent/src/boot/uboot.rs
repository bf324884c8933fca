//! [`UBootEnv`]: boot control through U-Boot's environment and libubootenv's
//! `fw_printenv`/`fw_setenv`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::tool_env::ToolEnv;
use super::vars::{self, BootVars, Writes, NAMES};
use super::{cmdline, tool, BootError};

const PACKAGE: &str = "libubootenv-tool";

/// What libubootenv's tools print when no copy of the environment has a
/// good CRC (never written, or a write cut short); they then carry on with
/// the default environment file, if there is one, and exit 0.
const NO_VALID_ENV: &str = "Cannot read environment";

/// Boot control for U-Boot: the variables live in U-Boot's environment,
/// read with `fw_printenv -c CONFIG NAME...` and written with one
/// `fw_setenv -c CONFIG NAME VALUE NAME VALUE...` (libubootenv stores all
/// pairs with one write of the environment). U-Boot's bootcount feature does
/// the counting (see the [module documentation](super)). The running slot
/// comes from the kernel command line.
///
/// An environment `fw_printenv` cannot read (bad CRC, never written) is an
/// error: libubootenv would quietly fall back to the default environment
/// file, and a write would then replace whatever was there with defaults.
#[derive(Debug, Clone)]
pub struct UBootEnv {
    config: PathBuf,
    cmdline: PathBuf,
    printenv: PathBuf,
    setenv: PathBuf,
}

impl UBootEnv {
    /// Boot control through the environment `config` describes (usually
    /// `/etc/fw_env.config`), with `fw_printenv` and `fw_setenv` from `PATH`
    /// and the running slot from `/proc/cmdline`.
    pub fn new(config: impl Into<PathBuf>) -> Self {
        UBootEnv {
            config: config.into(),
            cmdline: PathBuf::from(cmdline::PROC_CMDLINE),
            printenv: PathBuf::from("fw_printenv"),
            setenv: PathBuf::from("fw_setenv"),
        }
    }

    /// Reads the kernel command line from `path` instead of `/proc/cmdline`.
    pub fn with_cmdline(mut self, path: impl Into<PathBuf>) -> Self {
        self.cmdline = path.into();
        self
    }

    /// Runs these instead of `fw_printenv` and `fw_setenv` from `PATH`.
    pub fn with_tools(mut self, printenv: impl Into<PathBuf>, setenv: impl Into<PathBuf>) -> Self {
        self.printenv = printenv.into();
        self.setenv = setenv.into();
        self
    }

    /// The `fw_env.config` file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The trial-boot variables as the environment holds them now.
    pub fn vars(&self) -> Result<BootVars, BootError> {
        let (location, picked) = self.print()?;
        BootVars::parse(&location, |name| picked.get(name).map(String::as_str))
    }

    /// `fw_printenv -c CONFIG airlift_slot upgrade_available bootcount
    /// bootlimit`: one `name=value` line each, in that order, `name=` when
    /// unset. Asking by name keeps other variables (whose values may span
    /// lines) out of the way.
    fn print(&self) -> Result<(String, BTreeMap<&'static str, String>), BootError> {
        let mut args: Vec<OsString> = vec!["-c".into(), self.config.clone().into()];
        args.extend(NAMES.iter().map(OsString::from));
        let ran = tool::run(&self.printenv, PACKAGE, &args).map_err(|e| self.explain(e))?;
        let location = format!(
            "described by {} (read with `{}`)",
            self.config.display(),
            ran.command
        );
        if ran.stderr.contains(NO_VALID_ENV) {
            return Err(self.no_valid_env(&location, &ran.stderr));
        }
        let lines: Vec<&str> = ran.stdout.lines().collect();
        if lines.len() != NAMES.len() {
            return Err(BootError::InvalidEnv {
                location,
                reason: format!(
                    "expected {} lines, one per variable, got {}: {:?}",
                    NAMES.len(),
                    lines.len(),
                    ran.stdout
                ),
            });
        }
        let mut picked = BTreeMap::new();
        for (name, line) in NAMES.iter().zip(lines) {
            let value = line
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .ok_or_else(|| BootError::InvalidEnv {
                    location: location.clone(),
                    reason: format!("expected a line `{name}=...`, got {line:?}"),
                })?;
            picked.insert(*name, value.to_owned());
        }
        Ok((location, picked))
    }

    /// One `fw_setenv` with every pair, then a read back.
    fn store(&self, writes: &Writes) -> Result<(), BootError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut args: Vec<OsString> = vec!["-c".into(), self.config.clone().into()];
        for (name, value) in writes {
            args.push(name.into());
            args.push(value.into());
        }
        let ran = tool::run(&self.setenv, PACKAGE, &args).map_err(|e| self.explain(e))?;
        if ran.stderr.contains(NO_VALID_ENV) {
            // It stored the default environment plus our variables. Say so:
            // a person must check what the bootloader lost.
            let location = format!(
                "described by {} (written with `{}`)",
                self.config.display(),
                ran.command
            );
            return Err(self.no_valid_env(&location, &ran.stderr));
        }
        let (_, picked) = self.print()?;
        vars::verify_writes(
            &picked,
            writes,
            &ran.command,
            "; this backend needs libubootenv's fw_setenv (Debian: libubootenv-tool), which takes name value pairs",
        )?;
        tracing::info!(config = %self.config.display(), ?writes, "U-Boot environment written");
        Ok(())
    }

    fn no_valid_env(&self, location: &str, stderr: &str) -> BootError {
        BootError::InvalidEnv {
            location: location.to_owned(),
            reason: format!(
                "no copy has a valid CRC (never written, or a write was cut short), \
                 and the tool fell back to a default environment ({stderr:?}); \
                 the agent will not work on defaults: run `saveenv` in U-Boot or \
                 `fw_setenv -c {} -f DEFAULT_ENV_FILE airlift_slot a` once",
                self.config.display()
            ),
        }
    }

    /// Without a default environment file the tools fail outright instead;
    /// give that failure the same explanation.
    fn explain(&self, err: BootError) -> BootError {
        match err {
            BootError::Tool {
                command, stderr, ..
            } if stderr.contains(NO_VALID_ENV) => self.no_valid_env(
                &format!(
                    "described by {} (read with `{command}`)",
                    self.config.display()
                ),
                &stderr,
            ),
            other => other,
        }
    }
}

impl ToolEnv for UBootEnv {
    fn read_vars(&self) -> Result<BootVars, BootError> {
        self.vars()
    }

    fn write_vars(&self, writes: &Writes) -> Result<(), BootError> {
        self.store(writes)
    }

    fn cmdline_path(&self) -> &Path {
        &self.cmdline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::conformance::{self, Harness, TestResult};
    use crate::boot::BootOutcome;
    use crate::boot::{BootControl, Slot};
    use std::fs;
    use std::io;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    const ENV_SIZE: usize = 0x4000;

    /// A U-Boot environment in a file, described by a `fw_env.config` and
    /// initialised by the real `fw_setenv`, with a kernel command line that
    /// says slot `a` runs.
    struct UBoot {
        env: UBootEnv,
        dir: tempfile::TempDir,
        file: PathBuf,
    }

    impl UBoot {
        /// One copy at offset 0, or with `redundant` a second at 0x4000.
        fn new(redundant: bool) -> Result<Self, Box<dyn std::error::Error>> {
            let uboot = Self::uninitialised(redundant)?;
            // An all-zero file has no valid CRC; the tools then load the
            // default environment file and `fw_setenv` stores it with the
            // change. An empty default file makes an environment holding only
            // what is set here.
            let empty = uboot.dir.path().join("empty-default-env");
            fs::write(&empty, "")?;
            fw_setenv(
                &uboot.env.config,
                &[
                    "-f".as_ref(),
                    empty.as_ref(),
                    "airlift_slot".as_ref(),
                    "a".as_ref(),
                ],
            )?;
            Ok(uboot)
        }

        fn uninitialised(redundant: bool) -> Result<Self, Box<dyn std::error::Error>> {
            let dir = tempfile::tempdir()?;
            let file = dir.path().join("uboot.env");
            let copies = if redundant { 2 } else { 1 };
            fs::write(&file, vec![0u8; ENV_SIZE * copies])?;
            let mut config = format!(
                "# device offset size\n{} 0x0 {ENV_SIZE:#x}\n",
                file.display()
            );
            if redundant {
                config.push_str(&format!("{} {ENV_SIZE:#x} {ENV_SIZE:#x}\n", file.display()));
            }
            let config_path = dir.path().join("fw_env.config");
            fs::write(&config_path, config)?;
            let cmdline = dir.path().join("cmdline");
            write_cmdline(&cmdline, Slot::A)?;
            Ok(UBoot {
                env: UBootEnv::new(config_path).with_cmdline(cmdline),
                dir,
                file,
            })
        }
    }

    /// Runs the real tool directly, as a person would.
    fn fw_setenv(
        config: &Path,
        args: &[&std::ffi::OsStr],
    ) -> Result<(), Box<dyn std::error::Error>> {
        let output = Command::new("fw_setenv").arg("-c").arg(config).args(args).output().map_err(|e| {
            format!("cannot run fw_setenv ({e}); these tests need the real tool: run .ci/install-packages")
        })?;
        if !output.status.success() {
            return Err(format!(
                "fw_setenv {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(())
    }

    fn fw_printenv(config: &Path) -> Result<String, Box<dyn std::error::Error>> {
        let output = Command::new("fw_printenv").arg("-c").arg(config).output()?;
        if !output.status.success() {
            return Err(format!("fw_printenv: {}", String::from_utf8_lossy(&output.stderr)).into());
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    fn write_cmdline(path: &Path, slot: Slot) -> io::Result<()> {
        let part = if slot == Slot::A { 2 } else { 3 };
        fs::write(
            path,
            format!(
                "console=ttymxc0,115200 root=/dev/mmcblk0p{part} rootwait ro airlift.slot={slot}\n"
            ),
        )
    }

    impl Harness for UBootEnv {
        fn power_up(&mut self) -> Result<BootOutcome, BootError> {
            let (writes, outcome) = vars::power_up(&self.vars()?);
            self.store(&writes)?;
            write_cmdline(&self.cmdline, outcome.slot).map_err(|source| BootError::Io {
                action: "writing the test command line",
                path: self.cmdline.clone(),
                source,
            })?;
            Ok(outcome)
        }

        fn set_bootlimit(&mut self, limit: u32) -> Result<(), BootError> {
            self.store(&vec![(vars::BOOTLIMIT, limit.to_string())])
        }

        fn vars(&self) -> Result<BootVars, BootError> {
            UBootEnv::vars(self)
        }
    }

    #[test]
    fn conformance_through_the_real_fw_setenv() -> TestResult {
        conformance::run_all(|| {
            let uboot = UBoot::new(false)?;
            Ok((uboot.env, uboot.dir))
        })
    }

    #[test]
    fn conformance_with_a_redundant_environment() -> TestResult {
        conformance::run_all(|| {
            let uboot = UBoot::new(true)?;
            Ok((uboot.env, uboot.dir))
        })
    }

    #[test]
    fn transitions_keep_other_variables() -> TestResult {
        let mut uboot = UBoot::new(false)?;
        let bootcmd = "if test ${airlift_slot} = b; then run boot_b; else run boot_a; fi";
        let script = "line one\nbootcount=7";
        fw_setenv(
            uboot.env.config(),
            &[
                "bootcmd".as_ref(),
                bootcmd.as_ref(),
                "multiline".as_ref(),
                script.as_ref(),
            ],
        )?;
        uboot.env.start_trial(Slot::B)?;
        let vars = uboot.env.vars()?;
        assert_eq!(
            (
                vars.slot,
                vars.upgrade_available,
                vars.bootcount,
                vars.bootlimit
            ),
            (Some(Slot::B), true, 0, Some(3))
        );
        let listing = fw_printenv(uboot.env.config())?;
        assert!(
            listing.contains(&format!("bootcmd={bootcmd}\n")),
            "{listing}"
        );
        assert!(
            listing.contains(&format!("multiline={script}\n")),
            "{listing}"
        );
        Ok(())
    }

    #[test]
    fn an_uninitialised_environment_is_refused_and_left_alone() -> TestResult {
        let mut uboot = UBoot::uninitialised(false)?;
        let err = uboot.env.trial_pending().err();
        assert!(
            matches!(&err, Some(BootError::InvalidEnv { reason, .. }) if reason.contains("valid CRC")),
            "{err:?}"
        );
        assert!(uboot.env.start_trial(Slot::B).is_err());
        assert!(uboot.env.abandon_trial(Slot::A).is_err());
        assert!(
            fs::read(&uboot.file)?.iter().all(|&b| b == 0),
            "the environment was written"
        );
        Ok(())
    }

    #[test]
    fn a_bad_crc_is_refused_even_when_the_tool_falls_back_to_a_default_environment() -> TestResult {
        let mut uboot = UBoot::new(false)?;
        uboot.env.start_trial(Slot::B)?;
        // A write cut short: the data no longer matches the CRC.
        let mut bytes = fs::read(&uboot.file)?;
        let at = bytes
            .windows(b"airlift_slot=b".len())
            .position(|w| w == b"airlift_slot=b")
            .ok_or("variable not found")?;
        bytes[at + "airlift_slot=".len()] = b'x';
        fs::write(&uboot.file, &bytes)?;

        // On a device with /etc/u-boot-initial-env the tools carry on with it
        // and exit 0; play that with the real tools and a default file.
        let default_env = uboot.dir.path().join("u-boot-initial-env");
        fs::write(&default_env, "airlift_slot=a\nbootcmd=run airlift_boot\n")?;
        let mut tools = Vec::new();
        for name in ["fw_printenv", "fw_setenv"] {
            // libubootenv picks printenv or setenv by the name it runs as.
            let wrapper = uboot.dir.path().join(name);
            fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\nexec {name} -f '{}' \"$@\"\n",
                    default_env.display()
                ),
            )?;
            fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
            tools.push(wrapper);
        }
        let mut env = uboot.env.clone().with_tools(&tools[0], &tools[1]);
        let err = env.trial_pending().err();
        assert!(
            matches!(&err, Some(BootError::InvalidEnv { reason, .. }) if reason.contains(NO_VALID_ENV)),
            "{err:?}"
        );
        assert!(env.commit().is_err());
        assert!(env.abandon_trial(Slot::A).is_err());
        assert_eq!(fs::read(&uboot.file)?, bytes, "the environment was written");
        Ok(())
    }

    #[test]
    fn a_missing_config_reports_the_command_and_what_the_tool_said() -> TestResult {
        let uboot = UBoot::new(false)?;
        fs::remove_file(uboot.env.config())?;
        let message = uboot
            .env
            .trial_pending()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        // libubootenv 0.3.2 says "Configuration file wrong or corrupted".
        let config = uboot.env.config().display().to_string();
        assert!(
            message.contains(&format!("fw_printenv -c {config}")),
            "{message}"
        );
        assert!(message.contains("failed (exit status"), "{message}");
        assert!(
            !message.ends_with("(it printed nothing on standard error)"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn a_missing_tool_names_the_package() {
        let env = UBootEnv::new("/etc/fw_env.config")
            .with_tools("/nonexistent/fw_printenv", "/nonexistent/fw_setenv");
        let message = env
            .trial_pending()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("/nonexistent/fw_printenv") && message.contains("libubootenv-tool"),
            "{message}"
        );
    }

    #[test]
    fn a_tool_that_ignores_the_pairs_is_caught_by_the_read_back() -> TestResult {
        let uboot = UBoot::new(false)?;
        // u-boot-tools' fw_setenv joins everything after the name into one
        // value; play it with a tool that sets only the first name.
        let setenv = uboot.dir.path().join("fw_setenv");
        fs::write(&setenv, "#!/bin/sh\n# $1=-c $2=CONFIG $3=NAME, the rest joined\nc=$2; n=$3; shift 3\nexec fw_setenv -c \"$c\" \"$n\" \"$*\"\n")?;
        fs::set_permissions(&setenv, fs::Permissions::from_mode(0o755))?;
        let mut env = uboot.env.clone().with_tools("fw_printenv", &setenv);
        let err = env.start_trial(Slot::B).err();
        assert!(
            matches!(&err, Some(BootError::NotApplied { .. })),
            "{err:?}"
        );
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("libubootenv"), "{message}");
        Ok(())
    }
}
