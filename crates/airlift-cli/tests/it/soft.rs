//! Soft deployments through the `airlift` binary against a real server:
//! `deployment create --soft --max-deferrals N --deadline …`, the refusals
//! of bad bounds, and `deployment show` telling the mode and the deferrals
//! a device (speaking the device API) made.

use crate::operated::Operated;
use crate::support::{failure_of, json_of};
use airlift_protocol::soft::{deferral_path, DeferralReport};
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use airlift_testkit::device::{DeviceApi, TestDevice};
use assert_cmd::Command;

/// The operated server, with this suite's devices and deployments.
struct Fleet(Operated);

impl std::ops::Deref for Fleet {
    type Target = Operated;
    fn deref(&self) -> &Operated {
        &self.0
    }
}

impl Fleet {
    fn new() -> Self {
        Self(Operated::new(&["--poll-interval", "1"]))
    }

    /// A device pre-authorised through the CLI and checked in once.
    fn device(&self, serial: &str) -> TestDevice {
        let device = self.preauthorized(TestDevice::new(serial, "rpi4"), &[]);
        self.runtime.block_on(device.check_in(&self.api));
        device
    }

    /// `deployment create` of `package` to `device` with `flags`.
    fn create(&self, package: &str, device: &TestDevice, flags: &[&str]) -> Command {
        let mut command = self.cli();
        command
            .args([
                "deployment",
                "create",
                "--name",
                "kiosk",
                "--package",
                package,
            ])
            .arg("--device")
            .arg(device.id.expect("an id").to_string())
            .args(flags);
        command
    }

    /// The device downloads the deployment's update and defers it once.
    fn download_and_defer(&self, device: &TestDevice, deployment: DeploymentId) {
        for state in [UpdateState::Downloading, UpdateState::Downloaded] {
            let response = self
                .runtime
                .block_on(device.report(&self.api, deployment, state, None));
            assert!(response.status().is_success(), "{response:?}");
        }
        let report = DeferralReport {
            deferral: 1,
            message: Some("in a call".into()),
        };
        let response = self.runtime.block_on(
            self.api
                .http()
                .post(format!(
                    "{}{}",
                    self.api.base_url(),
                    deferral_path(deployment)
                ))
                .bearer_auth(device.token.as_deref().expect("a token"))
                .json(&report)
                .send(),
        );
        let response = response.expect("deferral report");
        assert!(response.status().is_success(), "{response:?}");
    }
}

/// Runs a command clap must refuse (exit code 2); returns its stderr.
fn usage_error_of(command: &mut Command) -> String {
    let output = command.assert().code(2).get_output().clone();
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn deployment_create_soft_and_show_tell_the_mode_and_the_deferrals() {
    let fleet = Fleet::new();
    let package = fleet.package("2.0.0");
    let device = fleet.device("SOFT-1");
    let flags = [
        "--soft",
        "--max-deferrals",
        "2",
        "--deadline",
        "7d",
        "--json",
    ];
    let created = json_of(&mut fleet.create(&package, &device, &flags));
    let soft = &created["install"]["soft"];
    assert_eq!(soft["max_deferrals"], 2, "{created}");
    let deadline: chrono::DateTime<chrono::Utc> = soft["deadline"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("a deadline");
    let week = chrono::Utc::now() + chrono::Duration::days(7);
    assert!((week - deadline).num_minutes().abs() < 5, "{deadline}");
    let id: DeploymentId = created["id"].as_str().expect("id").parse().expect("uuid");

    fleet.download_and_defer(&device, id);
    let shown = fleet
        .cli()
        .args(["deployment", "show", &id.to_string()])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&shown.get_output().stdout).into_owned();
    assert!(
        text.contains("soft: up to 2 deferrals per device, until"),
        "{text}"
    );
    assert!(
        text.contains("1 by 1 device (at most 1 by one device)"),
        "{text}"
    );
    let json = json_of(
        fleet
            .cli()
            .args(["deployment", "show", &id.to_string(), "--json"]),
    );
    assert_eq!(json["deferrals"]["deferrals"], 1, "{json}");
    assert_eq!(json["install"]["soft"]["max_deferrals"], 2, "{json}");

    // A forced deployment says so.
    let forced = fleet.device("FORCED-1");
    let text = fleet.create(&package, &forced, &[]).assert().success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).into_owned();
    assert!(text.contains("forced"), "{text}");
}

#[test]
fn deployment_create_refuses_soft_without_bounds_or_with_bad_ones() {
    let fleet = Fleet::new();
    let package = fleet.package("2.0.0");
    let device = fleet.device("SOFT-2");
    let unbounded = failure_of(&mut fleet.create(&package, &device, &["--soft"]));
    assert!(unbounded.contains("--max-deferrals"), "{unbounded}");
    let alone = usage_error_of(&mut fleet.create(&package, &device, &["--max-deferrals", "3"]));
    assert!(alone.contains("--soft"), "{alone}");
    let many =
        usage_error_of(&mut fleet.create(&package, &device, &["--soft", "--max-deferrals", "101"]));
    assert!(many.contains("101"), "{many}");
    let bad = usage_error_of(&mut fleet.create(
        &package,
        &device,
        &["--soft", "--deadline", "next week"],
    ));
    assert!(bad.contains("7d"), "{bad}");
    let past = failure_of(&mut fleet.create(
        &package,
        &device,
        &["--soft", "--deadline", "2020-01-01T00:00:00Z"],
    ));
    assert!(past.contains("is past"), "{past}");
}
