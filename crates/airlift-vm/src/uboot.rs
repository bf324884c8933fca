//! The U-Boot half of the trial boot, run for real: Debian's `u-boot-qemu`
//! (`qemu_arm64`) in `qemu-system-aarch64`, sourcing the documented
//! `dist/u-boot/boot.cmd` from a small disk, with the environment kept where
//! libubootenv's `fw_printenv`/`fw_setenv` (the agent's tools) read and
//! write it. Each [`UBootDevice::power_up`] is one power-up of the machine.
//!
//! What it tests is the bootloader's *decision* (which slot, what kernel
//! command line, what it saves), not a Linux boot: the slots hold a 16-byte
//! marker file instead of a kernel, which the script really loads from the
//! slot's partition; where the script would start it (`booti`) the test
//! prints it and powers off. The other change: Debian's `qemu_arm64` U-Boot
//! keeps its environment in the second flash bank, and QEMU 7.2's flash
//! cannot take U-Boot's buffered writes (QEMU issue 2343: `saveenv` fails
//! with "Flash buffer write timeout"), so the test keeps the environment
//! the way `CONFIG_ENV_IS_IN_FAT` does: a `uboot.env` file on the FAT boot
//! partition, imported before the script runs (`env import -c`) and written
//! where the script says `saveenv` (`env export -c` + `fatwrite`), in the
//! very format `fw_setenv` reads and writes. See `docs/u-boot.md`.

use crate::{tool, VmError};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The documented script.
pub const BOOT_CMD: &str = include_str!("../../../dist/u-boot/boot.cmd");

/// Debian's U-Boot for QEMU's arm64 `virt` machine (package `u-boot-qemu`).
pub const UBOOT_BIN: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";

/// The size of `uboot.env` (the `fw_env.config` size and U-Boot's
/// `env export -s`).
pub const ENV_SIZE: u64 = 0x4000;

/// The programs this needs, with their Debian packages.
pub const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("mkimage", "u-boot-tools"),
    ("fw_setenv", "libubootenv-tool"),
    ("fw_printenv", "libubootenv-tool"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mke2fs", "e2fsprogs"),
    ("sfdisk", "fdisk"),
];

/// A power-up longer than this is a hang (one takes about 3 s emulated).
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

const SECTOR: u64 = 512;
/// Partitions (start sector, sectors): the FAT boot partition holding
/// `boot.scr` and `uboot.env`, then slots a and b (ext4), as `boot.cmd`'s
/// device part names them (`virtio 0:2`, `virtio 0:3`).
const BOOT_PART: (u64, u64) = (2048, 16384);
const SLOT_A_PART: (u64, u64) = (18432, 8192);
const SLOT_B_PART: (u64, u64) = (26624, 8192);
const DISK_BYTES: u64 = 20 * 1024 * 1024;

/// What is missing to run a [`UBootDevice`] here, as "program (package)";
/// empty when everything is installed.
pub fn missing() -> Vec<String> {
    let mut out: Vec<String> = TOOLS
        .iter()
        .filter(|(program, _)| tool::find(program).is_err())
        .map(|(program, package)| format!("{program} ({package})"))
        .collect();
    if !Path::new(UBOOT_BIN).is_file() {
        out.push(format!("{UBOOT_BIN} (u-boot-qemu)"));
    }
    out
}

/// `boot.cmd` as the test runs it: the documented file with the
/// environment's storage and the kernel start replaced (see the module
/// documentation); everything else, the whole trial logic, as written.
pub fn test_script() -> Result<String, VmError> {
    const SAVE: &str = "saveenv && airlift_saved=1";
    const BOOT: &str = "  booti ${kernel_addr_r} ${airlift_rd} ${fdtcontroladdr}";
    let mut script = String::from(
        "fatload virtio 0:1 ${ramdisk_addr_r} uboot.env && env import -c ${ramdisk_addr_r} 0x4000\n",
    );
    let mut changed = [0; 2];
    for line in BOOT_CMD.lines() {
        if line.trim_start() == SAVE {
            changed[0] += 1;
            script.push_str("  env export -c -s 0x4000 ${ramdisk_addr_r} && fatwrite virtio 0:1 ${ramdisk_addr_r} uboot.env 0x4000 && airlift_saved=1\n");
        } else if line == BOOT {
            changed[1] += 1;
            script.push_str("  md.b ${kernel_addr_r} 0x10\n  echo \"airlift-test: bootargs ${bootargs}\"\n  poweroff\n");
        } else {
            script.push_str(line);
            script.push('\n');
        }
    }
    if changed != [1, 1] {
        return Err(VmError::Unexpected {
            program: "dist/u-boot/boot.cmd",
            detail: format!(
                "changed shape: expected one `{SAVE}` and one `{BOOT}` line, found {changed:?}; update uboot.rs"
            ),
        });
    }
    Ok(script)
}

/// What one power-up did, read from the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// `a` or `b`: the slot the script booted.
    pub slot: String,
    /// The script booted the slot as a trial.
    pub trial: bool,
    /// The script fell back to the other slot on this power-up.
    pub fell_back: bool,
    /// The script could not save the environment on a trial boot, and
    /// booted the other slot instead.
    pub unsaved: bool,
    /// The kernel command line it set.
    pub bootargs: String,
    /// The marker of the "kernel" it loaded (`KERNEL-OF-SLOT-A`).
    pub kernel: String,
}

/// A disk with `boot.scr`, a U-Boot environment and two slots, booted by the
/// real U-Boot one power-up at a time.
#[derive(Debug)]
pub struct UBootDevice {
    dir: tempfile::TempDir,
    disk: PathBuf,
    config: PathBuf,
    env_file: PathBuf,
}

impl UBootDevice {
    /// A fresh device whose environment holds only `airlift_slot=a` (as
    /// `fw_setenv -f` with an empty default file makes it): it boots slot a.
    pub fn new() -> Result<Self, VmError> {
        let dir = tempfile::tempdir().map_err(VmError::io("creating", "a temporary directory"))?;
        let device = UBootDevice {
            disk: dir.path().join("disk.img"),
            config: dir.path().join("fw_env.config"),
            env_file: dir.path().join("uboot.env"),
            dir,
        };
        let path = |name: &str| device.dir.path().join(name);
        write(
            &device.config,
            format!("{} 0x0 {ENV_SIZE:#x}\n", device.env_file.display()),
        )?;
        write(&device.env_file, vec![0u8; ENV_SIZE as usize])?;
        write(&path("empty-env"), "")?;
        tool::run(
            tool::command("fw_setenv")?
                .arg("-c")
                .arg(&device.config)
                .arg("-f")
                .arg(path("empty-env"))
                .args(["airlift_slot", "a"]),
            None,
        )?;
        write(&path("boot.cmd"), test_script()?)?;
        tool::run(
            tool::command("mkimage")?
                .args([
                    "-A", "arm64", "-T", "script", "-C", "none", "-n", "airlift", "-d",
                ])
                .arg(path("boot.cmd"))
                .arg(path("boot.scr")),
            None,
        )?;
        device.build_disk()?;
        Ok(device)
    }

    fn build_disk(&self) -> Result<(), VmError> {
        let path = |name: &str| self.dir.path().join(name);
        let boot = path("boot.img");
        tool::run(
            tool::command("mkfs.vfat")?
                .arg("-C")
                .arg(&boot)
                .arg((BOOT_PART.1 * SECTOR / 1024).to_string()),
            None,
        )?;
        tool::run(
            mtools("mcopy")?
                .arg("-i")
                .arg(&boot)
                .arg(path("boot.scr"))
                .arg(&self.env_file)
                .arg("::"),
            None,
        )?;
        let mut parts = vec![(BOOT_PART, boot)];
        for (slot, part) in [("a", SLOT_A_PART), ("b", SLOT_B_PART)] {
            let tree = path(&format!("slot-{slot}"));
            fs::create_dir_all(tree.join("boot")).map_err(VmError::io("creating", &tree))?;
            let marker = format!("KERNEL-OF-SLOT-{}", slot.to_uppercase());
            write(&tree.join("boot/Image"), marker)?;
            let image = path(&format!("slot-{slot}.img"));
            tool::run(
                tool::command("mke2fs")?
                    .args(["-q", "-t", "ext4", "-d"])
                    .arg(&tree)
                    .arg(&image)
                    .arg(format!("{}k", part.1 * SECTOR / 1024)),
                None,
            )?;
            parts.push((part, image));
        }
        let file = fs::File::create(&self.disk).map_err(VmError::io("creating", &self.disk))?;
        file.set_len(DISK_BYTES)
            .map_err(VmError::io("sizing", &self.disk))?;
        let table = parts
            .iter()
            .enumerate()
            .map(|(i, ((start, size), _))| {
                let kind = if i == 0 { "c" } else { "83" };
                format!("start={start}, size={size}, type={kind}\n")
            })
            .collect::<String>();
        tool::run(
            tool::command("sfdisk")?.arg("-q").arg(&self.disk),
            Some(format!("label: dos\n{table}").as_bytes()),
        )?;
        let mut disk = fs::OpenOptions::new()
            .write(true)
            .open(&self.disk)
            .map_err(VmError::io("opening", &self.disk))?;
        for ((start, _), image) in &parts {
            let bytes = fs::read(image).map_err(VmError::io("reading", image))?;
            disk.seek(SeekFrom::Start(start * SECTOR))
                .and_then(|_| disk.write_all(&bytes))
                .map_err(VmError::io("writing", &self.disk))?;
        }
        Ok(())
    }

    /// The `fw_env.config` describing the environment file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Sets variables in one `fw_setenv` (as the agent does) on the
    /// environment the bootloader saved last.
    pub fn setenv(&self, pairs: &[(&str, &str)]) -> Result<(), VmError> {
        self.env_from_disk()?;
        let mut command = tool::command("fw_setenv")?;
        command.arg("-c").arg(&self.config);
        for (name, value) in pairs {
            command.args([name, value]);
        }
        tool::run(&mut command, None)?;
        tool::run(
            mtools("mcopy")?
                .arg("-o")
                .arg("-i")
                .arg(self.boot_partition())
                .arg(&self.env_file)
                .arg("::uboot.env"),
            None,
        )?;
        Ok(())
    }

    /// The trial-boot variables as the bootloader left them, read with
    /// `fw_printenv` (an unset one is absent).
    pub fn printenv(&self) -> Result<BTreeMap<String, String>, VmError> {
        self.env_from_disk()?;
        let out = tool::run(
            tool::command("fw_printenv")?.arg("-c").arg(&self.config),
            None,
        )?;
        let wanted = [
            "airlift_slot",
            "upgrade_available",
            "bootcount",
            "bootlimit",
        ];
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|line| line.split_once('='))
            .filter(|(name, _)| wanted.contains(name))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }

    /// The environment file's bytes on the disk now.
    pub fn env_bytes(&self) -> Result<Vec<u8>, VmError> {
        self.env_from_disk()?;
        fs::read(&self.env_file).map_err(VmError::io("reading", &self.env_file))
    }

    fn env_from_disk(&self) -> Result<(), VmError> {
        tool::run(
            mtools("mcopy")?
                .arg("-o")
                .arg("-i")
                .arg(self.boot_partition())
                .arg("::uboot.env")
                .arg(&self.env_file),
            None,
        )?;
        Ok(())
    }

    /// mtools' name for the FAT file system inside the disk image.
    fn boot_partition(&self) -> String {
        format!("{}@@{}", self.disk.display(), BOOT_PART.0 * SECTOR)
    }

    /// Powers the machine up once: U-Boot finds `boot.scr`, the script
    /// decides, loads the slot's "kernel" and powers off.
    pub fn power_up(&self) -> Result<Boot, VmError> {
        self.power_up_with(false)
    }

    /// [`power_up`](Self::power_up) with the disk read-only, so that saving
    /// the environment fails.
    pub fn power_up_read_only(&self) -> Result<Boot, VmError> {
        self.power_up_with(true)
    }

    fn power_up_with(&self, read_only: bool) -> Result<Boot, VmError> {
        let console = self.dir.path().join("console.log");
        let log = fs::File::create(&console).map_err(VmError::io("creating", &console))?;
        let log_err = log.try_clone().map_err(VmError::io("opening", &console))?;
        let mut child = tool::command("qemu-system-aarch64")?
            .args(["-machine", "virt", "-cpu", "cortex-a57", "-m", "256"])
            .args([
                "-nographic",
                "-no-reboot",
                "-nic",
                "none",
                "-monitor",
                "none",
            ])
            .args(["-serial", "stdio", "-bios", UBOOT_BIN, "-drive"])
            .arg(format!(
                "if=virtio,format=raw,readonly={},file={}",
                if read_only { "on" } else { "off" },
                self.disk.display()
            ))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(VmError::io("starting", "qemu-system-aarch64"))?;
        let started = Instant::now();
        loop {
            if child
                .try_wait()
                .map_err(VmError::io("waiting for", "qemu-system-aarch64"))?
                .is_some()
            {
                break;
            }
            if started.elapsed() > BOOT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = fs::read(&console).map_err(VmError::io("reading", &console))?;
        parse_console(&String::from_utf8_lossy(&text))
    }
}

fn parse_console(text: &str) -> Result<Boot, VmError> {
    let booting = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("airlift: booting slot "));
    let bootargs = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("airlift-test: bootargs "));
    let kernel = text
        .lines()
        .find_map(|l| l.find("KERNEL-OF-SLOT-").map(|at| &l[at..]));
    match (booting, bootargs, kernel) {
        (Some(booting), Some(bootargs), Some(kernel)) => Ok(Boot {
            slot: booting.chars().take(1).collect(),
            trial: booting.contains("(trial 1,"),
            fell_back: text.contains("falling back"),
            unsaved: text.contains("airlift: cannot save the boot count"),
            bootargs: bootargs.to_owned(),
            kernel: kernel.trim().to_owned(),
        }),
        _ => {
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            Err(VmError::Timeout {
                wanted: "airlift: booting slot …, the kernel's marker and airlift-test: bootargs …"
                    .to_owned(),
                waited_secs: BOOT_TIMEOUT.as_secs(),
                tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            })
        }
    }
}

/// An mtools command that does not refuse a file system it did not make.
fn mtools(program: &str) -> Result<Command, VmError> {
    let mut command = tool::command(program)?;
    command.env("MTOOLS_SKIP_CHECK", "1");
    Ok(command)
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), VmError> {
    fs::write(path, bytes).map_err(VmError::io("writing", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_script_keeps_the_trial_logic_and_swaps_two_lines() -> Result<(), VmError> {
        let script = test_script()?;
        assert!(!script.contains("saveenv &&"), "{script}");
        assert!(!script.contains("booti "), "{script}");
        for line in BOOT_CMD.lines().filter(|l| l.contains("bootcount")) {
            assert!(script.contains(line), "{line:?} is missing");
        }
        Ok(())
    }

    #[test]
    fn a_console_without_a_boot_is_an_error_with_its_tail() {
        let err = parse_console("U-Boot 2023.01\n=> ").err();
        assert!(
            matches!(&err, Some(VmError::Timeout { tail, .. }) if tail.contains("U-Boot")),
            "{err:?}"
        );
    }
}
