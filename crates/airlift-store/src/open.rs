//! Choosing and opening a backend.

use crate::{SharedStore, StoreResult};
use std::path::PathBuf;

/// Which database to use, parsed from configuration.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://…`).
    Postgres(String),
}

impl std::fmt::Debug for DatabaseUrl {
    // The PostgreSQL URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
            Self::Postgres(_) => f.write_str("Postgres(<redacted>)"),
        }
    }
}

/// Connects to the database and brings its schema up to date.
pub async fn open(url: &DatabaseUrl) -> StoreResult<SharedStore> {
    todo_backend(url).await
}

async fn todo_backend(_url: &DatabaseUrl) -> StoreResult<SharedStore> {
    Err(crate::StoreError::Setup("backends not built yet".into()))
}
