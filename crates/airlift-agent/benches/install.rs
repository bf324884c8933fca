//! Agent benchmark: installing a 1 GiB image from the local server, against
//! `curl URL | tee SLOT | sha256sum` on the same package from the same
//! server in the same run; and the agent's footprint idling between polls.
//!
//! ```text
//! cargo bench -p airlift-agent --bench install
//! AIRLIFT_BENCH_AGENT_BIN=target/device/airlift-agent cargo bench -p airlift-agent --bench install
//! ```
//!
//! The server is `airlift-server` in this process (optimised, on its own
//! runtime threads); the agent is a separate process: the binary Cargo
//! builds for this package, or `AIRLIFT_BENCH_AGENT_BIN` (e.g. the
//! `device` profile build a device would run). Slots are files on the
//! machine's disk. One install is the whole of `airlift-agent run --once`
//! from start to exit: authenticate, check in, verify the offered head,
//! stream the package into slot B (hashing it, syncing every 8 MiB),
//! read the slot back from the disk (its cached pages dropped first) and
//! check its digest, arm the trial. Its peak RSS is the process's `VmHWM`.
//!
//! The baseline fetches the same package bytes from the same server (the
//! management API's package download, one kept-alive HTTP/1.1 connection)
//! with `curl -s URL | tee SLOT | sha256sum`; a second baseline adds
//! `sync SLOT`, since the agent makes its writes durable and `tee` does
//! not. Runs alternate, 3 of each after an untimed one; medians reported.
//!
//! Idle footprint: the agent runs as the daemon (`airlift-agent run`) with a
//! 60 s poll interval; after its first check-in its PSS (from
//! `/proc/PID/smaps_rollup`) and RSS are read. Binary sizes are printed for
//! the binary used and, if built, `target/device/airlift-agent`.
//! `AIRLIFT_BENCH_IMAGE_MIB` (1024) and `AIRLIFT_BENCH_RUNS` (3) change the
//! parameters.

#[path = "../tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;
use airlift_server::testing as server;

use harness::{enrol, Device, Operator, Signer};
use server::{TestServer, ADMIN_TOKEN};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn agent_binary() -> PathBuf {
    std::env::var_os("AIRLIFT_BENCH_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_airlift-agent")))
}

/// A `/proc/PID/status` field in kB.
fn proc_kb(pid: u32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Runs the agent once; returns (seconds, peak RSS in kB).
fn install_once(agent: &Path, device: &Device) -> (f64, u64) {
    let started = Instant::now();
    let mut child = Command::new(agent)
        .arg("--config")
        .arg(&device.config)
        .args(["run", "--once"])
        .env(
            "AIRLIFT_LOG",
            std::env::var("AIRLIFT_BENCH_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the agent");
    let mut peak = 0;
    loop {
        if let Some(kb) = proc_kb(child.id(), "status", "VmHWM:") {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "the agent failed");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (started.elapsed().as_secs_f64(), peak)
}

fn baseline_once(url: &str, slot: &Path, sync: bool) -> f64 {
    let script = format!(
        "curl -sf -H 'authorization: Bearer {ADMIN_TOKEN}' '{url}' | tee '{}' | sha256sum >/dev/null{}",
        slot.display(),
        if sync {
            format!(" && sync '{}'", slot.display())
        } else {
            String::new()
        }
    );
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", &script])
        .status()
        .expect("run curl | tee | sha256sum");
    assert!(status.success(), "the baseline failed");
    started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to list
    }
    let image_mib = env_number("AIRLIFT_BENCH_IMAGE_MIB", 1024) as usize;
    let runs = env_number("AIRLIFT_BENCH_RUNS", 3).max(1) as usize;
    let agent = agent_binary();
    eprintln!("agent binary: {}", agent.display());

    let signer = Signer::new();
    let server = TestServer::start_with(&signer.public, &["--poll-interval", "60"]);
    let operator = Operator::new(&server);
    eprintln!("building a {image_mib} MiB raw image package…");
    let (package, _image) = signer.raw_package("2.0.0", image_mib * 1024 * 1024);
    let package_len = package.len() as u64;
    let package_id = operator.upload(package);
    let url = format!("{}/api/v1/packages/{package_id}/download", server.url);
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch");
    let baseline_slot = scratch.path().join("baseline.img");

    let (mut agent_secs, mut peaks, mut tee_secs, mut synced_secs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..=runs {
        let device = Device::new(&server.url, &signer.public, &["true"]);
        let id = enrol(&device, &operator);
        operator.deploy(&package_id, &id);
        let (secs, peak) = install_once(&agent, &device);
        let tee = baseline_once(&url, &baseline_slot, false);
        let synced = baseline_once(&url, &baseline_slot, true);
        eprintln!(
            "round {round}{}: agent {secs:.2} s (peak RSS {peak} kB), curl|tee|sha256sum {tee:.2} s, +sync {synced:.2} s",
            if round == 0 { " (untimed)" } else { "" }
        );
        if round > 0 {
            agent_secs.push(secs);
            peaks.push(peak as f64);
            tee_secs.push(tee);
            synced_secs.push(synced);
        }
    }
    let mbps = |secs: f64| package_len as f64 / secs / 1e6;
    let (agent_mbps, tee_mbps, synced_mbps) = (
        mbps(median(agent_secs)),
        mbps(median(tee_secs)),
        mbps(median(synced_secs)),
    );
    let peak_mib = peaks.iter().copied().fold(0.0, f64::max) / 1024.0;

    println!("| install of a {image_mib} MiB raw image ({package_len} bytes), median of {runs} | MB/s | agent vs this |");
    println!("|---|---:|---:|");
    println!(
        "| `curl URL \\| tee SLOT \\| sha256sum` | {tee_mbps:.0} | {:.0} % |",
        agent_mbps / tee_mbps * 100.0
    );
    println!(
        "| the same, then `sync SLOT` | {synced_mbps:.0} | {:.0} % |",
        agent_mbps / synced_mbps * 100.0
    );
    println!("| `airlift-agent run --once` (stream, sync, read back, arm) | {agent_mbps:.0} | – |");
    println!();
    println!("peak RSS of the agent while installing: {peak_mib:.1} MiB");

    // Idle footprint.
    let device = Device::new(&server.url, &signer.public, &["true"]);
    enrol(&device, &operator);
    let mut daemon = Command::new(&agent)
        .arg("--config")
        .arg(&device.config)
        .arg("run")
        .env("AIRLIFT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    std::thread::sleep(Duration::from_secs(3)); // authenticated, checked in, sleeping
    let pss = proc_kb(daemon.id(), "smaps_rollup", "Pss:");
    let rss = proc_kb(daemon.id(), "status", "VmRSS:");
    let _ = daemon.kill();
    let _ = daemon.wait();
    println!(
        "agent idle between polls: PSS {} kB, RSS {} kB",
        pss.map_or("?".into(), |v| v.to_string()),
        rss.map_or("?".into(), |v| v.to_string())
    );
    for binary in [
        agent.clone(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/device/airlift-agent"),
    ] {
        if let Ok(meta) = std::fs::metadata(&binary) {
            println!("binary {}: {} bytes", binary.display(), meta.len());
        }
    }
}
