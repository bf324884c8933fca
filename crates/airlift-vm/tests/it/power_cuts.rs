//! Real power cuts: QEMU killed at chosen points of an update (the guest
//! loses what it had not written to its disk), then powered on again.
//! Every trial must end on a bootable system running exactly one of the
//! two versions, with the server agreeing. The bench
//! (`benches/power_cut.rs`) runs many more.

use airlift_vm::power_cut::{run_trial, CutPoint, Outcome};

fn trial(point: CutPoint) {
    let result = run_trial(point, 0).unwrap_or_else(|e| panic!("trial at {point:?}: {e}"));
    assert!(
        matches!(result.outcome, Outcome::Old | Outcome::New),
        "trial at {point:?} ended {:?}: {}",
        result.outcome,
        result.detail
    );
}

#[test]
fn a_power_cut_while_writing_the_slot_ends_on_one_version() {
    trial(CutPoint::Installing);
}

#[test]
fn a_power_cut_right_after_the_boot_environment_changes_ends_on_one_version() {
    trial(CutPoint::BootEnvWritten);
}
