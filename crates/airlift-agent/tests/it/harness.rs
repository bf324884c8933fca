//! A simulated device (slot files, a file boot environment, an agent
//! config) around the real `airlift-agent` binary, the packages it is
//! offered (signed by the test kit's `Signer`), and the server's
//! management API as an operator uses it.

use crate::server::{InProcessServer, ADMIN_TOKEN};
use airlift_agent::boot::{BootOutcome, FileBootEnv, Slot};
use airlift_package::{Compression, PayloadSpec, PayloadType};
use airlift_testkit::packages;
pub use airlift_testkit::packages::Signer;
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

/// The image a package of `version` made by [`Packages::image_package`]
/// installs.
pub fn image(version: &str) -> Vec<u8> {
    packages::image(version, 200_000)
}

/// The packages these tests deploy, signed by the test kit's [`Signer`].
pub trait Packages {
    /// A signed image package for the test device type, of [`image`].
    fn image_package(&self, name: &str, version: &str, security_version: u64) -> Vec<u8>;
    /// A signed package of one image payload, `size` bytes, stored raw (so
    /// an interrupted download resumes at the byte); returns the image too.
    fn raw_package(&self, version: &str, size: usize) -> (Vec<u8>, Vec<u8>);
    /// A signed image package for another device type.
    fn package_for(&self, device_type: &str, version: &str) -> Vec<u8>;
    /// A signed package replacing `/etc/app.conf` (under the root) in place.
    fn file_package(&self, version: &str, content: &[u8]) -> Vec<u8>;
    /// A signed package of one payload changed in place: `kind` at `target`.
    fn in_place_package(
        &self,
        kind: PayloadType,
        target: &str,
        version: &str,
        content: &[u8],
    ) -> Vec<u8>;
    /// A signed package of one `module:<module>` payload.
    fn module_package(&self, module: &str, version: &str, content: &[u8]) -> Vec<u8>;
}

impl Packages for Signer {
    fn image_package(&self, name: &str, version: &str, security_version: u64) -> Vec<u8> {
        self.package(name, version)
            .device_type(DEVICE_TYPE)
            .security_version(security_version)
            .image(&image(version), Compression::Zstd)
            .build()
    }

    fn raw_package(&self, version: &str, size: usize) -> (Vec<u8>, Vec<u8>) {
        let image = packages::image(version, size);
        let package = self
            .package("rootfs", version)
            .device_type(DEVICE_TYPE)
            .security_version(1)
            .image(&image, Compression::None)
            // The smallest blocks the format allows: the agent writes and
            // checkpoints a verified block at a time, and the tests that
            // cut a download short want checkpoints within a MiB.
            .block_size(64 * 1024)
            .build();
        (package, image)
    }

    fn package_for(&self, device_type: &str, version: &str) -> Vec<u8> {
        self.package("rootfs", version)
            .device_type(device_type)
            .security_version(1)
            .image(&image(version), Compression::Zstd)
            .build()
    }

    fn file_package(&self, version: &str, content: &[u8]) -> Vec<u8> {
        self.in_place_package(PayloadType::File, "/etc/app.conf", version, content)
    }

    fn in_place_package(
        &self,
        kind: PayloadType,
        target: &str,
        version: &str,
        content: &[u8],
    ) -> Vec<u8> {
        self.package("app", version)
            .device_type(DEVICE_TYPE)
            .payload(PayloadSpec::new(kind, target, Compression::None), content)
            .build()
    }

    fn module_package(&self, module: &str, version: &str, content: &[u8]) -> Vec<u8> {
        let kind = PayloadType::Module(module.into());
        self.package("firmware", version)
            .device_type(DEVICE_TYPE)
            .payload(PayloadSpec::new(kind, "mcu0", Compression::Zstd), content)
            .build()
    }
}

/// The operator's side of the server.
pub struct Operator {
    base: String,
    http: Client,
}

impl Operator {
    pub fn new(server: &InProcessServer) -> Self {
        Self::at(&server.url)
    }

    /// The operator of the server (instance) at `base`.
    pub fn at(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: Client::new(),
        }
    }

    /// The operator of the server at `base`, through `http` (one that
    /// trusts a test CA, for HTTPS).
    pub fn with_client(base: &str, http: Client) -> Self {
        Self {
            base: base.to_owned(),
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
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
        let devices = self.send(
            self.http.get(self.url("/devices?status=pending")),
            StatusCode::OK,
        );
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

    /// Uploads a raw image package of `size` bytes, version 2.0.0, signed
    /// by `signer`, and deploys it to one device; returns the deployment
    /// id, the image and the package's length.
    pub fn deploy_raw(&self, signer: &Signer, device_id: &str, size: usize) -> RawDeployment {
        let (file, image) = signer.raw_package("2.0.0", size);
        let package_len = file.len() as u64;
        let package = self.upload(file);
        RawDeployment {
            deployment: self.deploy(&package, device_id),
            image,
            package_len,
        }
    }

    /// Deploys a package to one device; returns the deployment id.
    pub fn deploy(&self, package_id: &str, device_id: &str) -> String {
        self.deploy_with(package_id, device_id, serde_json::json!({}))
    }

    /// Deploys a package to one device with an install policy (a window,
    /// download-only); returns the deployment id.
    pub fn deploy_with(&self, package_id: &str, device_id: &str, install: Value) -> String {
        let body = serde_json::json!({
            "name": "test",
            "package_id": package_id,
            "target": {"devices": [device_id]},
            "install": install,
        });
        let answer = self.send(
            self.http.post(self.url("/deployments")).json(&body),
            StatusCode::CREATED,
        );
        answer["id"].as_str().expect("deployment id").to_owned()
    }

    /// `POST /deployments/{id}/{action}` (cancel, install, …).
    pub fn control(&self, deployment: &str, action: &str) -> Value {
        self.send(
            self.http
                .post(self.url(&format!("/deployments/{deployment}/{action}")))
                .json(&Value::Null),
            StatusCode::OK,
        )
    }

    /// A deployment's detail.
    pub fn deployment(&self, deployment: &str) -> Value {
        self.send(
            self.http
                .get(self.url(&format!("/deployments/{deployment}"))),
            StatusCode::OK,
        )
    }

    /// A device's detail.
    pub fn device(&self, device: &str) -> Value {
        self.send(
            self.http.get(self.url(&format!("/devices/{device}"))),
            StatusCode::OK,
        )
    }

    /// Asks a device to check in now.
    pub fn request_check_in(&self, device: &str) {
        let response = self
            .http
            .post(self.url(&format!("/devices/{device}/check-in")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .expect("request");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }

    /// The first device (by id) of a deployment, as its paged device list
    /// shows it: state, message, progress. The tests' deployments target
    /// one device.
    pub fn deployment_device(&self, deployment: &str) -> Value {
        let page = self.send(
            self.http
                .get(self.url(&format!("/deployments/{deployment}/devices?per_page=1"))),
            StatusCode::OK,
        );
        page["items"][0].clone()
    }

    /// The device's state and message in a deployment.
    pub fn device_state(&self, deployment: &str) -> (String, String) {
        let device = self.deployment_device(deployment);
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
        std::fs::create_dir_all(root.join("modules")).expect("modules");
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
modules_dir = {modules}
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
            modules = quoted(root.join("modules")),
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

    /// `airlift-agent run --once` with `AIRLIFT_FAULT_HALT_AT` set to `halt_at`
    /// (see the agent's `fault` module: `save:N`, `byte:N`; `save:0` only
    /// counts): when the agent halts there, it is killed with SIGKILL — a
    /// power cut as far as the agent can tell.
    pub fn run_faulted(&self, halt_at: &str) -> Run {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_airlift-agent"))
            .arg("--config")
            .arg(&self.config)
            .args(["run", "--once"])
            .env("AIRLIFT_LOG", "info")
            .env("AIRLIFT_FAULT_HALT_AT", halt_at)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start airlift-agent");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut log = String::new();
        let mut halted = false;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            log.push_str(&line);
            log.push('\n');
            if line.starts_with("airlift-fault: halted") {
                halted = true;
                child.kill().expect("SIGKILL the agent");
                break;
            }
        }
        let status = child.wait().expect("wait for the agent");
        Run {
            halted,
            success: status.success(),
            log,
        }
    }

    /// Sets how long the agent waits on a silent connection.
    pub fn set_network_timeout(&self, secs: u64) {
        self.set_option(&format!("network_timeout_secs = {secs}"));
    }

    /// Adds a top-level `key = value` line to the agent's configuration.
    pub fn set_option(&self, line: &str) {
        let config = std::fs::read_to_string(&self.config).expect("agent.toml");
        let config = config.replacen("reboot_command", &format!("{line}\nreboot_command"), 1);
        std::fs::write(&self.config, config).expect("agent.toml");
    }

    /// Replaces the health check's command.
    pub fn set_health(&self, command: &[&str]) {
        self.replace_line("command = ", &format!("{command:?}"));
    }

    /// Replaces the value of the configuration line starting with `key`
    /// (`server_url = `); returns the old value.
    fn replace_line(&self, key: &str, value: &str) -> String {
        let config = std::fs::read_to_string(&self.config).expect("agent.toml");
        let line = config
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key:?} line"))
            .to_owned();
        // The whole line (`reboot_command = …` ends like `command = …`),
        // the first one too.
        let config =
            format!("\n{config}").replacen(&format!("\n{line}\n"), &format!("\n{key}{value}\n"), 1);
        std::fs::write(&self.config, &config[1..]).expect("agent.toml");
        line[key.len()..].to_owned()
    }

    /// Sets how long a trial boot may take to reach the server.
    pub fn set_reach_server_timeout(&self, secs: u64) {
        let config = std::fs::read_to_string(&self.config).expect("agent.toml");
        let config = config.replacen(
            "[boot]",
            &format!("[trial]\nreach_server_timeout_secs = {secs}\n[boot]"),
            1,
        );
        std::fs::write(&self.config, config).expect("agent.toml");
    }

    /// Points the agent at another server URL; returns the one it had.
    pub fn set_server_url(&self, url: &str) -> String {
        let old = self.replace_line("server_url = ", &format!("{url:?}"));
        old.trim_matches('"').to_owned()
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
pub fn enrol(device: &Device, operator: &Operator) -> String {
    device.run_once(); // pending: the agent authenticates and exits
    operator.accept(&device.serial)
}

/// What [`Operator::deploy_raw`] made.
pub struct RawDeployment {
    pub deployment: String,
    /// The image the package installs.
    pub image: Vec<u8>,
    /// The package file's length.
    pub package_len: u64,
}

/// How one faulted run of the agent ended.
#[derive(Debug)]
pub struct Run {
    /// Halted at the fault and killed.
    pub halted: bool,
    /// Exited with status 0.
    pub success: bool,
    /// What it wrote to standard error.
    pub log: String,
}

// `saves`, `rebooted` and `halted_at_byte` serve tests/power_cut.rs.
#[allow(dead_code)]
impl Run {
    /// State saves this run made (`airlift-fault: save N` lines).
    pub fn saves(&self) -> u64 {
        self.log
            .lines()
            .filter(|l| l.starts_with("airlift-fault: save "))
            .count() as u64
    }

    /// Whether the agent asked for a reboot.
    pub fn rebooted(&self) -> bool {
        self.log.contains(": rebooting")
    }

    /// The package byte the run halted at, for `byte:N` faults.
    pub fn halted_at_byte(&self) -> Option<u64> {
        self.log
            .lines()
            .find_map(|l| l.strip_prefix("airlift-fault: halted at package byte "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// Where the run's streams fetched from (`fetch_from=N` in its log).
    pub fn fetched_from(&self) -> Vec<u64> {
        self.log
            .lines()
            .filter(|l| l.contains("streaming the package"))
            .filter_map(|l| field(l, "fetch_from"))
            .collect()
    }
}

/// The value of `name=N` in a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `airlift-agent run`, the daemon, as a child process with its log in a
/// file; killed when dropped.
pub struct Daemon {
    child: std::process::Child,
    pub log: PathBuf,
}

impl Device {
    /// Appends a `[push]` section to the agent's configuration.
    pub fn set_push(&self, section: &str) {
        let mut config = std::fs::read_to_string(&self.config).expect("agent.toml");
        config.push_str("[push]\n");
        config.push_str(section);
        config.push('\n');
        std::fs::write(&self.config, config).expect("agent.toml");
    }

    /// Starts `airlift-agent run`.
    pub fn start(&self) -> Daemon {
        let log = self.dir.path().join("agent.log");
        let file = std::fs::File::create(&log).expect("agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_airlift-agent"))
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("AIRLIFT_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start airlift-agent run");
        Daemon { child, log }
    }
}

impl Daemon {
    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle` `times` times.
    pub fn wait_for_log(&self, needle: &str, times: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.log().matches(needle).count() < times {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent never logged {needle:?} {times} times:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
