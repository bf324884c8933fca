//! The three update stories on a real boot: a good update, a failing
//! health check, and an image that never comes up.

use airlift_vm::lab::{Lab, BOOT, UPDATE};
use airlift_vm::{Health, Init, RootfsSpec};

#[test]
fn a_good_update_boots_slot_b_and_the_server_shows_the_running_version() {
    let mut lab = Lab::start("vm-good");
    let (slot, version, mark) = lab.wait_up(0, BOOT);
    assert_eq!((slot, version.as_str()), ('a', "1.0.0"));
    let device = lab.accept();
    assert_eq!(lab.reported_version(&device, "1.0.0"), "1.0.0");

    let deployment = lab.deploy(&RootfsSpec::healthy("2.0.0"), &device);
    let (slot, version, _) = lab.wait_up(mark, UPDATE);
    assert_eq!(
        (slot, version.as_str()),
        ('b', "2.0.0"),
        "{}",
        lab.console_tail()
    );
    let (state, message) = lab.verdict(&deployment);
    assert_eq!(state, "success", "{message}\n{}", lab.console_tail());
    assert_eq!(lab.reported_version(&device, "2.0.0"), "2.0.0");
}

#[test]
fn a_failing_health_check_rolls_back_to_slot_a_and_the_server_shows_why() {
    let mut lab = Lab::start("vm-sick");
    let (_, _, mark) = lab.wait_up(0, BOOT);
    let device = lab.accept();
    let sick = RootfsSpec {
        health: Health::Fails,
        ..RootfsSpec::healthy("2.0.0")
    };
    let deployment = lab.deploy(&sick, &device);
    // The trial boot of B, then the rollback's boot of A.
    let (slot, version, mark) = lab.wait_up(mark, UPDATE);
    assert_eq!((slot, version.as_str()), ('b', "2.0.0"));
    let (slot, version, _) = lab.wait_up(mark, UPDATE);
    assert_eq!(
        (slot, version.as_str()),
        ('a', "1.0.0"),
        "{}",
        lab.console_tail()
    );
    let (state, message) = lab.verdict(&deployment);
    assert_eq!(state, "rolled_back", "{message}");
    assert!(
        message.contains("health"),
        "the reason names the health check: {message}"
    );
    assert_eq!(lab.reported_version(&device, "1.0.0"), "1.0.0");
}

#[test]
fn an_image_that_never_comes_up_is_left_by_grub_itself() {
    let mut lab = Lab::start("vm-dead");
    let (_, _, mark) = lab.wait_up(0, BOOT);
    let device = lab.accept();
    let dead = RootfsSpec {
        init: Init::ExitsAtOnce,
        ..RootfsSpec::healthy("2.0.0")
    };
    let deployment = lab.deploy(&dead, &device);
    // B's init exits, the kernel panics and the VM resets: GRUB counts the
    // boots and, past bootlimit, boots A again without any agent.
    lab.vm
        .wait_for("this image's init exits at once", mark, BOOT * 2)
        .unwrap_or_else(|e| panic!("{e}"));
    let (slot, version, _) = lab.wait_up(mark, UPDATE);
    assert_eq!(
        (slot, version.as_str()),
        ('a', "1.0.0"),
        "{}",
        lab.console_tail()
    );
    let panics = lab.vm.console()[mark..]
        .matches("this image's init exits at once")
        .count();
    assert!(
        panics >= 3,
        "GRUB gave the trial slot its boots first ({panics} seen)"
    );
    let (state, message) = lab.verdict(&deployment);
    assert_eq!(state, "rolled_back", "{message}");
    assert_eq!(lab.reported_version(&device, "1.0.0"), "1.0.0");
}
