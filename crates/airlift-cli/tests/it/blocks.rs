//! Format version 2 through the CLI: `package build` signs every block,
//! `package verify` checks them and names the damaged block and its bytes,
//! and `--format-version 1` still builds what older agents read.

use crate::support::{airlift, build, failure_of, json_of, payload, verify, KeyPair, Scratch};
use airlift_package::{Limits, PackageReader};
use std::fs;
use std::path::PathBuf;

const MIB: usize = 1024 * 1024;

/// An uncompressed package of one 2.5 MiB image: three 1 MiB blocks.
fn raw_package(scratch: &Scratch, key: &KeyPair, extra_args: &[&str]) -> PathBuf {
    let package = scratch.path("raw.airlift");
    let mut command = build(key, &package);
    payload(
        &mut command,
        "image:rootfs",
        &scratch.random_file("rootfs.img", 5 * MIB / 2, 9),
    );
    command
        .args(["--compress", "none"])
        .args(extra_args)
        .assert()
        .success();
    package
}

#[test]
fn verify_checks_every_block_of_a_version_2_package() {
    let scratch = Scratch::new();
    let key = scratch.signing_key("release");
    let package = raw_package(&scratch, &key, &[]);
    let report = json_of(verify(&package, &[&key.public]).arg("--json"));
    assert_eq!(report["verified"], true);
    assert_eq!(report["package"]["format_version"], 2);
    assert_eq!(report["package"]["block_size"], 1024 * 1024);
    assert_eq!(report["package"]["payloads"][0]["blocks"], 3);

    let output = verify(&package, &[&key.public]).assert().success();
    let stdout = String::from_utf8_lossy(&output.get_output().stdout).into_owned();
    assert!(
        stdout.contains("format version 2: every 1.00 MiB block"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stored size and 3 block digest(s) ok"),
        "{stdout}"
    );

    let output = airlift()
        .args(["package", "inspect"])
        .arg(&package)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&output.get_output().stdout).into_owned();
    assert!(stdout.contains("(3 blocks, index sha256"), "{stdout}");
}

#[test]
fn verify_names_the_damaged_block_and_its_bytes() {
    let scratch = Scratch::new();
    let key = scratch.signing_key("release");
    let package = raw_package(&scratch, &key, &[]);
    let mut bytes = fs::read(&package).expect("package");
    let start = PackageReader::open(&bytes[..], Limits::default())
        .expect("opens")
        .payload_offset() as usize;
    bytes[start + 2 * MIB + 1000] ^= 0x01;
    let damaged = scratch.path("damaged.airlift");
    fs::write(&damaged, &bytes).expect("write");

    let (from, to) = (start + 2 * MIB, start + 5 * MIB / 2);
    let expected = format!(
        "payload 0 (image rootfs), block 2, bytes {from}..{to} of the file: stored SHA-256 does not match the signed block index"
    );
    let stderr = failure_of(&mut verify(&damaged, &[&key.public]));
    assert!(stderr.contains(&expected), "{stderr}");
    let output = verify(&damaged, &[&key.public])
        .arg("--json")
        .assert()
        .code(1);
    let report: serde_json::Value =
        serde_json::from_slice(&output.get_output().stdout).expect("JSON");
    assert_eq!(report["verified"], false);
    let error = report["error"].as_str().expect("an error");
    assert!(error.contains(&expected), "{error}");
}

#[test]
fn format_version_1_is_still_built_and_verified() {
    let scratch = Scratch::new();
    let key = scratch.signing_key("release");
    let package = raw_package(&scratch, &key, &["--format-version", "1"]);
    let bytes = fs::read(&package).expect("package");
    let reader = PackageReader::open(&bytes[..], Limits::default()).expect("opens");
    assert_eq!(reader.format_version(), 1);
    let report = json_of(verify(&package, &[&key.public]).arg("--json"));
    assert_eq!(report["package"]["format_version"], 1);
    assert!(report["package"].get("block_size").is_none());
    assert!(report["package"]["payloads"][0].get("blocks").is_none());

    // An unknown version is a usage error (clap's exit code 2).
    let output = build(&key, &scratch.path("v3.airlift"))
        .args(["--format-version", "3"])
        .arg("--payload")
        .arg(format!(
            "file:/etc/motd={}",
            scratch.text_file("motd", "hi\n", 1).display()
        ))
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&output.get_output().stderr).into_owned();
    assert!(stderr.contains("--format-version"), "{stderr}");
}
