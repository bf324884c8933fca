//! Soft deployments end to end: the real agent asks its `defer_command`
//! before installing a soft update, reports each "not now" to the real
//! server, and installs anyway once the offer turns forced; a hook that says
//! yes installs at once; a forced update never runs the hook.

use crate::harness::{enrol, image, Device, Operator, Packages, Signer};
use crate::server::InProcessServer;
use airlift_agent::boot::Slot;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// A `defer_command` that records each call (with the offer it was told)
/// in `calls` and exits `code`.
fn hook(device: &Device, code: i32) -> PathBuf {
    let calls = device.dir.path().join("hook-calls");
    let script = device.dir.path().join("ask-user");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$AIRLIFT_UPDATE_VERSION used=$AIRLIFT_DEFERRALS_USED left=$AIRLIFT_DEFERRALS_LEFT\" >> {calls:?}\necho 'in a video call'\nexit {code}\n"
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    device.set_option(&format!(
        "defer_command = [{:?}]",
        script.display().to_string()
    ));
    device.set_option("defer_timeout_secs = 10");
    calls
}

fn calls(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_soft_update_deferred_twice_turns_forced_and_installs_anyway() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let device_id = enrol(&device, &operator);
    let not_now = hook(&device, 75);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy_with(
        &package,
        &device_id,
        serde_json::json!({"soft": {"max_deferrals": 2}}),
    );

    device.run_once(); // download, verify, ask: "not now"
    assert_eq!(device.status()["state"], "downloaded");
    assert_eq!(device.slot(Slot::B), image("2.0.0"), "downloaded");
    assert_eq!(calls(&not_now), ["2.0.0 used=0 left=2"]);
    device.run_once(); // asked again at the next check-in: "not now"
    assert_eq!(device.status()["state"], "downloaded");
    assert_eq!(calls(&not_now).len(), 2);
    assert_eq!(calls(&not_now)[1], "2.0.0 used=1 left=1");
    let detail = operator.deployment(&deployment);
    assert_eq!(
        detail["deferrals"],
        serde_json::json!({"deferrals": 2, "devices": 1, "most": 2}),
        "{detail}"
    );
    let history = operator.device(&device_id).to_string();
    assert!(
        history.contains("deferred (2 of 2): in a video call"),
        "{history}"
    );

    device.run_once(); // forced now: installs without asking
    assert_eq!(
        calls(&not_now).len(),
        2,
        "a forced offer never runs the hook"
    );
    assert_eq!(device.status()["state"], "rebooting");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::B, true));
    device.run_once();
    assert_eq!(operator.device_state(&deployment).0, "success");
}

#[test]
fn a_soft_update_the_hook_accepts_installs_at_once_and_a_forced_one_never_asks() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let device_id = enrol(&device, &operator);
    let yes = hook(&device, 0);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    let soft = operator.deploy_with(
        &package,
        &device_id,
        serde_json::json!({"soft": {"max_deferrals": 3}}),
    );
    device.run_once(); // download, ask: yes, install
    assert_eq!(calls(&yes), ["2.0.0 used=0 left=3"]);
    assert_eq!(device.status()["state"], "rebooting");
    device.power_up();
    device.run_once();
    assert_eq!(operator.device_state(&soft).0, "success");

    let package = operator.upload(signer.image_package("rootfs", "3.0.0", 1));
    let forced = operator.deploy(&package, &device_id);
    device.run_once();
    assert_eq!(device.status()["state"], "rebooting");
    assert_eq!(calls(&yes).len(), 1, "a forced update never runs the hook");
    device.power_up();
    device.run_once();
    assert_eq!(operator.device_state(&forced).0, "success");
}
