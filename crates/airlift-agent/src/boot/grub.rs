//! [`GrubEnv`]: boot control through GRUB's environment block and
//! `grub-editenv`.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::atomic::{sync_parent, temp_path};
use super::tool_env::ToolEnv;
use super::vars::{self, BootVars, Writes};
use super::{cmdline, tool, BootError};

const PACKAGE: &str = "grub-common";

/// Boot control for GRUB: the variables live in the `grubenv` file, read with
/// `grub-editenv FILE list` and written with `grub-editenv FILE set ...`;
/// `grub.cfg` does the counting (see the [module documentation](super)). The
/// running slot comes from the kernel command line.
///
/// `grub-editenv set` rewrites the file in place: it opens it with `O_TRUNC`
/// and then writes the new 1024 bytes, so a power cut in between leaves an
/// empty `grubenv`, which GRUB reads as "no variables" (no trial, slot `a`).
/// So [`GrubEnv`] runs `grub-editenv` on a copy beside the file and renames
/// the copy over it: the file holds the old variables or the new ones. A
/// symlinked `grubenv` (some distributions link it into the EFI partition)
/// is resolved first and stays a symlink.
#[derive(Debug, Clone)]
pub struct GrubEnv {
    grubenv: PathBuf,
    cmdline: PathBuf,
    tool: PathBuf,
}

impl GrubEnv {
    /// Boot control through the environment block `grubenv` (usually
    /// `/boot/grub/grubenv`), with `grub-editenv` from `PATH` and the running
    /// slot from `/proc/cmdline`.
    pub fn new(grubenv: impl Into<PathBuf>) -> Self {
        GrubEnv {
            grubenv: grubenv.into(),
            cmdline: PathBuf::from(cmdline::PROC_CMDLINE),
            tool: PathBuf::from("grub-editenv"),
        }
    }

    /// Reads the kernel command line from `path` instead of `/proc/cmdline`.
    pub fn with_cmdline(mut self, path: impl Into<PathBuf>) -> Self {
        self.cmdline = path.into();
        self
    }

    /// Runs `path` instead of `grub-editenv` from `PATH`.
    pub fn with_tool(mut self, path: impl Into<PathBuf>) -> Self {
        self.tool = path.into();
        self
    }

    /// The environment block.
    pub fn grubenv(&self) -> &Path {
        &self.grubenv
    }

    /// The trial-boot variables as the environment block holds them now.
    pub fn vars(&self) -> Result<BootVars, BootError> {
        let (location, picked) = self.list()?;
        BootVars::parse(&location, |name| picked.get(name).map(String::as_str))
    }

    /// `grub-editenv FILE list`, after checking that the file exists:
    /// given a missing file, `grub-editenv list` creates a fresh, empty
    /// block, lists nothing and exits 0.
    fn list(
        &self,
    ) -> Result<(String, std::collections::BTreeMap<&'static str, String>), BootError> {
        match fs::metadata(&self.grubenv) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(self.io_error(
                    "reading the GRUB environment",
                    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
                ))
            }
            Err(e) => return Err(self.io_error("reading the GRUB environment", e)),
        }
        let args = [self.grubenv.clone().into_os_string(), "list".into()];
        let ran = tool::run(&self.tool, PACKAGE, &args)?;
        let location = format!("{} (listed by `{}`)", self.grubenv.display(), ran.command);
        let picked = vars::pick_from_listing(&location, &ran.stdout)?;
        Ok((location, picked))
    }

    /// Writes `writes` in one `grub-editenv set` on a copy, then renames the
    /// copy over the real file, then reads the variables back.
    fn store(&self, writes: &Writes) -> Result<(), BootError> {
        if writes.is_empty() {
            return Ok(());
        }
        let real = fs::canonicalize(&self.grubenv)
            .map_err(|e| self.io_error("resolving the GRUB environment", e))?;
        let tmp = temp_path(&real)
            .map_err(|e| self.io_error("naming a copy of the GRUB environment", e))?;
        let result = self.edit_copy_and_replace(&real, &tmp, writes);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        let command = result?;
        let (_, picked) = self.list()?;
        vars::verify_writes(&picked, writes, &command, "")?;
        tracing::info!(grubenv = %self.grubenv.display(), ?writes, "GRUB environment written");
        Ok(())
    }

    fn edit_copy_and_replace(
        &self,
        real: &Path,
        tmp: &Path,
        writes: &Writes,
    ) -> Result<String, BootError> {
        let io_error = |action, source| BootError::Io {
            action,
            path: tmp.to_owned(),
            source,
        };
        fs::copy(real, tmp).map_err(|e| io_error("copying the GRUB environment to", e))?;
        let mut args: Vec<OsString> = vec![tmp.into(), "set".into()];
        args.extend(
            writes
                .iter()
                .map(|(name, value)| OsString::from(format!("{name}={value}"))),
        );
        let ran = tool::run(&self.tool, PACKAGE, &args)?;
        fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error("syncing", e))?;
        fs::rename(tmp, real).map_err(|e| io_error("renaming into place", e))?;
        sync_parent(real).map_err(|e| self.io_error("syncing the directory of", e))?;
        Ok(ran.command)
    }

    fn io_error(&self, action: &'static str, source: io::Error) -> BootError {
        BootError::Io {
            action,
            path: self.grubenv.clone(),
            source,
        }
    }
}

impl ToolEnv for GrubEnv {
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
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    /// A GRUB environment made by the real `grub-editenv`, in a temporary
    /// directory, with a kernel command line that says slot `a` runs.
    struct Grub {
        env: GrubEnv,
        dir: tempfile::TempDir,
    }

    impl Grub {
        fn new() -> Result<Self, Box<dyn std::error::Error>> {
            let dir = tempfile::tempdir()?;
            let grubenv = dir.path().join("grubenv");
            editenv(&grubenv, &["create"])?;
            let cmdline = dir.path().join("cmdline");
            write_cmdline(&cmdline, Slot::A)?;
            Ok(Grub {
                env: GrubEnv::new(grubenv).with_cmdline(cmdline),
                dir,
            })
        }
    }

    /// Runs the real tool directly, as a person would.
    fn editenv(file: &Path, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
        let output = Command::new("grub-editenv").arg(file).args(args).output().map_err(|e| {
            format!("cannot run grub-editenv ({e}); these tests need the real tool: run .ci/install-packages")
        })?;
        if !output.status.success() {
            return Err(format!(
                "grub-editenv {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    fn write_cmdline(path: &Path, slot: Slot) -> io::Result<()> {
        fs::write(
            path,
            format!(
                "BOOT_IMAGE=/boot/vmlinuz-{slot} root=/dev/sda2 ro airlift.slot={slot} quiet\n"
            ),
        )
    }

    impl Harness for GrubEnv {
        fn power_up(&mut self) -> Result<BootOutcome, BootError> {
            let (writes, outcome) = vars::power_up(&self.vars()?);
            self.store(&writes)?;
            write_cmdline(&self.cmdline, outcome.slot)
                .map_err(|e| self.io_error("writing the test command line", e))?;
            Ok(outcome)
        }

        fn set_bootlimit(&mut self, limit: u32) -> Result<(), BootError> {
            self.store(&vec![(vars::BOOTLIMIT, limit.to_string())])
        }

        fn vars(&self) -> Result<BootVars, BootError> {
            GrubEnv::vars(self)
        }
    }

    #[test]
    fn conformance_through_the_real_grub_editenv() -> TestResult {
        conformance::run_all(|| {
            let grub = Grub::new()?;
            Ok((grub.env, grub.dir))
        })
    }

    #[test]
    fn transitions_keep_other_variables_and_the_block_format() -> TestResult {
        let mut grub = Grub::new()?;
        editenv(
            grub.env.grubenv(),
            &[
                "set",
                "saved_entry=1",
                "next_entry=",
                "kernel_opts=quiet splash",
            ],
        )?;
        grub.env.start_trial(Slot::B)?;
        let listing = editenv(grub.env.grubenv(), &["list"])?;
        for line in [
            "saved_entry=1",
            "next_entry=",
            "kernel_opts=quiet splash",
            "airlift_slot=b",
            "upgrade_available=1",
            "bootcount=0",
            "bootlimit=3",
        ] {
            assert!(
                listing.lines().any(|l| l == line),
                "{line:?} missing from:\n{listing}"
            );
        }
        let block = fs::read(grub.env.grubenv())?;
        assert_eq!(
            block.len(),
            1024,
            "GRUB's save_env needs the 1024-byte block"
        );
        assert!(block.starts_with(b"# GRUB Environment Block\n"));
        Ok(())
    }

    #[test]
    fn writes_replace_the_file_and_leave_no_copy_behind() -> TestResult {
        let mut grub = Grub::new()?;
        let before = fs::metadata(grub.env.grubenv())?.ino();
        grub.env.start_trial(Slot::B)?;
        assert_ne!(
            fs::metadata(grub.env.grubenv())?.ino(),
            before,
            "grubenv was rewritten in place"
        );
        let mut names: Vec<_> = fs::read_dir(grub.dir.path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        assert_eq!(names, ["cmdline", "grubenv"]);
        Ok(())
    }

    #[test]
    fn a_symlinked_grubenv_stays_a_symlink() -> TestResult {
        let grub = Grub::new()?;
        let efi = grub.dir.path().join("efi");
        fs::create_dir(&efi)?;
        let target = efi.join("grubenv");
        fs::rename(grub.env.grubenv(), &target)?;
        std::os::unix::fs::symlink(&target, grub.env.grubenv())?;
        let mut env = grub.env.clone();
        env.start_trial(Slot::B)?;
        assert!(fs::symlink_metadata(env.grubenv())?
            .file_type()
            .is_symlink());
        assert!(editenv(&target, &["list"])?.contains("upgrade_available=1"));
        assert_eq!(
            fs::read_dir(&efi)?.count(),
            1,
            "a copy was left in the target's directory"
        );
        Ok(())
    }

    #[test]
    fn a_missing_grubenv_is_an_error_not_an_empty_environment() -> TestResult {
        let grub = Grub::new()?;
        fs::remove_file(grub.env.grubenv())?;
        // The tool itself would create a fresh, empty block and list that:
        assert_eq!(editenv(grub.env.grubenv(), &["list"])?, "");
        assert_eq!(fs::metadata(grub.env.grubenv())?.len(), 1024);
        fs::remove_file(grub.env.grubenv())?;
        let mut env = grub.env.clone();
        let err = env.trial_pending().err();
        assert!(
            matches!(&err, Some(BootError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(env.start_trial(Slot::B).is_err());
        assert!(env.abandon_trial(Slot::A).is_err());
        assert!(!env.grubenv().exists(), "a missing grubenv was created");
        Ok(())
    }

    #[test]
    fn an_invalid_block_reports_the_command_and_what_grub_editenv_said() -> TestResult {
        let grub = Grub::new()?;
        fs::write(grub.env.grubenv(), [b'x'; 1024])?;
        let message = grub
            .env
            .trial_pending()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("grub-editenv") && message.contains(" list"),
            "{message}"
        );
        assert!(message.contains("invalid environment block"), "{message}");
        Ok(())
    }

    #[test]
    fn bad_values_are_refused_not_guessed() -> TestResult {
        let mut grub = Grub::new()?;
        editenv(grub.env.grubenv(), &["set", "upgrade_available=yes"])?;
        let err = grub.env.start_trial(Slot::B).err();
        assert!(matches!(err, Some(BootError::InvalidEnv { .. })), "{err:?}");
        assert!(editenv(grub.env.grubenv(), &["list"])?.contains("upgrade_available=yes"));
        Ok(())
    }

    #[test]
    fn a_missing_tool_names_the_package() {
        let env = GrubEnv::new("/boot/grub/grubenv").with_tool("/nonexistent/grub-editenv");
        // The file check comes first; point it at a file that exists.
        let env = GrubEnv {
            grubenv: PathBuf::from("/proc/self/status"),
            ..env
        };
        let message = env
            .trial_pending()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("/nonexistent/grub-editenv") && message.contains("grub-common"),
            "{message}"
        );
    }

    #[test]
    fn the_running_slot_comes_from_the_command_line() -> TestResult {
        let grub = Grub::new()?;
        assert_eq!(grub.env.booted_slot()?, Slot::A);
        write_cmdline(&grub.env.cmdline, Slot::B)?;
        assert_eq!(grub.env.booted_slot()?, Slot::B);
        fs::write(&grub.env.cmdline, "root=/dev/sda2 ro\n")?;
        let err = grub.env.booted_slot().err();
        assert!(
            matches!(err, Some(BootError::BootedSlotUnknown { .. })),
            "{err:?}"
        );
        Ok(())
    }

    /// The `grub.cfg` of the module documentation, run by the real GRUB
    /// (`grub-emu`, GRUB built as a Linux program) on a real ext2 image:
    /// the bootloader's half of the conformance story, with nothing modelled.
    mod real_grub {
        use super::*;
        use std::process::{Output, Stdio};
        use std::time::{Duration, Instant};

        /// The documented `grub.cfg` (`dist/grub.cfg`), changed only where an
        /// emulator needs it: no serial console, the environment is on the
        /// image (`(hd0)`), and the menu entry prints the kernel command
        /// line instead of loading a kernel.
        fn emulator_cfg() -> Result<String, Box<dyn std::error::Error>> {
            let documented = include_str!("../../../../dist/grub.cfg");
            let mut cfg = String::from("set root=(hd0)\n");
            let mut changed = [0; 5];
            for line in documented.lines() {
                let line = if let Some(rest) = line.strip_prefix("load_env ") {
                    changed[0] += 1;
                    format!("load_env -f (hd0)/grubenv {rest}")
                } else if let Some(rest) = line.strip_prefix("  save_env ") {
                    changed[1] += 1;
                    format!("  save_env -f (hd0)/grubenv {rest}")
                } else if let Some(rest) = line.strip_prefix("  linux ") {
                    // Kernel and command line on lines of their own: the
                    // emulator's screen wraps at 80 columns.
                    changed[2] += 1;
                    let (kernel, cmdline) = rest.split_once(' ').unwrap_or((rest, ""));
                    format!("  echo linux {kernel}\n  echo cmdline {cmdline}")
                } else if line.starts_with("  initrd ") {
                    changed[2] += 1;
                    format!("  echo {}", line.trim_start())
                } else if line == "}" {
                    changed[3] += 1;
                    "  halt\n}".to_owned()
                } else if line.starts_with("serial ") || line.starts_with("terminal_") {
                    changed[4] += 1;
                    continue;
                } else {
                    line.to_owned()
                };
                cfg.push_str(&line);
                cfg.push('\n');
            }
            if changed != [1, 1, 2, 1, 3] {
                return Err(format!(
                    "dist/grub.cfg changed shape ({changed:?}); update this test:\n{cfg}"
                )
                .into());
            }
            Ok(cfg)
        }

        /// `mke2fs` and `debugfs` live in /usr/sbin, which not every PATH has.
        fn sbin(name: &str) -> PathBuf {
            let path = Path::new("/usr/sbin").join(name);
            if path.exists() {
                path
            } else {
                PathBuf::from(name)
            }
        }

        fn run(mut command: Command, what: &str) -> Result<Output, Box<dyn std::error::Error>> {
            let mut child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| {
                    format!(
                        "cannot run {what} ({e}); these tests need it: run .ci/install-packages"
                    )
                })?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                    return Err(format!("{what} did not finish in 30 s").into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let output = child.wait_with_output()?;
            if !output.status.success() {
                return Err(format!(
                    "{what} failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                )
                .into());
            }
            Ok(output)
        }

        /// A device whose bootloader is the real GRUB running the documented
        /// `grub.cfg`; the agent's side is [`GrubEnv`] on the host copy of
        /// `grubenv`, which each power-up puts on a fresh ext2 image and
        /// takes back after GRUB ran.
        struct Device {
            env: GrubEnv,
            dir: tempfile::TempDir,
            /// The kernel GRUB booted last (`(hd0,gpt3)/boot/vmlinuz`).
            kernel: PathBuf,
        }

        impl Device {
            fn new() -> Result<Self, Box<dyn std::error::Error>> {
                let Grub { env, dir } = Grub::new()?;
                fs::create_dir(dir.path().join("prefix"))?;
                fs::write(dir.path().join("prefix/grub.cfg"), emulator_cfg()?)?;
                fs::create_dir(dir.path().join("image-root"))?;
                fs::write(
                    dir.path().join("device.map"),
                    format!("(hd0) {}\n", dir.path().join("disk.img").display()),
                )?;
                let kernel = dir.path().join("kernel");
                Ok(Device { env, dir, kernel })
            }

            fn boot_grub(&self) -> Result<BootOutcome, Box<dyn std::error::Error>> {
                let dir = self.dir.path();
                let before = self.env.vars()?;
                fs::copy(self.env.grubenv(), dir.join("image-root/grubenv"))?;
                let image = dir.join("disk.img");
                let _ = fs::remove_file(&image);
                let mut mke2fs = Command::new(sbin("mke2fs"));
                mke2fs
                    .args(["-q", "-F", "-t", "ext2", "-d"])
                    .arg(dir.join("image-root"))
                    .arg(&image)
                    .arg("2M");
                run(mke2fs, "mke2fs")?;

                let mut emu = Command::new("grub-emu");
                emu.arg("-d")
                    .arg(dir.join("prefix"))
                    .arg("-m")
                    .arg(dir.join("device.map"));
                let output = run(emu, "grub-emu")?;
                let screen =
                    String::from_utf8_lossy(&output.stdout).replace(['\u{1b}', '\r'], "\n");
                if screen.contains("error") {
                    return Err(format!("GRUB reported an error:\n{screen}").into());
                }
                // `linux (hd0,gpt3)/boot/vmlinuz`, then `cmdline root=… airlift.slot=a …`.
                let kernel = screen
                    .lines()
                    .find_map(|line| line.strip_prefix("linux ("))
                    .ok_or_else(|| format!("GRUB booted no kernel:\n{screen}"))?;
                let kernel_cmdline = screen
                    .lines()
                    .find_map(|line| line.strip_prefix("cmdline "))
                    .ok_or_else(|| format!("GRUB passed no command line:\n{screen}"))?;
                fs::write(&self.kernel, format!("({}\n", kernel.trim_end()))?;
                fs::write(
                    &self.env.cmdline,
                    format!("{}\n", kernel_cmdline.trim_end()),
                )?;

                let mut debugfs = Command::new(sbin("debugfs"));
                debugfs
                    .arg("-R")
                    .arg(format!("dump /grubenv {}", self.env.grubenv().display()))
                    .arg(&image);
                run(debugfs, "debugfs")?;

                let after = self.env.vars()?;
                let slot = self.env.booted_slot()?;
                let fell_back = before.upgrade_available && !after.upgrade_available;
                if fell_back && slot == before.next_slot() {
                    return Err("GRUB ended the trial but booted the trial slot".into());
                }
                Ok(BootOutcome {
                    slot,
                    trial: after.upgrade_available,
                    fell_back,
                })
            }
        }

        impl BootControl for Device {
            fn booted_slot(&self) -> Result<Slot, BootError> {
                self.env.booted_slot()
            }
            fn start_trial(&mut self, slot: Slot) -> Result<(), BootError> {
                self.env.start_trial(slot)
            }
            fn commit(&mut self) -> Result<(), BootError> {
                self.env.commit()
            }
            fn abandon_trial(&mut self, previous: Slot) -> Result<(), BootError> {
                self.env.abandon_trial(previous)
            }
            fn trial_pending(&self) -> Result<bool, BootError> {
                self.env.trial_pending()
            }
        }

        impl Harness for Device {
            fn power_up(&mut self) -> Result<BootOutcome, BootError> {
                self.boot_grub().map_err(|e| BootError::InvalidEnv {
                    location: "the emulated device".to_owned(),
                    reason: e.to_string(),
                })
            }
            fn set_bootlimit(&mut self, limit: u32) -> Result<(), BootError> {
                Harness::set_bootlimit(&mut self.env, limit)
            }
            fn vars(&self) -> Result<BootVars, BootError> {
                self.env.vars()
            }
        }

        #[test]
        fn the_documented_grub_cfg_does_the_trial_boot_in_real_grub() -> TestResult {
            conformance::run_all(|| Ok((Device::new()?, ())))
        }

        #[test]
        fn the_documented_grub_cfg_passes_the_slot_and_its_root_to_the_kernel() -> TestResult {
            let mut device = Device::new()?;
            device.power_up()?;
            let cmdline = fs::read_to_string(&device.env.cmdline)?;
            let console = "console=ttyS0,115200 panic=1";
            assert_eq!(
                cmdline,
                format!("root=/dev/vda3 ro airlift.slot=a {console}\n")
            );
            let kernel = fs::read_to_string(&device.kernel)?;
            assert_eq!(kernel, "(hd0,gpt3)/boot/vmlinuz\n");
            device.start_trial(Slot::B)?;
            device.power_up()?;
            let cmdline = fs::read_to_string(&device.env.cmdline)?;
            assert_eq!(
                cmdline,
                format!("root=/dev/vda4 ro airlift.slot=b {console}\n")
            );
            let kernel = fs::read_to_string(&device.kernel)?;
            assert_eq!(kernel, "(hd0,gpt4)/boot/vmlinuz\n");
            Ok(())
        }
    }
}
