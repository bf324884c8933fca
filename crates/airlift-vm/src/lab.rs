//! A lab for the VM tests and the power-cut bench: the image (built once
//! per process), a server with the operator's side of its API, and one VM
//! booted against it. Test support: it panics, with the console's last
//! lines, when something does not happen in time.

use crate::{qemu, write_package, Image, ImageBuilder, RootfsSpec, Vm, VmConfig};
use airlift_testkit::server::{self as test_server, ServerProcess, ADMIN_TOKEN};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a boot may take to reach the agent, emulated, on a busy host.
pub const BOOT: Duration = Duration::from_secs(90);
/// How long an update may take from deployment to a verdict.
pub const UPDATE: Duration = Duration::from_secs(300);

/// The workspace's `airlift-agent`: `AIRLIFT_AGENT_BIN`, else the one
/// Cargo built beside this test binary's directory.
fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("AIRLIFT_AGENT_BIN") {
        return PathBuf::from(path);
    }
    test_server::binary().with_file_name("airlift-agent")
}

/// The image, built once per process.
///
/// # Panics
/// When it cannot be built.
pub fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        ImageBuilder::new(crate::default_cache_dir(), agent_binary())
            .build()
            .unwrap_or_else(|e| panic!("building the VM image: {e}"))
    })
}

/// A server, one VM, and the operator's side of the server.
#[derive(Debug)]
pub struct Lab {
    /// The VM.
    pub vm: Vm,
    /// The server it talks to.
    pub server: ServerProcess,
    /// The VM's serial number.
    pub serial: String,
    /// Disk overlay, console log, server data.
    pub dir: tempfile::TempDir,
}

/// The expected answer status of an operator request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok = 200,
    Created = 201,
    Accepted = 202,
}

impl Lab {
    /// A server and a VM booting from a fresh overlay of the image.
    ///
    /// # Panics
    /// When either cannot be started.
    pub fn start(serial: &str) -> Self {
        let image = image();
        let dir = tempfile::tempdir().expect("a directory");
        let server = ServerProcess::builder(test_server::binary(), dir.path().join("server"))
            .trust(&image.public_key_file)
            .admin_token(ADMIN_TOKEN)
            .start()
            .expect("the server starts");
        let disk = dir.path().join("disk.qcow2");
        qemu::overlay(&image.disk, &disk).expect("an overlay");
        let config = VmConfig {
            disk,
            kernel: image.kernel(),
            serial: serial.to_owned(),
            server_url: server.url().replace("127.0.0.1", "10.0.2.2"),
            console_log: dir.path().join("console.log"),
            memory_mib: 256,
        };
        let vm = Vm::start(config).expect("QEMU starts");
        Lab {
            vm,
            server,
            serial: serial.to_owned(),
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.server.url())
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        json: bool,
        expected: Expect,
    ) -> Value {
        let request = ureq::request(method, &self.url(path))
            .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"));
        let request = if json {
            request.set("Content-Type", "application/json")
        } else {
            request
        };
        let result = match body {
            Some(body) => request.send_bytes(&body),
            None => request.call(),
        };
        let (status, text) = match result {
            Ok(response) => (
                response.status(),
                response.into_string().unwrap_or_default(),
            ),
            Err(ureq::Error::Status(status, response)) => {
                (status, response.into_string().unwrap_or_default())
            }
            Err(e) => panic!("{method} {path}: {e}"),
        };
        assert_eq!(status, expected as u16, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn get(&self, path: &str) -> Value {
        self.send("GET", path, None, false, Expect::Ok)
    }

    fn post_json(&self, path: &str, body: &Value, expected: Expect) -> Value {
        self.send(
            "POST",
            path,
            Some(body.to_string().into_bytes()),
            true,
            expected,
        )
    }

    /// Waits for the VM to appear as pending and accepts it; its id.
    pub fn accept(&self) -> String {
        let deadline = Instant::now() + BOOT;
        loop {
            let devices = self.get("/devices?status=pending");
            let found = devices["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["identity"]["serial"] == self.serial.as_str())
                .and_then(|d| d["id"].as_str())
                .map(str::to_owned);
            if let Some(id) = found {
                self.post_json(&format!("/devices/{id}/accept"), &Value::Null, Expect::Ok);
                // The agent backs off while pending: ask it to check in now.
                self.request_check_in(&id);
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "the VM never asked to join; console:\n{}",
                self.console_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Asks the device to check in now (it hears it on its push stream).
    pub fn request_check_in(&self, device: &str) {
        self.send(
            "POST",
            &format!("/devices/{device}/check-in"),
            None,
            false,
            Expect::Accepted,
        );
    }

    /// Uploads a package of the root file system `spec` and deploys it to
    /// `device`; the deployment's id.
    pub fn deploy(&self, spec: &RootfsSpec, device: &str) -> String {
        let file = self.dir.path().join("update.airlift");
        write_package(image(), spec, &file).expect("the package");
        let body = std::fs::read(&file).expect("the package file");
        let package = self.send("POST", "/packages", Some(body), false, Expect::Created);
        let request = serde_json::json!({
            "name": format!("to {}", spec.version),
            "package_id": package["id"],
            "target": {"devices": [device]},
            "install": {},
        });
        let deployment = self.post_json("/deployments", &request, Expect::Created);
        self.request_check_in(device);
        deployment["id"].as_str().expect("deployment id").to_owned()
    }

    /// The device's state and message in `deployment` (its one device,
    /// from the deployment's paged device list).
    pub fn device_state(&self, deployment: &str) -> (String, String) {
        let page = self.get(&format!("/deployments/{deployment}/devices?per_page=1"));
        let device = &page["items"][0];
        (
            device["state"].as_str().unwrap_or_default().to_owned(),
            device["message"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Waits until the device's state in `deployment` is final (`success`,
    /// `failure` or `rolled_back`); the state and message.
    pub fn verdict(&self, deployment: &str) -> (String, String) {
        let deadline = Instant::now() + UPDATE;
        loop {
            let (state, message) = self.device_state(deployment);
            if matches!(state.as_str(), "success" | "failure" | "rolled_back") {
                return (state, message);
            }
            assert!(
                Instant::now() < deadline,
                "no verdict (state {state}: {message}); console:\n{}",
                self.console_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The device as the server sees it.
    pub fn device(&self, device: &str) -> Value {
        self.get(&format!("/devices/{device}"))
    }

    /// The version the server says the device runs, once it has the one
    /// expected, or whatever it has after the wait.
    pub fn reported_version(&self, device: &str, expected: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let detail = self.device(device);
            let version = detail["installed"]["rootfs"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if version == expected || Instant::now() > deadline {
                return version;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The next boot's slot and version, as the running system printed
    /// them on its console, waiting up to `timeout` for a boot after byte
    /// `from`.
    pub fn wait_up(&mut self, from: usize, timeout: Duration) -> (char, String, usize) {
        let end = self
            .vm
            .wait_for("airlift-vm: up, slot ", from, timeout)
            .unwrap_or_else(|e| panic!("{e}"));
        let text = self.vm.console();
        let line = text[end..].lines().next().unwrap_or_default().to_owned();
        // `a, version 1.0.0, server http://…`
        let slot = line.chars().next().unwrap_or('?');
        let version = line
            .split("version ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_default()
            .to_owned();
        (slot, version, end)
    }

    /// The last boot's slot and version without waiting.
    pub fn last_boot(&self) -> Option<(char, String)> {
        let text = self.vm.console();
        let at = text.rfind("airlift-vm: up, slot ")?;
        let line = text[at + "airlift-vm: up, slot ".len()..].lines().next()?;
        let version = line.split("version ").nth(1)?.split(',').next()?.to_owned();
        Some((line.chars().next()?, version))
    }

    /// The console's last lines, for failure messages.
    pub fn console_tail(&self) -> String {
        let text = self.vm.console();
        let lines: Vec<&str> = text.lines().rev().take(60).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}
