//! Encrypted payloads end to end: a package whose image is encrypted with
//! age (and compressed with zstd first) to the device's X25519 recipient,
//! uploaded to the server, deployed, and installed by the real agent whose
//! `age_identity` opens it — the slot holding the plaintext; and the agent
//! without that identity, or with another one, refusing it with a reason
//! the server shows and no slot written.

use crate::harness::{
    enrol, image, Device, Operator, Signer, DEVICE_TYPE, FACTORY_IMAGE, SPARE_IMAGE,
};
use crate::server::InProcessServer;
use airlift_agent::boot::Slot;
use airlift_package::encryption::Identity;
use airlift_package::{Compression, PayloadSpec, PayloadType};
use std::str::FromStr;

/// The device's age identity: a fixed test key (made for these tests,
/// never used for anything else), as `airlift key generate-encryption`
/// writes one.
const DEVICE_IDENTITY: &str =
    "AGE-SECRET-KEY-1X44H0HPU3CK5NJVWAR05D3UKK6XAZXPS9X987F880VJQG389W0VQGD6T8R";
/// Another device's.
const OTHER_IDENTITY: &str =
    "AGE-SECRET-KEY-1JC8MGEJN9XSD4L2VWLZV3MVLM6SHTAQ92VXEG4SG0MVXRNFPYF2S5PS2WX";

/// An image package for the test device whose image is encrypted to the
/// device's identity, compressed first if `compression` says so.
fn encrypted_package(signer: &Signer, version: &str, compression: Compression) -> Vec<u8> {
    let recipient = Identity::from_str(DEVICE_IDENTITY)
        .expect("the device's identity")
        .to_public();
    let plaintext = image(version);
    let package = signer
        .package("rootfs", version)
        .device_type(DEVICE_TYPE)
        .security_version(1)
        .encrypted_payload(
            PayloadSpec::new(PayloadType::Image, "rootfs", compression),
            &plaintext,
            recipient,
        )
        .build();
    assert!(
        !package.windows(64).any(|w| w == &plaintext[..64]),
        "the image is not in the package in the clear"
    );
    package
}

/// Gives the device an identity file holding `identity`.
fn give_identity(device: &Device, identity: &str) {
    let path = device.dir.path().join("payload.agekey");
    std::fs::write(
        &path,
        format!("# a test device's age identity\n{identity}\n"),
    )
    .expect("identity file");
    device.set_option(&format!("age_identity = {:?}", path.display().to_string()));
}

/// Deploys an encrypted package of `compression` to a device holding the
/// identity; the agent installs, trial-boots and commits it.
fn installs_with_the_identity(compression: Compression) {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    give_identity(&device, DEVICE_IDENTITY);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(encrypted_package(&signer, "2.0.0", compression));
    let deployment = operator.deploy(&package, &device_id);

    device.run_once(); // download, decrypt, install into B, "reboot"
    assert_eq!(device.slot(Slot::B), image("2.0.0"), "the plaintext in B");
    assert_eq!(device.slot(Slot::A), FACTORY_IMAGE);
    let boot = device.power_up();
    assert_eq!((boot.slot, boot.trial), (Slot::B, true));
    device.run_once(); // healthy: commit
    assert_eq!(device.status()["state"], "idle");
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "success", "{message}");
}

#[test]
fn an_age_encrypted_image_is_installed_by_an_agent_holding_the_identity() {
    installs_with_the_identity(Compression::None);
}

#[test]
fn an_age_encrypted_zstd_image_is_installed_by_an_agent_holding_the_identity() {
    installs_with_the_identity(Compression::Zstd);
}

#[test]
fn an_encrypted_image_is_refused_with_its_reason_by_an_agent_without_the_identity() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let package = operator.upload(encrypted_package(&signer, "2.0.0", Compression::Zstd));
    // No identity at all, then another device's.
    for identity in [None, Some(OTHER_IDENTITY)] {
        let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
        if let Some(identity) = identity {
            give_identity(&device, identity);
        }
        let device_id = enrol(&device, &operator);
        let deployment = operator.deploy(&package, &device_id);
        device.run_once();
        let (state, message) = operator.device_state(&deployment);
        assert_eq!(state, "failure", "{identity:?}: {message}");
        assert!(
            message.contains("encrypted") && message.contains("age identity"),
            "{identity:?}: {message}"
        );
        if identity.is_none() {
            // Refused from the offer's manifest, before any download.
            assert!(message.contains("has no age identity"), "{message}");
        }
        assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");
        let boot = device.power_up();
        assert_eq!((boot.slot, boot.trial), (Slot::A, false), "never armed");
        assert_eq!(device.status()["state"], "idle");
    }
}
