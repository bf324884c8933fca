//! Updates from the server through a trial boot, as a device lives them.

use crate::harness::{
    enrol, image, Device, Operator, Packages, Signer, FACTORY_IMAGE, SPARE_IMAGE,
};
use crate::server::InProcessServer;
use airlift_agent::boot::Slot;

#[test]
fn a_good_update_is_installed_trial_booted_and_committed() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&package, &device_id);

    device.run_once(); // download, install into B, arm the trial, "reboot"
    assert_eq!(device.slot(Slot::B), image("2.0.0"));
    assert_eq!(device.slot(Slot::A), FACTORY_IMAGE);
    assert_eq!(device.status()["state"], "rebooting");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::B, true));

    device.run_once(); // health checks pass: commit
    assert_eq!(device.status()["state"], "idle");
    assert_eq!(operator.device_state(&deployment).0, "success");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::B, false), "committed");
}

#[test]
fn a_failing_health_check_rolls_back_with_its_reason() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["false"]);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&package, &device_id);

    device.run_once();
    assert_eq!(device.power_up().slot, Slot::B);
    device.run_once(); // unhealthy: abandon the trial, report, "reboot"
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "rolled_back");
    assert!(message.contains("health check"), "{message}");

    let boot = device.power_up();
    assert_eq!(
        (boot.slot, boot.trial),
        (Slot::A, false),
        "back in the old slot"
    );
    device.run_once(); // back in A: clean up
    assert_eq!(device.status()["state"], "idle");
    assert_eq!(operator.device_state(&deployment).0, "rolled_back");
}

#[test]
fn a_package_the_device_does_not_trust_is_refused_before_the_slot_is_touched() {
    let release = Signer::new();
    let other = Signer::new();
    let server = InProcessServer::start_with(release.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, other.public_key_file(), &["true"]);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(release.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&package, &device_id);

    device.run_once();
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "failure");
    assert!(message.contains("verify"), "{message}");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");
    assert_eq!(device.status()["state"], "idle");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false));
}

#[test]
fn an_older_security_version_is_refused() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    device.set_record(5);
    let device_id = enrol(&device, &operator);
    let old = signer.image_package("rootfs", "2.0.0", 1);
    let package = operator.upload(old.clone());
    let deployment = operator.deploy(&package, &device_id);

    // The device reports its security version: the server never offers it.
    device.run_once();
    assert_eq!(operator.device_state(&deployment).0, "incompatible");

    // Handed to the agent directly, the agent refuses it on its own.
    let file = device.dir.path().join("old.airlift");
    std::fs::write(&file, old).expect("package file");
    let output = device.agent(&["install", file.to_str().expect("utf-8 path")]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("security version"), "{stderr}");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");
}

#[test]
fn a_new_version_that_cannot_reach_the_server_rolls_back_and_says_so_later() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    device.set_reach_server_timeout(2);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&package, &device_id);

    device.run_once(); // download, install into B, arm the trial, "reboot"
    assert_eq!(device.power_up().slot, Slot::B);
    // The new version's network is broken: nothing answers where it looks.
    let working = device.set_server_url("http://127.0.0.1:9");
    device.run_once(); // the health check passes, the server check does not
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false), "rolled back");
    assert_eq!(
        operator.device_state(&deployment).0,
        "rebooting",
        "not told yet"
    );

    device.set_server_url(&working); // the old version reaches it
    device.run_once(); // the queued report goes out
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "rolled_back");
    assert!(message.contains("could not reach the server"), "{message}");
    assert_eq!(device.status()["state"], "idle");
    assert_eq!(device.slot(Slot::A), FACTORY_IMAGE);
}

#[test]
fn a_package_for_another_device_type_is_refused() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let device_id = enrol(&device, &operator);
    let foreign = signer.package_for("other-board", "2.0.0");
    let package = operator.upload(foreign.clone());
    let deployment = operator.deploy(&package, &device_id);

    // The server knows the device's type: it never offers the package.
    device.run_once();
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "incompatible");
    assert!(message.contains("other-board"), "{message}");

    // Handed to the agent directly, the agent refuses it on its own.
    let file = device.dir.path().join("foreign.airlift");
    std::fs::write(&file, foreign).expect("package file");
    let output = device.agent(&["install", file.to_str().expect("utf-8 path")]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("other-board"), "{stderr}");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");
    assert_eq!(device.status()["state"], "idle");
}

#[test]
fn a_local_install_goes_through_the_same_trial_without_a_server() {
    let signer = Signer::new();
    let device = Device::new("http://127.0.0.1:9", signer.public_key_file(), &["true"]);
    let file = device.dir.path().join("new.airlift");
    std::fs::write(&file, signer.image_package("rootfs", "3.0.0", 2)).expect("package file");
    let output = device.agent(&["install", file.to_str().expect("utf-8 path")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(device.slot(Slot::B), image("3.0.0"));
    assert_eq!(device.power_up().slot, Slot::B);

    let output = device.agent(&["commit"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(device.status()["state"], "idle");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::B, false));
}

/// A device whose download of a raw 1 MiB image was cut by a power cut
/// (the agent killed at package byte 600 000, the device powered up again).
fn interrupted_download() -> (Signer, InProcessServer, Device, String, Vec<u8>) {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let operator = Operator::new(&server);
    let device_id = enrol(&device, &operator);
    let (file, image) = signer.raw_package("2.0.0", 1024 * 1024);
    let package = operator.upload(file);
    let deployment = operator.deploy(&package, &device_id);

    let run = device.run_faulted("byte:600000");
    assert!(run.halted, "{}", run.log);
    assert_eq!(device.status()["state"], "downloading");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false), "nothing armed");
    (signer, server, device, deployment, image)
}

#[test]
fn an_interrupted_download_resumes_where_it_was_after_a_restart() {
    let (_signer, server, device, deployment, image) = interrupted_download();
    let offset = device.status()["offset"].as_u64().expect("a checkpoint");
    // The slot is written on its own thread, a few buffers behind the
    // download (install/slot_writer.rs): the checkpoint is what that
    // thread synced before the cut, somewhere before byte 600 000.
    assert!(offset > 0 && offset < 600_000, "checkpointed at {offset}");

    let run = device.run_faulted("save:0"); // the rest with Range, arm, "reboot"
    assert!(run.success, "{}", run.log);
    assert_eq!(run.fetched_from(), [offset], "resumed at the checkpoint");
    assert_eq!(device.slot(Slot::B), image);
    assert_eq!(device.power_up().slot, Slot::B);
    device.run_once();
    assert_eq!(
        Operator::new(&server).device_state(&deployment).0,
        "success"
    );
}

#[test]
fn a_slot_damaged_while_the_agent_was_down_fails_its_digest_and_is_never_armed() {
    let (_signer, server, device, deployment, _) = interrupted_download();
    let slot_b = device.dir.path().join("b.img");
    let mut written = std::fs::read(&slot_b).expect("slot b");
    written[1000] ^= 0xFF;
    std::fs::write(&slot_b, written).expect("damage slot b");

    device.run_once(); // the resumed stream hashes the slot's bytes too
    let (state, message) = Operator::new(&server).device_state(&deployment);
    assert_eq!(state, "failure");
    assert!(message.contains("SHA-256 does not match"), "{message}");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false), "never armed");
    assert_eq!(device.status()["state"], "idle");
}

#[test]
fn a_corrupt_state_during_the_trial_boot_rolls_back() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&package, &device_id);

    device.run_once();
    assert_eq!(device.power_up().slot, Slot::B);
    let state = device.dir.path().join("data").join("state");
    std::fs::write(&state, b"not a state file").expect("damage the state");

    device.run_once(); // nothing vouches for B: abandon the trial, "reboot"
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false));
    let aside = device.dir.path().join("data").join("state.corrupt.1");
    assert!(aside.exists(), "the corrupt file is kept for a person");

    device.run_once(); // back in A: the queued report goes out
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "rolled_back");
    assert!(message.contains("state file was corrupt"), "{message}");
}

#[test]
fn a_file_update_is_replaced_in_place_and_committed_without_a_reboot() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let conf = device.dir.path().join("root/etc/app.conf");
    std::fs::write(&conf, b"old = true\n").expect("old file");
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.file_package("1.1.0", b"new = true\n"));
    let deployment = operator.deploy(&package, &device_id);

    device.run_once();
    assert_eq!(std::fs::read(&conf).expect("file"), b"new = true\n");
    assert_eq!(operator.device_state(&deployment).0, "success");
    assert_eq!(device.status()["state"], "idle");
    let record = std::fs::read_to_string(device.dir.path().join("data/installed.a"))
        .expect("the agent records what it committed");
    assert!(record.contains("1.1.0"), "{record}");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false), "no slot switch");
}

#[test]
fn a_file_update_that_leaves_the_device_unhealthy_is_undone() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let conf = device.dir.path().join("root/etc/app.conf");
    std::fs::write(&conf, b"old = true\n").expect("old file");
    // The check fails while the new configuration is in place.
    let script = format!("! grep -q broken {}", conf.display());
    device.set_health(&["/bin/sh", "-c", &script]);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.file_package("1.1.0", b"broken = true\n"));
    let deployment = operator.deploy(&package, &device_id);

    device.run_once();
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "failure");
    assert!(message.contains("undone"), "{message}");
    assert_eq!(std::fs::read(&conf).expect("file"), b"old = true\n");
    assert_eq!(device.status()["state"], "idle");
    let record =
        std::fs::read_to_string(device.dir.path().join("data/installed.a")).unwrap_or_default();
    assert!(
        !record.contains("1.1.0"),
        "not recorded as installed: {record}"
    );
}

#[test]
fn an_archive_update_replaces_its_directory_in_place_and_commits() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let app = device.dir.path().join("root/opt/app");
    std::fs::create_dir_all(app.join("plugins")).expect("old directory");
    std::fs::write(app.join("version"), b"1.0\n").expect("old file");
    std::fs::write(app.join("plugins/legacy.so"), b"old").expect("old plugin");
    let device_id = enrol(&device, &operator);
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in [("version", &b"2.0\n"[..]), ("bin/app", &b"#!/bin/sh\n"[..])] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        tar.append_data(&mut header, path, content)
            .expect("tar entry");
    }
    let tar = tar.into_inner().expect("tar");
    let package = operator.upload(signer.in_place_package(
        airlift_package::PayloadType::Archive,
        "/opt/app",
        "2.0.0",
        &tar,
    ));
    let deployment = operator.deploy(&package, &device_id);

    device.run_once();
    assert_eq!(operator.device_state(&deployment).0, "success");
    assert_eq!(std::fs::read(app.join("version")).expect("new"), b"2.0\n");
    assert!(app.join("bin/app").is_file());
    assert!(
        !app.join("plugins").exists(),
        "the directory is replaced whole"
    );
    let mut left: Vec<_> = std::fs::read_dir(device.dir.path().join("root/opt"))
        .expect("opt")
        .map(|e| e.expect("entry").file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["app"], "the old directory is gone once committed");
    assert_eq!(device.status()["state"], "idle");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false), "no slot switch");
}

#[test]
fn a_module_that_asks_for_its_reboot_step_gets_it_before_the_in_place_commit() {
    use std::os::unix::fs::PermissionsExt;
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let log = device.dir.path().join("mcu.log");
    // A module that flashes a "microcontroller" (a file) and restarts it in
    // its reboot step; every call is logged with its state.
    let module = device.dir.path().join("modules/mcu");
    std::fs::write(
        &module,
        format!(
            "#!/bin/sh\necho \"$1\" >> {log:?}\ncase \"$1\" in\n  download) cat > firmware.bin ;;\n  install) echo reboot ;;\nesac\n",
        ),
    )
    .expect("module");
    std::fs::set_permissions(&module, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.module_package("mcu", "4.1.0", b"firmware bytes"));
    let deployment = operator.deploy(&package, &device_id);

    device.run_once();
    assert_eq!(operator.device_state(&deployment).0, "success");
    let calls = std::fs::read_to_string(&log).expect("module log");
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        ["download", "install", "reboot", "commit"],
        "the reboot step runs once, before the commit"
    );
    let boot = device.power_up();
    assert_eq!(
        (boot.slot, boot.trial),
        (Slot::A, false),
        "no device reboot"
    );
}

#[test]
fn a_download_only_update_waits_downloaded_until_released() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy_with(
        &package,
        &device_id,
        serde_json::json!({"download_only": true}),
    );

    device.run_once(); // download into B and verify; the install waits
    assert_eq!(device.status()["state"], "downloaded");
    assert_eq!(device.slot(Slot::B), image("2.0.0"), "downloaded");
    assert_eq!(operator.device_state(&deployment).0, "downloaded");
    // A power cycle while waiting: the old version boots, nothing is armed,
    // and the restarted agent still waits for the server's word.
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false));
    device.run_once();
    assert_eq!(device.status()["state"], "downloaded", "still held");

    operator.control(&deployment, "install");
    device.run_once(); // released: read back, arm the trial, "reboot"
    assert_eq!(device.status()["state"], "rebooting");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::B, true));
    device.run_once();
    assert_eq!(operator.device_state(&deployment).0, "success");
}

#[test]
fn an_update_waiting_for_its_window_checks_in_when_it_opens_and_is_given_up_when_cancelled() {
    let signer = Signer::new();
    // Polls a day apart: only the window's opening brings the device back.
    let server =
        InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "86400"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    // A two-hour window that opens at the start of the hour after next.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let start = (now % 86_400 / 3600 + 2) % 24;
    let opens_in = (start * 3600 + 86_400 - now % 86_400) % 86_400;
    let window = serde_json::json!({"window": {
        "start": format!("{start:02}:00"),
        "end": format!("{:02}:00", (start + 2) % 24),
    }});
    let deployment = operator.deploy_with(&package, &device_id, window);

    let output = device.agent(&["run", "--once"]);
    assert!(output.status.success());
    assert_eq!(device.status()["state"], "downloaded", "outside the window");
    let log = String::from_utf8_lossy(&output.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("checking in again when the install window opens"))
        .unwrap_or_else(|| panic!("no wake-up for the window in:\n{log}"));
    let secs: u64 = line
        .split("secs=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no secs in {line}"));
    assert!(
        secs + 10 >= opens_in && secs <= opens_in + 60,
        "wakes {secs} s from now; the window opens in {opens_in} s"
    );
    device.run_once();
    assert_eq!(device.status()["state"], "downloaded");

    operator.control(&deployment, "cancel");
    device.run_once(); // no offer: the server says cancelled; give it up
    assert_eq!(device.status()["state"], "idle");
    assert_eq!(operator.device_state(&deployment).0, "cancelled");
    let boot = device.power_up();
    assert_eq!(
        (boot.slot, boot.trial),
        (Slot::A, false),
        "the old version runs"
    );

    // Free for the next offer.
    let next = operator.upload(signer.image_package("rootfs", "2.1.0", 1));
    let second = operator.deploy(&next, &device_id);
    device.run_once();
    assert_eq!(device.status()["state"], "rebooting");
    assert_eq!(operator.device_state(&second).0, "rebooting");
}
