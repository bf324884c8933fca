//! The PostgreSQL backend, for fleets and several server instances.

use crate::sql::impl_store;
use crate::SharedStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// Connections in the pool of one server instance.
const MAX_CONNECTIONS: u32 = 10;
/// How long a request waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The store on a PostgreSQL database.
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
}

/// Connects to and migrates the database `options` point to.
pub(crate) async fn open(options: PgConnectOptions) -> crate::StoreResult<SharedStore> {
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| crate::StoreError::Setup(format!("connecting to PostgreSQL: {e}")))?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .map_err(|e| crate::StoreError::Setup(format!("migrating PostgreSQL database: {e}")))?;
    Ok(Arc::new(PgStore { pool }))
}

impl_store!(PgStore, sqlx::Postgres, "BEGIN");
