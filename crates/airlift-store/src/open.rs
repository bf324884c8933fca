//! Choosing and opening a backend.

use crate::{postgres, sqlite, SharedStore, StoreError, StoreResult};
use sqlx::postgres::PgConnectOptions;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Which database to use, parsed from configuration.
///
/// ```
/// use airlift_store::DatabaseUrl;
///
/// let url = DatabaseUrl::parse("sqlite:///var/lib/airlift/airlift.db")?;
/// assert_eq!(url, DatabaseUrl::Sqlite("/var/lib/airlift/airlift.db".into()));
/// assert!(DatabaseUrl::parse("mysql://db/airlift").is_err());
/// # Ok::<(), airlift_store::InvalidDatabaseUrl>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://…`).
    ///
    /// Everything libpq-style URLs carry is honoured, including
    /// `?options=-csearch_path%3Dmy_schema` to keep the tables in a schema
    /// of their own.
    Postgres(String),
}

/// A database URL that names no backend this store has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid database URL: {0}")]
pub struct InvalidDatabaseUrl(String);

impl DatabaseUrl {
    /// Parses `sqlite://PATH` or `sqlite:PATH` (a file, relative to the
    /// working directory unless absolute: `sqlite:///var/lib/airlift.db`),
    /// or `postgres://…` / `postgresql://…`. Anything else is an error.
    pub fn parse(url: &str) -> Result<Self, InvalidDatabaseUrl> {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(InvalidDatabaseUrl(
                "no scheme; expected sqlite://PATH, sqlite:PATH or postgres://…".into(),
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(InvalidDatabaseUrl(
                        "an SQLite URL needs a file path: sqlite://PATH".into(),
                    ));
                }
                if path == ":memory:" || path.starts_with(":memory:?") {
                    return Err(InvalidDatabaseUrl(
                        "an in-memory SQLite database is not supported: give a file path".into(),
                    ));
                }
                if path.contains('?') {
                    return Err(InvalidDatabaseUrl(
                        "an SQLite URL takes no parameters: the store sets its own".into(),
                    ));
                }
                Ok(Self::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" => {
                if !rest.starts_with("//") {
                    return Err(InvalidDatabaseUrl(
                        "a PostgreSQL URL has the form postgres://user@host:port/database".into(),
                    ));
                }
                // Check it now so a typo fails at configuration time. The
                // error never repeats the URL (it may hold a password).
                PgConnectOptions::from_str(url)
                    .map_err(|e| InvalidDatabaseUrl(format!("unreadable PostgreSQL URL: {e}")))?;
                Ok(Self::Postgres(url.to_owned()))
            }
            other => Err(InvalidDatabaseUrl(format!(
                "unsupported scheme {:?}; expected sqlite://PATH, sqlite:PATH or postgres://…",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = InvalidDatabaseUrl;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Self::parse(url)
    }
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

/// How a store is opened, beyond its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// The longest any one statement may run on PostgreSQL before the
    /// database cancels it (`statement_timeout`); migrations are exempt.
    /// SQLite has no such setting: its statements are bounded by the
    /// sizes the server accepts.
    pub statement_timeout: Duration,
    /// Connections in one process's pool on PostgreSQL: what bounds the
    /// statements it runs at once (SQLite keeps its pool of 4: one writer
    /// at a time whatever the pool).
    pub max_connections: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(30),
            max_connections: 10,
        }
    }
}

/// Connects to the database and brings its schema up to date, with the
/// default [`OpenOptions`].
///
/// SQLite: the file is created if missing (its directory must exist), with
/// a WAL journal, `synchronous=NORMAL`, foreign keys on, a 5 s busy timeout
/// and a pool of 4 connections. PostgreSQL: a pool of 10 connections
/// ([`OpenOptions::max_connections`]), each statement cancelled by the
/// database after 30 s.
pub async fn open(url: &DatabaseUrl) -> StoreResult<SharedStore> {
    open_with(url, OpenOptions::default()).await
}

/// [`open`] with options of the caller's.
pub async fn open_with(url: &DatabaseUrl, options: OpenOptions) -> StoreResult<SharedStore> {
    let store = match url {
        DatabaseUrl::Sqlite(path) => sqlite::open(path).await?,
        DatabaseUrl::Postgres(url) => {
            let connect = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::Setup(format!("unreadable PostgreSQL URL: {e}")))?;
            postgres::open(connect, options).await?
        }
    };
    // Versions recorded before migration 0015 get their order keys, so
    // that version comparisons in SQL see them (crate::expr).
    store.fill_version_keys().await?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        let parse = |url: &str| DatabaseUrl::parse(url).expect(url);
        assert_eq!(
            parse("sqlite://data/a.db"),
            DatabaseUrl::Sqlite("data/a.db".into())
        );
        assert_eq!(
            parse("sqlite:///abs/a.db"),
            DatabaseUrl::Sqlite("/abs/a.db".into())
        );
        assert_eq!(parse("sqlite:a.db"), DatabaseUrl::Sqlite("a.db".into()));
        assert_eq!(parse("SQLite:a.db"), DatabaseUrl::Sqlite("a.db".into()));
        for bad in [
            "sqlite://",
            "sqlite:",
            "sqlite::memory:",
            "sqlite://a.db?mode=ro",
        ] {
            assert!(DatabaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn postgres_urls() {
        for good in [
            "postgres://postgres@127.0.0.1:5432/test",
            "postgresql://u:secret@db/airlift?options=-csearch_path%3Dt_1",
        ] {
            assert_eq!(
                DatabaseUrl::parse(good).expect(good),
                DatabaseUrl::Postgres(good.into())
            );
        }
        let url = DatabaseUrl::parse("postgres://u:secret@db/airlift").expect("valid");
        assert!(!format!("{url:?}").contains("secret"));
        assert!(DatabaseUrl::parse("postgres:db").is_err());
    }

    #[test]
    fn other_schemes_are_refused() {
        for bad in ["mysql://db/a", "/var/lib/a.db", "a.db", "", "http://x"] {
            let error = DatabaseUrl::parse(bad).expect_err(bad);
            assert!(error.to_string().contains("expected sqlite://"), "{error}");
        }
    }
}
