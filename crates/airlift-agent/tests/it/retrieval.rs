//! The network and the disk as attackers: a download dripped too slowly to
//! finish (slow retrieval), an answer that never ends (endless data), and
//! an installed record deleted or damaged to undo anti-rollback — each with
//! the real agent and server, the network ones through the test kit's
//! loopback proxy.

use crate::harness::{enrol, Device, Operator, Packages, RawDeployment, Signer, SPARE_IMAGE};
use crate::server::InProcessServer;
use airlift_agent::boot::Slot;
use airlift_testkit::proxy::{Faults, FlakyProxy, NetFault};
use std::time::{Duration, Instant};

const IMAGE_SIZE: usize = 1024 * 1024;

/// A server, a proxy in front of it meeting downloads with `plan`, and an
/// enrolled device behind the proxy with `[download]` set to `bounds`.
fn behind_proxy(
    signer: &Signer,
    plan: Vec<NetFault>,
    bounds: &str,
) -> (InProcessServer, FlakyProxy, Device, Operator, String) {
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let proxy = FlakyProxy::start(&server.url, Faults::Planned(plan)).expect("proxy");
    let device = Device::new(proxy.url(), signer.public_key_file(), &["true"]);
    // Long enough that only the bounds can end a dripping download.
    device.set_network_timeout(60);
    device.set_option(&format!("download = {{ {bounds} }}"));
    let operator = Operator::new(&server);
    let device_id = enrol(&device, &operator);
    (server, proxy, device, operator, device_id)
}

#[test]
fn slow_retrieval_below_the_minimum_rate_is_cut_off_and_resumed_at_the_next_poll() {
    let signer = Signer::new();
    // 2 kB/s would take over eight minutes for this package.
    let (_server, proxy, device, operator, device_id) = behind_proxy(
        &signer,
        vec![NetFault::Throttle(2000)],
        "min_rate = 65536, rate_window_secs = 2, deadline_secs = 600",
    );
    let RawDeployment {
        deployment, image, ..
    } = operator.deploy_raw(&signer, &device_id, IMAGE_SIZE);

    let started = Instant::now();
    let run = device.run_faulted("save:0");
    assert!(run.success, "{}", run.log);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "cut off within a few windows, not after the network timeout: {:?}",
        started.elapsed()
    );
    assert!(run.log.contains("below the minimum"), "{}", run.log);
    assert_eq!(proxy.unused(), 0, "the dripping answer was met");
    assert_eq!(operator.device_state(&deployment).0, "downloading");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false), "nothing armed");

    // The next poll goes on at full speed.
    device.run_once();
    assert_eq!(device.slot(Slot::B), image);
    assert_eq!(device.power_up().slot, Slot::B);
    device.run_once();
    assert_eq!(operator.device_state(&deployment).0, "success");
}

#[test]
fn slow_retrieval_past_the_update_deadline_fails_the_update_and_says_why() {
    let signer = Signer::new();
    // Fast enough for the minimum rate, far too slow for the deadline.
    let (_server, _proxy, device, operator, device_id) = behind_proxy(
        &signer,
        vec![NetFault::Throttle(50_000); 8],
        "min_rate = 1024, rate_window_secs = 1, deadline_secs = 3",
    );
    let deployment = operator
        .deploy_raw(&signer, &device_id, IMAGE_SIZE)
        .deployment;

    let started = Instant::now();
    device.run_once();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "failure", "{message}");
    assert!(message.contains("did not download within 3 s"), "{message}");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false), "never armed");
    assert_eq!(device.status()["state"], "idle");
}

#[test]
fn endless_data_is_never_read_past_the_offered_size() {
    let signer = Signer::new();
    let (_server, proxy, device, operator, device_id) =
        behind_proxy(&signer, vec![NetFault::Endless], "deadline_secs = 600");
    let RawDeployment {
        deployment,
        image,
        package_len,
    } = operator.deploy_raw(&signer, &device_id, IMAGE_SIZE);

    let run = device.run_faulted("save:0");
    assert!(run.success, "{}", run.log);
    assert_eq!(proxy.unused(), 0, "the endless answer was met");
    // The agent took the package and closed the connection: what the proxy
    // got rid of beyond it is what the sockets' buffers held, no more.
    let filler = proxy.stats().filler_bytes();
    assert!(
        filler < 32 * 1024 * 1024,
        "{filler} filler bytes after a {package_len}-byte package"
    );
    assert_eq!(device.slot(Slot::B), image);
    assert_eq!(device.power_up().slot, Slot::B);
    device.run_once();
    assert_eq!(operator.device_state(&deployment).0, "success");
}

/// Rollback by deleting or damaging the record that holds the security
/// version: the device refuses to install, says why, and never falls back
/// to security version 0.
#[test]
fn rollback_through_a_lost_installed_record_is_refused_not_allowed_from_zero() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    device.set_record(5);
    let device_id = enrol(&device, &operator); // the record is taken over
    let data = device.dir.path().join("data");
    assert!(data.join("installed.init").exists());
    for copy in ["installed.a", "installed.b"] {
        std::fs::remove_file(data.join(copy)).expect("delete a copy");
    }
    let old = signer.image_package("rootfs", "2.0.0", 1);
    let package = operator.upload(old.clone());
    let deployment = operator.deploy(&package, &device_id);

    device.run_once();
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "failure", "{message}");
    assert!(message.contains("installed record"), "{message}");
    assert!(message.contains("is lost"), "{message}");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");

    // Damaged rather than deleted: the same, for a local install too.
    for copy in ["installed.a", "installed.b"] {
        std::fs::write(data.join(copy), b"airlift-installed 1 sha256:00\n{}\n").expect("damage");
    }
    std::fs::remove_file(data.join("installed.init")).expect("and the marker");
    let file = device.dir.path().join("old.airlift");
    std::fs::write(&file, old).expect("package file");
    let output = device.agent(&["install", file.to_str().expect("utf-8 path")]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is lost"), "{stderr}");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");
}
