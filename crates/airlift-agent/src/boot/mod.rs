//! Boot control: which slot boots next, and the trial boot that keeps a new
//! version only if it comes up healthy.
//!
//! The device has two root slots, `a` and `b`. An update is installed into
//! the slot that is not running, then *armed* as a one-shot trial: the
//! bootloader boots it, counting the boots, and if the agent has not
//! committed it after `bootlimit` boots the bootloader falls back to the other
//! slot by itself. The agent never has to be alive for a rollback to happen.
//!
//! [`BootControl`] is what the agent sees. Its backends:
//!
//! - [`GrubEnv`]: GRUB, through `grub-editenv` on the `grubenv` file.
//! - [`UBootEnv`]: U-Boot, through libubootenv's `fw_printenv`/`fw_setenv`.
//! - [`FileBootEnv`]: a key=value file plus [`FileBootEnv::boot`], which does
//!   what the bootloader does on power-up. Tests and the simulator use it.
//!
//! # The variables
//!
//! All backends keep the same variables, the ones U-Boot's bootcount feature
//! already uses, plus the active slot:
//!
//! | variable            | meaning                                                        |
//! |---------------------|----------------------------------------------------------------|
//! | `airlift_slot`      | `a` or `b`: the slot the bootloader boots                      |
//! | `upgrade_available` | `1` while a trial boot is armed or running, else `0` (or unset) |
//! | `bootcount`         | boots counted during the trial                                 |
//! | `bootlimit`         | trial boots allowed before falling back; unset means [`DEFAULT_BOOTLIMIT`] |
//!
//! The slot that is *running* is not read from the environment (which says
//! what boots *next*) but from the kernel command line: the bootloader passes
//! `airlift.slot=a` or `airlift.slot=b` (see the snippets below), and the
//! real backends read it from `/proc/cmdline` (configurable, for tests).
//! [`FileBootEnv`] records it as `airlift_booted`.
//!
//! # The trial boot
//!
//! ```text
//!                 agent: start_trial(b)
//!                 airlift_slot=b upgrade_available=1 bootcount=0 (bootlimit=3 if unset)
//!                          │
//!                          ▼  reboot
//!   ┌──────────────▶ bootloader, on power-up
//!   │                      │
//!   │             upgrade_available == 1 ? ──no──▶ boot airlift_slot (a normal boot)
//!   │                      │ yes
//!   │                 bootcount += 1
//!   │                      │
//!   │             bootcount > bootlimit ? ──yes──▶ fall back ("altbootcmd"):
//!   │                      │ no                    airlift_slot = other, upgrade_available=0,
//!   │                      ▼                       bootcount=0; boot airlift_slot (the old one)
//!   │             boot airlift_slot (the trial)
//!   │                      │
//!   │             agent: health checks
//!   │               │          │           │
//!   │   crash, hang, power cut │           └─ pass ─▶ commit(): upgrade_available=0,
//!   └───────────────┘          │                       bootcount=0; airlift_slot stays
//!                              └─ fail ─▶ abandon_trial(a): airlift_slot=a,
//!                                          upgrade_available=0, bootcount=0; reboot
//! ```
//!
//! With `bootlimit=3` the trial slot gets boots 1, 2 and 3; the fourth boot
//! without a commit falls back. Every transition writes all its variables in
//! one tool invocation (one file write), so a power cut leaves either the old
//! transition or the new one, never half of one (for U-Boot, given a
//! redundant environment: see below). [`BootControl`] also refuses
//! the transitions that would make the fallback wrong: arming a trial of the
//! running slot (the fallback would then boot the slot just overwritten),
//! arming a second trial over a pending one, committing before the trial slot
//! has actually booted, and arming a trial with `bootlimit=0` (U-Boot reads 0
//! as "no limit").
//!
//! # Making it real: GRUB
//!
//! `grub.cfg` is the file `dist/grub.cfg`, shown here. Its first part is
//! the device's own (the console, each slot's partition as GRUB and Linux
//! name it, the rest of the kernel command line: these values are those of
//! the virtual machine in `crates/airlift-vm`, see `docs/vm-device.md`); the
//! trial boot after it is the same on every device. GRUB has no arithmetic,
//! so the count goes up by comparison; `test` does compare numbers (`-gt`).
//! Keep `bootlimit` at 9 or below with this script. The tests run this very
//! file in the real GRUB (`grub-emu` booting an ext2 image) through the
//! whole trial-boot story, and the virtual machine's tests boot it on a
//! disk, so it is known to work as written (GRUB 2.06).
//!
#![doc = concat!("```text\n", include_str!("../../../../dist/grub.cfg"), "```")]
//!
//! `save_env` only works when `grubenv` is on a file system GRUB can write
//! in place (ext2/3/4 or FAT; not btrfs, LVM, RAID or an encrypted disk).
//! Create it once with `grub-editenv /boot/grub/grubenv create` and give the
//! agent `GrubEnv::new("/boot/grub/grubenv")`.
//!
//! # Making it real: U-Boot
//!
//! Build U-Boot with `CONFIG_BOOTCOUNT_LIMIT=y` and `CONFIG_BOOTCOUNT_ENV=y`:
//! U-Boot then counts boots in `bootcount` while `upgrade_available=1`, and
//! runs `altbootcmd` instead of `bootcmd` once `bootcount > bootlimit`. In the
//! default environment:
//!
//! ```text
//! airlift_slot=a
//! upgrade_available=0
//! bootcount=0
//! bootlimit=3
//! airlift_boot=if test "${airlift_slot}" = "b"; then setenv airlift_part 3; else setenv airlift_part 2; fi; setenv bootargs "${bootargs_base} root=/dev/mmcblk0p${airlift_part} rootwait ro airlift.slot=${airlift_slot}"; load mmc 0:${airlift_part} ${kernel_addr_r} /boot/Image && booti ${kernel_addr_r} - ${fdtcontroladdr}
//! bootcmd=run airlift_boot
//! altbootcmd=if test "${airlift_slot}" = "a"; then setenv airlift_slot b; else setenv airlift_slot a; fi; setenv upgrade_available 0; setenv bootcount 0; saveenv; run airlift_boot
//! ```
//!
//! `/etc/fw_env.config` names where the environment lives (`DEVICE OFFSET
//! SIZE [SECTOR_SIZE]`, one line per copy). Use a **redundant** environment
//! (two lines, `CONFIG_SYS_REDUNDAND_ENVIRONMENT` in U-Boot): with one copy,
//! `fw_setenv` rewrites it in place and a power cut in the middle leaves a
//! bad CRC, so U-Boot boots its built-in default environment. The environment
//! must be valid before the agent uses it (run `saveenv` in U-Boot once, or
//! `fw_setenv -f /etc/u-boot-initial-env airlift_slot a`): the agent refuses
//! an environment `fw_printenv` cannot read rather than work on defaults.
//!
//! The tests check the environment side with the real `fw_setenv` (one and
//! two copies) and play U-Boot's bootcount rule on it. The snippet above is
//! not run; `dist/u-boot/boot.cmd`, which counts by itself without
//! `CONFIG_BOOTCOUNT_LIMIT`, is, in the real U-Boot under QEMU
//! (`crates/airlift-vm`): `docs/u-boot.md` sets a board up with it. The
//! backend needs libubootenv's tools (Debian's `libubootenv-tool`): the older
//! `fw_setenv` from `u-boot-tools` takes `name value...` as one variable, and
//! [`UBootEnv`] notices (it reads back what it wrote) and fails.
//!
//! # Bootloader with no trial support
//!
//! A bootloader that ignores `upgrade_available` still boots `airlift_slot`,
//! so updates work, but a new version that never comes up stays: the
//! fallback is the bootloader's job and nothing in the agent can replace it.
//!
//! # Example
//!
//! ```
//! use airlift_agent::boot::{BootControl, FileBootEnv, Slot};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let mut env = FileBootEnv::create(dir.path().join("bootenv"), Slot::A)?;
//! env.start_trial(Slot::B)?;
//! for _ in 0..3 {
//!     // Three trial boots of b, and the agent never commits...
//!     assert_eq!(env.boot()?.slot, Slot::B);
//! }
//! // ...so the fourth boot falls back to a by itself.
//! let outcome = env.boot()?;
//! assert_eq!((outcome.slot, outcome.fell_back), (Slot::A, true));
//! assert!(!env.trial_pending()?);
//! # Ok(())
//! # }
//! ```

mod atomic;
mod cmdline;
mod file;
mod grub;
mod tool;
mod tool_env;
mod uboot;
mod vars;

#[cfg(test)]
mod conformance;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::str::FromStr;

pub use atomic::atomic_write;
pub use file::FileBootEnv;
pub use grub::GrubEnv;
pub use uboot::UBootEnv;
pub use vars::{BootVars, DEFAULT_BOOTLIMIT};

/// One of the two root slots.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// Slot `a`.
    A,
    /// Slot `b`.
    B,
}

impl Slot {
    /// The slot that is not this one.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `"a"` or `"b"`, as the bootloader variables and the kernel command
    /// line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A slot name that is neither `a` nor `b`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown slot {0:?}: expected `a` or `b`")]
pub struct ParseSlotError(pub String);

impl FromStr for Slot {
    type Err = ParseSlotError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "a" => Ok(Slot::A),
            "b" => Ok(Slot::B),
            other => Err(ParseSlotError(other.to_owned())),
        }
    }
}

/// What [`FileBootEnv::boot`] did on this (simulated) power-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootOutcome {
    /// The slot that booted.
    pub slot: Slot,
    /// This boot is a trial boot: `upgrade_available` is still `1`, so the
    /// agent must commit or the bootloader will fall back.
    pub trial: bool,
    /// The trial ran out of boots on this power-up and the bootloader fell
    /// back to the other slot.
    pub fell_back: bool,
}

/// Control of the bootloader's A/B trial-boot logic.
///
/// Every method that writes changes all its variables in one write, so a
/// power cut leaves the transition done or not done. See the
/// [module documentation](self) for the variables and the diagram.
pub trait BootControl: Send {
    /// The slot running now (from the kernel command line, or for
    /// [`FileBootEnv`] from the last [`FileBootEnv::boot`]).
    fn booted_slot(&self) -> Result<Slot, BootError>;

    /// Arms a one-shot trial boot of `slot`: `airlift_slot=slot`,
    /// `upgrade_available=1`, `bootcount=0`, and `bootlimit` set to
    /// [`DEFAULT_BOOTLIMIT`] if it is unset.
    ///
    /// Refuses `slot` if it is the running slot, if another trial is pending,
    /// or if `bootlimit` is 0. Arming the same trial again before rebooting
    /// is allowed (it is the same write).
    fn start_trial(&mut self, slot: Slot) -> Result<(), BootError>;

    /// The running trial is good: `upgrade_available=0`, `bootcount=0`, and
    /// `airlift_slot` stays on the running slot.
    ///
    /// Refused while the armed trial slot has not booted yet. With no trial
    /// pending it does nothing (so a commit interrupted by a power cut can be
    /// repeated), but then it proves nothing either: if the bootloader fell
    /// back, the running slot is the *old* one. The caller compares
    /// [`booted_slot`](Self::booted_slot) with the slot it installed into.
    fn commit(&mut self) -> Result<(), BootError>;

    /// Gives up the trial: `airlift_slot=previous`, `upgrade_available=0`,
    /// `bootcount=0`. Works before the reboot (the trial never happens) and
    /// during the trial boot (the next boot is `previous`).
    fn abandon_trial(&mut self, previous: Slot) -> Result<(), BootError>;

    /// Whether a trial is armed or running (`upgrade_available == 1`).
    fn trial_pending(&self) -> Result<bool, BootError>;
}

/// Why a boot-control operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// Reading or writing a file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "reading the boot environment".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bootloader tool could not be started at all.
    #[error("cannot run `{}`: {source}; is it installed (Debian: `{package}`) and on PATH, or configured with its full path?", program.display())]
    Spawn {
        program: PathBuf,
        /// The Debian package that provides it.
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A bootloader tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Tool {
        /// The command line, for a person to re-run.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on standard error (trimmed), or a note that it
        /// printed nothing.
        stderr: String,
    },
    /// The boot environment exists but cannot be trusted: unreadable,
    /// truncated, or holding values the bootloader logic does not expect.
    /// Nothing is reset: a person (or the rollback logic) has to look.
    #[error("the boot environment {location} is invalid: {reason}")]
    InvalidEnv {
        /// The file or command it came from.
        location: String,
        reason: String,
    },
    /// The running slot cannot be read from the kernel command line.
    #[error("cannot tell which slot is running from {}: {reason}", path.display())]
    BootedSlotUnknown {
        /// The command-line file (normally `/proc/cmdline`).
        path: PathBuf,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// A tool reported success but the environment does not hold what it
    /// was asked to write.
    #[error("`{command}` succeeded but {variable} reads back as {found:?} instead of {expected:?}{hint}")]
    NotApplied {
        /// The command that wrote.
        command: String,
        /// The variable that is wrong.
        variable: &'static str,
        /// What was written.
        expected: String,
        /// What was read back (`None`: unset).
        found: Option<String>,
        /// A likely cause, or empty.
        hint: &'static str,
    },
    /// [`BootControl::start_trial`] of the slot that is running: its
    /// fallback would boot the other slot, which is not the known-good one.
    #[error("cannot arm a trial boot of slot {slot}: it is the slot running now; updates go into the other slot ({})", slot.other())]
    TrialOfRunningSlot {
        /// The running slot.
        slot: Slot,
    },
    /// [`BootControl::start_trial`] while another trial is pending.
    #[error("cannot arm a trial boot of slot {requested}: a trial boot of slot {pending} is already pending; commit or abandon it first")]
    TrialPending {
        /// The slot asked for.
        requested: Slot,
        /// The slot of the pending trial.
        pending: Slot,
    },
    /// [`BootControl::commit`] from a slot that is not the one the bootloader
    /// will boot next: the trial has not booted yet, or the environment was
    /// changed underneath.
    #[error("cannot commit: running slot {running}, but the bootloader will boot slot {next}{}", if *.trial { " as a trial (reboot into it first)" } else { "" })]
    NotInTrialSlot {
        /// The slot running now.
        running: Slot,
        /// The slot the environment boots next.
        next: Slot,
        /// Whether a trial is pending.
        trial: bool,
    },
    /// [`BootControl::start_trial`] with `bootlimit=0`, which U-Boot reads as
    /// "never fall back".
    #[error("cannot arm a trial boot: bootlimit is 0, which disables the fallback; set it to 1 or more (default {DEFAULT_BOOTLIMIT})")]
    FallbackDisabled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trips_through_text_and_serde() -> Result<(), Box<dyn std::error::Error>> {
        for slot in [Slot::A, Slot::B] {
            assert_eq!(slot.to_string().parse::<Slot>()?, slot);
            let json = serde_json::to_string(&slot)?;
            assert_eq!(json, format!("\"{slot}\""));
            assert_eq!(serde_json::from_str::<Slot>(&json)?, slot);
            assert_eq!(slot.other().other(), slot);
            assert_ne!(slot.other(), slot);
        }
        for bad in ["", "A", "c", " a", "a\n"] {
            assert_eq!(bad.parse::<Slot>(), Err(ParseSlotError(bad.to_owned())));
        }
        Ok(())
    }
}
