//! What Airlift's tests, benchmarks and simulator share, written once:
//!
//! - [`server`]: a real `airlift-server` process, started on a free
//!   loopback port and known ready from its log;
//! - [`proxy`]: a flaky network in front of a server (cuts, stalls,
//!   damaged bytes, `503`s, altered offers), planned or by seeded chance;
//! - [`balancer`]: a round-robin TCP load balancer in front of several
//!   server instances, skipping one that is down;
//! - [`packages`]: a release key and signed test packages;
//! - [`device`] (feature `device`): a device speaking the device API by
//!   hand;
//! - [`procfs`]: a process's CPU time and memory from `/proc`;
//! - [`postgres`] (feature `postgres`): a fresh PostgreSQL schema per test.
//!
//! Its own test (`tests/layering.rs`) holds the workspace to the
//! dependency layering ARCHITECTURE.md describes.
//!
//! Test support (`publish = false`): a dev-dependency of every crate whose
//! tests use it, and a normal dependency of `airlift-sim` only, the
//! simulator being a test tool (its flaky network, and the server process
//! of `airlift demo`). It depends on no Airlift crate but the two leaves,
//! `airlift-package` and `airlift-protocol`, so that every other crate's
//! tests may use it.

pub mod balancer;
#[cfg(feature = "browser")]
pub mod browser;
#[cfg(feature = "device")]
pub mod device;
mod loopback;
pub mod packages;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod procfs;
pub mod proxy;
pub mod s3;
pub mod server;
