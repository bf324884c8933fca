//! Agent benchmark: installing a 1 GiB image from the local server, against
//! `curl URL | tee FRESH_SLOT | openssl dgst -sha256` on the same package from the same
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
//! stream the package into slot B (each 64 KiB block checked against the
//! signed block index with SHA-256 before it is written; the slot written
//! on a thread of its own, synced every 8 MiB, each synced stretch read
//! back from the disk, its cached pages dropped first, and compared with
//! the bytes written by XXH3-128: the one cryptographic pass was the block
//! check, see the agent's `install/readback.rs` and `slot_writer.rs`), arm
//! the trial. Its peak RSS is the process's
//! `VmHWM`.
//!
//! The baseline fetches the same package bytes from the same server (the
//! management API's package download, one kept-alive HTTP/1.1 connection)
//! with `curl -s URL | tee FRESH_SLOT | openssl dgst -sha256` into a new
//! file each run, as the agent writes a fresh slot; openssl uses the CPU's
//! SHA instructions as the agent does (coreutils' `sha256sum` does not
//! here, which made an earlier baseline 4× slower at hashing). A second
//! baseline adds `sync FRESH_SLOT`, since the agent makes its writes
//! durable and `tee` does not. Runs alternate, 3 of each after an untimed one; medians reported.
//!
//! Idle footprint: the agent runs as the daemon (`airlift-agent run`)
//! against a server that polls every 2 s; once it has checked in at least
//! twice, its PSS (from `/proc/PID/smaps_rollup`) and RSS are read, in MiB. Binary sizes are printed for
//! the binary used and, if built, `target/device/airlift-agent`.
//! `AIRLIFT_BENCH_IMAGE_MIB` (1024) and `AIRLIFT_BENCH_RUNS` (3) change the
//! parameters.

#[path = "../tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;
use airlift_server::testing as server;

use airlift_testkit::procfs;
use harness::{enrol, Device, Operator, Packages, Signer};
use server::{InProcessServer, ADMIN_TOKEN};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `AIRLIFT_BENCH_AGENT_BIN` (relative to the workspace root when relative:
/// cargo runs a bench from its crate's folder), or Cargo's build of it.
fn agent_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::var_os("AIRLIFT_BENCH_AGENT_BIN")
        .map(|given| root.join(given))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_airlift-agent")))
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
        if let Some(kb) = procfs::status_kib(child.id(), "VmHWM") {
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

/// The baseline's shell pipeline: fetch, write the slot, hash with
/// openssl (which uses the CPU's SHA instructions, as the agent does;
/// coreutils' `sha256sum` here does not and would slow the baseline 4×).
fn baseline_script(url: &str, slot: &Path, sync: bool) -> String {
    format!(
        "curl -sf -H 'authorization: Bearer {ADMIN_TOKEN}' '{url}' | tee '{}' | openssl dgst -sha256 >/dev/null{}",
        slot.display(),
        if sync {
            format!(" && sync '{}'", slot.display())
        } else {
            String::new()
        }
    )
}

/// One baseline run into a fresh slot file, as the agent writes a fresh
/// slot (overwriting an existing file is slower).
fn baseline_once(url: &str, slot: &Path, sync: bool) -> f64 {
    let _ = std::fs::remove_file(slot);
    let script = baseline_script(url, slot, sync);
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", &script])
        .status()
        .expect("run curl | tee | openssl");
    assert!(status.success(), "the baseline failed");
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(slot);
    secs
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
    let installs = measure_installs(&agent, &signer, image_mib, runs);
    installs.print(image_mib, runs);
    idle_footprint(&agent, &signer);
    for binary in [
        agent.clone(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/device/airlift-agent"),
    ] {
        if let Ok(meta) = std::fs::metadata(&binary) {
            println!("binary {}: {} bytes", binary.display(), meta.len());
        }
    }
}

/// What the install rounds measured: the package's size, and per timed
/// round the agent's and the baselines' seconds and the agent's peak RSS.
struct Installs {
    package_len: u64,
    agent_secs: Vec<f64>,
    peaks: Vec<f64>,
    tee_secs: Vec<f64>,
    synced_secs: Vec<f64>,
}

/// Installs an `image_mib` MiB raw image with the agent, and fetches it
/// with both baselines, `runs` times after an untimed round.
fn measure_installs(agent: &Path, signer: &Signer, image_mib: usize, runs: usize) -> Installs {
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "60"]);
    let operator = Operator::new(&server);
    eprintln!("building a {image_mib} MiB raw image package…");
    let (package, _image) = signer.raw_package("2.0.0", image_mib * 1024 * 1024);
    let package_len = package.len() as u64;
    let package_id = operator.upload(package);
    let url = format!("{}/api/v1/packages/{package_id}/download", server.url);
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch");
    let baseline_slot = scratch.path().join("baseline.img");

    let mut installs = Installs {
        package_len,
        agent_secs: Vec::new(),
        peaks: Vec::new(),
        tee_secs: Vec::new(),
        synced_secs: Vec::new(),
    };
    for round in 0..=runs {
        let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
        let id = enrol(&device, &operator);
        operator.deploy(&package_id, &id);
        let (secs, peak) = install_once(agent, &device);
        let tee = baseline_once(&url, &baseline_slot, false);
        let synced = baseline_once(&url, &baseline_slot, true);
        eprintln!(
            "round {round}{}: agent {secs:.2} s (peak RSS {peak} KiB), curl|tee|openssl {tee:.2} s, +sync {synced:.2} s",
            if round == 0 { " (untimed)" } else { "" }
        );
        if round > 0 {
            installs.agent_secs.push(secs);
            installs.peaks.push(peak as f64);
            installs.tee_secs.push(tee);
            installs.synced_secs.push(synced);
        }
    }
    installs
}

impl Installs {
    /// The table, the peak RSS, and the `bench-result` lines.
    fn print(self, image_mib: usize, runs: usize) {
        let package_len = self.package_len;
        let mbps = |secs: f64| package_len as f64 / secs / 1e6;
        let (agent_mbps, tee_mbps, synced_mbps) = (
            mbps(median(self.agent_secs)),
            mbps(median(self.tee_secs)),
            mbps(median(self.synced_secs)),
        );
        let peak_mib = self.peaks.iter().copied().fold(0.0, f64::max) / 1024.0;

        println!("| install of a {image_mib} MiB raw image ({package_len} bytes), median of {runs} | MB/s | agent vs this |");
        println!("|---|---:|---:|");
        println!(
            "| `curl URL \\| tee FRESH_SLOT \\| openssl dgst -sha256` | {tee_mbps:.0} | {:.0} % |",
            agent_mbps / tee_mbps * 100.0
        );
        println!(
            "| the same, then `sync SLOT` | {synced_mbps:.0} | {:.0} % |",
            agent_mbps / synced_mbps * 100.0
        );
        println!(
            "| `airlift-agent run --once` (stream, sync, read back, arm) | {agent_mbps:.0} | – |"
        );
        println!();
        println!("peak RSS of the agent while installing: {peak_mib:.1} MiB");
        println!();
        println!(
            "Baseline, to run alone: `{}`",
            baseline_script("URL", Path::new("FRESH_SLOT"), false)
        );
        // For scripts/bench, which keeps the table at the top of BENCHMARKS.md.
        for (goal, baseline, ratio) in [
            (
                "install, `airlift-agent run --once`",
                "curl | tee FRESH_SLOT | openssl dgst -sha256",
                agent_mbps / tee_mbps,
            ),
            (
                "install, `airlift-agent run --once`, durable",
                "curl | tee FRESH_SLOT | openssl dgst -sha256 && sync FRESH_SLOT",
                agent_mbps / synced_mbps,
            ),
        ] {
            println!(
                "bench-result: {{\"goal\": \"{goal}\", \"baseline\": \"{baseline}\", \"ratio\": {ratio:.4}, \"target\": 0.9, \"load\": \"{image_mib} MiB raw image from the local server\"}}"
            );
        }
    }
}

/// Idle footprint, read once the daemon has checked in twice: on a
/// server that polls every 2 s, so that takes seconds, not minutes.
fn idle_footprint(agent: &Path, signer: &Signer) {
    let idle_server =
        InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "2"]);
    let idle_operator = Operator::new(&idle_server);
    let device = Device::new(&idle_server.url, signer.public_key_file(), &["true"]);
    let idle_id = enrol(&device, &idle_operator);
    let mut daemon = Command::new(agent)
        .arg("--config")
        .arg(&device.config)
        .arg("run")
        .env("AIRLIFT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let check_in = || idle_operator.device(&idle_id)["last_check_in"].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while seen.len() < 3 && Instant::now() < deadline {
        let at = check_in();
        if !at.is_null() && seen.last() != Some(&at) {
            seen.push(at);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        seen.len() >= 2,
        "the daemon did not check in twice within 30 s"
    );
    std::thread::sleep(Duration::from_millis(500)); // back to sleep between polls
    let pss = procfs::pss_kib(daemon.id());
    let rss = procfs::status_kib(daemon.id(), "VmRSS");
    let _ = daemon.kill();
    let _ = daemon.wait();
    let mib = |kib: Option<u64>| kib.map_or("?".into(), |v| format!("{:.2}", v as f64 / 1024.0));
    println!(
        "agent idle between polls, after {} check-ins: PSS {} MiB, RSS {} MiB (from /proc, KiB / 1024)",
        seen.len(),
        mib(pss),
        mib(rss)
    );
}
