//! The parts of a check-in, timed in this process on the server's own
//! database through `airlift_store` (the server idles meanwhile): the token
//! check, each store call, and one SQLite round trip through an sqlx pool
//! with and without its liveness ping, alone and with many callers.

use crate::accounting::own_cpu_seconds;
use crate::devices::Device;
use airlift_protocol::device::Inventory;
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::SharedStore;
use anyhow::{Context, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, Row};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one step of a check-in costs, timed in this process.
pub struct Component {
    pub name: String,
    pub calls: u64,
    pub wall_us: f64,
    pub cpu_us: f64,
}

/// Calls `step` `n` times one after another; wall and CPU time per call
/// (CPU of this whole process: the caller and SQLite's worker threads).
async fn time_sequential<F, Fut>(name: &str, n: usize, mut step: F) -> Result<Component>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    for i in 0..n / 10 {
        step(i).await?;
    }
    let cpu = own_cpu_seconds();
    let started = Instant::now();
    for i in 0..n {
        step(i).await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds() - cpu;
    Ok(Component {
        name: name.to_owned(),
        calls: n as u64,
        wall_us: wall * 1e6 / n as f64,
        cpu_us: cpu * 1e6 / n as f64,
    })
}

type Step = Arc<dyn Fn(usize) -> futures::future::BoxFuture<'static, Result<()>> + Send + Sync>;

/// `tasks` callers run `step` back to back for `duration`: calls per second
/// and CPU per call.
async fn time_concurrent(
    name: &str,
    tasks: usize,
    duration: Duration,
    step: Step,
) -> Result<Component> {
    let cpu = own_cpu_seconds();
    let started = Instant::now();
    let end = started + duration;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let step = Arc::clone(&step);
        handles.push(tokio::spawn(async move {
            let mut calls = 0u64;
            let mut i = task;
            while Instant::now() < end {
                step(i).await?;
                i += tasks;
                calls += 1;
            }
            anyhow::Ok(calls)
        }));
    }
    let mut calls = 0;
    for handle in handles {
        calls += handle.await??;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds() - cpu;
    Ok(Component {
        name: name.to_owned(),
        calls,
        wall_us: wall * 1e6 / calls as f64,
        cpu_us: cpu * 1e6 / calls as f64,
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct DeviceClaims {
    sub: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// The devices' ids and inventories, typed as the store takes them.
struct Fleet {
    ids: Arc<Vec<DeviceId>>,
    inventories: Arc<Vec<Inventory>>,
}

impl Fleet {
    fn new(devices: &[Device]) -> Result<Self> {
        let ids = devices
            .iter()
            .map(|d| d.id.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("device id: {e:?}"))?;
        let inventories = devices
            .iter()
            .map(|d| serde_json::from_value(d.inventory()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            ids: Arc::new(ids),
            inventories: Arc::new(inventories),
        })
    }
}

/// Times the parts of a check-in on the server's own database `db`, with
/// the store the server uses, opened in this process while the server
/// idles.
pub async fn components(
    db: &Path,
    devices: &[Device],
    deployment: &str,
    concurrency: usize,
) -> Result<Vec<Component>> {
    let store = airlift_store::open(&airlift_store::DatabaseUrl::Sqlite(db.to_owned())).await?;
    let fleet = Fleet::new(devices)?;
    let deployment: DeploymentId = deployment
        .parse()
        .map_err(|e| anyhow::anyhow!("deployment id: {e:?}"))?;
    let mut rows = vec![token_check(&store, devices).await?];
    rows.extend(store_calls(&store, &fleet, deployment).await?);
    rows.extend(pool_round_trips(db, concurrency).await?);
    rows.push(bare_round_trip(db).await?);
    rows.extend(check_in_store_calls(&store, &fleet, concurrency).await?);
    Ok(rows)
}

/// The device token check of every request, without the server's cache
/// of verified tokens.
async fn token_check(store: &SharedStore, devices: &[Device]) -> Result<Component> {
    let secret = store
        .setting("device_token_secret")
        .await?
        .context("device token secret")?;
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["airlift-device"]);
    validation.leeway = 5;
    let tokens: Vec<&str> = devices.iter().map(|d| d.token.as_str()).collect();
    time_sequential("device token check (HS256 JWT decode)", 20_000, |i| {
        let result =
            jsonwebtoken::decode::<DeviceClaims>(tokens[i % tokens.len()], &key, &validation);
        async move {
            result?;
            Ok(())
        }
    })
    .await
}

/// Each store call of a check-in, one caller.
async fn store_calls(
    store: &SharedStore,
    fleet: &Fleet,
    deployment: DeploymentId,
) -> Result<Vec<Component>> {
    let n = fleet.ids.len();
    let now = chrono::Utc::now();
    let (ids, inventories) = (&fleet.ids, &fleet.inventories);
    Ok(vec![
        time_sequential(
            "store.device(): 1 SELECT (device_records view)",
            3000,
            |i| async move {
                store.device(ids[i % n]).await?.context("device")?;
                Ok(())
            },
        )
        .await?,
        time_sequential(
            "store.record_check_in(), inventory unchanged: 1 UPDATE",
            3000,
            |i| async move {
                store
                    .record_check_in(ids[i % n], &inventories[i % n], now)
                    .await?;
                Ok(())
            },
        )
        .await?,
        time_sequential(
            "store.device_update(): 1 SELECT per active deployment, (c) only",
            3000,
            |i| async move {
                store.device_update(deployment, ids[i % n]).await?;
                Ok(())
            },
        )
        .await?,
    ])
}

fn sqlite_options(db: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(db)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
}

/// What one query through the pool costs with and without the liveness
/// ping sqlx sends before handing out an idle connection.
async fn pool_round_trips(db: &Path, concurrency: usize) -> Result<Vec<Component>> {
    let mut rows = Vec::new();
    for test in [true, false] {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(test)
            .connect_with(sqlite_options(db))
            .await?;
        let name = format!("sqlx pool, `SELECT 1`, test_before_acquire({test})");
        rows.push(
            time_sequential(&name, 5000, |_| {
                let pool = pool.clone();
                async move {
                    let row = sqlx::query("SELECT 1").fetch_one(&pool).await?;
                    let _: i64 = row.try_get(0)?;
                    Ok(())
                }
            })
            .await?,
        );
        let six: Step = {
            let pool = pool.clone();
            Arc::new(move |_| {
                let pool = pool.clone();
                Box::pin(async move {
                    for _ in 0..6 {
                        sqlx::query("SELECT 1").fetch_one(&pool).await?;
                    }
                    Ok(())
                })
            })
        };
        let name = format!(
            "6 × `SELECT 1` through the pool, test_before_acquire({test}), {concurrency} callers"
        );
        rows.push(time_concurrent(&name, concurrency, Duration::from_secs(3), six).await?);
        pool.close().await;
    }
    Ok(rows)
}

/// One query on one connection, no pool.
async fn bare_round_trip(db: &Path) -> Result<Component> {
    let mut conn = sqlx::SqliteConnection::connect_with(&sqlite_options(db)).await?;
    let calls = 5000;
    for _ in 0..calls / 10 {
        sqlx::query("SELECT 1").fetch_one(&mut conn).await?;
    }
    let cpu = own_cpu_seconds();
    let started = Instant::now();
    for _ in 0..calls {
        sqlx::query("SELECT 1").fetch_one(&mut conn).await?;
    }
    let row = Component {
        name: "`SELECT 1` on one connection, no pool".into(),
        calls,
        wall_us: started.elapsed().as_secs_f64() * 1e6 / calls as f64,
        cpu_us: (own_cpu_seconds() - cpu) * 1e6 / calls as f64,
    };
    conn.close().await?;
    Ok(row)
}

/// The store calls of whole check-ins as a server without its caches would
/// make them, many callers at once.
async fn check_in_store_calls(
    store: &SharedStore,
    fleet: &Fleet,
    concurrency: usize,
) -> Result<Vec<Component>> {
    let active: Arc<Vec<DeploymentId>> = Arc::new(
        store
            .active_deployments()
            .await?
            .iter()
            .map(|d| d.id)
            .collect(),
    );
    let mut rows = Vec::new();
    for (label, deployments) in [
        (
            "(b) check-in without caches: 2 queries",
            Arc::new(Vec::new()),
        ),
        ("(c) check-in without caches: 3 queries", active),
    ] {
        let (store, ids, inventories) = (
            Arc::clone(store),
            Arc::clone(&fleet.ids),
            Arc::clone(&fleet.inventories),
        );
        let sequence: Step = Arc::new(move |i| {
            let (store, ids, inventories, deployments) = (
                Arc::clone(&store),
                Arc::clone(&ids),
                Arc::clone(&inventories),
                Arc::clone(&deployments),
            );
            Box::pin(async move {
                let id = ids[i % ids.len()];
                store.device(id).await?.context("device")?;
                store
                    .record_check_in(id, &inventories[i % ids.len()], chrono::Utc::now())
                    .await?;
                for deployment in deployments.iter() {
                    store.device_update(*deployment, id).await?;
                }
                Ok(())
            })
        });
        let name = format!("store calls of a {label}, {concurrency} callers");
        rows.push(time_concurrent(&name, concurrency, Duration::from_secs(3), sequence).await?);
    }
    Ok(rows)
}
