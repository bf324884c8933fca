//! A release key, simulator packages, and the operator's side of the server.

use crate::server::{InProcessServer, ADMIN_TOKEN};
use airlift_sim::{Fleet, FleetConfig, Snapshot};
use airlift_testkit::packages::Signer;
use reqwest::blocking::Client;
use serde_json::Value;
use std::time::Duration;

/// The device type of every simulated device here.
pub const DEVICE_TYPE: &str = "sim-board";

/// A release key, a server that trusts it, and an operator.
pub struct World {
    pub signer: Signer,
    pub server: InProcessServer,
    http: Client,
    /// Dropped after the server has stopped (fields drop in order).
    schema: Option<airlift_testkit::postgres::FreshSchema>,
}

impl World {
    pub fn new() -> Self {
        Self::on(&[])
    }

    /// A world whose server keeps its data on PostgreSQL, in a schema of
    /// its own, if `AIRLIFT_TEST_POSTGRES_URL` is set.
    pub fn on_postgres() -> Option<Self> {
        let schema = airlift_testkit::postgres::FreshSchema::create("sim")?;
        let mut world = Self::on(&["--database-url", schema.url()]);
        world.schema = Some(schema);
        Some(world)
    }

    fn on(flags: &[&str]) -> Self {
        let signer = Signer::new();
        let mut all = vec!["--poll-interval", "1"];
        all.extend_from_slice(flags);
        let server = InProcessServer::start_with(signer.public_key_file(), &all);
        Self {
            signer,
            server,
            http: Client::new(),
            schema: None,
        }
    }

    /// A fleet of `devices` simulated devices of [`DEVICE_TYPE`], polling
    /// every second, pre-authorised with the admin token.
    pub fn fleet_config(&self, devices: usize) -> FleetConfig {
        let public = self.signer.public_key_file().to_owned();
        let mut config = FleetConfig::new(&self.server.url, public, devices, DEVICE_TYPE);
        config.admin_token = Some(ADMIN_TOKEN.into());
        config.poll_interval = Some(Duration::from_secs(1));
        config.workers = 8;
        config
    }

    /// A signed package named `rootfs` of one raw image payload saying it
    /// is `version`.
    pub fn package(&self, version: &str, size: usize) -> Vec<u8> {
        airlift_sim::image::signed_package(self.signer.key(), version, size, DEVICE_TYPE)
            .expect("package")
    }

    fn api(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.server.url))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// Uploads a package and deploys it to every device of [`DEVICE_TYPE`],
    /// all at once; returns the deployment id.
    pub fn deploy(&self, package: Vec<u8>) -> String {
        self.deploy_with(package, serde_json::json!({"type": "all"}))
    }

    /// Uploads a package and deploys it to every device of [`DEVICE_TYPE`]
    /// with `strategy`; returns the deployment id.
    pub fn deploy_with(&self, package: Vec<u8>, strategy: Value) -> String {
        let package = self.upload(package);
        let body = serde_json::json!({
            "name": "fleet",
            "package_id": package["id"],
            "target": {"attributes": {"device_type": DEVICE_TYPE}},
            // The tests follow each rollout to its end.
            "dynamic": false,
            "strategy": strategy,
        });
        let response = self
            .api(reqwest::Method::POST, "/deployments")
            .json(&body)
            .send()
            .expect("deploy");
        assert_eq!(
            response.status(),
            201,
            "{}",
            response.text().unwrap_or_default()
        );
        let deployment: Value = response.json().expect("deployment json");
        deployment["id"].as_str().expect("id").to_owned()
    }

    /// Uploads a package; returns it as the server knows it.
    pub fn upload(&self, package: Vec<u8>) -> Value {
        let response = self
            .api(reqwest::Method::POST, "/packages")
            .body(package)
            .send()
            .expect("upload");
        assert_eq!(response.status(), 201);
        response.json().expect("package json")
    }

    /// `GET /api/v1{path}` as JSON.
    pub fn get(&self, path: &str) -> Value {
        self.api(reqwest::Method::GET, path)
            .send()
            .expect("get")
            .json()
            .expect("json")
    }

    /// The server's `/metrics` text.
    pub fn metrics(&self) -> String {
        reqwest::blocking::get(format!("{}/metrics", self.server.url))
            .and_then(|r| r.text())
            .expect("metrics")
    }

    /// Waits until the server counts `n` devices in `state` for the
    /// deployment (a report may still wait in a device's outbox when the
    /// simulator sees the device done); returns the counts.
    pub fn wait_for_count(&self, deployment: &str, state: &str, n: u64) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let counts = self.counts(deployment);
            if counts[state] == n || std::time::Instant::now() > deadline {
                return counts;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's id of each device, by its serial.
    pub fn device_ids(&self) -> std::collections::BTreeMap<String, String> {
        let page: Value = self
            .api(reqwest::Method::GET, "/devices?per_page=1000")
            .send()
            .expect("devices")
            .json()
            .expect("json");
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|d| {
                let serial = d["identity"]["serial"].as_str().unwrap_or_default();
                let id = d["id"].as_str().unwrap_or_default();
                (serial.to_owned(), id.to_owned())
            })
            .collect()
    }

    /// Waits until `n` devices hold the server's push stream.
    pub fn wait_for_push_connections(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let text = reqwest::blocking::get(format!("{}/metrics", self.server.url))
                .and_then(|r| r.text())
                .unwrap_or_default();
            let connected =
                airlift_testkit::server::metric_sample(&text, "airlift_push_connections")
                    .unwrap_or(0.0);
            if connected >= n as f64 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{connected} of {n} devices hold the push stream"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The whole deployment as the server shows it.
    pub fn deployment(&self, deployment: &str) -> Value {
        self.api(reqwest::Method::GET, &format!("/deployments/{deployment}"))
            .send()
            .expect("deployment")
            .json()
            .expect("json")
    }

    /// Waits until the deployment's status is `status`; returns it.
    pub fn wait_for_status(&self, deployment: &str, status: &str, timeout: Duration) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let detail = self.deployment(deployment);
            if detail["status"] == status || std::time::Instant::now() > deadline {
                return detail;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's per-state counts of a deployment.
    pub fn counts(&self, deployment: &str) -> Value {
        let detail: Value = self
            .api(reqwest::Method::GET, &format!("/deployments/{deployment}"))
            .send()
            .expect("deployment")
            .json()
            .expect("json");
        detail["counts"].clone()
    }
}

/// Waits until every device has checked in and is idle.
pub fn enrolled(fleet: &Fleet, devices: usize) -> Snapshot {
    fleet
        .wait_until(Duration::from_secs(60), |s| {
            s.in_state("idle") == devices && s.checked_in == devices
        })
        .unwrap_or_else(|s| panic!("the fleet did not come up: {s}"))
}

/// Waits until every device finished its update and is idle again, with
/// the version it runs settled.
pub fn settled(fleet: &Fleet, devices: usize, timeout: Duration) -> Snapshot {
    fleet
        .wait_until(timeout, |s| {
            s.with_outcome("none") == 0
                && s.in_state("idle") == devices
                && s.running.len() <= 2
                && s.running.values().sum::<usize>() == devices
        })
        .unwrap_or_else(|s| panic!("the fleet did not settle: {s}"))
}
