//! Whole fleets through deployments: all good, 40 % unhealthy, and power
//! cuts with flaky networks.

use crate::support::{enrolled, settled, World};
use airlift_protocol::state::UpdateState;
use airlift_sim::{Fleet, Share};
use std::time::{Duration, Instant};

const IMAGE: usize = 48 * 1024;

#[test]
fn five_hundred_devices_take_a_good_update() {
    let world = World::new();
    let fleet = Fleet::start(world.fleet_config(500)).expect("fleet");
    let started = Instant::now();
    enrolled(&fleet, 500);
    let deployment = world.deploy(world.package("2.0.0", IMAGE));
    let snapshot = settled(&fleet, 500, Duration::from_secs(90));
    eprintln!("500 devices updated in {:?}", started.elapsed());
    assert_eq!(snapshot.with_outcome("success"), 500, "{snapshot:#?}");
    assert_eq!(snapshot.running("2.0.0"), 500, "{snapshot:#?}");
    assert_eq!(snapshot.errors, 0, "{snapshot:#?}");
    let counts = world.wait_for_count(&deployment, "success", 500);
    assert_eq!(counts["success"], 500, "{counts}");
    let summary = fleet.stop();
    eprintln!("{summary}");
    assert!(summary.rollbacks.is_empty() && summary.failures.is_empty());
}

#[test]
fn the_devices_whose_health_fails_roll_back_and_only_they() {
    let world = World::new();
    let mut config = world.fleet_config(500);
    config.seed = 5;
    config.faults.fail_health_on = Some("2.0.0".into());
    config.faults.fail_health_share = Share::percent(40.0).expect("share");
    let fleet = Fleet::start(config).expect("fleet");
    enrolled(&fleet, 500);
    let deployment = world.deploy(world.package("2.0.0", IMAGE));
    settled(&fleet, 500, Duration::from_secs(90));

    let devices = fleet.devices();
    let unhealthy = devices.iter().filter(|d| d.fail_health).count();
    assert!(
        (150..250).contains(&unhealthy),
        "{unhealthy} of 500 drew the fault"
    );
    for device in &devices {
        if device.fail_health {
            assert_eq!(device.outcome, Some(UpdateState::RolledBack), "{device:?}");
            assert_eq!(device.running.as_deref(), Some("1.0.0"), "{device:?}");
            let message = device.message.as_deref().unwrap_or_default();
            assert!(message.contains("health check 'sim' failed"), "{device:?}");
        } else {
            assert_eq!(device.outcome, Some(UpdateState::Success), "{device:?}");
            assert_eq!(device.running.as_deref(), Some("2.0.0"), "{device:?}");
        }
    }
    let counts = world.wait_for_count(&deployment, "rolled_back", unhealthy as u64);
    assert_eq!(counts["rolled_back"], unhealthy as u64, "{counts}");
    assert_eq!(counts["success"], (500 - unhealthy) as u64, "{counts}");
    let summary = fleet.stop();
    eprintln!("{summary}");
    assert_eq!(summary.rollbacks.values().sum::<usize>(), unhealthy);
}

#[test]
fn power_cuts_and_flaky_networks_still_end_healthy() {
    let world = World::new();
    let mut config = world.fleet_config(200);
    config.seed = 9;
    config.faults.power_loss_share = Share::percent(30.0).expect("share");
    config.faults.flaky_network_share = Share::percent(30.0).expect("share");
    let fleet = Fleet::start(config).expect("fleet");
    enrolled(&fleet, 200);
    let deployment = world.deploy(world.package("2.0.0", 256 * 1024));
    let snapshot = settled(&fleet, 200, Duration::from_secs(90));
    assert_eq!(snapshot.with_outcome("success"), 200, "{snapshot:#?}");
    assert_eq!(snapshot.running("2.0.0"), 200, "{snapshot:#?}");
    let counts = world.wait_for_count(&deployment, "success", 200);
    assert_eq!(counts["success"], 200, "{counts}");

    let devices = fleet.devices();
    for device in &devices {
        assert_eq!(
            device.power_cuts,
            u32::from(device.power_loss),
            "{device:?}"
        );
    }
    let cut = devices.iter().filter(|d| d.power_loss).count();
    assert!(cut > 30, "{cut} devices lost power");
    // Every power cut falls mid-download of a raw image: the device goes on
    // from its last checkpoint, not from byte 0.
    let resumed_after_cut = devices
        .iter()
        .filter(|d| d.power_loss && !d.flaky_network && d.resumed_downloads > 0)
        .count();
    assert!(
        resumed_after_cut > 0,
        "no power-cut device resumed its download"
    );
    let summary = fleet.stop();
    eprintln!("{summary}");
    let proxy = summary.proxy.expect("a proxy ran");
    assert!(proxy.cuts > 0 && proxy.refusals > 0, "{proxy:?}");
    assert!(summary.snapshot.resumed_downloads > 0);
}
