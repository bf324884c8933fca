//! Shadow benchmark (issue 20): a desired value for a tag of many devices
//! is one row, not one per device, and the tag's devices converge within
//! one poll interval plus push latency.
//!
//! ```text
//! cargo build --release --bin airlift-server
//! AIRLIFT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p airlift-sim --bench shadow
//! AIRLIFT_BENCH_DEVICES=2000 AIRLIFT_BENCH_TAGGED=200 AIRLIFT_BENCH_POLL_SECS=10 \
//!     cargo bench -p airlift-sim --bench shadow
//! ```
//!
//! One `airlift-server` (`target/release/airlift-server` or
//! `AIRLIFT_BENCH_SERVER_BIN`) on a fresh PostgreSQL schema. The
//! `AIRLIFT_BENCH_TAGGED` (10 000) devices of the tag are simulated agents
//! (the agent's own `config` module writing a file, and its push
//! listener), polling every `AIRLIFT_BENCH_POLL_SECS` (60) seconds; the rest
//! of `AIRLIFT_BENCH_DEVICES` (100 000) are written straight into the
//! database, each with a desired and a reported document, in other tags.
//! Once the fleet is idle, the tag's desired document is set with one API
//! call, timed; then measured: the rows that call wrote (from PostgreSQL's
//! per-table counters: one `group_shadows` row, no `device_shadows` row),
//! and the time until every device of the tag has reported the value (read
//! from the database every 100 ms). Its goal: one poll interval plus two
//! seconds of push latency.

#[path = "common/mod.rs"]
mod common;

use airlift_agent::push::PushConfig;
use airlift_sim::server::ServerProcess;
use airlift_sim::{Fleet, FleetConfig};
use airlift_testkit::packages::Signer;
use airlift_testkit::postgres::FreshSchema;
use common::{max_connections_for, number, raise_open_files};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TOKEN: &str = "alt_bench0000shadow000token0000";
const DEVICE_TYPE: &str = "bench-board";
const TAG: &str = "bench-shadow";
/// Allowed on top of the poll interval for the nudges to get through.
const PUSH_LATENCY: Duration = Duration::from_secs(2);

/// Writes the devices that are not simulated, with their tags and shadows,
/// in a few set-based statements; every device gets a shadow row.
async fn seed(db: &mut PgConnection, others: u64) -> sqlx::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    sqlx::query(
        "INSERT INTO devices (id, status, identity, public_key, device_type, \
         security_version, created_at) \
         SELECT gen_random_uuid()::text, 'accepted', \
         '{\"serial\":\"seed-' || n || '\"}', 'seed-key-' || n, $2, 0, $3 \
         FROM generate_series(1, $1) AS n",
    )
    .bind(i64::try_from(others).unwrap_or(i64::MAX))
    .bind(DEVICE_TYPE)
    .bind(now)
    .execute(&mut *db)
    .await?;
    // Each device's presence row (the store writes one with every device),
    // heard of now.
    sqlx::query(
        "INSERT INTO device_presence (id, status, created_at, last_check_in) \
         SELECT id, status, created_at, created_at FROM devices \
         WHERE public_key LIKE 'seed-key-%'",
    )
    .execute(&mut *db)
    .await?;
    sqlx::query(
        "INSERT INTO device_tags (device_id, tag) \
         SELECT id, 'other-' || (abs(hashtext(id)) % 10) FROM devices \
         WHERE public_key LIKE 'seed-key-%'",
    )
    .execute(&mut *db)
    .await?;
    // Converged documents for the seeded devices, empty ones for the
    // simulated (which report what they apply).
    sqlx::query(
        "INSERT INTO device_shadows (device_id, desired, desired_meta, desired_version, \
         desired_at, reported, reported_meta, reported_version, reported_at) \
         SELECT id, '{\"site\":\"bench\"}', '{\"site\":' || $1 || '}', 1, $1, \
         '{\"site\":\"bench\"}', '{\"site\":' || $1 || '}', 1, $1 \
         FROM devices WHERE public_key LIKE 'seed-key-%'",
    )
    .bind(now)
    .execute(&mut *db)
    .await?;
    sqlx::query(
        "INSERT INTO device_shadows (device_id) SELECT id FROM devices \
         ON CONFLICT (device_id) DO NOTHING",
    )
    .execute(&mut *db)
    .await?;
    sqlx::raw_sql("ANALYZE devices, device_tags, device_shadows")
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// What the tag's write left in the database: group documents (with the
/// highest version), and device rows whose desired document changed since
/// `since_ms`.
async fn written(db: &mut PgConnection, since_ms: i64) -> sqlx::Result<(i64, i64, i64)> {
    let (groups, version): (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), MAX(version) FROM group_shadows")
            .fetch_one(&mut *db)
            .await?;
    let devices: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM device_shadows WHERE desired_at >= $1")
            .bind(since_ms)
            .fetch_one(&mut *db)
            .await?;
    Ok((groups, version.unwrap_or(0), devices))
}

/// Devices of the tag that reported `value`.
async fn converged(db: &mut PgConnection, value: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM device_shadows s JOIN device_tags t ON t.device_id = s.device_id \
         WHERE t.tag = $1 AND s.reported::jsonb ->> 'level' = $2",
    )
    .bind(TAG)
    .bind(value)
    .fetch_one(&mut *db)
    .await
}

/// The simulated devices: the tag's, taking configuration, holding push
/// streams.
fn fleet_config(
    url: &str,
    public: PathBuf,
    tagged: u64,
    poll: u64,
    dir: &std::path::Path,
) -> FleetConfig {
    let mut config = FleetConfig::new(url, public, tagged as usize, DEVICE_TYPE);
    config.admin_token = Some(TOKEN.into());
    config.tags = vec![TAG.into()];
    config.ramp_up = Duration::from_secs(poll.min(30));
    config.dir = Some(dir.join("fleet"));
    config.workers = 16;
    config.push = PushConfig::Events;
    config.shadow = true;
    config
}

/// How long after `set_at` every device of the tag had reported the value,
/// read every 100 ms for at most `patience`; `None` if they did not.
async fn wait_converged(
    db: &mut PgConnection,
    tagged: u64,
    set_at: Instant,
    patience: Duration,
) -> Option<Duration> {
    while set_at.elapsed() < patience {
        let done = converged(db, "v2").await.unwrap_or(0);
        if u64::try_from(done).unwrap_or(0) >= tagged {
            return Some(set_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Ok(base) = std::env::var(airlift_testkit::postgres::URL_VAR) else {
        eprintln!(
            "{} is not set: the shadow benchmark needs PostgreSQL",
            airlift_testkit::postgres::URL_VAR
        );
        return;
    };
    let total = number("AIRLIFT_BENCH_DEVICES", 100_000);
    let tagged = number("AIRLIFT_BENCH_TAGGED", 10_000).min(total);
    let poll = number("AIRLIFT_BENCH_POLL_SECS", 60);
    let binary = std::env::var_os("AIRLIFT_BENCH_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/airlift-server")
        });
    raise_open_files(8 * tagged + 4096);
    let schema = FreshSchema::create_in(&base, "bench_shadow").unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch directory");
    let signer = Signer::new();
    let public = signer.public_key_file().to_owned();
    let server = start_server(&binary, dir.path(), &public, poll, schema.url(), tagged);

    eprintln!("{total} devices with shadows, a tag of {tagged} simulated, poll every {poll} s");
    let config = fleet_config(&server.url, public, tagged, poll, dir.path());
    let started = Instant::now();
    let fleet = Fleet::start(config).expect("fleet");
    common::wait_enrolled(&fleet, tagged as usize);
    let mut db = runtime
        .block_on(PgConnection::connect(schema.url()))
        .expect("database");
    runtime
        .block_on(seed(&mut db, total - tagged))
        .expect("seeding");
    let deadline = Instant::now() + Duration::from_secs(600);
    while server.metric("airlift_push_connections") < tagged as f64 {
        assert!(
            Instant::now() < deadline,
            "not every device holds its stream"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "fleet up and {} devices seeded in {:.0} s",
        total - tagged,
        started.elapsed().as_secs_f64()
    );
    // Let enrolment settle.
    std::thread::sleep(Duration::from_secs(3));
    let set_ms = chrono::Utc::now().timestamp_millis();

    let http = reqwest::blocking::Client::new();
    let set_at = Instant::now();
    let response = http
        .put(format!("{}/api/v1/shadows/tags/{TAG}", server.url))
        .bearer_auth(TOKEN)
        .json(&json!({"level": "v2"}))
        .send()
        .expect("set the tag's desired document");
    let write = set_at.elapsed();
    assert!(response.status().is_success(), "{:?}", response.text());

    let limit = Duration::from_secs(poll) + PUSH_LATENCY;
    let took = runtime.block_on(wait_converged(&mut db, tagged, set_at, limit * 5));
    let summary = fleet.stop();
    eprintln!("{summary}");
    let (group_rows, version, device_rows) = runtime
        .block_on(written(&mut db, set_ms))
        .expect("reading what the write left");
    assert_eq!(
        device_rows, 0,
        "the tag's write changed devices' own desired documents"
    );
    let took = took.unwrap_or_else(|| panic!("the tag's devices did not converge"));
    eprintln!(
        "set for a tag of {tagged}: {:.1} ms; {group_rows} group document (version {version}) and {device_rows} devices' desired documents written; every device reported it after {:.2} s (goal: {} s)",
        write.as_secs_f64() * 1000.0,
        took.as_secs_f64(),
        limit.as_secs()
    );
    let load = format!(
        "{total} devices with shadows on PostgreSQL, a tag of {tagged}, push on, poll {poll} s"
    );
    report(&load, group_rows + device_rows, write, took, limit);
}

/// The server on the schema at `database`, with room for a push stream
/// per simulated device.
fn start_server(
    binary: &std::path::Path,
    dir: &std::path::Path,
    public: &std::path::Path,
    poll: u64,
    database: &str,
    tagged: u64,
) -> ServerProcess {
    ServerProcess::start_with(
        binary,
        &dir.join("server"),
        public,
        TOKEN,
        poll,
        &[
            "--database-url",
            database,
            "--max-connections",
            &max_connections_for(tagged),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The `bench-result` lines `scripts/bench` collects.
fn report(load: &str, rows: i64, write: Duration, took: Duration, limit: Duration) {
    let line = |value: serde_json::Value| println!("bench-result: {value}");
    line(
        json!({"goal": "shadow: rows a tag's desired value writes", "value": rows,
        "unit": "rows", "limit": 1, "better": "lower", "load": load}),
    );
    line(json!({"goal": "shadow: setting a tag's desired document",
        "value": write.as_secs_f64() * 1000.0, "unit": "ms", "limit": null, "better": "lower",
        "load": load}));
    line(
        json!({"goal": "shadow: a tag's devices all converged", "value": took.as_secs_f64(),
        "unit": "s", "limit": limit.as_secs(), "better": "lower", "load": load}),
    );
}
