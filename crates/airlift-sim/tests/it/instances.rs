//! Three `airlift-server` processes on one PostgreSQL schema and one S3
//! bucket, behind a round-robin load balancer, as a fleet that outgrew one
//! machine runs them: a package uploaded to one, a staged deployment
//! created on another, devices whose every request may land on any of
//! them — and one instance killed (SIGKILL) while devices download through
//! it. Nothing may be lost: every device ends on the new version, the
//! rollout finishes, and the downloads cut by the kill resume on the
//! instances left.

use crate::support::{enrolled, settled, DEVICE_TYPE};
use airlift_sim::{Fleet, FleetConfig};
use airlift_testkit::balancer::Balancer;
use airlift_testkit::packages::Signer;
use airlift_testkit::postgres::FreshSchema;
use airlift_testkit::s3::S3Server;
use airlift_testkit::server::{self, ServerProcess, ADMIN_TOKEN};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const DEVICES: usize = 16;

/// Larger than what the kernel's socket buffers hold of an answer (a few
/// MiB on loopback), so that a kill cuts downloads rather than leaving
/// their rest in flight.
const IMAGE: usize = 12 * 1024 * 1024;

/// What each connection through the balancer may send a second while the
/// deployment runs: a download takes about six seconds.
const PACE: u64 = 2 * 1024 * 1024;

/// Servers and balancer first: fields drop in order, and the schema and
/// bucket must outlive the processes using them.
struct Cluster {
    balancer: Balancer,
    instances: Vec<ServerProcess>,
    _data: Vec<TempDir>,
    _schema: FreshSchema,
    _s3: S3Server,
    signer: Signer,
    http: Client,
}

impl Cluster {
    /// `n` instances, or `None` without PostgreSQL.
    fn start(n: usize) -> Option<Self> {
        let schema = FreshSchema::create("instances")?;
        let s3 = S3Server::start();
        let signer = Signer::new();
        let mut data = Vec::new();
        let mut instances = Vec::new();
        for index in 0..n {
            let dir = tempfile::tempdir().expect("a data directory");
            let mut builder = ServerProcess::builder(server::binary(), dir.path())
                .label(&format!("instance-{index}"))
                .trust(signer.public_key_file())
                .admin_token(ADMIN_TOKEN)
                .args(["--database-url", schema.url()])
                .args(["--blob-url", &s3.url("packages"), "--blob-path-style"])
                // Downloads through the instances, so that killing one
                // cuts them (with offload, the bucket serves the bytes).
                .args(["--blob-offload", "off", "--poll-interval", "1"]);
            for (name, value) in s3.env() {
                builder = builder.env(name, value);
            }
            instances.push(builder.start().expect("an instance starts"));
            data.push(dir);
        }
        let addrs = instances.iter().map(ServerProcess::addr).collect();
        Some(Self {
            balancer: Balancer::start(addrs).expect("the balancer"),
            instances,
            _data: data,
            _schema: schema,
            _s3: s3,
            signer,
            http: Client::new(),
        })
    }

    fn api(&self, instance: usize, method: Method, path: &str) -> Value {
        self.send(instance, method, path, |request| request)
    }

    fn send(
        &self,
        instance: usize,
        method: Method,
        path: &str,
        body: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Value {
        let url = format!("{}/api/v1{path}", self.instances[instance].url());
        let request = self.http.request(method, url).bearer_auth(ADMIN_TOKEN);
        let response = body(request).send().expect("the management API answers");
        let status = response.status();
        let value: Value = response.json().expect("a JSON answer");
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    fn fleet_config(&self) -> FleetConfig {
        let key = self.signer.public_key_file().to_owned();
        let mut config = FleetConfig::new(self.balancer.url(), key, DEVICES, DEVICE_TYPE);
        config.admin_token = Some(ADMIN_TOKEN.into());
        config.poll_interval = Some(Duration::from_secs(1));
        config.workers = 12;
        config
    }
}

#[test]
fn three_instances_lose_nothing_when_one_is_killed_mid_download() {
    let Some(mut cluster) = Cluster::start(3) else {
        eprintln!(
            "{} is not set: several instances not tested (CI sets it)",
            airlift_testkit::postgres::URL_VAR
        );
        return;
    };
    let fleet = Fleet::start(cluster.fleet_config()).expect("fleet");
    enrolled(&fleet, DEVICES);

    // Uploaded to instance 0, deployed on instance 1; the devices reach
    // all three through the balancer.
    let package =
        airlift_sim::image::signed_package(cluster.signer.key(), "2.0.0", IMAGE, DEVICE_TYPE)
            .expect("package");
    let package = cluster.send(0, Method::POST, "/packages", |r| r.body(package));
    let before = cluster.balancer.stats().answer_bytes();
    cluster.balancer.pace(PACE);
    let body = json!({
        "name": "scale-out",
        "package_id": package["id"],
        "target": {"attributes": {"device_type": DEVICE_TYPE}},
        "dynamic": false,
        "strategy": {
            "type": "phased",
            "phases": [{"devices": {"percent": 25}}, {"devices": {"percent": 100}}],
            "failure_threshold": {"percent": 10},
            "on_failure": "abort",
        },
    });
    let deployment = cluster.send(1, Method::POST, "/deployments", |r| r.json(&body));
    let deployment = deployment["id"].as_str().expect("an id").to_owned();

    // The instance sending the most download bytes once a megabyte has
    // gone out is in the middle of downloads: kill it.
    let victim = wait_for_downloads(&cluster.balancer, &before, 1024 * 1024);
    let resumed_before = fleet.snapshot().resumed_downloads;
    cluster.instances[victim].kill();
    eprintln!("killed instance-{victim} mid-download");

    // The rollout finishes on the two left, whichever held its lease.
    let alive = (victim + 1) % 3;
    let detail = wait_for_finished(&cluster, alive, &deployment, Duration::from_secs(180));
    assert_eq!(detail["status"], "finished", "{detail:#}");
    assert_eq!(detail["counts"]["success"], DEVICES as u64, "{detail:#}");
    let snapshot = settled(&fleet, DEVICES, Duration::from_secs(60));
    assert_eq!(snapshot.running("2.0.0"), DEVICES, "{snapshot:#?}");
    assert_eq!(snapshot.with_outcome("success"), DEVICES, "{snapshot:#?}");
    assert!(
        snapshot.resumed_downloads > resumed_before,
        "a download cut by the kill resumed: {snapshot:#?}"
    );
    // The instance left over tells the same story as the other one.
    let other = 3 - victim - alive;
    let seen = cluster.api(other, Method::GET, &format!("/deployments/{deployment}"));
    assert_eq!(seen["counts"], detail["counts"]);
    let summary = fleet.stop();
    eprintln!("{summary}");
    assert!(summary.failures.is_empty() && summary.rollbacks.is_empty());
}

/// Waits until the instances together sent `bytes` more than `before`;
/// returns the one that sent the most since.
fn wait_for_downloads(balancer: &Balancer, before: &[u64], bytes: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let since: Vec<u64> = balancer
            .stats()
            .answer_bytes()
            .iter()
            .zip(before)
            .map(|(now, then)| now - then)
            .collect();
        if since.iter().sum::<u64>() >= bytes {
            let (most, _) = since
                .iter()
                .enumerate()
                .max_by_key(|(_, sent)| **sent)
                .expect("three instances");
            return most;
        }
        assert!(Instant::now() < deadline, "no download started: {since:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_finished(
    cluster: &Cluster,
    instance: usize,
    deployment: &str,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let path = format!("/deployments/{deployment}");
        let detail = cluster.api(instance, Method::GET, &path);
        if detail["status"] == "finished" || Instant::now() > deadline {
            return detail;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
