//! The SQLite backend: one file, WAL journal, a small pool. One process
//! uses the file, so its change feed is in-process: changes are announced
//! to subscribers right after they commit.

use crate::feed::Hub;
use crate::sql::impl_store;
use crate::SharedStore;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Connections in the pool: readers run side by side under WAL, writers
/// queue on the database's write lock.
const MAX_CONNECTIONS: u32 = 4;
/// How long a writer waits for the write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The store on an SQLite file.
#[derive(Debug)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
    hub: Arc<Hub>,
}

/// Opens (creating if missing) and migrates the database at `path`.
pub(crate) async fn open(path: &Path) -> crate::StoreResult<SharedStore> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        // A file cannot drop its connection: skip the ping sqlx sends before
        // every acquire, which costs a thread hand-off per query.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|e| {
            crate::StoreError::Setup(format!("opening SQLite database {}: {e}", path.display()))
        })?;
    sqlx::migrate!("./migrations/sqlite")
        .run(&pool)
        .await
        .map_err(|e| {
            crate::StoreError::Setup(format!("migrating SQLite database {}: {e}", path.display()))
        })?;
    Ok(Arc::new(SqliteStore {
        pool,
        hub: Hub::new(true),
    }))
}

// Every write transaction takes the write lock up front, so it never has to
// upgrade a read snapshot (which SQLite refuses instead of waiting).
impl_store!(SqliteStore, sqlx::Sqlite, "BEGIN IMMEDIATE");

impl SqliteStore {
    /// Nothing to do inside the transaction: subscribers live in this process.
    async fn stage(
        &self,
        _conn: &mut sqlx::SqliteConnection,
        _event: &StoreEvent,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// Tells this process's subscribers, once the change is committed.
    fn committed(&self, event: StoreEvent) {
        self.hub.publish(event, true);
    }
}
