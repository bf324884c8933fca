//! Dashboard benchmark (issue 16's "Speed"): page times with 100 000
//! devices and 1 000 deployments in PostgreSQL, how fast a device's change
//! reaches an open deployment page, and what 200 open dashboards cost the
//! server in memory.
//!
//! ```text
//! AIRLIFT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p airlift-server --bench dashboard
//! ```
//!
//! The release `airlift-server` (the binary Cargo builds for this package
//! in the bench profile; `AIRLIFT_SERVER_BIN` runs another) is started on a
//! fresh schema of that database. A signed package is uploaded through the
//! management API; the fleet and its deployments are written through the
//! store crate's API ([`seed`], which says why not through HTTP or SQL of
//! our own); the tables are then vacuumed and analysed, as autovacuum
//! would have done in a database that grew over months. Then:
//!
//! - memory ([`live`]): the server's RSS and PSS idle (no dashboard yet),
//!   then with `AIRLIFT_BENCH_DASHBOARDS` dashboards open (each its own
//!   session, its deployment page loaded, its live stream open) after a
//!   change reached all of them; measured first, so that the pages timed
//!   below leave nothing in the server's heap to hide or add;
//! - pages ([`pages`]): a viewer signs in with an admin API token at the
//!   sign-in form and, keeping its cookie, requests each kind of page
//!   `AIRLIFT_BENCH_SAMPLES` times: the overview, the device list with
//!   each filter, sort and deep page, random devices' detail, the largest
//!   deployments' detail;
//! - live: `AIRLIFT_BENCH_LIVE_SAMPLES` devices enrolled through the
//!   device API report, one after another, to a deployment whose page's
//!   live stream is open; each report is timed to its event.
//!
//! Output ([`report`]): Markdown tables and `bench-result:` lines with
//! absolute goals (p99 ≤ 100 ms per page, ≤ 1 s for a change, ≤ 50 MiB for
//! the dashboards). Progress goes to stderr. Parameters: see [`params`];
//! `AIRLIFT_BENCH_SERVER_LOG=1` copies the server's log to stderr;
//! `AIRLIFT_BENCH_KEEP=1` keeps the schema and the server until Enter is
//! pressed (to `EXPLAIN ANALYZE` a page's queries on the seeded fleet).

#[path = "dashboard/client.rs"]
mod client;
#[path = "dashboard/live.rs"]
mod live;
#[path = "dashboard/pages.rs"]
mod pages;
#[path = "dashboard/params.rs"]
mod params;
#[path = "dashboard/report.rs"]
mod report;
#[path = "dashboard/rng.rs"]
mod rng;
#[path = "dashboard/seed.rs"]
mod seed;

use airlift_testkit::packages::Signer;
use airlift_testkit::postgres::{FreshSchema, URL_VAR};
use airlift_testkit::server::{Echo, ServerProcess};
use anyhow::{Context, Result};
use client::{Admin, Viewer};
use params::Params;
use reqwest::StatusCode;
use std::time::Instant;

pub use airlift_testkit::server::ADMIN_TOKEN;

/// The device type of the devices that report live (one of the fleet's).
const LIVE_DEVICE_TYPE: &str = "gateway-a";
/// The tables the seeding filled, vacuumed and analysed before measuring.
const TABLES: &str = "devices, device_tags, device_attributes, device_installed, deployments, \
                      deployment_devices, update_events, check_in_minutes";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = runtime
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run()));
    match result {
        Ok(output) => print!("{output}"),
        Err(error) => {
            eprintln!("dashboard bench failed: {error:#}");
            std::process::exit(1);
        }
    }
}

async fn run() -> Result<String> {
    let params = Params::from_env()?;
    let schema = FreshSchema::create("dashbench")
        .with_context(|| format!("{URL_VAR} is not set: this benchmark runs on PostgreSQL"))?;
    let binary = airlift_testkit::server::binary();
    eprintln!("airlift-server binary: {}", binary.display());
    if !binary.components().any(|c| c.as_os_str() == "release") {
        eprintln!("warning: the server binary is not a release build; run through `cargo bench`");
    }
    let signer = Signer::new();
    let data = tempfile::tempdir()?;
    let echo = if std::env::var_os("AIRLIFT_BENCH_SERVER_LOG").is_some() {
        Echo::All
    } else {
        Echo::FirstWarnings(5)
    };
    let server = ServerProcess::builder(&binary, data.path())
        .trust(signer.public_key_file())
        .admin_token(ADMIN_TOKEN)
        .args(["--database-url", schema.url()])
        .echo(echo)
        .start()?;
    let http = client::client()?;
    let admin = Admin::new(&http, server.url());
    let package_id = upload_package(&admin, &signer).await?;
    eprintln!(
        "seeding {} devices, {} deployments",
        params.devices, params.deployments
    );
    let started = Instant::now();
    let store = airlift_store::open(&airlift_store::DatabaseUrl::parse(schema.url())?).await?;
    let fleet = seed::seed(
        &store,
        package_id.parse().context("package id")?,
        params.devices,
        params.deployments,
        params.seed_concurrency,
    )
    .await?;
    vacuum(schema.url()).await?;
    let seeding = started.elapsed();
    eprintln!("seeded in {:.1} s", seeding.as_secs_f64());

    eprintln!(
        "enrolling {} devices that report live",
        params.live_samples + 1
    );
    let mut reporters = live::Reporters::enrol(
        &admin,
        server.url(),
        params.live_samples + 1,
        LIVE_DEVICE_TYPE,
        &package_id,
    )
    .await?;
    eprintln!("opening {} dashboards", params.dashboards);
    let (idle, open, fan_out) = live::dashboards_memory(
        &http,
        server.url(),
        server.pid(),
        &mut reporters,
        params.dashboards,
    )
    .await?;
    let viewer = Viewer::sign_in(&http, server.url(), ADMIN_TOKEN).await?;
    eprintln!("timing pages, {} samples each", params.samples);
    let mut pages = pages::time_all(
        &viewer,
        &store,
        &fleet,
        pages::kinds(&fleet),
        params.samples,
    )
    .await?;
    pages.push(pages::time_overview_reading(&store, params.samples).await?);
    eprintln!("timing {} live changes", params.live_samples);
    let live = live::latency(&viewer, &mut reporters, params.live_samples).await?;

    let results = report::Results {
        seeding,
        pages,
        live,
        idle,
        open,
        fan_out,
        updates: fleet.updates,
        failures: fleet.failures,
    };
    if std::env::var_os("AIRLIFT_BENCH_KEEP").is_some() {
        eprintln!(
            "AIRLIFT_BENCH_KEEP: schema {} and the server at {} stay until Enter is pressed",
            schema.name(),
            server.url()
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    Ok(report::print(&params, &results))
}

/// The package every seeded deployment rolls out, uploaded through the
/// API as an operator would; its id.
async fn upload_package(admin: &Admin, signer: &Signer) -> Result<String> {
    let mut package = signer.package("os", "3.2.0");
    for (device_type, _) in seed::DEVICE_TYPES {
        package = package.device_type(device_type);
    }
    let package = package.image(&[0x5a; 64 * 1024], airlift_package::Compression::None);
    let uploaded = admin
        .post(
            "/packages",
            package.build().into(),
            false,
            StatusCode::CREATED,
        )
        .await?;
    Ok(uploaded["id"].as_str().context("package id")?.to_owned())
}

/// `VACUUM (ANALYZE)` of the seeded tables: a database that grew over
/// months has had its statistics and visibility maps kept by autovacuum;
/// one filled a minute ago has not.
async fn vacuum(url: &str) -> Result<()> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(&format!("VACUUM (ANALYZE) {TABLES}"))
        .execute(&mut connection)
        .await
        .context("vacuuming the seeded tables")?;
    connection.close().await?;
    Ok(())
}
