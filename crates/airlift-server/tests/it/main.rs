//! End-to-end tests: the real `airlift-server` binary on a loopback port,
//! driven over HTTP like an operator and a device would. Every scenario runs
//! on SQLite, and on PostgreSQL when `AIRLIFT_TEST_POSTGRES_URL` is set.

mod connections;
mod hostile;
mod instances;
mod lifecycle;
mod openapi;
mod operations;
mod rollouts;
mod security;
mod support;
