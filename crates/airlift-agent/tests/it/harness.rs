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

    /// The package file of `manifest`, signed, with its one stored payload.
    fn signed(&self, manifest: &Manifest, stored: &[u8]) -> Vec<u8> {
        let signed =
            SignedManifest::sign(manifest, &[&self.key], &Limits::default()).expect("sign");
        let mut file = Vec::new();
        let mut writer = PackageWriter::new(&mut file, &signed).expect("header");
        writer.write_payload(stored).expect("payload");
        writer.finish().expect("finish");
        file
    }

    /// A signed package replacing `/etc/app.conf` (under the root) in place.
    pub fn file_package(&self, version: &str, content: &[u8]) -> Vec<u8> {
        self.in_place_package(PayloadType::File, "/etc/app.conf", version, content)
    }

    /// A signed package of one payload changed in place: `kind` at `target`.
    pub fn in_place_package(
        &self,
        kind: PayloadType,
        target: &str,
        version: &str,
        content: &[u8],
    ) -> Vec<u8> {
        let spec = PayloadSpec::new(kind, target, Compression::None);
        let mut stored = Vec::new();
        let entry =
            encode_payload(content, &spec, &EncodeOptions::default(), &mut stored).expect("encode");
        let manifest = Manifest::builder("app", version.parse().expect("semver"), [DEVICE_TYPE])
            .payload(entry)
            .build();
        self.signed(&manifest, &stored)
    }

    /// A signed package of one `module:<module>` payload.
    pub fn module_package(&self, module: &str, version: &str, content: &[u8]) -> Vec<u8> {
        let kind = PayloadType::Module(module.into());
        let spec = PayloadSpec::new(kind, "mcu0", Compression::Zstd);
        let mut stored = Vec::new();
        let entry =
            encode_payload(content, &spec, &EncodeOptions::default(), &mut stored).expect("encode");
        let manifest =
            Manifest::builder("firmware", version.parse().expect("semver"), [DEVICE_TYPE])
                .payload(entry)
                .build();
        self.signed(&manifest, &stored)
    }

    /// A signed image package for the test device type.
    pub fn package(&self, name: &str, version: &str, security_version: u64) -> Vec<u8> {
        self.image_package(
            DEVICE_TYPE,
            name,
            version,
            security_version,
            &Self::image(version),
            Compression::Zstd,
        )
    }

    /// A signed package of one image payload, `size` bytes, stored raw (so
    /// an interrupted download resumes at the byte).
    pub fn raw_package(&self, version: &str, size: usize) -> (Vec<u8>, Vec<u8>) {
        let image = Self::sized_image(version, size);
        let package =
            self.image_package(DEVICE_TYPE, "rootfs", version, 1, &image, Compression::None);
        (package, image)
    }

    /// `size` bytes of image for `version`, none alike nearby.
    pub fn sized_image(version: &str, size: usize) -> Vec<u8> {
        let seed = version
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        (0..size as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
            .collect()
    }

    /// A signed image package for another device type.
    pub fn package_for(&self, device_type: &str, version: &str) -> Vec<u8> {
        let image = Self::image(version);
        self.image_package(device_type, "rootfs", version, 1, &image, Compression::Zstd)
    }

    fn image_package(
        &self,
        device_type: &str,
        name: &str,
        version: &str,
        security_version: u64,
        image: &[u8],
        compression: Compression,
    ) -> Vec<u8> {
        let spec = PayloadSpec::new(PayloadType::Image, "rootfs", compression);
        let mut stored = Vec::new();
        let entry =
            encode_payload(image, &spec, &EncodeOptions::default(), &mut stored).expect("encode");
        let manifest = Manifest::builder(name, version.parse().expect("semver"), [device_type])
            .security_version(security_version)
            .payload(entry)
            .build();
        self.signed(&manifest, &stored)
    }
}

/// The operator's side of the server.
pub struct Operator {
    base: String,
    http: Client,
}

impl Operator {
    pub fn new(server: &TestServer) -> Self {
        Self::at(&server.url)
    }

    /// The operator of the server (instance) at `base`.
    pub fn at(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: Client::new(),
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

/// What the [`Proxy`] does to a download request it sees.
#[derive(Debug, Clone, Copy)]
pub enum NetFault {
    /// Pass it through.
    Pass,
    /// Forward this many bytes of the answer, then cut the connection.
    CutAfter(usize),
    /// Forward this many bytes, then send nothing more (and keep the
    /// connection open) for this long.
    StallAfter(usize, std::time::Duration),
    /// Answer `503 Service Unavailable` without asking the server.
    Unavailable,
    /// Flip the bits of the answer's byte at this position.
    Corrupt(usize),
}

/// A loopback TCP proxy in front of the server that sees each request on a
/// connection and applies the next planned fault to download requests.
pub struct Proxy {
    pub url: String,
    /// Faults for the next download requests, in order; `Pass` after.
    plan: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<NetFault>>>,
    /// Download requests seen, and answer bytes forwarded for them.
    pub downloads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub download_bytes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// A man in the middle: in every offer passing through, the first
    /// occurrence of `.0` in the signed package head is replaced by `.1`
    /// (same length) and the signatures are left as they were.
    pub tamper: Tamper,
    /// Offers altered so far.
    pub tampered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    pub fn start(upstream: &str, plan: Vec<NetFault>) -> Self {
        use std::sync::atomic::AtomicUsize;
        use std::sync::{Arc, Mutex};
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let plan = Arc::new(Mutex::new(plan.into_iter().collect()));
        let downloads = Arc::new(AtomicUsize::new(0));
        let download_bytes = Arc::new(AtomicUsize::new(0));
        let tamper = Arc::new(Mutex::new(None));
        let tampered = Arc::new(AtomicUsize::new(0));
        let shared = (
            plan.clone(),
            downloads.clone(),
            download_bytes.clone(),
            (tamper.clone(), tampered.clone()),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let shared = shared.clone();
                std::thread::spawn(move || proxy_connection(client, server, shared));
            }
        });
        Self {
            url,
            plan,
            downloads,
            download_bytes,
            tamper,
            tampered,
        }
    }

    /// Faults not used yet.
    pub fn unused(&self) -> usize {
        self.plan.lock().map(|p| p.len()).unwrap_or_default()
    }
}

type ProxyShared = (
    std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<NetFault>>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    (Tamper, std::sync::Arc<std::sync::atomic::AtomicUsize>),
);

/// What a man in the middle replaces in offers: (these bytes, by those).
pub type Tamper = std::sync::Arc<std::sync::Mutex<Option<(Vec<u8>, Vec<u8>)>>>;

/// Rewrites the signed head of an offer in `answer` (an HTTP response read
/// whole, as the small check-in answers are): base64-decodes it, replaces
/// `from` by `to` once, encodes it again. Returns whether it did.
fn tamper_offer(answer: &mut [u8], from: &[u8], to: &[u8]) -> bool {
    use base64::Engine as _;
    const KEY: &[u8] = b"\"signed_manifest\":\"";
    let Some(start) = answer.windows(KEY.len()).position(|w| w == KEY) else {
        return false;
    };
    let start = start + KEY.len();
    let Some(len) = answer[start..].iter().position(|&b| b == b'"') else {
        return false;
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let Ok(mut head) = engine.decode(&answer[start..start + len]) else {
        return false;
    };
    let Some(at) = head.windows(from.len()).position(|w| w == from) else {
        return false;
    };
    head[at..at + to.len()].copy_from_slice(to);
    let encoded = engine.encode(head);
    answer[start..start + len].copy_from_slice(encoded.as_bytes());
    true
}

/// Client → server: request by request (head, then a `content-length`
/// body), deciding each download's fault; server → client: bytes, with the
/// fault of the request being answered applied.
fn proxy_connection(
    client: std::net::TcpStream,
    server: std::net::TcpStream,
    (plan, downloads, download_bytes, (tamper, tampered)): ProxyShared,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    // The fault of the download being answered, and its bytes forwarded.
    let fault = std::sync::Arc::new(std::sync::Mutex::new(None::<(NetFault, usize)>));
    let (mut to_server, mut to_client) = (
        server.try_clone().expect("clone"),
        client.try_clone().expect("clone"),
    );
    let (answers, answer_fault, answer_client) = (
        server.try_clone().expect("clone"),
        fault.clone(),
        client.try_clone().expect("clone"),
    );
    let bytes = download_bytes.clone();
    std::thread::spawn(move || {
        let mut answers = answers;
        let mut buf = [0u8; 16 * 1024];
        let mut client = answer_client;
        while let Ok(n) = answers.read(&mut buf) {
            if n == 0 {
                break;
            }
            let (current, sent) = {
                let mut guard = answer_fault.lock().expect("fault");
                let n = match *guard {
                    Some((NetFault::CutAfter(k) | NetFault::StallAfter(k, _), sent)) => {
                        n.min(k.saturating_sub(sent))
                    }
                    _ => n,
                };
                if let Some((NetFault::Corrupt(at), sent)) = *guard {
                    if (sent..sent + n).contains(&at) {
                        buf[at - sent] ^= 0xFF;
                    }
                }
                if let Some((from, to)) = tamper.lock().expect("tamper").as_ref() {
                    if guard.is_none() && tamper_offer(&mut buf[..n], from, to) {
                        tampered.fetch_add(1, Ordering::SeqCst);
                    }
                }
                if client.write_all(&buf[..n]).is_err() {
                    break;
                }
                if let Some((_, sent)) = guard.as_mut() {
                    *sent += n;
                    bytes.fetch_add(n, Ordering::SeqCst);
                }
                match *guard {
                    Some((fault, sent)) => (Some(fault), sent),
                    None => (None, 0),
                }
            };
            match current {
                Some(NetFault::CutAfter(k)) if sent >= k => break,
                Some(NetFault::StallAfter(k, pause)) if sent >= k => {
                    std::thread::sleep(pause);
                    break;
                }
                _ => {}
            }
        }
        let _ = client.shutdown(std::net::Shutdown::Both);
        let _ = answers.shutdown(std::net::Shutdown::Both);
    });
    let mut requests = BufReader::new(client);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match requests.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if requests.read_exact(&mut body).is_err() {
            return;
        }
        let is_download = text
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("get ") && l.contains("/download"));
        let planned = if is_download {
            downloads.fetch_add(1, Ordering::SeqCst);
            plan.lock()
                .expect("plan")
                .pop_front()
                .unwrap_or(NetFault::Pass)
        } else {
            NetFault::Pass
        };
        if let NetFault::Unavailable = planned {
            let _ = to_client.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            let _ = to_client.shutdown(std::net::Shutdown::Both);
            let _ = to_server.shutdown(std::net::Shutdown::Both);
            return;
        }
        *fault.lock().expect("fault") = is_download.then_some((planned, 0));
        if to_server.write_all(&head).is_err() || to_server.write_all(&body).is_err() {
            return;
        }
    }
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
