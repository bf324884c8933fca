//! The attack classes of issue 19 that `trust.rs` does not cover, each in
//! a test named after it (`docs/trust.md` lists them with the defence each
//! tests): an arbitrary package, mix-and-match, extraneous dependencies.
//! Where the real server would refuse the bytes, they come the way a
//! compromised server or a man in the middle would send them: the test
//! kit's proxy as a hostile mirror ([`FlakyProxy::serve_instead`]), or a
//! server that took a package before its trust root said otherwise.

use crate::harness::{enrol, image, Device, Operator, Packages, Signer, DEVICE_TYPE, SPARE_IMAGE};
use crate::server::{InProcessServer, ADMIN_TOKEN};
use airlift_agent::boot::Slot;
use airlift_package::{Compression, Limits, PackageReader, PayloadSpec, PayloadType, SigningKey};
use airlift_testkit::proxy::{Faults, FlakyProxy, Substitute};
use airlift_trust::RootDocument;
use reqwest::StatusCode;

/// Far enough ahead for any test run.
const EXPIRES: u64 = 4_000_000_000;

/// Where the device's stored bytes of a package end and its payloads begin.
fn head_len(package: &[u8]) -> usize {
    let reader = PackageReader::open(package, Limits::default()).expect("a package");
    usize::try_from(reader.payload_offset()).expect("a small head")
}

/// A proxy in front of `server` that passes everything until told to
/// serve something else.
fn mirror(server: &InProcessServer) -> FlakyProxy {
    FlakyProxy::start(&server.url, Faults::Planned(Vec::new())).expect("proxy")
}

/// The device refused the offer of `deployment` and is as it was: the
/// server has the failure and `reason` in it, slot B holds what it held,
/// the boot environment was never armed, the agent is idle.
fn refused_untouched(device: &Device, operator: &Operator, deployment: &str, reason: &str) {
    let (state, message) = operator.device_state(deployment);
    assert_eq!(state, "failure", "{message}");
    assert!(message.contains(reason), "{reason:?} in {message:?}");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false), "never armed");
    assert_eq!(device.status()["state"], "idle");
}

/// A device that trusts `trusted` and reaches the server through `proxy`.
fn enrolled_behind(proxy: &FlakyProxy, operator: &Operator, trusted: &Signer) -> (Device, String) {
    let device = Device::new(proxy.url(), trusted.public_key_file(), &["true"]);
    let id = enrol(&device, operator);
    (device, id)
}

#[test]
fn arbitrary_package_signed_by_a_key_the_devices_root_does_not_name_is_refused() {
    let (release, attacker) = (Signer::new(), Signer::new());
    let dir = tempfile::tempdir().expect("trust directory");
    let (root_key, online) = (
        SigningKey::generate().expect("key"),
        SigningKey::generate().expect("key"),
    );
    let online_file = dir.path().join("online.key");
    std::fs::write(&online_file, online.to_pem().expect("pem")).expect("online key");
    let mut envelope = RootDocument::first(
        root_key.public_key(),
        release.key().public_key(),
        online.public_key(),
        EXPIRES,
    )
    .to_envelope()
    .expect("envelope");
    envelope.sign(&root_key);
    let root = dir.path().join("root-1.json");
    std::fs::write(&root, envelope.to_bytes()).expect("root");

    // A server that also trusts the attacker's key (--trust) took its
    // package and deployed it before it held a root (with the root it
    // refuses both itself), and signs offers of it.
    let attacker_key = attacker.public_key_file().display().to_string();
    let online_key = online_file.display().to_string();
    let flags = [
        "--poll-interval",
        "1",
        "--trust",
        &attacker_key,
        "--timestamp-key",
        &online_key,
    ];
    let server = InProcessServer::start_with(release.public_key_file(), &flags);
    let operator = Operator::new(&server);
    let hostile = operator.upload(attacker.image_package("rootfs", "2.0.0", 1));
    let device = Device::new(&server.url, release.public_key_file(), &["true"]);
    device.set_option(&format!("trust_root = {:?}", root.display().to_string()));
    let device_id = enrol(&device, &operator);
    let deployment = operator.deploy(&hostile, &device_id);
    let status = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/trust/roots", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(envelope.to_bytes())
        .send()
        .expect("upload the root")
        .status();
    assert_eq!(status, StatusCode::CREATED);

    device.run_once();
    refused_untouched(&device, &operator, &deployment, "does not verify");
}

#[test]
fn arbitrary_package_whose_signature_covers_another_manifest_is_refused() {
    let release = Signer::new();
    let server = InProcessServer::start_with(release.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let proxy = mirror(&server);
    let (device, device_id) = enrolled_behind(&proxy, &operator, &release);
    let genuine = release.image_package("rootfs", "2.0.0", 1);
    let package = operator.upload(genuine.clone());

    // The signed manifest's version and security version raised, its
    // signatures kept: what the server refuses at upload, a mirror serves.
    let head = head_len(&genuine);
    let mut forged = genuine;
    let manifest = &mut forged[..head];
    let at = manifest
        .windows(5)
        .position(|w| w == b"2.0.0")
        .expect("the version in the manifest");
    manifest[at..at + 5].copy_from_slice(b"9.0.0");
    proxy.serve_instead(Substitute {
        head: forged[..head].to_vec(),
        file: forged,
    });

    let deployment = operator.deploy(&package, &device_id);
    device.run_once();
    assert!(proxy.stats().tampered() >= 1, "the forged offer was served");
    assert_eq!(proxy.stats().downloads(), 0, "refused before a download");
    refused_untouched(&device, &operator, &deployment, "signature");
}

#[test]
fn mix_and_match_payload_of_another_package_under_a_signed_index_is_refused_within_one_block() {
    let release = Signer::new();
    let server = InProcessServer::start_with(release.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let proxy = mirror(&server);
    let (device, device_id) = enrolled_behind(&proxy, &operator, &release);
    // Two genuine releases, both on the server: the attacker holds both.
    let (x, _) = release.raw_package("2.0.0", 1 << 20);
    let (y, _) = release.raw_package("3.0.0", 1 << 20);
    let package = operator.upload(x.clone());
    operator.upload(y.clone());
    let (x_head, y_head) = (head_len(&x), head_len(&y));
    let mut spliced = x[..x_head].to_vec();
    spliced.extend_from_slice(&y[y_head..]);
    proxy.serve_instead(Substitute {
        head: x[..x_head].to_vec(),
        file: spliced,
    });

    let deployment = operator.deploy(&package, &device_id);
    device.run_once();
    assert!(
        proxy.stats().downloads() >= 1,
        "the spliced bytes were fetched"
    );
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "failure", "{message}");
    assert!(message.contains("block 0,"), "caught in block 0: {message}");
    // Not one byte of the spliced payload reached the slot. (The image
    // installer empties slot B before the first block is verified, so
    // its old content is not asserted here: reported as an agent issue.)
    let slot = device.slot(Slot::B);
    assert!(
        slot == SPARE_IMAGE || slot.is_empty(),
        "{} bytes in B",
        slot.len()
    );
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::A, false), "never armed");
    assert_eq!(device.status()["state"], "idle");
}

#[test]
fn mix_and_match_two_payloads_of_one_package_swapped_are_refused_within_one_block() {
    let release = Signer::new();
    let server = InProcessServer::start_with(release.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let proxy = mirror(&server);
    let (device, device_id) = enrolled_behind(&proxy, &operator, &release);
    // Two files of one length: swapped, each sits where the other's
    // signed entry says it should.
    let (first, second) = (
        airlift_testkit::packages::image("a", 100_000),
        airlift_testkit::packages::image("b", 100_000),
    );
    let file = |target: &str| PayloadSpec::new(PayloadType::File, target, Compression::None);
    let package = release
        .package("app", "2.0.0")
        .device_type(DEVICE_TYPE)
        .payload(file("/etc/first.conf"), &first)
        .payload(file("/etc/second.conf"), &second)
        .build();
    let id = operator.upload(package.clone());
    let head = head_len(&package);
    let stored = (package.len() - head) / 2;
    let mut swapped = package[..head].to_vec();
    swapped.extend_from_slice(&package[head + stored..]);
    swapped.extend_from_slice(&package[head..head + stored]);
    proxy.serve_instead(Substitute {
        head: package[..head].to_vec(),
        file: swapped,
    });

    let deployment = operator.deploy(&id, &device_id);
    device.run_once();
    refused_untouched(&device, &operator, &deployment, "block 0,");
    let root = device.dir.path().join("root/etc");
    assert!(!root.join("first.conf").exists(), "no file written");
    assert!(!root.join("second.conf").exists(), "no file written");
}

#[test]
fn extraneous_dependencies_a_package_for_another_device_type_is_not_offered_and_refused_if_it_is() {
    let release = Signer::new();
    let server = InProcessServer::start_with(release.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let proxy = mirror(&server);
    let (device, device_id) = enrolled_behind(&proxy, &operator, &release);
    let foreign = release.package_for("other-board", "2.0.0");
    let foreign_id = operator.upload(foreign.clone());
    device.run_once(); // accepted: reports its device type

    // The server does not offer it.
    let deployment = operator.deploy(&foreign_id, &device_id);
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "incompatible", "{message}");
    assert!(message.contains("other-board"), "{message}");
    device.run_once();
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "nothing offered");

    // A mirror offers it anyway, correctly signed, in place of a package
    // that fits.
    let fitting = operator.upload(release.image_package("rootfs", "3.0.0", 1));
    let head = head_len(&foreign);
    proxy.serve_instead(Substitute {
        head: foreign[..head].to_vec(),
        file: foreign,
    });
    let deployment = operator.deploy(&fitting, &device_id);
    device.run_once();
    assert!(
        proxy.stats().tampered() >= 1,
        "the foreign offer was served"
    );
    assert_eq!(proxy.stats().downloads(), 0, "refused before a download");
    refused_untouched(&device, &operator, &deployment, "other-board");
}

#[test]
fn extraneous_dependencies_a_package_whose_hardware_or_software_needs_the_device_does_not_meet_is_refused(
) {
    let release = Signer::new();
    let server = InProcessServer::start_with(release.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let proxy = mirror(&server);
    let (device, device_id) = enrolled_behind(&proxy, &operator, &release);
    device.set_option("hardware_revision = \"rev-a\"");
    device.set_option("installed = { bootloader = \"1.4.0\" }");
    device.run_once(); // reports its revision and software
    let fitting = operator.upload(release.image_package("rootfs", "2.0.0", 1));
    let needs = |version: &str| {
        release
            .package("rootfs", version)
            .device_type(DEVICE_TYPE)
            .security_version(1)
            .image(&image(version), Compression::Zstd)
    };
    let cases = [
        ("3.0.0", needs("3.0.0").hardware_revision("rev-b"), "rev-b"),
        (
            "4.0.0",
            needs("4.0.0").requires("bootloader", ">=2.0".parse().expect("requirement")),
            "bootloader",
        ),
    ];
    for (version, builder, reason) in cases {
        let package = builder.build();
        // The server does not offer it…
        let id = operator.upload(package.clone());
        let deployment = operator.deploy(&id, &device_id);
        let (state, message) = operator.device_state(&deployment);
        assert_eq!(state, "incompatible", "{version}: {message}");
        assert!(message.contains(reason), "{version}: {message}");
        // …and the device refuses it when a mirror does.
        let head = head_len(&package);
        proxy.serve_instead(Substitute {
            head: package[..head].to_vec(),
            file: package,
        });
        let deployment = operator.deploy(&fitting, &device_id);
        device.run_once();
        refused_untouched(&device, &operator, &deployment, reason);
    }
}
