//! One story every [`BootControl`] backend passes: [`FileBootEnv`], and GRUB
//! and U-Boot through their real tools. For the real tools the bootloader's
//! part (counting boots, falling back) is played by the same power-up rule
//! [`FileBootEnv::boot`] uses, applied to the real environment through the
//! real tools; the kernel command line is a file the harness rewrites.
//!
//! [`FileBootEnv`]: super::FileBootEnv
//! [`FileBootEnv::boot`]: super::FileBootEnv::boot

use super::{BootControl, BootError, BootOutcome, BootVars, Slot, DEFAULT_BOOTLIMIT};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A backend under test plus a way to power the device up.
pub(crate) trait Harness: BootControl {
    /// Does what the bootloader does on power-up and "boots" the slot.
    fn power_up(&mut self) -> Result<BootOutcome, BootError>;
    /// Sets `bootlimit` as the device's default environment would.
    fn set_bootlimit(&mut self, limit: u32) -> Result<(), BootError>;
    /// The variables as they are now.
    fn vars(&self) -> Result<BootVars, BootError>;
}

const TRIAL_B: BootOutcome = BootOutcome {
    slot: Slot::B,
    trial: true,
    fell_back: false,
};

fn normal(slot: Slot) -> BootOutcome {
    BootOutcome {
        slot,
        trial: false,
        fell_back: false,
    }
}

type Scenario<H> = fn(&mut H) -> TestResult;

/// Runs every scenario, each on a fresh environment from `fresh`: a device
/// that runs slot `a`, boots `a` next, with no trial and no `bootlimit`. The
/// second value `fresh` returns is kept alive for the scenario (a temporary
/// directory).
pub(crate) fn run_all<H: Harness, G>(
    mut fresh: impl FnMut() -> Result<(H, G), Box<dyn std::error::Error>>,
) -> TestResult {
    let scenarios: [(&str, Scenario<H>); 9] = [
        ("a committed trial stays", committed_trial_stays),
        (
            "no commit falls back after bootlimit boots",
            no_commit_falls_back_after_bootlimit_boots,
        ),
        (
            "a bootlimit already set is kept",
            bootlimit_already_set_is_kept,
        ),
        ("abandon before the reboot", abandon_before_the_reboot),
        ("abandon during the trial", abandon_during_the_trial),
        ("commit is repeatable", commit_is_repeatable),
        ("arming the same trial twice", arming_the_same_trial_twice),
        (
            "unsafe transitions are refused",
            unsafe_transitions_are_refused,
        ),
        ("updates go both ways", updates_go_both_ways),
    ];
    for (name, scenario) in scenarios {
        // Shown with a failing assertion's panic, which names no scenario.
        eprintln!("scenario: {name}");
        let (mut env, guard) = fresh()?;
        let initial = (
            env.booted_slot()?,
            env.trial_pending()?,
            env.vars()?.next_slot(),
        );
        assert_eq!(
            initial,
            (Slot::A, false, Slot::A),
            "{name}: not a fresh environment"
        );
        scenario(&mut env).map_err(|e| format!("scenario {name:?}: {e}"))?;
        drop(guard);
    }
    Ok(())
}

fn committed_trial_stays<H: Harness>(env: &mut H) -> TestResult {
    env.start_trial(Slot::B)?;
    assert!(env.trial_pending()?);
    assert_eq!(
        env.booted_slot()?,
        Slot::A,
        "arming a trial does not reboot"
    );
    let vars = env.vars()?;
    assert_eq!(
        (vars.slot, vars.bootcount, vars.bootlimit),
        (Some(Slot::B), 0, Some(DEFAULT_BOOTLIMIT))
    );

    assert_eq!(env.power_up()?, TRIAL_B);
    assert_eq!(env.booted_slot()?, Slot::B);
    assert!(env.trial_pending()?);
    env.commit()?;
    assert!(!env.trial_pending()?);
    assert_eq!(env.vars()?.bootcount, 0);

    for _ in 0..DEFAULT_BOOTLIMIT + 2 {
        assert_eq!(env.power_up()?, normal(Slot::B));
    }
    assert_eq!(env.booted_slot()?, Slot::B);
    Ok(())
}

fn no_commit_falls_back_after_bootlimit_boots<H: Harness>(env: &mut H) -> TestResult {
    env.start_trial(Slot::B)?;
    for boot in 1..=DEFAULT_BOOTLIMIT {
        assert_eq!(
            env.power_up()?,
            TRIAL_B,
            "trial boot {boot} of {DEFAULT_BOOTLIMIT}"
        );
        assert_eq!(env.vars()?.bootcount, boot);
        assert!(env.trial_pending()?);
    }
    let fallback = env.power_up()?;
    assert_eq!(
        fallback,
        BootOutcome {
            slot: Slot::A,
            trial: false,
            fell_back: true
        }
    );
    assert_eq!(env.booted_slot()?, Slot::A);
    assert!(!env.trial_pending()?);
    let vars = env.vars()?;
    assert_eq!((vars.slot, vars.bootcount), (Some(Slot::A), 0));

    // A commit now proves nothing: it is a no-op and the old slot runs on.
    env.commit()?;
    assert_eq!(env.power_up()?, normal(Slot::A));
    Ok(())
}

fn bootlimit_already_set_is_kept<H: Harness>(env: &mut H) -> TestResult {
    env.set_bootlimit(1)?;
    env.start_trial(Slot::B)?;
    assert_eq!(env.vars()?.bootlimit, Some(1));
    assert_eq!(env.power_up()?, TRIAL_B);
    assert!(
        env.power_up()?.fell_back,
        "the second boot is past bootlimit=1"
    );
    assert_eq!(env.booted_slot()?, Slot::A);
    Ok(())
}

fn abandon_before_the_reboot<H: Harness>(env: &mut H) -> TestResult {
    env.start_trial(Slot::B)?;
    env.abandon_trial(Slot::A)?;
    assert!(!env.trial_pending()?);
    assert_eq!(env.power_up()?, normal(Slot::A));
    Ok(())
}

fn abandon_during_the_trial<H: Harness>(env: &mut H) -> TestResult {
    env.start_trial(Slot::B)?;
    assert_eq!(env.power_up()?, TRIAL_B);
    assert_eq!(env.power_up()?, TRIAL_B);
    // The health checks failed.
    env.abandon_trial(Slot::A)?;
    assert!(!env.trial_pending()?);
    let vars = env.vars()?;
    assert_eq!((vars.slot, vars.bootcount), (Some(Slot::A), 0));
    assert_eq!(
        env.power_up()?,
        normal(Slot::A),
        "a rollback, not a bootloader fallback"
    );
    assert_eq!(env.booted_slot()?, Slot::A);
    Ok(())
}

fn commit_is_repeatable<H: Harness>(env: &mut H) -> TestResult {
    env.start_trial(Slot::B)?;
    env.power_up()?;
    env.commit()?;
    env.commit()?;
    assert!(!env.trial_pending()?);
    assert_eq!(env.power_up()?, normal(Slot::B));
    Ok(())
}

fn arming_the_same_trial_twice<H: Harness>(env: &mut H) -> TestResult {
    env.start_trial(Slot::B)?;
    env.start_trial(Slot::B)?;
    assert_eq!(env.vars()?.bootcount, 0);
    assert_eq!(env.power_up()?, TRIAL_B);
    Ok(())
}

fn unsafe_transitions_are_refused<H: Harness>(env: &mut H) -> TestResult {
    let before = env.vars()?;
    let err = env.start_trial(Slot::A).err();
    assert!(
        matches!(err, Some(BootError::TrialOfRunningSlot { slot: Slot::A })),
        "{err:?}"
    );
    assert_eq!(env.vars()?, before, "a refused transition wrote");

    env.set_bootlimit(0)?;
    let err = env.start_trial(Slot::B).err();
    assert!(matches!(err, Some(BootError::FallbackDisabled)), "{err:?}");
    env.set_bootlimit(2)?;

    env.start_trial(Slot::B)?;
    let armed = env.vars()?;
    let err = env.commit().err();
    assert!(
        matches!(
            err,
            Some(BootError::NotInTrialSlot {
                running: Slot::A,
                next: Slot::B,
                trial: true
            })
        ),
        "committing before the trial booted: {err:?}"
    );
    assert_eq!(env.vars()?, armed, "a refused commit wrote");

    assert_eq!(env.power_up()?, TRIAL_B);
    let err = env.start_trial(Slot::A).err();
    assert!(
        matches!(
            err,
            Some(BootError::TrialPending {
                requested: Slot::A,
                pending: Slot::B
            })
        ),
        "a trial over a pending one: {err:?}"
    );
    assert!(env.trial_pending()?);
    env.commit()?;
    Ok(())
}

fn updates_go_both_ways<H: Harness>(env: &mut H) -> TestResult {
    env.start_trial(Slot::B)?;
    assert_eq!(env.power_up()?, TRIAL_B);
    env.commit()?;
    env.start_trial(Slot::A)?;
    assert_eq!(
        env.power_up()?,
        BootOutcome {
            slot: Slot::A,
            trial: true,
            fell_back: false
        }
    );
    env.commit()?;
    assert_eq!(env.power_up()?, normal(Slot::A));
    env.start_trial(Slot::B)?;
    for _ in 0..=DEFAULT_BOOTLIMIT {
        env.power_up()?;
    }
    assert_eq!(env.booted_slot()?, Slot::A, "fell back from b to a");
    Ok(())
}
