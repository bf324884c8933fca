//! `--where` target expressions through the `airlift` binary against a
//! real server, with devices speaking the device API: `device list
//! --where` lists exactly the matching devices, `deployment create
//! --where` reaches exactly them and a device that joins later, `deployment
//! show` prints the expression, and a bad expression is refused before
//! anything is sent, with its column.

use crate::operated::Operated;
use crate::support::json_of;
use airlift_protocol::DeploymentId;
use airlift_testkit::device::TestDevice;
use assert_cmd::Command;
use std::collections::BTreeSet;

const WHERE: &str = "tag:lab AND installed.rootfs < 2.4.0";

/// The operated server, with this suite's devices.
struct Fleet(Operated);

impl std::ops::Deref for Fleet {
    type Target = Operated;
    fn deref(&self) -> &Operated {
        &self.0
    }
}

impl Fleet {
    fn new() -> Self {
        Self(Operated::new(&[]))
    }

    /// A device pre-authorised with `tags` through the CLI, accepted at its
    /// first contact, that checked in reporting rootfs at `version`; and
    /// the deployment it was offered there, if any.
    fn device(
        &self,
        serial: &str,
        tags: &[&str],
        version: &str,
    ) -> (TestDevice, Option<DeploymentId>) {
        let mut device = TestDevice::new(serial, "rpi4");
        device
            .inventory
            .installed
            .insert("rootfs".into(), version.into());
        let device = self.preauthorized(device, tags);
        let offer = self.runtime.block_on(device.check_in(&self.api)).update;
        (device, offer.map(|o| o.deployment_id))
    }

    fn listed(&self, expression: &str) -> BTreeSet<String> {
        let page = json_of(
            self.cli()
                .args(["device", "list", "--json", "--where", expression]),
        );
        let items = page["items"].as_array().expect("items");
        assert_eq!(page["total"], items.len(), "{page}");
        items
            .iter()
            .map(|d| d["identity"]["serial"].as_str().expect("serial").to_owned())
            .collect()
    }
}

/// Runs a command clap must refuse (exit code 2); returns its stderr.
fn refused(command: &mut Command) -> String {
    let output = command.assert().code(2).get_output().clone();
    String::from_utf8(output.stderr).expect("stderr is UTF-8")
}

fn serials(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_where_deployment_reaches_exactly_the_matching_devices_and_later_ones() {
    let fleet = Fleet::new();
    let package = fleet.package("2.4.0");
    let (old, _) = fleet.device("EX-old", &["lab"], "2.3.9");
    let (_current, _) = fleet.device("EX-current", &["lab"], "2.4.0");
    let (_field, _) = fleet.device("EX-field", &["field"], "2.0.0");
    let (_beta, _) = fleet.device("EX-beta", &["lab", "bench"], "2.4.0-beta.2");
    assert_eq!(fleet.listed(WHERE), serials(&["EX-old", "EX-beta"]));
    assert_eq!(
        fleet.listed("tag:lab AND NOT tag:bench AND installed.rootfs < 2.4"),
        serials(&["EX-old"])
    );

    let created = json_of(fleet.cli().args([
        "deployment",
        "create",
        "--name",
        "rootfs 2.4.0 lab",
        "--package",
        &package,
        "--where",
        "tag:lab and not tag:bench and installed.rootfs<2.4.0",
        "--json",
    ]));
    assert_eq!(
        created["target"]["expression"], "tag:lab AND NOT tag:bench AND installed.rootfs < 2.4.0",
        "{created}"
    );
    let id: DeploymentId = created["id"].as_str().expect("id").parse().expect("uuid");
    let shown = fleet
        .cli()
        .args(["deployment", "show", &id.to_string()])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let shown = String::from_utf8(shown).expect("UTF-8");
    assert!(
        shown.contains("devices where tag:lab AND NOT tag:bench AND installed.rootfs < 2.4.0"),
        "{shown}"
    );
    let devices = json_of(
        fleet
            .cli()
            .args(["deployment", "show", &id.to_string(), "--json"]),
    );
    let targeted: Vec<&str> = devices["devices"]["items"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["device_id"].as_str().expect("id"))
        .collect();
    assert_eq!(targeted, [old.id.expect("id").to_string()], "{devices}");

    // Joining later: a match is offered it at its first check-in; a lab
    // device already on 2.4.0 is not.
    let (_, offered) = fleet.device("EX-late", &["lab"], "2.1.0");
    assert_eq!(offered, Some(id));
    let (_, offered) = fleet.device("EX-late-current", &["lab"], "2.4.1");
    assert_eq!(offered, None);
}

#[test]
fn a_bad_where_is_refused_with_its_column_before_anything_is_sent() {
    let fleet = Fleet::new();
    let error = refused(
        fleet
            .cli()
            .args(["device", "list", "--where", "tag:lab AND"]),
    );
    assert!(error.contains("column 12: expected a term"), "{error}");
    assert!(error.contains("docs/targets.md"), "{error}");
    let error = refused(fleet.cli().args([
        "deployment",
        "create",
        "--name",
        "x",
        "--package",
        "0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56",
        "--where",
        "installed.rootfs ~ 2",
    ]));
    assert!(
        error.contains("column 18: expected a comparison"),
        "{error}"
    );
}
