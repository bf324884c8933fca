//! A block damaged on its way from the server (a byte flipped in transit, a
//! bad cache) is fetched again with `Range` — the real agent, the real
//! server, a proxy between them that damages one byte of one block — and
//! only a block that stays damaged fails the update.

use crate::harness::{enrol, Device, Operator, Packages, Signer};
use crate::server::InProcessServer;
use airlift_agent::boot::Slot;
use airlift_package::{Limits, PackageReader};
use airlift_testkit::proxy::{Faults, FlakyProxy, NetFault};

/// A 1 MiB raw image: the harness's raw packages use 64 KiB blocks.
const IMAGE_SIZE: usize = 1024 * 1024;
const BLOCK: u64 = 64 * 1024;
/// The byte of the first download answer (HTTP head included) that is
/// damaged: well inside the image.
const DAMAGED_ANSWER_BYTE: usize = 500_000;
/// The byte of a re-fetch's answer that is damaged: past its HTTP head
/// (a few hundred bytes) and inside the first block it carries, which is
/// the damaged block again.
const DAMAGED_REFETCH_BYTE: usize = 2_000;

/// The file offset of the first byte of the block holding the damaged
/// byte: the answer's head is 100–1000 bytes, and both ends of that give
/// the same block.
fn damaged_block_start(package: &[u8]) -> u64 {
    let payload_start = PackageReader::open(package, Limits::default())
        .expect("package opens")
        .payload_offset();
    let block_of = |head_len: u64| {
        let offset = DAMAGED_ANSWER_BYTE as u64 - head_len;
        payload_start + (offset - payload_start) / BLOCK * BLOCK
    };
    assert_eq!(block_of(100), block_of(1000), "choose another byte");
    block_of(100)
}

/// `from=N` of each "fetching a damaged block again" line of the agent's log.
fn refetched_from(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("fetching a damaged block again with Range"))
        .filter_map(|l| {
            let start = l.find("from=")? + "from=".len();
            let digits: String = l[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

struct Setup {
    /// Holds the trusted key file the agent reads.
    _signer: Signer,
    server: InProcessServer,
    proxy: FlakyProxy,
    device: Device,
    operator: Operator,
    deployment: String,
    package: Vec<u8>,
    image: Vec<u8>,
}

/// A device behind a proxy that meets the downloads with `plan`, and a
/// deployment of a raw image to it.
fn setup(plan: Vec<NetFault>) -> Setup {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let proxy = FlakyProxy::start(&server.url, Faults::Planned(plan)).expect("proxy");
    let device = Device::new(proxy.url(), signer.public_key_file(), &["true"]);
    let operator = Operator::new(&server);
    let device_id = enrol(&device, &operator);
    let (package, image) = signer.raw_package("2.0.0", IMAGE_SIZE);
    let package_id = operator.upload(package.clone());
    let deployment = operator.deploy(&package_id, &device_id);
    Setup {
        _signer: signer,
        server,
        proxy,
        device,
        operator,
        deployment,
        package,
        image,
    }
}

#[test]
fn a_block_damaged_once_in_transit_is_fetched_again_and_the_update_succeeds() {
    let setup = setup(vec![NetFault::Corrupt(DAMAGED_ANSWER_BYTE)]);
    let Setup {
        proxy,
        device,
        operator,
        ..
    } = &setup;

    let output = device.agent(&["run", "--once"]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert_eq!(proxy.unused(), 0, "the byte was damaged");
    // The whole package once, then exactly the damaged block again: the
    // second request starts at its first byte.
    assert_eq!(proxy.stats().downloads(), 2, "{log}");
    assert_eq!(
        refetched_from(&log),
        vec![damaged_block_start(&setup.package)],
        "{log}"
    );
    assert!(log.contains("a block arrived damaged"), "{log}");
    assert_eq!(device.slot(Slot::B), setup.image, "the signed image");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::B, true));
    device.run_once();
    assert_eq!(operator.device_state(&setup.deployment).0, "success");
    drop(setup.server);
}

#[test]
fn a_block_damaged_every_time_fails_the_update_with_the_reason_and_nothing_is_installed() {
    // The first answer damages a block; each re-fetch of it (starting at
    // the block's first byte) is damaged again.
    let mut plan = vec![NetFault::Corrupt(DAMAGED_ANSWER_BYTE)];
    plan.extend([NetFault::Corrupt(DAMAGED_REFETCH_BYTE); 3]);
    let setup = setup(plan);
    let Setup {
        proxy,
        device,
        operator,
        ..
    } = &setup;

    let output = device.agent(&["run", "--once"]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert_eq!(proxy.unused(), 0, "every re-fetch was damaged");
    // Once, then three re-fetches of the block, then no more.
    assert_eq!(proxy.stats().downloads(), 4, "{log}");
    let block = damaged_block_start(&setup.package);
    assert_eq!(refetched_from(&log), vec![block; 3], "{log}");

    let (state, message) = operator.device_state(&setup.deployment);
    assert_eq!(state, "failure", "{message}");
    assert!(
        message.contains(&format!("bytes {block}..{}", block + BLOCK))
            && message.contains("fetched 4 times, damaged every time"),
        "the reason names the block and the attempts: {message}"
    );
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false), "never armed");
    let status = device.status();
    assert_eq!(status["state"], "idle", "{status}");
    assert!(
        !status["installed"].to_string().contains("2.0.0"),
        "not recorded as installed: {status}"
    );
    drop(setup.server);
}
