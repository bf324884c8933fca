//! Retry, reset and the operator's conveniences through the `airlift`
//! binary against a real server, with devices speaking the device API:
//! `deployment retry` (counted, with a limit), `device reset` (refused
//! before the timeout unless forced, audited with its reason), `deployment
//! show --watch` (ends with the deployment), the warning at `deployment
//! create`, `device list --offline`.

use crate::operated::Operated;
use crate::support::{failure_of, json_of};
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use airlift_testkit::device::TestDevice;
use std::time::{Duration, Instant};

/// The operated server, with this suite's devices and deployments.
struct World(Operated);

impl std::ops::Deref for World {
    type Target = Operated;
    fn deref(&self) -> &Operated {
        &self.0
    }
}

impl World {
    fn new() -> Self {
        Self(Operated::new(&["--poll-interval", "1"]))
    }

    /// A device pre-authorised through the CLI, accepted at its first
    /// contact, and checked in once.
    fn device(&self, serial: &str, device_type: &str) -> TestDevice {
        let device = self.preauthorized(TestDevice::new(serial, device_type), &[]);
        self.runtime.block_on(device.check_in(&self.api));
        device
    }

    fn report(&self, device: &TestDevice, deployment: DeploymentId, state: UpdateState) {
        let response = self.runtime.block_on(device.report(
            &self.api,
            deployment,
            state,
            Some("from the test"),
        ));
        assert!(response.status().is_success(), "{response:?}");
    }

    fn deploy(&self, package: &str, devices: &[&TestDevice]) -> DeploymentId {
        let mut command = self.cli();
        command.args([
            "deployment",
            "create",
            "--name",
            "rootfs",
            "--package",
            package,
        ]);
        for device in devices {
            command.arg("--device").arg(id_of(device).to_string());
        }
        let created = json_of(command.arg("--json"));
        created["id"].as_str().expect("id").parse().expect("uuid")
    }
}

fn id_of(device: &TestDevice) -> airlift_protocol::DeviceId {
    device.id.expect("the device has an id")
}

#[test]
fn a_retry_reaches_a_device_whose_failure_the_server_saw_at_a_check_in() {
    let world = World::new();
    let package = world.package("2.0.0");
    let (failing, waiting) = (world.device("RF-1", "rpi4"), world.device("RF-2", "rpi4"));
    // The waiting device keeps the deployment open, so the failed one's
    // check-ins still look at it, and the server remembers the failure as
    // final (it offers nothing more)...
    let deployment = world.deploy(&package, &[&failing, &waiting]);
    world.report(&failing, deployment, UpdateState::Failure);
    let before = world.runtime.block_on(failing.check_in(&world.api));
    assert_eq!(
        before.update.map(|u| u.deployment_id),
        None,
        "failed: no offer"
    );

    // ...until an operator retries: then it is offered again at once.
    let id = deployment.to_string();
    let retried = json_of(world.cli().args(["deployment", "retry", &id, "--json"]));
    assert_eq!(retried["retried"], serde_json::json!([id_of(&failing)]));
    let after = world.runtime.block_on(failing.check_in(&world.api));
    assert_eq!(
        after.update.map(|u| u.deployment_id),
        Some(deployment),
        "offered again"
    );
}

#[test]
fn retry_offers_a_deployment_again_up_to_a_limit() {
    let world = World::new();
    let package = world.package("2.0.0");
    let (failing, working) = (world.device("RT-1", "rpi4"), world.device("RT-2", "rpi4"));
    let deployment = world.deploy(&package, &[&failing, &working]);
    world.report(&failing, deployment, UpdateState::Failure);
    world.report(&working, deployment, UpdateState::Success);
    let id = deployment.to_string();

    let retried = json_of(world.cli().args(["deployment", "retry", &id, "--json"]));
    assert_eq!(
        retried["retried"],
        serde_json::json!([id_of(&failing)]),
        "{retried:#}"
    );
    assert_eq!(
        retried["reopened"], true,
        "the finished deployment opens again: {retried:#}"
    );
    let offer = world.runtime.block_on(failing.check_in(&world.api));
    assert_eq!(
        offer.update.map(|u| u.deployment_id),
        Some(deployment),
        "offered again"
    );

    // Failed again: the limit of one retry leaves it alone, and says so.
    world.report(&failing, deployment, UpdateState::Failure);
    let output = world
        .cli()
        .args(["deployment", "retry", &id, "--limit", "1"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&output);
    assert!(text.contains("no failed device"), "{text}");
    assert!(
        text.contains("1 failed devices were left as they are: retried 1 times"),
        "{text}"
    );
    let retried = json_of(
        world
            .cli()
            .args(["deployment", "retry", &id, "--limit", "2", "--json"]),
    );
    assert_eq!(
        retried["retried"].as_array().map(Vec::len),
        Some(1),
        "{retried:#}"
    );

    let audit =
        json_of(
            world
                .cli()
                .args(["audit", "list", "--action", "deployment.retry", "--json"]),
        );
    assert_eq!(audit["total"], 2, "{audit:#}");
    // Filters by object and time reach the server.
    let total = |filters: &[&str]| {
        let page = json_of(world.cli().args(["audit", "list", "--json"]).args(filters));
        page["total"].as_u64().unwrap_or(99)
    };
    assert_eq!(total(&["--target", &id]), 3, "created and retried twice");
    assert_eq!(total(&["--target", &id, "--since", "1h"]), 3);
    assert_eq!(
        total(&["--target", &id, "--until", "2001-01-01T00:00:00Z"]),
        0
    );
    assert_eq!(
        total(&["--target", &id, "--since", "2999-01-01T00:00:00Z"]),
        0
    );
    let refused = world
        .cli()
        .args(["deployment", "retry", &id, "--limit", "0"])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.contains("--limit"), "{refused}");
}

#[test]
fn a_stuck_device_is_reset_with_a_reason_for_the_audit_log() {
    let world = World::new();
    let package = world.package("2.0.0");
    let device = world.device("RS-1", "rpi4");
    let deployment = world.deploy(&package, &[&device]);
    world.report(&device, deployment, UpdateState::Installing);
    let device_id = id_of(&device).to_string();

    // Installing for a moment is not stuck (an all-at-once deployment's
    // device timeout is 6 h).
    let stderr = failure_of(
        world
            .cli()
            .args(["device", "reset", &device_id, "--reason", "stuck"]),
    );
    assert!(
        stderr.contains("less than the deployment's device timeout (21600 s)"),
        "{stderr}"
    );
    assert!(stderr.contains("force"), "{stderr}");
    let stderr = failure_of(
        world
            .cli()
            .args(["device", "reset", &device_id, "--reason", "  "]),
    );
    assert!(stderr.contains("reason"), "{stderr}");

    let reset = json_of(world.cli().args([
        "device",
        "reset",
        &device_id,
        "--reason",
        "re-imaged on the bench",
        "--force",
        "--json",
    ]));
    assert_eq!(reset["was"], "installing", "{reset:#}");
    assert_eq!(reset["state"], "pending", "{reset:#}");
    assert_eq!(reset["forced"], true, "{reset:#}");
    let offer = world.runtime.block_on(device.check_in(&world.api));
    assert_eq!(offer.update.map(|u| u.deployment_id), Some(deployment));

    // Through the deployment too; nothing to reset once it is pending.
    let stderr = failure_of(world.cli().args([
        "deployment",
        "reset",
        &deployment.to_string(),
        "--device",
        &device_id,
        "--reason",
        "again",
    ]));
    assert!(stderr.contains("is pending"), "{stderr}");

    let audit = json_of(
        world
            .cli()
            .args(["audit", "list", "--action", "device.reset", "--json"]),
    );
    assert_eq!(audit["total"], 1, "{audit:#}");
    assert_eq!(audit["items"][0]["object"], device_id.as_str());
    assert_eq!(
        audit["items"][0]["details"]["reason"],
        "re-imaged on the bench"
    );
    let shown = json_of(world.cli().args(["device", "show", &device_id, "--json"]));
    let history = shown["history"].to_string();
    assert!(history.contains("re-imaged on the bench"), "{history}");
}

#[test]
fn watch_ends_when_the_deployment_does_and_prints_how_it_ended() {
    let world = World::new();
    let package = world.package("2.0.0");
    let (a, b) = (world.device("W-1", "rpi4"), world.device("W-2", "rpi4"));
    let deployment = world.deploy(&package, &[&a, &b]);
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_airlift"));
    watch
        .env("AIRLIFT_CONFIG_DIR", world.scratch.path("config"))
        .env_remove("AIRLIFT_SERVER")
        .env_remove("AIRLIFT_TOKEN")
        .args([
            "deployment",
            "show",
            &deployment.to_string(),
            "--watch",
            "--interval",
            "100ms",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = watch.spawn().expect("airlift deployment show --watch");
    world.report(&a, deployment, UpdateState::Success);
    world.report(&b, deployment, UpdateState::Success);
    let started = Instant::now();
    let output = child.wait_with_output().expect("watch ends");
    assert!(started.elapsed() < Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("finished"), "{stdout}");
    assert!(stdout.contains("2: 2 success"), "{stdout}");
}

#[test]
fn create_warns_when_nothing_can_take_it_and_offline_devices_are_listed() {
    let world = World::new();
    let package = world.package("2.0.0");
    let other = world.device("OT-1", "other-board");
    let mut create = world.cli();
    create
        .args([
            "deployment",
            "create",
            "--name",
            "nowhere",
            "--package",
            &package,
        ])
        .arg("--device")
        .arg(id_of(&other).to_string());
    let output = create.assert().success().get_output().clone();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: the package fits none of the 1 targeted devices"),
        "{stderr}"
    );

    // Silent for 3 poll intervals (1 s each here): offline.
    let offline = |world: &World| {
        let page = json_of(world.cli().args(["device", "list", "--offline", "--json"]));
        page["total"].as_u64().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while offline(&world) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(offline(&world), 1);
    let help = world
        .cli()
        .args(["device", "list", "--help"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8_lossy(&help).contains("3 poll intervals"));
}
