//! The documented `dist/u-boot/boot.cmd` in the real U-Boot (Debian's
//! `u-boot-qemu` in `qemu-system-aarch64`, emulated): the bootloader's half
//! of the trial-boot story, with the environment written by the agent's
//! tool (`fw_setenv`) and by U-Boot in turn. It tests the bootloader's
//! decision, not a Linux boot (see `airlift_vm::uboot`). Skipped, saying
//! why, when the tools are not installed (`.ci/install-packages`).

use airlift_vm::uboot::{self, UBootDevice};
use std::collections::BTreeMap;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn device() -> Result<Option<UBootDevice>, Box<dyn std::error::Error>> {
    let missing = uboot::missing();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: the U-Boot test needs {}; run .ci/install-packages",
            missing.join(", ")
        );
        return Ok(None);
    }
    Ok(Some(UBootDevice::new()?))
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// What the agent's `start_trial(b)` writes on a fresh environment, in one
/// `fw_setenv`.
const ARM_TRIAL_B: &[(&str, &str)] = &[
    ("airlift_slot", "b"),
    ("upgrade_available", "1"),
    ("bootcount", "0"),
    ("bootlimit", "3"),
];

#[test]
fn an_uncommitted_trial_boots_bootlimit_times_then_falls_back() -> TestResult {
    let Some(device) = device()? else {
        return Ok(());
    };
    // A normal boot: slot a, and nothing saved.
    let before = device.env_bytes()?;
    let boot = device.power_up()?;
    assert_eq!((boot.slot.as_str(), boot.trial), ("a", false), "{boot:?}");
    assert_eq!(boot.kernel, "KERNEL-OF-SLOT-A");
    assert!(
        boot.bootargs.contains("root=/dev/vda2 airlift.slot=a "),
        "{boot:?}"
    );
    assert_eq!(
        device.env_bytes()?,
        before,
        "a normal boot saved the environment"
    );

    device.setenv(ARM_TRIAL_B)?;
    for count in 1..=3 {
        let boot = device.power_up()?;
        assert_eq!(
            (boot.slot.as_str(), boot.trial, boot.fell_back),
            ("b", true, false),
            "trial boot {count}: {boot:?}"
        );
        assert_eq!(boot.kernel, "KERNEL-OF-SLOT-B");
        assert!(
            boot.bootargs.contains("root=/dev/vda3 airlift.slot=b "),
            "{boot:?}"
        );
        let count = count.to_string();
        assert_eq!(
            device.printenv()?,
            vars(&[
                ("airlift_slot", "b"),
                ("upgrade_available", "1"),
                ("bootcount", &count),
                ("bootlimit", "3"),
            ])
        );
    }
    // The fourth power-up without a commit falls back by itself.
    let boot = device.power_up()?;
    assert_eq!(
        (boot.slot.as_str(), boot.trial, boot.fell_back),
        ("a", false, true),
        "{boot:?}"
    );
    assert_eq!(boot.kernel, "KERNEL-OF-SLOT-A");
    let fallen_back = vars(&[
        ("airlift_slot", "a"),
        ("upgrade_available", "0"),
        ("bootcount", "0"),
        ("bootlimit", "3"),
    ]);
    assert_eq!(device.printenv()?, fallen_back);
    let boot = device.power_up()?;
    assert_eq!((boot.slot.as_str(), boot.fell_back), ("a", false));
    assert_eq!(device.printenv()?, fallen_back);
    Ok(())
}

#[test]
fn a_committed_trial_keeps_the_new_slot() -> TestResult {
    let Some(device) = device()? else {
        return Ok(());
    };
    // bootlimit 1: the second uncommitted boot would fall back.
    let mut armed = ARM_TRIAL_B.to_vec();
    armed[3] = ("bootlimit", "1");
    device.setenv(&armed)?;
    let boot = device.power_up()?;
    assert_eq!((boot.slot.as_str(), boot.trial), ("b", true), "{boot:?}");
    // What the agent's commit() writes once its health checks pass.
    device.setenv(&[("upgrade_available", "0"), ("bootcount", "0")])?;
    let committed = device.env_bytes()?;
    for _ in 0..2 {
        let boot = device.power_up()?;
        assert_eq!(
            (boot.slot.as_str(), boot.trial, boot.fell_back),
            ("b", false, false),
            "{boot:?}"
        );
        assert!(boot.bootargs.contains("airlift.slot=b "), "{boot:?}");
    }
    assert_eq!(
        device.env_bytes()?,
        committed,
        "a normal boot saved the environment"
    );
    assert_eq!(
        device.printenv()?,
        vars(&[
            ("airlift_slot", "b"),
            ("upgrade_available", "0"),
            ("bootcount", "0"),
            ("bootlimit", "1"),
        ])
    );
    Ok(())
}

#[test]
fn bootlimit_one_falls_back_on_the_second_uncommitted_boot() -> TestResult {
    let Some(device) = device()? else {
        return Ok(());
    };
    let mut armed = ARM_TRIAL_B.to_vec();
    armed[3] = ("bootlimit", "1");
    device.setenv(&armed)?;
    assert_eq!(device.power_up()?.slot, "b");
    let boot = device.power_up()?;
    assert_eq!(
        (boot.slot.as_str(), boot.fell_back),
        ("a", true),
        "{boot:?}"
    );
    Ok(())
}

#[test]
fn a_trial_whose_count_cannot_be_saved_boots_the_other_slot() -> TestResult {
    let Some(device) = device()? else {
        return Ok(());
    };
    device.setenv(ARM_TRIAL_B)?;
    let armed = device.env_bytes()?;
    // The disk is read-only: the script's save fails, so it must not boot
    // the trial (its boots would go uncounted), and nothing changed.
    let boot = device.power_up_read_only()?;
    assert_eq!(
        (boot.slot.as_str(), boot.trial, boot.unsaved),
        ("a", false, true),
        "{boot:?}"
    );
    assert!(boot.bootargs.contains("airlift.slot=a "), "{boot:?}");
    assert_eq!(device.env_bytes()?, armed);
    // Writable again: the trial goes ahead, counted from where it was.
    let boot = device.power_up()?;
    assert_eq!(
        (boot.slot.as_str(), boot.trial, boot.unsaved),
        ("b", true, false),
        "{boot:?}"
    );
    assert_eq!(
        device.printenv()?.get("bootcount").map(String::as_str),
        Some("1")
    );
    Ok(())
}
