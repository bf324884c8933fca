//! The running system is the truth (its version read from it, the booted
//! slot reported), and bad input — a corrupt boot environment, a missing
//! partition, a full data partition, wrong slot devices — stops the agent
//! with one clear line before any slot is written.

use crate::harness::{
    enrol, image, Device, Operator, Packages, Signer, FACTORY_IMAGE, SPARE_IMAGE,
};
use crate::server::InProcessServer;
use airlift_agent::boot::Slot;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A device, its operator and a server with the release key.
fn setup(server: &InProcessServer, signer: &Signer) -> (Device, Operator) {
    let operator = Operator::new(server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    (device, operator)
}

fn start(signer: &Signer) -> InProcessServer {
    InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"])
}

/// The running system's os-release file (the test plays the root
/// filesystem of whichever slot booted).
fn os_release(device: &Device, version: &str) -> PathBuf {
    let path = device.dir.path().join("os-release");
    let text = format!("NAME=\"Test OS\"\nID=test\nVERSION_ID=\"{version}\"\n");
    std::fs::write(&path, text).expect("os-release");
    path
}

/// The agent's own record says rootfs `version` is installed.
fn record(device: &Device, version: &str) {
    let data = device.dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let record = serde_json::json!({"installed": {"rootfs": version}, "security_version": 0});
    std::fs::write(data.join("installed.json"), record.to_string()).expect("record");
}

/// The stderr of a failed run: its last line must be the one error line.
fn error_line(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "the agent did not stop: {output:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("airlift-agent: error: "),
        "not one error line at the end:\n{stderr}"
    );
    let errors = stderr
        .lines()
        .filter(|l| l.contains("airlift-agent: error"))
        .count();
    assert_eq!(errors, 1, "{stderr}");
    last
}

/// Neither slot was written and the boot environment says what it said.
fn assert_untouched(device: &Device, bootenv: &[u8]) {
    assert_eq!(device.slot(Slot::A), FACTORY_IMAGE, "slot A was written");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B was written");
    assert_eq!(std::fs::read(&device.bootenv).expect("bootenv"), bootenv);
}

#[test]
fn the_server_sees_the_version_the_running_system_holds_not_the_agents_record() {
    let signer = Signer::new();
    let server = start(&signer);
    let (device, operator) = setup(&server, &signer);
    let file = os_release(&device, "1.5.0");
    device.set_option(&format!(
        "system_version_file = {:?}",
        file.display().to_string()
    ));
    record(&device, "3.0.0");
    let device_id = enrol(&device, &operator);
    device.run_once();
    let seen = operator.device(&device_id);
    assert_eq!(seen["installed"]["rootfs"], "1.5.0", "{seen}");
    assert_eq!(seen["attributes"]["booted_slot"], "a", "{seen}");
    let status = device.status();
    assert_eq!(status["installed"]["rootfs"], "1.5.0", "{status}");
    assert_eq!(status["booted_slot"], "a", "{status}");

    // An update: during its trial the running system is the new version,
    // and the server hears that from the trial's own check-in.
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&package, &device_id);
    device.run_once();
    assert_eq!(device.slot(Slot::B), image("2.0.0"));
    assert_eq!(device.power_up().slot, Slot::B);
    os_release(&device, "2.0.0"); // slot B's root filesystem
    device.run_once();
    assert_eq!(operator.device_state(&deployment).0, "success");
    let seen = operator.device(&device_id);
    assert_eq!(seen["installed"]["rootfs"], "2.0.0", "{seen}");
    assert_eq!(seen["attributes"]["booted_slot"], "b", "{seen}");

    // Re-flashed in the factory: the record says 2.0.0, the system 1.0.0.
    os_release(&device, "1.0.0");
    device.run_once();
    let seen = operator.device(&device_id);
    assert_eq!(seen["installed"]["rootfs"], "1.0.0", "{seen}");
}

#[test]
fn an_unreadable_system_version_stops_the_agent_with_one_line() {
    let signer = Signer::new();
    let server = start(&signer);
    let (device, _operator) = setup(&server, &signer);
    let missing = device.dir.path().join("no-such-os-release");
    device.set_option(&format!(
        "system_version_file = {:?}",
        missing.display().to_string()
    ));
    let line = error_line(&device.agent(&["run", "--once"]));
    assert!(
        line.contains("system_version_file") && line.contains("no-such-os-release"),
        "{line}"
    );
    std::fs::write(&missing, "ID=test\n").expect("os-release");
    let line = error_line(&device.agent(&["run", "--once"]));
    assert!(line.contains("sets no VERSION_ID="), "{line}");
}

/// A device with a deployment waiting for it: any run that went on would
/// write slot B.
fn device_with_an_update(server: &InProcessServer, signer: &Signer) -> (Device, Vec<u8>) {
    let (device, operator) = setup(server, signer);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    operator.deploy(&package, &device_id);
    let bootenv = std::fs::read(&device.bootenv).expect("bootenv");
    (device, bootenv)
}

#[test]
fn a_corrupt_boot_environment_stops_the_agent_before_a_slot_is_written() {
    let signer = Signer::new();
    let server = start(&signer);
    let (device, _) = device_with_an_update(&server, &signer);
    let good = std::fs::read_to_string(&device.bootenv).expect("bootenv");
    for corrupt in [
        good.replace("airlift_slot=a", "airlift_slot=?"),
        good[..good.len() - 3].to_owned(),
        String::new(),
    ] {
        std::fs::write(&device.bootenv, &corrupt).expect("corrupt bootenv");
        let line = error_line(&device.agent(&["run", "--once"]));
        assert!(line.contains("the boot environment"), "{line}");
        assert_untouched(&device, corrupt.as_bytes());
    }
}

#[test]
fn a_missing_partition_stops_the_agent_before_a_slot_is_written() {
    let signer = Signer::new();
    let server = start(&signer);
    let (device, bootenv) = device_with_an_update(&server, &signer);
    let config = std::fs::read_to_string(&device.config).expect("agent.toml");
    let b = device.dir.path().join("b.img").display().to_string();
    let missing = device.dir.path().join("mmcblk0p3").display().to_string();
    std::fs::write(&device.config, config.replace(&b, &missing)).expect("agent.toml");
    let line = error_line(&device.agent(&["run", "--once"]));
    assert!(
        line.contains("[slots.rootfs] b = ") && line.contains("mmcblk0p3"),
        "{line}"
    );
    assert!(
        !PathBuf::from(&missing).exists(),
        "the missing slot was created"
    );
    assert_untouched(&device, &bootenv);
}

#[test]
fn a_full_data_partition_stops_the_agent_before_a_slot_is_written() {
    let signer = Signer::new();
    let server = start(&signer);
    let (device, bootenv) = device_with_an_update(&server, &signer);
    // No file may grow (RLIMIT_FSIZE 0, SIGXFSZ ignored so writes fail
    // with EFBIG): what a full data partition does to the agent's writes.
    let output = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 0; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_airlift-agent"))
        .arg("--config")
        .arg(&device.config)
        .args(["run", "--once"])
        .output()
        .expect("run airlift-agent under a file size limit");
    let line = error_line(&output);
    assert!(line.contains("the data partition is full"), "{line}");
    assert_untouched(&device, &bootenv);
    // With room again, the same update goes through.
    device.run_once();
    assert_eq!(device.slot(Slot::B), image("2.0.0"));
}

#[test]
fn slot_devices_that_cannot_be_right_stop_the_agent_before_a_slot_is_written() {
    let signer = Signer::new();
    let server = start(&signer);
    let (device, bootenv) = device_with_an_update(&server, &signer);
    let config = std::fs::read_to_string(&device.config).expect("agent.toml");
    let a = device.dir.path().join("a.img").display().to_string();
    let b = device.dir.path().join("b.img").display().to_string();

    // Both slots the same file.
    std::fs::write(&device.config, config.replace(&b, &a)).expect("agent.toml");
    let line = error_line(&device.agent(&["run", "--once"]));
    assert!(line.contains("a and b are both"), "{line}");
    assert_untouched(&device, &bootenv);

    // GRUB says slot a runs, but the kernel's root= is slot b's device.
    let grubenv = device.dir.path().join("grubenv");
    let cmdline = device.dir.path().join("cmdline");
    let status = Command::new("grub-editenv")
        .arg(&grubenv)
        .arg("create")
        .status()
        .expect("grub-editenv");
    assert!(status.success());
    std::fs::write(&cmdline, format!("ro root={b} airlift.slot=a\n")).expect("cmdline");
    let boot = format!(
        "[boot]\nbackend = \"grub\"\ngrubenv = {:?}\ncmdline = {:?}\n",
        grubenv.display().to_string(),
        cmdline.display().to_string()
    );
    let start = config.find("[boot]").expect("[boot]");
    let end = config.find("[slots.rootfs]").expect("[slots.rootfs]");
    let grub_config = format!("{}{boot}{}", &config[..start], &config[end..]);
    std::fs::write(&device.config, &grub_config).expect("agent.toml");
    let line = error_line(&device.agent(&["run", "--once"]));
    assert!(
        line.contains("holds the running root filesystem") && line.contains("root="),
        "{line}"
    );
    assert_untouched(&device, &bootenv);

    // And an unreadable grubenv is refused as it is.
    std::fs::write(&grubenv, "not a grub environment block").expect("grubenv");
    std::fs::write(&cmdline, format!("ro root={a} airlift.slot=a\n")).expect("cmdline");
    let line = error_line(&device.agent(&["run", "--once"]));
    assert!(line.contains("grub"), "{line}");
    assert_untouched(&device, &bootenv);
}

#[test]
fn a_new_version_whose_version_file_is_unreadable_is_rolled_back_not_left_on_trial() {
    let signer = Signer::new();
    let server = start(&signer);
    let (device, operator) = setup(&server, &signer);
    let file = os_release(&device, "1.0.0");
    device.set_option(&format!(
        "system_version_file = {:?}",
        file.display().to_string()
    ));
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&package, &device_id);
    device.run_once();
    assert_eq!(device.power_up().slot, Slot::B);
    std::fs::remove_file(&file).expect("slot B's image has no os-release");
    device.run_once(); // the trial fails on it: abandon, report, "reboot"
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "rolled_back");
    assert!(message.contains("system_version_file"), "{message}");
    assert_eq!(device.power_up().slot, Slot::A, "back in the old slot");
    os_release(&device, "1.0.0");
    device.run_once();
    assert_eq!(device.status()["state"], "idle");
    assert_eq!(operator.device(&device_id)["installed"]["rootfs"], "1.0.0");
}
