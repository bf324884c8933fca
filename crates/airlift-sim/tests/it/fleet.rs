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

/// canary (the 10 first in the stable order: 2 %) → 10 % → 50 % → 100 %,
/// aborting past `threshold_percent` failures.
fn staged(threshold_percent: u8) -> serde_json::Value {
    serde_json::json!({
        "type": "phased",
        "phases": [
            {"devices": {"percent": 2}, "name": "canary"},
            {"devices": {"percent": 10}},
            {"devices": {"percent": 50}},
            {"devices": {"percent": 100}}
        ],
        "failure_threshold": {"percent": threshold_percent},
        "on_failure": "abort"
    })
}

#[test]
fn a_staged_rollout_reaches_everyone_and_a_bad_one_stops_after_its_canaries() {
    staged_rollouts(&World::new());
}

#[test]
fn staged_rollouts_on_postgresql() {
    match World::on_postgres() {
        Some(world) => staged_rollouts(&world),
        None => eprintln!(
            "AIRLIFT_TEST_POSTGRES_URL is not set: the PostgreSQL leg is skipped here (CI sets it)"
        ),
    }
}

fn staged_rollouts(world: &World) {
    let mut config = world.fleet_config(500);
    config.seed = 11;
    config.faults.fail_health_on = Some("3.0.0".into());
    config.faults.fail_health_share = Share::percent(40.0).expect("share");
    let fleet = Fleet::start(config).expect("fleet");
    enrolled(&fleet, 500);

    let good = world.deploy_with(world.package("2.0.0", IMAGE), staged(10));
    let detail = world.wait_for_status(&good, "finished", Duration::from_secs(120));
    assert_eq!(detail["status"], "finished", "{detail:#}");
    assert_eq!(detail["counts"]["success"], 500, "{detail:#}");
    let phases = &detail["rollout"]["phases"];
    let admitted: Vec<u64> = (0..4)
        .map(|i| phases[i]["admitted"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        admitted,
        [10, 40, 200, 250],
        "each phase its share: {phases:#}"
    );
    let snapshot = settled(&fleet, 500, Duration::from_secs(60));
    assert_eq!(snapshot.running("2.0.0"), 500, "{snapshot:#?}");

    // 40 % of devices fail their health check on 3.0.0. The canaries are
    // named, 4 of them unhealthy (a 2 % share drawn by the deployment's
    // random id could hold fewer than 2, and not trip the breaker): the
    // second rollback crosses the 10 % threshold, and the breaker aborts.
    let ids = world.device_ids();
    let devices = fleet.devices();
    let pick = |unhealthy: bool, n: usize| {
        devices
            .iter()
            .filter(move |d| d.fail_health == unhealthy)
            .take(n)
            .map(|d| serde_json::Value::from(ids[&d.serial].as_str()))
    };
    let canaries: Vec<serde_json::Value> = pick(true, 4).chain(pick(false, 6)).collect();
    let mut strategy = staged(10);
    strategy["phases"][0]["devices"] = serde_json::json!({ "devices": canaries });
    let bad = world.deploy_with(world.package("3.0.0", IMAGE), strategy);
    let detail = world.wait_for_status(&bad, "aborted", Duration::from_secs(60));
    assert_eq!(detail["status"], "aborted", "{detail:#}");
    let reason = detail["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("circuit breaker"), "{reason}");
    assert_eq!(detail["rollout"]["phase"], 0, "stopped in the canary phase");
    // Healthy canaries keep 3.0.0; the other 490 devices never saw it.
    let snapshot = settled(&fleet, 500, Duration::from_secs(60));
    let detail = world.deployment(&bad);
    let kept = detail["rollout"]["phases"][0]["succeeded"]
        .as_u64()
        .unwrap_or(99) as usize;
    assert!(kept <= 8, "{detail:#}");
    // (A canary mid-trial when the breaker tripped commits too; the
    // server, having cancelled it, keeps its late report as history.)
    let failed = detail["rollout"]["phases"][0]["failed"]
        .as_u64()
        .unwrap_or(0) as usize;
    let on_new = snapshot.running("3.0.0");
    assert!(
        (kept..=10 - failed).contains(&on_new),
        "{snapshot:#?} {detail:#}"
    );
    assert_eq!(snapshot.running("2.0.0"), 500 - on_new, "{snapshot:#?}");
    let phases = &detail["rollout"]["phases"];
    assert_eq!(phases[0]["admitted"], 10, "{phases:#}");
    let cancelled = detail["counts"]["cancelled"].as_u64().unwrap_or(0);
    assert!((490..=500).contains(&cancelled), "{detail:#}");
    for later in 1..4 {
        assert_eq!(phases[later]["admitted"], 0, "never admitted: {phases:#}");
    }
    assert!(phases[0]["failed"].as_u64().unwrap_or(0) >= 2, "{phases:#}");
    eprintln!("{}", fleet.stop());
}

/// Devices that poll once an hour take a deployment within the test's time
/// only because each hears its nudge on the push stream.
#[test]
fn a_fleet_on_push_takes_a_deployment_without_waiting_for_its_poll() {
    let world = World::new();
    let mut config = world.fleet_config(100);
    config.poll_interval = Some(Duration::from_secs(3600));
    config.push = airlift_agent::push::PushConfig::Events;
    let fleet = Fleet::start(config).expect("fleet");
    enrolled(&fleet, 100);
    world.wait_for_push_connections(100);
    let started = Instant::now();
    let deployment = world.deploy(world.package("2.0.0", IMAGE));
    let counts = world.wait_for_count(&deployment, "success", 100);
    assert_eq!(counts["success"], 100, "{counts}");
    eprintln!("100 devices on push updated in {:?}", started.elapsed());
    let summary = fleet.stop();
    assert!(summary.snapshot.nudges >= 100, "{:?}", summary.snapshot);
}
