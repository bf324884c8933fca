//! Network faults between the agent and the server: a loopback proxy cuts
//! downloads, stalls them, answers 503, damages a byte in transit or, as a
//! man in the middle, alters the package an offer describes.

use crate::harness::{enrol, Device, Operator, RawDeployment, Signer, SPARE_IMAGE};
use crate::server::InProcessServer;
use airlift_agent::boot::Slot;
use airlift_testkit::proxy::{Faults, FlakyProxy, NetFault};
use std::time::Duration;

/// A proxy in front of `server` meeting download requests with `plan`.
fn flaky(server: &InProcessServer, plan: Vec<NetFault>) -> FlakyProxy {
    FlakyProxy::start(&server.url, Faults::Planned(plan)).expect("proxy")
}

const IMAGE_SIZE: usize = 1024 * 1024;

/// A device behind a proxy that meets its downloads with a plan, enrolled,
/// with a raw image of [`IMAGE_SIZE`] bytes deployed to it.
struct Behind {
    /// Kept for as long as the test runs: the proxy forwards to the
    /// server, and the device trusts the signer's key file.
    _server: InProcessServer,
    _signer: Signer,
    proxy: FlakyProxy,
    device: Device,
    operator: Operator,
    deployment: String,
    /// The image the package installs, and the package's length.
    image: Vec<u8>,
    package_len: u64,
}

impl Behind {
    fn deploy(plan: Vec<NetFault>) -> Behind {
        let signer = Signer::new();
        let server =
            InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
        let proxy = flaky(&server, plan);
        let device = Device::new(proxy.url(), signer.public_key_file(), &["true"]);
        let operator = Operator::new(&server);
        let device_id = enrol(&device, &operator);
        let RawDeployment {
            deployment,
            image,
            package_len,
        } = operator.deploy_raw(&signer, &device_id, IMAGE_SIZE);
        Behind {
            _server: server,
            _signer: signer,
            proxy,
            device,
            operator,
            deployment,
            image,
            package_len,
        }
    }
}

#[test]
fn a_download_survives_cuts_stalls_and_server_errors_in_one_run() {
    let Behind {
        proxy,
        device,
        operator,
        deployment,
        image,
        package_len,
        ..
    } = &Behind::deploy(vec![
        NetFault::CutAfter(100_000),
        NetFault::Unavailable,
        NetFault::StallAfter(200_000, Duration::from_secs(20)),
        NetFault::CutAfter(300_000),
        NetFault::Unavailable,
    ]);
    device.set_network_timeout(2);

    let run = device.run_faulted("save:0"); // all faults weathered in one run
    assert!(run.success, "{}", run.log);
    assert_eq!(proxy.unused(), 0, "every fault was met");
    assert!(proxy.stats().downloads() >= 6);
    let forwarded = proxy.stats().download_bytes();
    assert!(
        forwarded < package_len + package_len / 10,
        "resumed, not restarted: {forwarded} bytes for a {package_len}-byte package"
    );
    assert_eq!(&device.slot(Slot::B), image);
    assert_eq!(device.power_up().slot, Slot::B);
    device.run_once();
    assert_eq!(operator.device_state(deployment).0, "success");
}

#[test]
fn a_byte_damaged_in_transit_fails_the_update_and_nothing_is_armed() {
    // Damaged on every fetch: a block damaged once is fetched again and the
    // update goes on (see damaged_block.rs); each re-fetch starts at the
    // block's first byte, so byte 2000 of its answer is in that block.
    let mut plan = vec![NetFault::Corrupt(500_000)];
    plan.extend([NetFault::Corrupt(2_000); 3]);
    let Behind {
        device,
        operator,
        deployment,
        ..
    } = &Behind::deploy(plan);

    device.run_once();
    let (state, message) = operator.device_state(deployment);
    assert_eq!(state, "failure");
    assert!(message.contains("SHA-256 does not match"), "{message}");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false), "never armed");
    assert_ne!(
        device.slot(Slot::B),
        SPARE_IMAGE,
        "written, but never booted"
    );
    assert_eq!(device.status()["state"], "idle");
}

#[test]
fn a_package_altered_in_transit_is_refused_before_a_byte_is_downloaded() {
    let Behind {
        proxy,
        device,
        operator,
        deployment,
        ..
    } = &Behind::deploy(Vec::new());
    // The package's signed manifest now claims another version.
    proxy.tamper(b"2.0.0", b"9.0.0");

    device.run_once();
    assert!(proxy.stats().tampered() >= 1, "an offer was altered");
    let (state, message) = operator.device_state(deployment);
    assert_eq!(state, "failure");
    assert!(message.contains("signature"), "{message}");
    assert_eq!(proxy.stats().downloads(), 0, "nothing downloaded");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false));
    assert_eq!(device.status()["state"], "idle");
}

#[test]
fn a_slow_download_shows_its_progress_on_the_server() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    device.set_option("bandwidth_limit = 262144"); // a 1 MiB image: 4 s
    device.set_option("progress_interval_secs = 1");
    let operator = Operator::new(&server);
    let device_id = enrol(&device, &operator);
    let RawDeployment {
        deployment,
        package_len: total,
        ..
    } = operator.deploy_raw(&signer, &device_id, IMAGE_SIZE);

    let daemon = device.start();
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        let shown = operator.deployment_device(&deployment);
        if let Some(done) = shown["progress"]["done"].as_u64() {
            assert_eq!(shown["state"], "downloading");
            assert_eq!(shown["progress"]["total"].as_u64(), Some(total));
            seen.push(done);
        }
        if shown["state"] != "downloading" && shown["state"] != "pending" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(daemon);
    assert!(
        seen.iter().any(|&done| done > 0 && done < total),
        "progress seen part-way: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
}

/// A deployment aborted (here: cancelled) while its device downloads leaves
/// that download running, so the device hears of it only at its next
/// report; it must then give the update up rather than install it. The
/// demo once left a device on a bad release that way, outside the rollback,
/// which takes only devices that were installing when the breaker tripped.
#[test]
fn a_device_told_at_its_next_report_that_its_update_was_cancelled_does_not_install_it() {
    // About four seconds for the 1 MiB package.
    let Behind {
        proxy,
        device,
        operator,
        deployment,
        ..
    } = &Behind::deploy(vec![NetFault::Throttle(256 * 1024)]);

    let run = std::thread::scope(|scope| {
        let agent = scope.spawn(|| device.run_faulted("save:0"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while operator.device_state(deployment).0 != "downloading" {
            assert!(std::time::Instant::now() < deadline, "never downloading");
            std::thread::sleep(Duration::from_millis(50));
        }
        operator.control(deployment, "cancel");
        agent.join().expect("the agent's thread")
    });
    assert!(run.success, "{}", run.log);
    assert!(
        run.log.contains("the server cancelled this update"),
        "{}",
        run.log
    );
    assert_eq!(proxy.unused(), 0, "the download ran through the throttle");
    assert_eq!(device.status()["state"], "idle");
    let boot = device.power_up();
    assert_eq!(
        (boot.slot, boot.trial),
        (Slot::A, false),
        "nothing armed: the old version runs"
    );
    assert_eq!(operator.device_state(deployment).0, "cancelled");
}
