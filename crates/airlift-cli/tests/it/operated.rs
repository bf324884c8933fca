//! A real server with the `airlift` CLI logged in to it as admin, and a
//! runtime for devices speaking the device API: the harness of the suites
//! that drive operator commands against devices (repair, soft deployments,
//! target expressions).

use crate::server::{InProcessServer, ADMIN_TOKEN};
use crate::support::{airlift, json_of, payload, Scratch};
use airlift_testkit::device::{Endpoint, TestDevice};
use assert_cmd::Command;

/// The server, the CLI's configuration and the devices' way to it.
pub struct Operated {
    pub scratch: Scratch,
    pub server: InProcessServer,
    pub runtime: tokio::runtime::Runtime,
    pub api: Endpoint,
}

impl Operated {
    /// A server started with `server_args`, trusting the scratch's
    /// `release` key, and the CLI logged in to it.
    pub fn new(server_args: &[&str]) -> Self {
        let scratch = Scratch::new();
        let key = scratch.signing_key("release");
        let server = InProcessServer::start_with(&key.public, server_args);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let api = Endpoint::new(&server.url);
        let operated = Self {
            scratch,
            server,
            runtime,
            api,
        };
        operated
            .cli()
            .args([
                "server",
                "login",
                &operated.server.url,
                "--token",
                ADMIN_TOKEN,
            ])
            .assert()
            .success();
        operated
    }

    /// The `airlift` binary with this world's configuration only.
    pub fn cli(&self) -> Command {
        let mut command = airlift();
        command
            .env("AIRLIFT_CONFIG_DIR", self.scratch.path("config"))
            .env_remove("AIRLIFT_SERVER")
            .env_remove("AIRLIFT_TOKEN")
            .env_remove("XDG_CONFIG_HOME");
        command
    }

    /// Builds and uploads rootfs `version` for rpi4; returns its id.
    pub fn package(&self, version: &str) -> String {
        let key = self.scratch.path("keys/release.key");
        let image = self
            .scratch
            .text_file(&format!("{version}.img"), version, 100);
        let out = self.scratch.path(&format!("rootfs-{version}.airlift"));
        let mut build = airlift();
        build
            .args(["package", "build", "--name", "rootfs", "--version", version])
            .args(["--device-type", "rpi4", "--key"])
            .arg(&key)
            .arg("--out")
            .arg(&out);
        payload(&mut build, "image:rootfs", &image);
        build.assert().success();
        let package = json_of(self.cli().args(["package", "upload", "--json"]).arg(&out));
        package["id"].as_str().expect("id").to_owned()
    }

    /// `device`, pre-authorised with `tags` through the CLI and
    /// authenticated (accepted at its first contact); not checked in yet.
    pub fn preauthorized(&self, mut device: TestDevice, tags: &[&str]) -> TestDevice {
        let serial = device.serial.clone();
        let public = self.scratch.path(&format!("{serial}.pub"));
        std::fs::write(&public, device.public_key()).expect("public key");
        let mut preauthorize = self.cli();
        preauthorize
            .args(["device", "preauthorize", "--identity"])
            .arg(format!("serial={serial}"))
            .arg("--public-key")
            .arg(&public);
        for tag in tags {
            preauthorize.args(["--tag", tag]);
        }
        preauthorize.assert().success();
        self.runtime.block_on(device.authenticate(&self.api));
        device
    }
}
