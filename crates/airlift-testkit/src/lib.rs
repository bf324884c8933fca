//! What Airlift's tests and benchmarks share, written once: reading a
//! process's CPU time and memory from `/proc` ([`procfs`]) and a fresh
//! PostgreSQL schema per test ([`postgres`]). Its own test
//! (`tests/layering.rs`) holds the workspace to the dependency layering
//! ARCHITECTURE.md describes.
//!
//! Test support only (`publish = false`), a dev-dependency of the crates
//! that use it. It must not depend on any Airlift crate: every crate's
//! tests may use it, so it sits below all of them.

pub mod postgres;
pub mod procfs;
