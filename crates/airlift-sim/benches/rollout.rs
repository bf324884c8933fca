//! Fleet benchmark: a staged rollout to many simulated devices polling one
//! `airlift-server` on SQLite.
//!
//! ```text
//! cargo build --release --bin airlift-server
//! cargo bench -p airlift-sim --bench rollout
//! AIRLIFT_BENCH_DEVICES=20000 AIRLIFT_BENCH_POLL_SECS=60 cargo bench -p airlift-sim --bench rollout
//! ```
//!
//! The server is a separate process (`target/release/airlift-server`, or
//! `AIRLIFT_BENCH_SERVER_BIN`), so its CPU time and memory are its own; the
//! fleet (`airlift-sim`, the real agent per device) runs in this process.
//! Devices are pre-authorised and enrol, then check in every
//! `AIRLIFT_BENCH_POLL_SECS` (10) seconds; once all have checked in, a
//! staged rollout starts: 1 % → 10 % → 50 % → 100 %, no soak, every
//! device of a phase healthy before the next. Reported: the server's CPU
//! (cores, from `/proc/PID/stat`) and peak memory (`VmHWM`) over the
//! rollout, check-in latency p50/p99 as the server measured it (its
//! Prometheus histogram of the check-in route, interpolated within
//! buckets), and the wall time of each phase — the last from its start to
//! 100 % success. `AIRLIFT_BENCH_DEVICES` (10000) and
//! `AIRLIFT_BENCH_WORKERS` (16) change the fleet.

#[path = "common/mod.rs"]
mod common;

use airlift_sim::server::ServerProcess;
use airlift_sim::{Fleet, FleetConfig};
use airlift_testkit::packages::Signer;
use common::{cpu_seconds, number, peak_rss_mib};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "alt_bench0000fleet0000token0000";
const DEVICE_TYPE: &str = "bench-board";

/// Cumulative (upper bound, count) buckets of the check-in route's latency.
fn check_in_buckets(http: &reqwest::blocking::Client, url: &str) -> Vec<(f64, f64)> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("airlift_http_request_duration_seconds_bucket")
                && l.contains("route=\"/api/device/v1/check-in\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The `q` quantile of the difference of two cumulative bucket lists,
/// interpolated linearly within the bucket (as Prometheus does).
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let old = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - old)
        })
        .collect();
    let total = counts.last().map_or(0.0, |(_, n)| *n);
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (le, n) in counts {
        if n >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let within = (rank - lower.1) / (n - lower.1).max(1.0);
            return lower.0 + (le - lower.0) * within;
        }
        lower = (le, n);
    }
    lower.0
}

/// The fleet's settings, from the environment.
struct Params {
    devices: usize,
    poll: u64,
    workers: usize,
}

/// When each phase started and when the rollout finished.
struct Rollout {
    phase_started: [Option<Instant>; 4],
    finished: Instant,
    /// Creation to the end, in seconds.
    wall: f64,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let params = Params {
        devices: number("AIRLIFT_BENCH_DEVICES", 10_000) as usize,
        poll: number("AIRLIFT_BENCH_POLL_SECS", 10),
        workers: number("AIRLIFT_BENCH_WORKERS", 16) as usize,
    };
    let binary = std::env::var_os("AIRLIFT_BENCH_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/airlift-server")
        });
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch directory");
    let signer = Signer::new();
    let public = signer.public_key_file().to_owned();
    let server = ServerProcess::start(
        &binary,
        &dir.path().join("server"),
        &public,
        TOKEN,
        params.poll,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let http = reqwest::blocking::Client::new();
    eprintln!(
        "{} devices polling every {} s, {} workers; server {}",
        params.devices, params.poll, params.workers, server.url
    );
    let package_id = upload(&http, &server.url, &signer);
    let fleet = start_fleet(&params, &server.url, public, dir.path());

    let buckets_before = check_in_buckets(&http, &server.url);
    let cpu_before = cpu_seconds(server.pid());
    let rollout = roll_out(&http, &server.url, &package_id);
    let cpu = cpu_seconds(server.pid()) - cpu_before;
    let buckets_after = check_in_buckets(&http, &server.url);
    report(
        &params,
        &rollout,
        cpu,
        peak_rss_mib(server.pid()),
        &buckets_before,
        &buckets_after,
    );
    let summary = fleet.stop();
    eprintln!("{summary}");
}

/// Uploads the update; returns its id.
fn upload(http: &reqwest::blocking::Client, url: &str, signer: &Signer) -> Value {
    let package = airlift_sim::image::signed_package(signer.key(), "2.0.0", 16 * 1024, DEVICE_TYPE)
        .expect("package");
    let uploaded: Value = http
        .post(format!("{url}/api/v1/packages"))
        .bearer_auth(TOKEN)
        .body(package)
        .send()
        .and_then(|r| r.json())
        .expect("upload");
    uploaded["id"].clone()
}

/// Starts the fleet and waits until every device has checked in, then for
/// one more poll interval of steady polling.
fn start_fleet(params: &Params, url: &str, public: PathBuf, dir: &Path) -> Fleet {
    let mut config = FleetConfig::new(url, public, params.devices, DEVICE_TYPE);
    config.admin_token = Some(TOKEN.into());
    config.workers = params.workers;
    config.ramp_up = Duration::from_secs(params.poll);
    config.dir = Some(dir.join("fleet"));
    let started = Instant::now();
    let fleet = Fleet::start(config).expect("fleet");
    common::wait_enrolled(&fleet, params.devices);
    eprintln!(
        "fleet enrolled in {:.0} s; steady polling for one interval",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(params.poll));
    fleet
}

/// Creates the staged deployment and follows it (every 500 ms) until it
/// finishes, noting when each phase started.
fn roll_out(http: &reqwest::blocking::Client, url: &str, package_id: &Value) -> Rollout {
    let api = |path: &str| format!("{url}/api/v1{path}");
    let phase = |percent: u8| json!({"devices": {"percent": percent}});
    let created: Value = http
        .post(api("/deployments"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "name": "bench",
            "package_id": package_id,
            "target": {"attributes": {"device_type": DEVICE_TYPE}},
            "dynamic": false,
            "strategy": {
                "type": "phased",
                "phases": [phase(1), phase(10), phase(50), phase(100)],
                "failure_threshold": {"percent": 5},
            },
        }))
        .send()
        .and_then(|r| r.json())
        .expect("create deployment");
    let id = created["id"].as_str().expect("deployment id").to_owned();
    let rollout_started = Instant::now();
    let mut phase_started = [Some(Instant::now()), None, None, None];
    let mut finished = None;
    while finished.is_none() && rollout_started.elapsed() < Duration::from_secs(3600) {
        std::thread::sleep(Duration::from_millis(500));
        let detail: Value = match http
            .get(api(&format!("/deployments/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .and_then(|r| r.json())
        {
            Ok(detail) => detail,
            Err(_) => continue,
        };
        let current = detail["rollout"]["phase"].as_u64().unwrap_or(0) as usize;
        for slot in phase_started.iter_mut().take(current + 1) {
            slot.get_or_insert_with(Instant::now);
        }
        if detail["status"] == "finished" {
            finished = Some(Instant::now());
        } else if detail["status"] != "active" {
            panic!("the rollout stopped: {detail}");
        }
    }
    Rollout {
        phase_started,
        finished: finished.expect("the rollout finished within an hour"),
        wall: rollout_started.elapsed().as_secs_f64(),
    }
}

/// The table for people and the `bench-result:` lines for `scripts/bench`
/// (absolute: issue 5 asks for a p99 check-in latency under 100 ms and
/// sets no limit on the rollout's wall time, which is reported).
fn report(
    params: &Params,
    rollout: &Rollout,
    cpu: f64,
    peak_rss: f64,
    before: &[(f64, f64)],
    after: &[(f64, f64)],
) {
    let Params { devices, poll, .. } = *params;
    let wall = rollout.wall;
    let (p50, p99) = (
        quantile(before, after, 0.50) * 1000.0,
        quantile(before, after, 0.99) * 1000.0,
    );
    let checked_in = after.last().map_or(0.0, |b| b.1) - before.last().map_or(0.0, |b| b.1);
    println!(
        "| {devices} devices, poll {poll} s, SQLite, staged 1 % → 10 % → 50 % → 100 % | value |"
    );
    println!("|---|---:|");
    println!(
        "| check-ins during the rollout | {checked_in:.0} ({:.0}/s) |",
        checked_in / wall
    );
    println!(
        "| server CPU during the rollout | {:.2} cores ({cpu:.1} s over {wall:.0} s) |",
        cpu / wall
    );
    println!("| server peak RSS | {peak_rss:.0} MiB |");
    println!("| check-in latency p50 / p99 (server histogram, interpolated) | {p50:.2} ms / {p99:.2} ms |");
    let mut last_phase = 0.0;
    for (i, name) in ["1 %", "10 %", "50 %", "100 %"].iter().enumerate() {
        let start = rollout.phase_started[i].unwrap_or(rollout.finished);
        let end = rollout
            .phase_started
            .get(i + 1)
            .copied()
            .flatten()
            .unwrap_or(rollout.finished);
        last_phase = (end - start).as_secs_f64();
        println!(
            "| phase {name}: start to next phase (last: to 100 % success) | {last_phase:.1} s |"
        );
    }
    println!("| whole rollout | {wall:.1} s |");
    let load = format!(
        "realistic: {devices} simulated devices polling every {poll} s, SQLite, staged 1/10/50/100 %; \
         server CPU {:.2} cores, peak RSS {peak_rss:.0} MiB",
        cpu / wall
    );
    let line = |goal: &str, value: f64, unit: &str, limit: Option<f64>| {
        let result = json!({
            "goal": goal, "value": (value * 100.0).round() / 100.0, "unit": unit,
            "limit": limit, "better": "lower", "load": load,
        });
        println!("bench-result: {result}");
    };
    line(
        "rollout, check-in latency p99 (server histogram) during a staged rollout",
        p99,
        "ms",
        Some(100.0),
    );
    line(
        "rollout, last phase (100 %): start to 100 % success",
        last_phase,
        "s",
        None,
    );
}
