//! Damaged and hostile packages: each is refused with exit code 1 and a
//! message that says what is wrong and where.

use crate::support::{airlift, build, failure_of, json_of, payload, verify, KeyPair, Scratch};
use airlift_package::{Compression, Limits, PackageReader, PayloadEntry, HEADER_LEN};
use airlift_testkit::packages::Signer;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A small package with three payloads of different kinds, and where things are in it.
struct Fixture {
    scratch: Scratch,
    key: KeyPair,
    package: PathBuf,
    bytes: Vec<u8>,
    manifest_len: usize,
    /// (type, target, file offsets) per payload.
    payloads: Vec<(String, String, Range<u64>)>,
}

impl Fixture {
    fn new(extra_args: &[&str]) -> Self {
        let scratch = Scratch::new();
        let key = scratch.signing_key("release");
        let package = scratch.path("rootfs.airlift");
        let mut command = build(&key, &package);
        payload(
            &mut command,
            "image:rootfs",
            &scratch.random_file("rootfs.img", 96 * 1024, 3),
        );
        payload(
            &mut command,
            "file:/etc/app/config.toml",
            &scratch.text_file("config.toml", "answer = 42\n", 5000),
        );
        payload(
            &mut command,
            "module:foo:bar",
            &scratch.random_file("blob", 40 * 1024, 4),
        );
        command.args(extra_args).assert().success();
        Self::read(scratch, key, package)
    }

    fn read(scratch: Scratch, key: KeyPair, package: PathBuf) -> Self {
        let bytes = fs::read(&package).expect("package");
        let reader = PackageReader::open(&bytes[..], Limits::default()).expect("opens");
        let manifest = reader.manifest_unverified().expect("manifest");
        let mut start = reader.payload_offset();
        let payloads = manifest
            .payloads
            .iter()
            .map(|entry| {
                let range = start..start + entry.stored.size;
                start = range.end;
                (entry.kind.to_string(), entry.target.clone(), range)
            })
            .collect();
        let manifest_len = reader.manifest_bytes().len();
        Self {
            scratch,
            key,
            package,
            bytes,
            manifest_len,
            payloads,
        }
    }

    fn signatures_start(&self) -> usize {
        HEADER_LEN + self.manifest_len
    }

    /// Writes a copy of the package changed by `edit`.
    fn damaged(&self, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
        let mut bytes = self.bytes.clone();
        edit(&mut bytes);
        let path = self.scratch.path(name);
        fs::write(&path, bytes).expect("write damaged package");
        path
    }

    fn flipped(&self, name: &str, offset: usize) -> PathBuf {
        self.damaged(name, |bytes| bytes[offset] ^= 0x01)
    }

    /// Runs `verify` on `package`, trusting the fixture's key; returns stderr.
    fn refused(&self, package: &Path) -> String {
        failure_of(&mut verify(package, &[&self.key.public]))
    }

    fn key_id(&self) -> String {
        let output = airlift()
            .args(["key", "id"])
            .arg(&self.key.public)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(output).expect("UTF-8").trim().to_owned()
    }
}

fn assert_says(stderr: &str, needles: &[&str]) {
    assert!(stderr.starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
}

#[test]
fn the_fixture_itself_verifies() {
    let fixture = Fixture::new(&[]);
    verify(&fixture.package, &[&fixture.key.public])
        .assert()
        .success();
}

#[test]
fn a_flipped_magic_byte_is_not_a_package() {
    let fixture = Fixture::new(&[]);
    let damaged = fixture.flipped("magic.airlift", 3);
    assert_says(&fixture.refused(&damaged), &["not an Airlift package"]);
    let stderr = failure_of(airlift().args(["package", "inspect"]).arg(&damaged));
    assert_says(&stderr, &["not an Airlift package"]);
}

#[test]
fn a_flipped_manifest_length_is_refused() {
    let fixture = Fixture::new(&[]);
    // High byte: the length is now far beyond what a reader accepts.
    let damaged = fixture.flipped("length-high.airlift", 12);
    assert_says(
        &fixture.refused(&damaged),
        &["corrupt header", "manifest length", "outside 1..=1048576"],
    );
    // Low byte: the manifest and signature boundaries shift, so signature
    // bytes are read as the block index's length (format version 2), which
    // is refused; were it a plausible length, the signature entry would no
    // longer name the trusted key.
    let damaged = fixture.flipped("length-low.airlift", 15);
    let stderr = fixture.refused(&damaged);
    assert!(
        stderr.contains("block index: its length")
            || stderr.contains("0 valid trusted signature(s), 1 needed"),
        "{stderr}"
    );
}

#[test]
fn a_flipped_manifest_byte_breaks_the_signature() {
    let fixture = Fixture::new(&[]);
    let damaged = fixture.flipped("manifest.airlift", HEADER_LEN + fixture.manifest_len / 2);
    assert_says(
        &fixture.refused(&damaged),
        &[&format!(
            "signature by trusted key {} does not verify",
            fixture.key_id()
        )],
    );
}

#[test]
fn a_flipped_signature_byte_is_refused() {
    let fixture = Fixture::new(&[]);
    let signature = fixture.signatures_start() + 8 + 20;
    let damaged = fixture.flipped("signature.airlift", signature);
    assert_says(
        &fixture.refused(&damaged),
        &[&format!(
            "signature by trusted key {} does not verify",
            fixture.key_id()
        )],
    );
    // In the key id: the signature now claims a key nobody trusts.
    let damaged = fixture.flipped("signature-key-id.airlift", fixture.signatures_start());
    assert_says(
        &fixture.refused(&damaged),
        &["not signed by enough trusted keys"],
    );
}

#[test]
fn a_flipped_payload_byte_names_the_payload_and_its_bytes() {
    let fixture = Fixture::new(&[]);
    assert_eq!(fixture.payloads.len(), 3);
    for (index, (kind, target, range)) in fixture.payloads.iter().enumerate() {
        let middle = usize::try_from(range.start + (range.end - range.start) / 2).expect("fits");
        let damaged = fixture.flipped(&format!("payload-{index}.airlift"), middle);
        // Each payload is smaller than a block: its block 0 is all of it.
        let expected = format!(
            "payload {index} ({kind} {target}), block 0, bytes {}..{} of the file: stored SHA-256 does not match the signed block index",
            range.start, range.end
        );
        assert_says(&fixture.refused(&damaged), &[&expected]);
    }
}

#[test]
fn a_flipped_encrypted_payload_byte_names_the_payload_with_or_without_identity() {
    let scratch = Scratch::new();
    let age = scratch.age_keys("fleet");
    let recipient = age.recipient.to_string_lossy().into_owned();
    let fixture = Fixture::new(&["--encrypt-to", &recipient]);
    for (index, (kind, target, range)) in fixture.payloads.iter().enumerate() {
        let middle = usize::try_from(range.start + (range.end - range.start) / 2).expect("fits");
        let damaged = fixture.flipped(&format!("payload-{index}.airlift"), middle);
        let expected = format!(
            "payload {index} ({kind} {target}), block 0, bytes {}..{} of the file: stored SHA-256 does not match",
            range.start, range.end
        );
        assert_says(&fixture.refused(&damaged), &[&expected]);
        let stderr = failure_of(
            verify(&damaged, &[&fixture.key.public])
                .arg("--identity")
                .arg(&age.identity),
        );
        assert_says(&stderr, &[&expected]);
    }
}

#[test]
fn the_wrong_identity_cannot_decrypt() {
    let scratch = Scratch::new();
    let right = scratch.age_keys("right");
    let wrong = scratch.age_keys("wrong");
    let recipient = right.recipient.to_string_lossy().into_owned();
    let fixture = Fixture::new(&["--encrypt-to", &recipient]);
    let stderr = failure_of(
        verify(&fixture.package, &[&fixture.key.public])
            .arg("--identity")
            .arg(&wrong.identity),
    );
    assert_says(
        &stderr,
        &["payload 0 (rootfs) is encrypted and none of the given identities can decrypt it"],
    );
}

#[test]
fn a_truncated_package_says_where_it_ends() {
    let fixture = Fixture::new(&[]);
    let cut = fixture.bytes.len() - 100;
    let damaged = fixture.damaged("truncated.airlift", |bytes| bytes.truncate(cut));
    let (kind, target, range) = &fixture.payloads[2];
    assert_says(
        &fixture.refused(&damaged),
        &[&format!(
            "truncated package: it ends at byte {cut} inside the payload 2 ({kind} {target}), which should span bytes {}..{}",
            range.start, range.end
        )],
    );
    let damaged = fixture.damaged("stub.airlift", |bytes| bytes.truncate(10));
    assert_says(
        &fixture.refused(&damaged),
        &["truncated package: it ends at byte 10 inside the header"],
    );
}

#[test]
fn appended_bytes_are_refused() {
    let fixture = Fixture::new(&[]);
    let end = fixture.bytes.len();
    let damaged = fixture.damaged("appended.airlift", |bytes| bytes.extend_from_slice(b"tail"));
    assert_says(
        &fixture.refused(&damaged),
        &[&format!(
            "unexpected data after the last payload, starting at byte {end}"
        )],
    );
}

#[test]
fn a_json_failure_is_reported_as_json_too() {
    let fixture = Fixture::new(&[]);
    let damaged = fixture.damaged("appended.airlift", |bytes| bytes.push(0));
    let output = verify(&damaged, &[&fixture.key.public])
        .arg("--json")
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&output).expect("JSON");
    assert_eq!(report["verified"], false);
    let error = report["error"].as_str().expect("error text");
    assert!(
        error.contains("unexpected data after the last payload"),
        "{error}"
    );
}

#[test]
fn an_untrusted_signer_is_refused() {
    let fixture = Fixture::new(&[]);
    let stranger = fixture.scratch.signing_key("stranger");
    let stderr = failure_of(&mut verify(&fixture.package, &[&stranger.public]));
    assert_says(
        &stderr,
        &[
            "not signed by enough trusted keys",
            &format!("signed by [{}]", fixture.key_id()),
        ],
    );
}

#[test]
fn one_signature_does_not_meet_a_threshold_of_two() {
    let fixture = Fixture::new(&[]);
    let other = fixture.scratch.signing_key("other");
    let stderr = failure_of(
        verify(&fixture.package, &[&fixture.key.public, &other.public]).args(["--threshold", "2"]),
    );
    assert_says(
        &stderr,
        &[
            "not signed by enough trusted keys",
            "1 valid trusted signature(s), 2 needed",
        ],
    );
    // A threshold the trusted keys can never meet is a usage mistake, said as such.
    let stderr =
        failure_of(verify(&fixture.package, &[&fixture.key.public]).args(["--threshold", "2"]));
    assert_says(
        &stderr,
        &["a threshold of 2 cannot be met with 1 trusted key(s)"],
    );
}

/// A package whose manifest was signed after `edit` changed the payload
/// entry, followed by the real stored bytes: what a hostile build server
/// could produce (the test kit writes it past the writer's checks, which
/// would refuse the mismatch). Returns it and its signer's public key.
fn hostile_package(scratch: &Scratch, edit: impl FnOnce(&mut PayloadEntry)) -> (PathBuf, PathBuf) {
    let signer = Signer::new();
    let public = scratch.path("hostile.pub");
    fs::copy(signer.public_key_file(), &public).expect("copy the public key");
    let content = "the same line over and over\n".repeat(4000);
    let file = signer
        .package("rootfs", "1.0.0")
        .device_type("rpi4")
        .image(content.as_bytes(), Compression::Zstd)
        .build_hostile(|entries| edit(&mut entries[0]));
    let path = scratch.path("hostile.airlift");
    fs::write(&path, file).expect("write package");
    (path, public)
}

#[test]
fn a_declared_stored_size_beyond_the_file_is_truncation() {
    let scratch = Scratch::new();
    let (package, public) = hostile_package(&scratch, |entry| entry.stored.size += 1000);
    let stderr = failure_of(&mut verify(&package, &[&public]));
    assert_says(
        &stderr,
        &["truncated package", "inside the payload 0 (image rootfs)"],
    );
}

#[test]
fn a_declared_installed_size_below_the_real_one_is_refused() {
    let scratch = Scratch::new();
    let (package, public) = hostile_package(&scratch, |entry| entry.installed.size -= 1000);
    let stderr = failure_of(&mut verify(&package, &[&public]));
    assert_says(
        &stderr,
        &[
            "payload 0 (rootfs): decodes to",
            "bytes but the manifest declares 111000",
        ],
    );
}

#[test]
fn inspect_json_never_claims_verification() {
    let fixture = Fixture::new(&[]);
    let inspection = json_of(
        airlift()
            .args(["package", "inspect", "--json"])
            .arg(&fixture.package),
    );
    assert_eq!(inspection["verified"], false);
    assert_eq!(inspection["signatures"][0], fixture.key_id().as_str());
}
