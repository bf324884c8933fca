//! Fresh databases for each test, and fixtures.

use airlift_protocol::device::Inventory;
use airlift_protocol::management::{Device, Package, Strategy, Target};
use airlift_protocol::state::{DeploymentStatus, DeviceStatus, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use airlift_store::{DatabaseUrl, DeploymentRecord, PackageRecord, SharedStore};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{PgPool, SqlitePool};
use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;

/// The environment variable naming the PostgreSQL database to test against,
/// e.g. `postgres://postgres@127.0.0.1:5432/test`.
pub use airlift_testkit::postgres::{FreshSchema, URL_VAR as POSTGRES_URL_VAR};

/// What a test gets: the store under test, and a side door to its tables
/// (to plant corrupt rows).
pub struct Ctx {
    pub store: SharedStore,
    raw: Raw,
    url: DatabaseUrl,
}

enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Ctx {
    /// Runs `sql` directly on the database, bypassing the store.
    pub async fn execute(&self, sql: &str) {
        let result = match &self.raw {
            Raw::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
            Raw::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
        };
        result.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs `sql`, which selects one integer column of at most one row,
    /// directly on the database: for columns the store writes but no
    /// method reads.
    pub async fn scalar_i64(&self, sql: &str) -> Option<i64> {
        let result = match &self.raw {
            Raw::Sqlite(pool) => {
                sqlx::query_scalar::<_, Option<i64>>(sql)
                    .fetch_optional(pool)
                    .await
            }
            Raw::Postgres(pool) => {
                sqlx::query_scalar::<_, Option<i64>>(sql)
                    .fetch_optional(pool)
                    .await
            }
        };
        result.unwrap_or_else(|e| panic!("{sql}: {e}")).flatten()
    }

    /// Another store on the same database, as a second server instance
    /// would open it.
    pub async fn open_again(&self) -> SharedStore {
        airlift_store::open(&self.url)
            .await
            .expect("open the database again")
    }

    /// The PostgreSQL schema of this test, if it runs on PostgreSQL.
    pub fn schema(&self) -> Option<String> {
        match &self.url {
            DatabaseUrl::Postgres(url) => url
                .rsplit_once("search_path%3D")
                .map(|(_, schema)| schema.to_owned()),
            _ => None,
        }
    }
}

/// Runs `test` against a new SQLite file.
pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("airlift.db");
    let store = airlift_store::open(&DatabaseUrl::Sqlite(path.clone()))
        .await
        .expect("open SQLite store");
    let raw = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&path))
        .await
        .expect("second SQLite connection");
    test(Ctx {
        store,
        raw: Raw::Sqlite(raw),
        url: DatabaseUrl::Sqlite(path),
    })
    .await;
}

/// Runs `test` against a new schema in the PostgreSQL database of
/// [`POSTGRES_URL_VAR`], if set; the schema is dropped afterwards.
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(schema) = FreshSchema::create("t") else {
        eprintln!("{POSTGRES_URL_VAR} is not set: PostgreSQL not tested");
        return;
    };
    let url = schema.url().to_owned();
    let opened = async {
        let parsed = DatabaseUrl::parse(&url)?;
        let store = airlift_store::open(&parsed).await?;
        let raw = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(Ctx {
            store,
            raw: Raw::Postgres(raw),
            url: parsed,
        })
    }
    .await;
    let result = match opened {
        Ok(ctx) => tokio::spawn(test(ctx)).await.map_err(|e| e.into_panic()),
        Err(e) => Err(Box::new(format!("open PostgreSQL store: {e}")) as Box<dyn Any + Send>),
    };
    drop(schema);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

// --- fixtures ----------------------------------------------------------------

/// A time `ms` milliseconds after the epoch (the store's precision).
pub fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("valid time")
}

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A device created at `t(created)`, with key `key-{n}`.
pub fn device(n: u32, created: i64) -> Device {
    Device {
        id: DeviceId::new(),
        status: DeviceStatus::Accepted,
        identity: map(&[("serial", &format!("SN{n:04}"))]),
        public_key: format!("-----BEGIN PUBLIC KEY-----\nkey-{n}\n-----END PUBLIC KEY-----\n"),
        tags: Vec::new(),
        device_type: Some("rpi4".into()),
        hardware_revision: None,
        installed: BTreeMap::new(),
        security_version: 0,
        attributes: BTreeMap::new(),
        created_at: t(created),
        last_check_in: None,
    }
}

/// Stores `count` devices created one millisecond apart; returns their ids.
pub async fn devices(store: &SharedStore, count: u32) -> Vec<DeviceId> {
    let mut ids = Vec::new();
    for n in 0..count {
        let device = device(n, i64::from(n));
        store.insert_device(&device).await.expect("insert device");
        ids.push(device.id);
    }
    ids
}

pub fn package(name: &str, version: &str, created: i64) -> PackageRecord {
    PackageRecord {
        package: Package {
            id: PackageId::new(),
            name: name.into(),
            version: version.into(),
            description: Some(format!("{name} {version}")),
            device_types: strings(&["rpi4", "rpi5"]),
            security_version: 3,
            size: 123_456,
            sha256: "ab".repeat(32),
            signed_by: strings(&["release-2024"]),
            manifest: serde_json::json!({"name": name, "version": version, "payloads": [{"type": "image"}]}),
            created_at: t(created),
        },
        blob_key: format!("packages/{name}-{version}.airlift"),
        head: vec![0xa1, 0x00, 0xff, 0x42],
        provides: map(&[(name, version)]),
    }
}

/// Stores a package (of a version of its own) and returns its id.
pub async fn stored_package(store: &SharedStore) -> PackageId {
    let package = package(
        "rootfs",
        &format!("1.0.0-{}", uuid::Uuid::new_v4().simple()),
        0,
    );
    store
        .insert_package(&package)
        .await
        .expect("insert package");
    package.package.id
}

pub fn deployment(package_id: PackageId, created: i64) -> DeploymentRecord {
    DeploymentRecord {
        id: DeploymentId::new(),
        name: format!("deployment at {created}"),
        package_id,
        target: Target::Tag("fleet".into()),
        strategy: Strategy::All,
        install: Default::default(),
        status: DeploymentStatus::Active,
        created_at: t(created),
        finished_at: None,
        rollout: airlift_store::RolloutState::default(),
        dynamic: false,
        ends_at: None,
    }
}

/// A package, an active deployment of it targeting `devices` (all pending).
pub async fn active_deployment(store: &SharedStore, devices: &[DeviceId]) -> DeploymentId {
    let package_id = stored_package(store).await;
    let deployment = deployment(package_id, 10);
    let targets: Vec<_> = devices.iter().map(|d| (*d, UpdateState::Pending)).collect();
    store
        .insert_deployment(&deployment, &targets)
        .await
        .expect("insert deployment");
    deployment.id
}

pub fn inventory(installed: &[(&str, &str)], attributes: &[(&str, &str)]) -> Inventory {
    Inventory {
        device_type: "rpi4".into(),
        hardware_revision: Some("1.2".into()),
        installed: map(installed),
        security_version: 2,
        attributes: map(attributes),
    }
}
