//! Shared helpers: a scratch directory, keys, payload files and packages.

use assert_cmd::Command;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

pub const MIB: usize = 1024 * 1024;

/// The `airlift` binary, with progress bars off.
pub fn airlift() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_airlift"));
    command.arg("--quiet");
    command
}

/// A signing key pair made by `airlift key generate`.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub private: PathBuf,
    pub public: PathBuf,
}

/// An age key pair made by `airlift key generate-encryption`.
#[derive(Debug, Clone)]
pub struct AgeKeys {
    pub identity: PathBuf,
    pub recipient: PathBuf,
}

/// A scratch directory that disappears with the test.
#[derive(Debug)]
pub struct Scratch {
    dir: TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn signing_key(&self, name: &str) -> KeyPair {
        airlift()
            .args(["key", "generate", "--name", name, "--out"])
            .arg(self.path("keys"))
            .assert()
            .success();
        KeyPair {
            private: self.path(&format!("keys/{name}.key")),
            public: self.path(&format!("keys/{name}.pub")),
        }
    }

    pub fn age_keys(&self, name: &str) -> AgeKeys {
        airlift()
            .args(["key", "generate-encryption", "--name", name, "--out"])
            .arg(self.path("keys"))
            .assert()
            .success();
        AgeKeys {
            identity: self.path(&format!("keys/{name}.age-identity")),
            recipient: self.path(&format!("keys/{name}.age-recipient")),
        }
    }

    /// A file of `len` pseudo-random bytes (incompressible).
    pub fn random_file(&self, name: &str, len: usize, seed: u64) -> PathBuf {
        let path = self.path(name);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut file = fs::File::create(&path).expect("create payload file");
        let mut chunk = vec![0u8; MIB];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            rng.fill_bytes(&mut chunk[..n]);
            file.write_all(&chunk[..n]).expect("write payload file");
            left -= n;
        }
        path
    }

    /// A small, very compressible file.
    pub fn text_file(&self, name: &str, line: &str, repeat: usize) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, line.repeat(repeat)).expect("write payload file");
        path
    }

    /// Names in the scratch root starting with `.airlift-` (temporary files a build left).
    pub fn leftovers(&self) -> Vec<String> {
        fs::read_dir(self.root())
            .expect("read scratch directory")
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".airlift-"))
            .collect()
    }
}

/// `airlift package build` with the usual name, version and device type.
pub fn build(key: &KeyPair, out: &Path) -> Command {
    let mut command = airlift();
    command
        .args(["package", "build", "--name", "rootfs", "--version", "1.2.0"])
        .args(["--device-type", "rpi4", "--key"])
        .arg(&key.private)
        .arg("--out")
        .arg(out);
    command
}

/// `--payload SPEC=PATH`.
pub fn payload(command: &mut Command, spec: &str, path: &Path) {
    let mut arg = std::ffi::OsString::from(format!("{spec}="));
    arg.push(path);
    command.arg("--payload").arg(arg);
}

/// `airlift package verify FILE --trust KEY…`.
pub fn verify(file: &Path, trusted: &[&Path]) -> Command {
    let mut command = airlift();
    command.args(["package", "verify"]).arg(file);
    for key in trusted {
        command.arg("--trust").arg(key);
    }
    command
}

/// Runs a command that must succeed and parses its stdout as JSON.
pub fn json_of(command: &mut Command) -> serde_json::Value {
    let output = command.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&output).expect("stdout is JSON")
}

/// Runs a command that must fail with exit code 1 and returns its stderr.
pub fn failure_of(command: &mut Command) -> String {
    let output = command.assert().code(1).get_output().clone();
    String::from_utf8(output.stderr).expect("stderr is UTF-8")
}
