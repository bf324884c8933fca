//! `airlift key …`.

use crate::support::{airlift, build, payload, verify, KeyPair, Scratch};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn key_id(path: &Path) -> String {
    let output = airlift()
        .args(["key", "id"])
        .arg(path)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(output).expect("UTF-8").trim().to_owned()
}

#[test]
fn generate_writes_a_private_key_only_its_owner_can_read() {
    let scratch = Scratch::new();
    let output = airlift()
        .args(["key", "generate", "--out"])
        .arg(scratch.path("keys"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let stdout = String::from_utf8(output).expect("UTF-8");
    let private = scratch.path("keys/airlift-signing.key");
    let public = scratch.path("keys/airlift-signing.pub");

    assert_eq!(mode(&private), 0o600);
    let private_pem = fs::read_to_string(&private).expect("private key");
    assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(fs::read_to_string(&public)
        .expect("public key")
        .starts_with("-----BEGIN PUBLIC KEY-----"));

    let id = key_id(&public);
    assert_eq!(id.len(), 16, "{id}");
    assert_eq!(key_id(&private), id);
    assert!(stdout.contains(&format!("key id {id}")), "{stdout}");
    let secret_line = private_pem.lines().nth(1).expect("PEM body");
    assert!(!stdout.contains(secret_line), "the private key was printed");
}

#[test]
fn generate_refuses_to_overwrite_without_force() {
    let scratch = Scratch::new();
    let keys = scratch.signing_key("release");
    let before = fs::read(&keys.private).expect("key");

    airlift()
        .args(["key", "generate", "--name", "release", "--out"])
        .arg(scratch.path("keys"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("already exists; pass --force"));
    assert_eq!(fs::read(&keys.private).expect("key"), before);

    // A key file someone made world-readable is replaced by a 0600 one.
    fs::set_permissions(&keys.private, fs::Permissions::from_mode(0o644)).expect("chmod");
    airlift()
        .args(["key", "generate", "--name", "release", "--force", "--out"])
        .arg(scratch.path("keys"))
        .assert()
        .success();
    assert_ne!(fs::read(&keys.private).expect("key"), before);
    assert_eq!(mode(&keys.private), 0o600);
    assert_eq!(key_id(&keys.private), key_id(&keys.public));
}

#[test]
fn generate_encryption_writes_an_age_identity_and_recipient() {
    let scratch = Scratch::new();
    let age = scratch.age_keys("fleet");
    assert_eq!(mode(&age.identity), 0o600);
    let identity = fs::read_to_string(&age.identity).expect("identity");
    assert!(identity
        .lines()
        .any(|line| line.starts_with("AGE-SECRET-KEY-1")));
    let recipient = fs::read_to_string(&age.recipient).expect("recipient");
    assert!(recipient.trim().starts_with("age1"), "{recipient}");
    assert!(
        identity.contains(recipient.trim()),
        "the identity names its recipient"
    );

    airlift()
        .args(["key", "generate-encryption", "--name", "fleet", "--out"])
        .arg(scratch.path("keys"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("already exists"));
}

#[test]
fn key_id_explains_a_file_that_is_not_a_key() {
    let scratch = Scratch::new();
    let not_a_key = scratch.text_file("notes.txt", "hello\n", 1);
    airlift()
        .args(["key", "id"])
        .arg(&not_a_key)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("not an Ed25519 public key"));
}

#[test]
fn key_files_may_have_whitespace_around_the_pem() {
    let scratch = Scratch::new();
    let keys = scratch.signing_key("release");
    let id = key_id(&keys.public);
    // What editors and copy-pastes leave: a blank line at the end, an
    // indented or blank start, Windows line ends.
    let padded = |source: &Path, name: &str| {
        let pem = fs::read_to_string(source).expect("key");
        let windows = pem.replace('\n', "\r\n");
        let path = scratch.path(name);
        fs::write(&path, format!("\n  {windows}\n\n \t\n")).expect("write key");
        path
    };
    let public = padded(&keys.public, "padded.pub");
    let private = padded(&keys.private, "padded.key");
    let trailing = scratch.path("trailing.pub");
    fs::write(
        &trailing,
        fs::read_to_string(&keys.public).expect("key") + "\n",
    )
    .expect("write key");
    assert_eq!(key_id(&trailing), id);
    assert_eq!(key_id(&public), id);
    assert_eq!(key_id(&private), id);

    // The package commands read key files the same way.
    let image = scratch.text_file("rootfs.img", "rootfs\n", 100);
    let out = scratch.path("rootfs.airlift");
    let padded_keys = KeyPair {
        private,
        public: public.clone(),
    };
    let mut command = build(&padded_keys, &out);
    payload(&mut command, "image:rootfs", &image);
    command.assert().success();
    verify(&out, &[&public]).assert().success();
}
