//! Update server benchmark: device check-ins per second against the real
//! `airlift-server` on SQLite, with a minimal axum server as the ceiling of
//! the HTTP stack, and package download throughput against nginx serving
//! the same file.
//!
//! ```text
//! cargo bench -p airlift-server --bench server
//! ```
//!
//! Every server is a separate process: `airlift-server` is the binary Cargo
//! builds for this package in the bench profile (`CARGO_BIN_EXE_airlift-server`,
//! under `target/release`), the ceiling server is this binary re-executed
//! with `--ceiling-server`, and nginx runs from a generated configuration in a
//! temporary directory (`apt-get install -y nginx` if it is missing). All of
//! them are stopped when the benchmark ends or panics.
//!
//! The fleet (100 000 devices by default) is enrolled through the HTTP
//! APIs, many at a time: each device is pre-authorised through the
//! management API, authenticates with a signed request for its token, and
//! checks in once (storing its inventory). Then the check-in scenarios
//! ([`check_ins`]), each in rounds in which the ceiling and airlift-server
//! take turns under the same load client ([`load`]):
//!
//! - best case, caches hot: the first 1 000 devices, each checking in many
//!   times a second, (b) with no deployment and (c) while an active
//!   deployment targets every one of them, for which each is
//!   `incompatible` (one extra device that never checks in keeps it
//!   active): each check-in looks the deployment up and gets no offer;
//! - realistic, caches cold: (d) every device checking in once, right after
//!   airlift-server was restarted on its data, and (e) once more on the
//!   same process.
//!
//! Then the parts of a check-in are timed in this process, on the server's
//! own database ([`components`]), and last, downloads of a package with a
//! 256 MiB uncompressed payload from airlift-server and nginx
//! ([`downloads`]).
//!
//! Output: progress on stderr, Markdown tables and `bench-result:` lines on
//! stdout ([`output`]). Parameters come from the environment ([`params`]):
//! `AIRLIFT_BENCH_DEVICES` (1000, the best case), `AIRLIFT_BENCH_COLD_DEVICES`
//! (100000, the realistic scenario; 0 skips it), `AIRLIFT_BENCH_ROUNDS` (3),
//! `AIRLIFT_BENCH_CONCURRENCY` (64), `AIRLIFT_BENCH_SECS` (10),
//! `AIRLIFT_BENCH_WARMUP_SECS` (2), `AIRLIFT_BENCH_CLIENT_THREADS` (2),
//! `AIRLIFT_BENCH_ENROL_CONCURRENCY` (32), `AIRLIFT_BENCH_PACKAGE_MIB` (256,
//! 0 skips the downloads), `AIRLIFT_BENCH_DOWNLOAD_RUNS` (5),
//! `AIRLIFT_BENCH_PIN` (1), `AIRLIFT_BENCH_DOWNLOADS_ONLY` (0; 1 runs only
//! the downloads). `AIRLIFT_BENCH_SERVER_BIN` runs another build
//! of `airlift-server` (to measure a change against the same client and
//! ceiling). `AIRLIFT_BENCH_KEEP=1` keeps the temporary directory and leaves
//! `airlift-server` running until Enter is pressed (for profiling);
//! `AIRLIFT_BENCH_SERVER_LOG=1` copies the server's log to stderr.

#[path = "server/accounting.rs"]
mod accounting;
#[path = "server/ceiling.rs"]
mod ceiling;
#[path = "server/check_ins.rs"]
mod check_ins;
#[path = "server/components.rs"]
mod components;
#[path = "server/devices.rs"]
mod devices;
#[path = "server/downloads.rs"]
mod downloads;
#[path = "server/load.rs"]
mod load;
#[path = "server/output.rs"]
mod output;
#[path = "server/packages.rs"]
mod packages;
#[path = "server/params.rs"]
mod params;
#[path = "server/procs.rs"]
mod procs;

use anyhow::Result;
use check_ins::Scenario;
use devices::{Admin, Device};
use params::Params;
use procs::Server;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

// The ceiling server and the load client allocate with what airlift-server
// allocates with, so that the ceiling measures the HTTP stack and the
// comparison is not between allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN_TOKEN: &str = "alt_bench_admin_token_0123456789";
const DEVICE_TYPE: &str = "bench-board";
const OTHER_DEVICE_TYPE: &str = "other-board";
const MIB: u64 = 1024 * 1024;
const MB: f64 = 1e6;

fn main() {
    // `cargo bench … -- --ceiling-server` adds `--bench` after it.
    if std::env::args().skip(1).any(|arg| arg == ceiling::FLAG) {
        if let Err(error) = ceiling::serve() {
            eprintln!("ceiling server failed: {error:#}");
            std::process::exit(1);
        }
        return;
    }
    let params = Params::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(params.client_threads)
        .enable_all()
        .build()
        .expect("client runtime");
    if let Err(error) = runtime.block_on(run(params)) {
        eprintln!("benchmark failed: {error:#}");
        std::process::exit(1);
    }
}

// --- the benchmark ---------------------------------------------------------------

async fn run(params: Params) -> Result<()> {
    let idle = preamble(&params);
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(&dir.path().join("airlift"))?;
    let mut admin = Admin::new(&server.url)?;
    let devices =
        devices::enrol_devices(&admin, params.enrolled(), params.enrol_concurrency).await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "The machine was {idle:.0} % idle in the second before the start.\n"
    );
    if !params.downloads_only {
        let (scenarios, deployment) =
            check_in_scenarios(&params, &mut server, &mut admin, &devices, dir.path()).await?;
        output::print_check_ins(&mut out, &params, &scenarios);

        eprintln!("timing the parts of a check-in");
        let hot = &devices[..params.devices];
        let parts =
            components::components(&server.database(), hot, &deployment, params.concurrency)
                .await?;
        output::print_components(&mut out, &parts);
    }

    if params.package_mib > 0 {
        let (specs, results) =
            downloads::downloads(&params, &server, &admin, &devices[0], dir.path()).await?;
        output::print_downloads(&mut out, &params, &specs, &results);
    }
    let warnings = server.warnings();
    if warnings > 0 {
        let _ = writeln!(out, "\nThe server logged {warnings} warnings or errors.");
    }
    println!("{out}");
    if params.keep {
        keep(dir, &server);
    }
    Ok(())
}

/// Says what runs, and how idle the machine was in the second before.
fn preamble(params: &Params) -> f64 {
    let binary = procs::server_binary();
    eprintln!("airlift-server binary: {}", binary.display());
    if !binary.components().any(|c| c.as_os_str() == "release") {
        eprintln!(
            "warning: the server binary is not under target/release; run `cargo bench`, \
             not `cargo test --benches`, for optimised numbers"
        );
    }
    eprintln!("parameters: {params:?}");
    let idle = accounting::machine_idle(Duration::from_secs(1));
    eprintln!("machine idle before the start: {idle:.0} %");
    idle
}

/// (b) best case without a deployment, (d)/(e) realistic (before any
/// deployment exists, which would put a database read on every check-in
/// of a device it does not target), then (c) best case with the
/// incompatible deployment. Returns the scenarios and that deployment's id.
async fn check_in_scenarios(
    params: &Params,
    server: &mut Server,
    admin: &mut Admin,
    devices: &[Device],
    dir: &Path,
) -> Result<(Vec<Scenario>, String)> {
    let hot_devices = &devices[..params.devices];
    let hot = load::check_ins(hot_devices)?;
    let label = "(b) airlift-server, no deployment";
    let mut scenarios = vec![check_ins::best_case(label, server, &hot, params).await?];
    if params.cold_devices > 0 {
        let cold = load::check_ins(&devices[..params.cold_devices])?;
        scenarios.push(check_ins::realistic(server, admin, &cold, params).await?);
    }
    let (deployment, as_planned) =
        check_ins::incompatible_deployment(admin, server, hot_devices, dir).await?;
    if as_planned {
        eprintln!("(c) active deployment {deployment}, devices incompatible");
        let label = "(c) airlift-server, active deployment, device incompatible";
        scenarios.push(check_ins::best_case(label, server, &hot, params).await?);
        check_ins::still_active(admin, &deployment).await?;
    }
    scenarios.sort_by_key(|s| s.label);
    Ok((scenarios, deployment))
}

/// Leaves the server running on the kept directory until Enter is pressed.
fn keep(dir: tempfile::TempDir, server: &Server) {
    let kept = dir.keep();
    eprintln!(
        "kept {}; airlift-server (pid {}) on {}; press Enter to stop",
        kept.display(),
        server.pid(),
        server.url
    );
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
