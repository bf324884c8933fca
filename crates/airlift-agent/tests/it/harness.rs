//! A simulated device (slot files, a file boot environment, an agent
//! config) around the real `airlift-agent` binary, signed packages, and the
//! server's management API as an operator uses it.

use crate::server::{TestServer, ADMIN_TOKEN};
use airlift_agent::boot::{BootOutcome, FileBootEnv, Slot};
use airlift_package::{
    encode_payload, Compression, EncodeOptions, Limits, Manifest, PackageWriter, PayloadSpec,
    PayloadType, SignedManifest, SigningKey,
};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

/// The device type every test device reports.
pub const DEVICE_TYPE: &str = "test-board";

/// What slot A holds at the factory.
pub const FACTORY_IMAGE: &[u8] = b"the factory image in slot A";
/// What slot B holds at the factory.
pub const SPARE_IMAGE: &[u8] = b"whatever slot B held before";

/// A release signing key and its public key file.
pub struct Signer {
    pub key: SigningKey,
    pub public: PathBuf,
    _dir: TempDir,
}

impl Signer {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("key directory");
        let key = SigningKey::generate().expect("signing key");
        let public = dir.path().join("release.pub");
        std::fs::write(&public, key.public_key().to_pem().expect("pem")).expect("write key");
        Self {
            key,
            public,
            _dir: dir,
        }
    }

    /// The image a package of `version` installs.
    pub fn image(version: &str) -> Vec<u8> {
        (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .chain(version.bytes())
            .collect()
    }

    /// A signed package replacing `/etc/app.conf` (under the root) in place.
    pub fn file_package(&self, version: &str, content: &[u8]) -> Vec<u8> {
        let spec = PayloadSpec::new(PayloadType::File, "/etc/app.conf", Compression::None);
        let mut stored = Vec::new();
        let entry =
            encode_payload(content, &spec, &EncodeOptions::default(), &mut stored).expect("encode");
        let manifest = Manifest::builder("app", version.parse().expect("semver"), [DEVICE_TYPE])
            .payload(entry)
            .build();
        let signed =
            SignedManifest::sign(&manifest, &[&self.key], &Limits::default()).expect("sign");
        let mut file = Vec::new();
        let mut writer = PackageWriter::new(&mut file, &signed).expect("header");
        writer.write_payload(&stored[..]).expect("payload");
        writer.finish().expect("finish");
        file
    }

    /// A signed image package for the test device type.
    pub fn package(&self, name: &str, version: &str, security_version: u64) -> Vec<u8> {
        let image = Self::image(version);
        let spec = PayloadSpec::new(PayloadType::Image, "rootfs", Compression::Zstd);
        let mut stored = Vec::new();
        let entry = encode_payload(&image[..], &spec, &EncodeOptions::default(), &mut stored)
            .expect("encode");
        let manifest = Manifest::builder(name, version.parse().expect("semver"), [DEVICE_TYPE])
            .security_version(security_version)
            .payload(entry)
            .build();
        let signed =
            SignedManifest::sign(&manifest, &[&self.key], &Limits::default()).expect("sign");
        let mut file = Vec::new();
        let mut writer = PackageWriter::new(&mut file, &signed).expect("header");
        writer.write_payload(&stored[..]).expect("payload");
        writer.finish().expect("finish");
        file
    }
}

/// The operator's side of the server.
pub struct Operator<'s> {
    server: &'s TestServer,
    http: Client,
}

impl<'s> Operator<'s> {
    pub fn new(server: &'s TestServer) -> Self {
        Self {
            server,
            http: Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.server.url)
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder, expected: StatusCode) -> Value {
        let response = request.bearer_auth(ADMIN_TOKEN).send().expect("request");
        let status = response.status();
        let text = response.text().expect("body");
        assert_eq!(status, expected, "body: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Uploads a package; returns its id.
    pub fn upload(&self, package: Vec<u8>) -> String {
        let body = self.send(
            self.http.post(self.url("/packages")).body(package),
            StatusCode::CREATED,
        );
        body["id"].as_str().expect("package id").to_owned()
    }

    /// Accepts the device that authenticated with `serial`; returns its id.
    pub fn accept(&self, serial: &str) -> String {
        let devices = self.send(self.http.get(self.url("/devices")), StatusCode::OK);
        let id = devices["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|d| d["identity"]["serial"] == serial)
            .and_then(|d| d["id"].as_str())
            .unwrap_or_else(|| panic!("no device {serial} in {devices}"))
            .to_owned();
        self.send(
            self.http
                .post(self.url(&format!("/devices/{id}/accept")))
                .json(&Value::Null),
            StatusCode::OK,
        );
        id
    }

    /// Deploys a package to one device; returns the deployment id.
    pub fn deploy(&self, package_id: &str, device_id: &str) -> String {
        let body = serde_json::json!({
            "name": "test",
            "package_id": package_id,
            "target": {"devices": [device_id]},
        });
        let answer = self.send(
            self.http.post(self.url("/deployments")).json(&body),
            StatusCode::CREATED,
        );
        answer["id"].as_str().expect("deployment id").to_owned()
    }

    /// The device's state and message in a deployment.
    pub fn device_state(&self, deployment: &str) -> (String, String) {
        let detail = self.send(
            self.http
                .get(self.url(&format!("/deployments/{deployment}"))),
            StatusCode::OK,
        );
        let device = &detail["devices"][0];
        (
            device["state"].as_str().unwrap_or_default().to_owned(),
            device["message"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// A simulated device: two slot files, a file boot environment, and the
/// agent's configuration.
pub struct Device {
    pub dir: TempDir,
    pub serial: String,
    pub config: PathBuf,
    pub bootenv: PathBuf,
}

impl Device {
    /// A device booted from slot A, trusting `trusted`, whose health check
    /// runs `health` (e.g. `["true"]`).
    pub fn new(server_url: &str, trusted: &Path, health: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("device directory");
        let root = dir.path();
        std::fs::write(root.join("a.img"), FACTORY_IMAGE).expect("slot a");
        std::fs::write(root.join("b.img"), SPARE_IMAGE).expect("slot b");
        std::fs::create_dir_all(root.join("root/etc")).expect("root");
        let bootenv = root.join("bootenv");
        FileBootEnv::create(&bootenv, Slot::A).expect("boot environment");
        let serial = format!(
            "SN-{}",
            root.file_name().unwrap_or_default().to_string_lossy()
        );
        let quoted = |p: PathBuf| format!("{:?}", p.display().to_string());
        let config = format!(
            r#"server_url = "{server_url}"
data_dir = {data}
device_type = "{DEVICE_TYPE}"
identity = {{ serial = "{serial}" }}
trusted_keys = [{trusted}]
poll_interval_secs = 1
reboot_command = ["true"]
root = {root}
[boot]
backend = "file"
path = {bootenv}
[slots.rootfs]
a = {a}
b = {b}
[[health_checks]]
name = "app"
command = {health:?}
timeout_secs = 30
"#,
            data = quoted(root.join("data")),
            root = quoted(root.join("root")),
            trusted = quoted(trusted.to_owned()),
            bootenv = quoted(bootenv.clone()),
            a = quoted(root.join("a.img")),
            b = quoted(root.join("b.img")),
        );
        let config_path = root.join("agent.toml");
        std::fs::write(&config_path, config).expect("agent.toml");
        Self {
            dir,
            serial,
            config: config_path,
            bootenv,
        }
    }

    /// Runs `airlift-agent --config … ARGS`.
    pub fn agent(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_airlift-agent"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("AIRLIFT_LOG", "debug")
            .output()
            .expect("run airlift-agent")
    }

    /// `airlift-agent run --once`, which must succeed.
    pub fn run_once(&self) {
        let output = self.agent(&["run", "--once"]);
        assert!(
            output.status.success(),
            "airlift-agent run --once failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The bootloader's power-up step after the agent "rebooted".
    pub fn power_up(&self) -> BootOutcome {
        FileBootEnv::open(&self.bootenv)
            .and_then(|mut env| env.boot())
            .expect("simulated power-up")
    }

    pub fn slot(&self, slot: Slot) -> Vec<u8> {
        let name = match slot {
            Slot::A => "a.img",
            Slot::B => "b.img",
        };
        std::fs::read(self.dir.path().join(name)).expect("slot file")
    }

    /// The agent's persisted state, as `airlift-agent status --json` prints it.
    pub fn status(&self) -> Value {
        let output = self.agent(&["status", "--json"]);
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice(&output.stdout).expect("status json")
    }

    /// Sets what the agent recorded as installed (name → version) and the
    /// security version it runs.
    pub fn set_record(&self, security_version: u64) {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let record = serde_json::json!({"installed": {}, "security_version": security_version});
        std::fs::write(data.join("installed.json"), record.to_string()).expect("record");
    }
}

/// A device that made contact and that the operator accepted; returns its id.
pub fn enrol(device: &Device, operator: &Operator<'_>) -> String {
    device.run_once(); // pending: the agent authenticates and exits
    operator.accept(&device.serial)
}
