//! A fresh PostgreSQL schema per test, in the database named by
//! [`URL_VAR`], dropped when the test is done with it.
//!
//! The store keeps its tables in the schema a connection's `search_path`
//! names, and libpq-style URLs set it with
//! `?options=-csearch_path%3D<schema>`, so a test (or a server process it
//! starts) only needs the URL of its [`FreshSchema`].

use sqlx::Connection;

/// The variable naming the test database, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`. Unset: PostgreSQL is not
/// tested. Set but unreachable: the tests fail.
pub const URL_VAR: &str = "AIRLIFT_TEST_POSTGRES_URL";

/// Why a schema could not be made: the database's (or the connection's)
/// answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(String);

/// A schema of its own in the test database; dropped (with everything in
/// it) when this is dropped.
#[derive(Debug)]
pub struct FreshSchema {
    base: String,
    name: String,
    url: String,
}

impl FreshSchema {
    /// A new schema whose name starts with `prefix`, when [`URL_VAR`] is set.
    ///
    /// Works from synchronous and asynchronous tests alike: the database is
    /// reached on a thread of its own.
    ///
    /// # Panics
    /// When the variable is set but the database cannot be reached or the
    /// schema cannot be made: a test that should run on PostgreSQL must not
    /// pass without it.
    pub fn create(prefix: &str) -> Option<Self> {
        let base = std::env::var(URL_VAR).ok()?;
        match Self::create_in(&base, prefix) {
            Ok(schema) => Some(schema),
            Err(error) => panic!("{URL_VAR} is set but the schema cannot be made: {error}"),
        }
    }

    /// A new schema whose name starts with `prefix`, in the database at
    /// `base` (for a benchmark that names its database itself), or why it
    /// cannot be made.
    pub fn create_in(base: &str, prefix: &str) -> Result<Self, SchemaError> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        run(base, format!("CREATE SCHEMA {name}")).map_err(SchemaError)?;
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{name}");
        Ok(Self {
            base: base.to_owned(),
            name,
            url,
        })
    }

    /// The database URL that reaches this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for FreshSchema {
    fn drop(&mut self) {
        if let Err(error) = run(
            &self.base,
            format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        ) {
            eprintln!("dropping test schema {}: {error}", self.name);
        }
    }
}

/// Runs one statement on a connection of its own, on a thread of its own
/// (so that a caller inside a tokio runtime does not nest one).
fn run(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut connection = sqlx::PgConnection::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(&sql)
                .execute(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            connection.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the database thread panicked".to_owned())?
}
