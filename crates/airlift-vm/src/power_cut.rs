//! Power-cut trials: a VM updating from 1.0.0 to 2.0.0 is killed (QEMU
//! SIGKILL: the guest loses what it had not written to its disk) at a
//! chosen point, found on its console, then powered on again. The trial
//! ends when the server has a verdict and the running system and the
//! server agree on the version; its [`Outcome`] says which version won, or
//! what went wrong.

use crate::lab::{Lab, BOOT, UPDATE};
use crate::{RootfsSpec, VmError};
use std::time::{Duration, Instant};

/// Where in the update the power is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CutPoint {
    /// While the package downloads.
    Downloading,
    /// While the image is written into the inactive slot.
    Installing,
    /// Just after the boot environment arms the trial.
    BootEnvWritten,
    /// During the trial boot, while the health check runs.
    Verifying,
    /// Just after the commit writes the boot environment.
    Committing,
}

impl CutPoint {
    /// All of them, in update order.
    pub const ALL: [CutPoint; 5] = [
        CutPoint::Downloading,
        CutPoint::Installing,
        CutPoint::BootEnvWritten,
        CutPoint::Verifying,
        CutPoint::Committing,
    ];

    /// The console lines that mark it (the agent's log), the how-many-th
    /// occurrence after the deployment, and the longest extra delay before
    /// the cut, in ms.
    fn marker(self) -> (&'static [&'static str], usize, u64) {
        match self {
            CutPoint::Downloading => (&["to=downloading", "to=\"downloading\""], 1, 1500),
            CutPoint::Installing => (&["to=installing", "to=\"installing\""], 1, 3000),
            CutPoint::BootEnvWritten => (&["GRUB environment written"], 1, 300),
            CutPoint::Verifying => (&["airlift-vm: starting the agent"], 1, 2000),
            CutPoint::Committing => (&["GRUB environment written"], 2, 300),
        }
    }
}

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Running 1.0.0 from slot A; the server says it failed or rolled
    /// back, and 1.0.0.
    Old,
    /// Running 2.0.0 from slot B; the server says success and 2.0.0.
    New,
    /// The VM never booted to its agent again.
    Unbootable,
    /// The server and the running system disagree.
    Disagreement,
}

/// One trial's result.
#[derive(Debug, Clone)]
pub struct TrialResult {
    /// Where the power was cut.
    pub point: CutPoint,
    /// How it ended.
    pub outcome: Outcome,
    /// The verdict, versions and slot, for a report.
    pub detail: String,
}

/// Runs one trial: cut at `point`, after a delay chosen by `seed`.
pub fn run_trial(point: CutPoint, seed: u64) -> Result<TrialResult, VmError> {
    let serial = format!("vm-cut-{}-{seed}", std::process::id());
    let mut lab = Lab::start(&serial);
    let (_, _, mark) = lab.wait_up(0, BOOT);
    let device = lab.accept();
    let deployment = lab.deploy(&RootfsSpec::healthy("2.0.0"), &device);

    let (needles, nth, max_delay_ms) = point.marker();
    let mut at = mark;
    for _ in 0..nth {
        at = lab.vm.wait_for_any(needles, at, UPDATE)?;
    }
    let delay = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) % (max_delay_ms + 1);
    std::thread::sleep(Duration::from_millis(delay));
    let cut_at = lab.vm.console().len();
    lab.vm.power_cut();
    lab.vm.power_on()?;

    let result = |outcome, detail: String| {
        Ok(TrialResult {
            point,
            outcome,
            detail,
        })
    };
    if lab
        .vm
        .wait_for("airlift-vm: up, slot ", cut_at, BOOT * 3)
        .is_err()
    {
        return result(Outcome::Unbootable, lab.console_tail());
    }
    let (state, message) = lab.verdict(&deployment);
    // After the verdict the device may still reboot (a rollback): wait until
    // what it runs and what the server says agree, or time runs out.
    let deadline = Instant::now() + BOOT;
    loop {
        let booted = lab.last_boot();
        let reported = lab.reported_version(&device, "");
        let detail = format!(
            "cut {delay} ms after {point:?}; verdict {state} ({message}); running {booted:?}; server says {reported}"
        );
        let outcome = match (
            state.as_str(),
            booted.as_ref().map(|(s, v)| (*s, v.as_str())),
        ) {
            ("success", Some(('b', "2.0.0"))) if reported == "2.0.0" => Some(Outcome::New),
            ("failure" | "rolled_back", Some(('a', "1.0.0"))) if reported == "1.0.0" => {
                Some(Outcome::Old)
            }
            _ => None,
        };
        if let Some(outcome) = outcome {
            return result(outcome, detail);
        }
        if Instant::now() > deadline {
            return result(
                Outcome::Disagreement,
                format!("{detail}\n{}", lab.console_tail()),
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
