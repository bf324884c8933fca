//! Mistakes on the command line: each is explained and leaves no file behind.

use crate::support::{build, payload, KeyPair, Scratch};
use assert_cmd::Command;
use std::path::PathBuf;

struct Attempt {
    scratch: Scratch,
    key: KeyPair,
    out: PathBuf,
}

impl Attempt {
    fn new() -> Self {
        let scratch = Scratch::new();
        let key = scratch.signing_key("release");
        let out = scratch.path("out.airlift");
        Self { scratch, key, out }
    }

    fn build(&self) -> Command {
        build(&self.key, &self.out)
    }

    /// Runs `command`, expects exit code `code` and every needle in stderr,
    /// and checks no package or temporary file was left.
    fn fails(&self, mut command: Command, code: i32, needles: &[&str]) {
        let output = command.assert().code(code).get_output().clone();
        let stderr = String::from_utf8(output.stderr).expect("UTF-8");
        assert!(stderr.starts_with("error: "), "{stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{needle:?} missing from:\n{stderr}"
            );
        }
        assert!(!self.out.exists(), "a package was written");
        assert!(
            self.scratch.leftovers().is_empty(),
            "{:?}",
            self.scratch.leftovers()
        );
    }
}

#[test]
fn a_payload_without_equals_sign() {
    let attempt = Attempt::new();
    let mut command = attempt.build();
    command.args(["--payload", "image:rootfs"]);
    attempt.fails(
        command,
        2,
        &["--payload", "no '=' found", "TYPE:TARGET=PATH"],
    );
}

#[test]
fn an_unknown_payload_type() {
    let attempt = Attempt::new();
    let image = attempt.scratch.random_file("rootfs.img", 1024, 1);
    let mut command = attempt.build();
    payload(&mut command, "disk:sda", &image);
    attempt.fails(
        command,
        2,
        &["payload type \"disk\" is not image, file, archive or module:<name>"],
    );
}

#[test]
fn a_file_target_that_climbs_out() {
    let attempt = Attempt::new();
    let file = attempt
        .scratch
        .text_file("passwd", "root::0:0::/:/bin/sh\n", 1);
    let mut command = attempt.build();
    payload(&mut command, "file:/etc/../root/passwd", &file);
    attempt.fails(
        command,
        1,
        &["payload 0 target \"/etc/../root/passwd\"", "'..' component"],
    );
}

#[test]
fn a_payload_file_that_does_not_exist() {
    let attempt = Attempt::new();
    let image = attempt.scratch.random_file("rootfs.img", 1024, 1);
    let missing = attempt.scratch.path("missing.bin");
    let mut command = attempt.build();
    payload(&mut command, "image:rootfs", &image);
    payload(&mut command, "file:/opt/app/bin", &missing);
    attempt.fails(
        command,
        1,
        &[
            &format!("opening payload file {}", missing.display()),
            "No such file or directory",
        ],
    );
}

#[test]
fn a_version_that_is_not_semver() {
    let attempt = Attempt::new();
    let image = attempt.scratch.random_file("rootfs.img", 1024, 1);
    let mut command = Command::new(env!("CARGO_BIN_EXE_airlift"));
    command
        .args(["package", "build", "--name", "rootfs", "--version", "1.2"])
        .args(["--device-type", "rpi4", "--key"])
        .arg(&attempt.key.private)
        .arg("--out")
        .arg(&attempt.out);
    payload(&mut command, "image:rootfs", &image);
    attempt.fails(
        command,
        2,
        &["invalid value '1.2' for '--version <SEMVER>'"],
    );
}

#[test]
fn a_signing_key_that_is_not_one() {
    let attempt = Attempt::new();
    let image = attempt.scratch.random_file("rootfs.img", 1024, 1);
    let mut command = Command::new(env!("CARGO_BIN_EXE_airlift"));
    command
        .args(["package", "build", "--name", "rootfs", "--version", "1.2.0"])
        .args(["--device-type", "rpi4", "--key"])
        .arg(&attempt.key.public)
        .arg("--out")
        .arg(&attempt.out);
    payload(&mut command, "image:rootfs", &image);
    attempt.fails(
        command,
        1,
        &[
            &format!("reading signing key {}", attempt.key.public.display()),
            "not an Ed25519 private key",
        ],
    );
}

#[test]
fn an_identity_given_as_a_recipient() {
    let attempt = Attempt::new();
    let age = attempt.scratch.age_keys("fleet");
    let image = attempt.scratch.random_file("rootfs.img", 1024, 1);
    let mut command = attempt.build();
    payload(&mut command, "image:rootfs", &image);
    command.arg("--encrypt-to").arg(&age.identity);
    attempt.fails(command, 1, &["is a secret age identity, not a recipient"]);
}
