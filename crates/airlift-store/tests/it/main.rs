//! The conformance suite: every test here runs against SQLite (a fresh file
//! in a temporary directory) and against PostgreSQL when
//! `AIRLIFT_TEST_POSTGRES_URL` is set (a fresh schema in that database,
//! dropped afterwards). With the variable set, an unreachable server fails
//! the PostgreSQL tests; without it they pass without running.
//!
//! Test bodies are written once as `async fn name(ctx: Ctx)`; list them in
//! their module's `conformance!` to get `module::sqlite::name` and
//! `module::postgres::name`.

/// Instantiates `sqlite` and `postgres` test modules for the listed test
/// bodies of the enclosing module.
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::run_sqlite(super::$name).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::run_postgres(super::$name).await;
                }
            )+
        }
    };
}

mod support;

mod audit;
mod certificates;
mod corrupt;
mod deferrals;
mod deployment_changes;
mod deployments;
mod devices;
mod dynamic;
mod expr;
mod feed;
mod fleet;
mod nonces;
mod open;
mod packages;
mod paging;
mod repair;
mod reports;
mod sessions;
mod settings;
mod shadow_feed;
mod shadows;
mod tokens;
mod trust;
mod uploads;
