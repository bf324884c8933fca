//! Fleet-wide automatic rollback, end to end on SQLite and PostgreSQL: a
//! bad release trips its breaker and every device that took it goes back
//! to the good release, devices that never took it are left alone, and a
//! rollback whose own breaker trips pauses instead of looping.

use crate::support::{enrolled, settled, World};
use airlift_sim::{Fleet, Share};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const IMAGE: usize = 48 * 1024;

/// canary (named devices) → 10 % → 50 % → 100 %, rolling back past 10 %
/// failures (to `rollback_package`, or to what each device ran before).
fn staged(canaries: &[Value], rollback_package: Option<&Value>) -> Value {
    let mut strategy = json!({
        "type": "phased",
        "phases": [
            {"devices": {"devices": canaries}, "name": "canary"},
            {"devices": {"percent": 10}},
            {"devices": {"percent": 50}},
            {"devices": {"percent": 100}}
        ],
        "failure_threshold": {"percent": 10},
        "on_failure": "rollback"
    });
    if let Some(package) = rollback_package {
        strategy["rollback_package"] = package.clone();
    }
    strategy
}

/// Ten canaries by server id: four whose health fails on the bad release
/// (so the breaker trips in the canary phase), six healthy ones (which
/// commit it, and are what the rollback brings back).
fn canaries(world: &World, fleet: &Fleet) -> Vec<Value> {
    let ids = world.device_ids();
    let devices = fleet.devices();
    let pick = |unhealthy: bool, n: usize| {
        devices
            .iter()
            .filter(move |d| d.fail_health == unhealthy)
            .take(n)
            .map(|d| Value::from(ids[&d.serial].as_str()))
    };
    pick(true, 4).chain(pick(false, 6)).collect()
}

/// A fleet on 2.0.0, whose health check fails on 3.0.0 on 40 % of
/// devices, and on 2.5.0 everywhere.
fn fleet_on_good(world: &World, devices: usize) -> Fleet {
    let mut config = world.fleet_config(devices);
    config.seed = 11;
    config.faults.fail_health_on = Some("3.0.0".into());
    config.faults.fail_health_share = Share::percent(40.0).expect("share");
    config.faults.fail_health_everywhere_on = Some("2.5.0".into());
    let fleet = Fleet::start(config).expect("fleet");
    enrolled(&fleet, devices);
    let good = world.deploy(world.package("2.0.0", IMAGE));
    let counts = world.wait_for_count(&good, "success", devices as u64);
    assert_eq!(counts["success"], devices as u64, "{counts}");
    settled(&fleet, devices, Duration::from_secs(90));
    fleet
}

/// The devices of a deployment, by server id.
fn devices_of(world: &World, deployment: &str) -> BTreeSet<String> {
    devices_where(world, deployment, |_| true)
}

/// The devices of a deployment in `state`, by server id.
fn devices_in_state(world: &World, deployment: &str, state: &str) -> BTreeSet<String> {
    devices_where(world, deployment, |d| d["state"] == state)
}

fn devices_where(
    world: &World,
    deployment: &str,
    keep: impl Fn(&Value) -> bool,
) -> BTreeSet<String> {
    let page = world.get(&format!("/deployments/{deployment}/devices?per_page=1000"));
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|d| keep(d))
        .map(|d| d["device_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The one rollback deployment the bad one's breaker started.
fn the_rollback(world: &World, bad: &str) -> String {
    let detail = world.wait_for_status(bad, "aborted", Duration::from_secs(60));
    assert_eq!(detail["status"], "aborted", "{detail:#}");
    let reason = detail["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("circuit breaker"), "{reason}");
    assert!(reason.contains("rolling back the"), "{reason}");
    let by = detail["rolled_back_by"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(by.len(), 1, "{detail:#}");
    let rollback = by[0].as_str().unwrap_or_default().to_owned();
    assert_eq!(world.deployment(&rollback)["rollback_of"], bad);
    rollback
}

fn every_device_that_took_the_bad_release_ends_on_the_good_one(world: &World) {
    const DEVICES: usize = 200;
    let fleet = fleet_on_good(world, DEVICES);
    let canaries = canaries(world, &fleet);
    let bad = world.deploy_with(world.package("3.0.0", IMAGE), staged(&canaries, None));
    let rollback = the_rollback(world, &bad);

    let detail = world.wait_for_status(&rollback, "finished", Duration::from_secs(120));
    assert_eq!(detail["status"], "finished", "{detail:#}");
    let snapshot = settled(&fleet, DEVICES, Duration::from_secs(60));
    assert_eq!(snapshot.running("3.0.0"), 0, "{snapshot:#?}");
    assert_eq!(snapshot.running("2.0.0"), DEVICES, "{snapshot:#?}");

    // Exactly devices that took it: canaries, every one that committed it
    // (how many of the six healthy ones got that far before the four
    // failures tripped the breaker is a race), never one that did not
    // start on it.
    let rolled = devices_of(world, &rollback);
    let named: BTreeSet<String> = canaries
        .iter()
        .map(|c| c.as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(rolled.is_subset(&named), "{rolled:?} ⊄ {named:?}");
    let committed = devices_in_state(world, &bad, "success");
    assert!(!committed.is_empty(), "no canary committed the bad release");
    assert!(committed.is_subset(&rolled), "{committed:?} ⊄ {rolled:?}");
    let counts = &detail["counts"];
    let back =
        counts["success"].as_u64().unwrap_or(0) + counts["already_installed"].as_u64().unwrap_or(0);
    assert_eq!(back, rolled.len() as u64, "{detail:#}");

    let metrics = world.metrics();
    // (At least: the tests of this binary share one metrics recorder.)
    let rollbacks = airlift_testkit::server::metric_sample(&metrics, "airlift_rollbacks_total");
    assert!(rollbacks.is_some_and(|n| n >= 1.0), "{metrics}");
    let audit = world.get("/audit?action=deployment.rollback");
    assert_eq!(audit["total"], 1, "{audit:#}");
    assert_eq!(audit["items"][0]["object"], bad.as_str(), "{audit:#}");
    eprintln!("{}", fleet.stop());
}

fn a_second_trip_during_the_rollback_pauses(world: &World) {
    const DEVICES: usize = 60;
    let fleet = fleet_on_good(world, DEVICES);
    let canaries = canaries(world, &fleet);
    // The rollback goes to 2.5.0, which is broken everywhere.
    let broken = world.upload(world.package("2.5.0", IMAGE));
    let bad = world.deploy_with(
        world.package("3.0.0", IMAGE),
        staged(&canaries, Some(&broken["id"])),
    );
    let rollback = the_rollback(world, &bad);
    let detail = world.wait_for_status(&rollback, "paused", Duration::from_secs(90));
    assert_eq!(detail["status"], "paused", "{detail:#}");
    let reason = detail["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("circuit breaker"), "{reason}");
    assert!(reason.contains("paused"), "{reason}");
    assert!(
        detail["rolled_back_by"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{detail:#}"
    );
    // Nothing loops: no third deployment appears.
    std::thread::sleep(Duration::from_secs(3));
    let all = world.get("/deployments?per_page=100");
    assert_eq!(all["total"], 3, "good, bad and its rollback only: {all:#}");
    let snapshot = settled(&fleet, DEVICES, Duration::from_secs(60));
    assert_eq!(snapshot.running("2.5.0"), 0, "{snapshot:#?}");
    eprintln!("{}", fleet.stop());
}

#[test]
fn a_bad_release_is_rolled_back_on_the_devices_that_took_it() {
    every_device_that_took_the_bad_release_ends_on_the_good_one(&World::new());
}

#[test]
fn a_bad_release_is_rolled_back_on_postgresql() {
    match World::on_postgres() {
        Some(world) => every_device_that_took_the_bad_release_ends_on_the_good_one(&world),
        None => eprintln!("AIRLIFT_TEST_POSTGRES_URL is not set: the PostgreSQL leg is skipped"),
    }
}

#[test]
fn a_rollback_whose_breaker_trips_pauses() {
    a_second_trip_during_the_rollback_pauses(&World::new());
}

#[test]
fn a_rollback_whose_breaker_trips_pauses_on_postgresql() {
    match World::on_postgres() {
        Some(world) => a_second_trip_during_the_rollback_pauses(&world),
        None => eprintln!("AIRLIFT_TEST_POSTGRES_URL is not set: the PostgreSQL leg is skipped"),
    }
}
