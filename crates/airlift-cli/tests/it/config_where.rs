//! `airlift device config set|get|unset --where` through the `airlift`
//! binary against a real server, with devices speaking the device API:
//! the document reaches exactly the devices the expression matches at
//! their check-in, one whose installed version moves past the bound is
//! asked to remove its keys, spellings that parse alike name one group,
//! and a bad expression is refused with its column before anything is
//! sent.

use crate::operated::Operated;
use crate::support::json_of;
use airlift_protocol::shadow::{Document, REPORTED_PATH};
use airlift_testkit::device::{DeviceApi, TestDevice};
use serde_json::{json, Value};

const CANONICAL: &str = "tag:lab AND installed.rootfs < 2.4.0";

/// A device pre-authorised with `tags`, reporting rootfs at `version`, that
/// checked in once.
fn device(operated: &Operated, serial: &str, tags: &[&str], version: &str) -> TestDevice {
    let mut device = TestDevice::new(serial, "rpi4");
    device
        .inventory
        .installed
        .insert("rootfs".into(), version.into());
    let device = operated.preauthorized(device, tags);
    operated.runtime.block_on(device.check_in(&operated.api));
    device
}

/// The shadow delta of `device`'s next check-in, `None` when converged.
fn delta(operated: &Operated, device: &TestDevice) -> Option<Value> {
    let answer = operated.runtime.block_on(device.check_in(&operated.api));
    answer.shadow.map(|shadow| Value::Object(shadow.delta))
}

/// `device` reports that it applied `document`.
fn report_applied(operated: &Operated, device: &TestDevice, document: Value) {
    let token = device.token.as_deref().expect("a token");
    let document: Document = serde_json::from_value(document).expect("an object");
    let response = operated.runtime.block_on(
        operated
            .api
            .http()
            .put(format!("{}{REPORTED_PATH}", operated.api.base_url()))
            .bearer_auth(token)
            .json(&json!({ "document": document }))
            .send(),
    );
    let status = response.expect("report sent").status();
    assert!(status.is_success(), "the report was answered {status}");
}

fn stdout_of(command: &mut assert_cmd::Command) -> String {
    let output = command.assert().success().get_output().stdout.clone();
    String::from_utf8(output).expect("UTF-8")
}

#[test]
fn config_for_an_expression_reaches_the_matching_devices_at_each_check_in() {
    let operated = Operated::new(&[]);
    let mut old = device(&operated, "CW-old", &["lab"], "2.3.0");
    let current = device(&operated, "CW-current", &["lab"], "2.4.0");
    let field = device(&operated, "CW-field", &["field"], "2.0.0");

    let set = stdout_of(operated.cli().args([
        "device",
        "config",
        "set",
        "--where",
        "tag:lab and installed.rootfs<2.4.0",
        "banner=update due",
    ]));
    assert!(
        set.contains(&format!("set 1 key(s) of devices where {CANONICAL}")),
        "{set}"
    );
    assert!(set.contains("1 accepted device(s) match it today"), "{set}");

    assert_eq!(
        delta(&operated, &old),
        Some(json!({"banner": "update due"}))
    );
    assert_eq!(delta(&operated, &current), None);
    assert_eq!(delta(&operated, &field), None);
    let old_id = old.id.expect("an id").to_string();
    let shadow = json_of(
        operated
            .cli()
            .args(["device", "config", "get", &old_id, "--json"]),
    );
    assert_eq!(shadow["sources"]["banner"], format!("expr:{CANONICAL}"));

    // Another spelling of the same expression names the same group.
    let group = json_of(operated.cli().args([
        "device",
        "config",
        "get",
        "--where",
        "tag:lab  and installed.rootfs <  2.4.0",
        "--json",
    ]));
    assert_eq!(group["group"], json!({"expression": CANONICAL}), "{group}");
    assert_eq!(
        group["desired"]["document"],
        json!({"banner": "update due"})
    );

    // The device applies it, then is updated past the bound: at the
    // check-in that reports the new version it is asked to remove the key.
    report_applied(&operated, &old, json!({"banner": "update due"}));
    assert_eq!(delta(&operated, &old), None);
    old.inventory
        .installed
        .insert("rootfs".into(), "2.4.0".into());
    assert_eq!(delta(&operated, &old), Some(json!({"banner": null})));

    // Unset: the group's document no longer holds the key.
    let unset = stdout_of(
        operated
            .cli()
            .args(["device", "config", "unset", "--where", CANONICAL, "banner"]),
    );
    assert!(unset.contains("no keys"), "{unset}");
}

#[test]
fn a_bad_where_is_refused_with_its_column_and_where_conflicts_with_the_other_groups() {
    let operated = Operated::new(&[]);
    let output = operated
        .cli()
        .args(["device", "config", "set", "--where", "tag:lab AND", "a=1"])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let error = String::from_utf8(output).expect("UTF-8");
    assert!(error.contains("column 12: expected a term"), "{error}");
    let output = operated
        .cli()
        .args([
            "device", "config", "get", "--where", "tag:lab", "--tag", "lab",
        ])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let error = String::from_utf8(output).expect("UTF-8");
    assert!(error.contains("cannot be used with"), "{error}");
    // Nothing was created by the refused command.
    let output = operated
        .cli()
        .args(["device", "config", "get", "--where", "tag:lab"])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let error = String::from_utf8(output).expect("UTF-8");
    assert!(error.contains("has no desired document"), "{error}");
}
