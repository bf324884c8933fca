//! A device made of plain files on a laptop: `boot-env init` and
//! `boot-env power-up` play the bootloader, and `run` carries an update
//! through its trial boot by itself (docs/laptop-device.md).

use crate::harness::{enrol, image, Device, Operator, Packages, Signer};
use crate::server::InProcessServer;
use airlift_agent::boot::Slot;

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn boot_env_init_refuses_to_replace_and_power_up_says_what_it_did() {
    let signer = Signer::new();
    let device = Device::new("http://127.0.0.1:9", signer.public_key_file(), &["true"]);
    std::fs::remove_file(&device.bootenv).expect("remove the harness's bootenv");
    let missing = device.agent(&["run", "--once"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr
            .trim_end()
            .ends_with("create it with `airlift-agent boot-env init`"),
        "{stderr}"
    );

    let created = stdout(&device.agent(&["boot-env", "init"]));
    assert!(created.contains("slot a booted"), "{created}");
    let again = device.agent(&["boot-env", "init", "--slot", "b"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(device.power_up().slot, Slot::A, "not replaced");

    let replaced = stdout(&device.agent(&["boot-env", "init", "--slot", "b", "--force"]));
    assert!(replaced.contains("slot b booted"), "{replaced}");
    let boot = stdout(&device.agent(&["boot-env", "power-up"]));
    assert_eq!(boot.trim(), "boot-env: power-up: booted slot b");
    let status = device.status();
    assert_eq!(status["booted_slot"], "b", "{status}");
    assert_eq!(status["boot"]["next_slot"], "b", "{status}");
    let text = stdout(&device.agent(&["status"]));
    assert!(
        text.starts_with(
            "booted slot: b\nnext boot: slot b\ninstalled: nothing recorded\nupdate: idle\n"
        ),
        "{text}"
    );
}

#[test]
fn run_with_power_up_as_the_reboot_commits_an_update_by_itself() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let reboot = [
        env!("CARGO_BIN_EXE_airlift-agent"),
        "--config",
        &device.config.display().to_string(),
        "boot-env",
        "power-up",
    ]
    .map(str::to_owned);
    let config = std::fs::read_to_string(&device.config).expect("agent.toml");
    let config = config.replace(
        "reboot_command = [\"true\"]",
        &format!("reboot_command = {reboot:?}"),
    );
    std::fs::write(&device.config, config).expect("agent.toml");
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&package, &device_id);

    let daemon = device.start();
    daemon.wait_for_log("file backend: starting again, as after a boot", 1);
    daemon.wait_for_log("trial committed", 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while operator.device_state(&deployment).0 != "success" {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The server hears of success while the agent is still `committed`;
    // it settles at idle right after.
    daemon.wait_for_log(r#"from="committed" to="idle""#, 1);
    drop(daemon);
    assert_eq!(device.slot(Slot::B), image("2.0.0"));
    let status = device.status();
    assert_eq!(status["state"], "idle", "{status}");
    assert_eq!(status["booted_slot"], "b", "{status}");
    assert_eq!(status["boot"]["trial_pending"], false, "{status}");
    assert_eq!(status["installed"]["rootfs"], "2.0.0", "{status}");
}

#[test]
fn a_reboot_command_that_plays_no_power_up_stops_run_with_what_to_set() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    // The harness's device has reboot_command = ["true"].
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    operator.deploy(&package, &device_id);

    let output = device.agent(&["run"]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("airlift-agent: error: reboot_command [\"true\"] returned without playing the bootloader's power-up")
            && last.contains("boot-env\", \"power-up\"]"),
        "{stderr}"
    );
    // The trial stays armed, as a real device's would until it reboots.
    assert_eq!(device.status()["state"], "rebooting");
    assert_eq!(device.power_up().slot, Slot::B);
}
