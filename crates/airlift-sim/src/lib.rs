//! `airlift-sim`: a fleet of simulated Airlift devices in one process, for
//! demos, end-to-end tests and load tests of a real server.
//!
//! Each device is a directory with two small slot files, a
//! [`FileBootEnv`](airlift_agent::boot::FileBootEnv) standing in for the
//! bootloader, and the agent's data directory; it is driven by the real
//! agent ([`airlift_agent::driver::Agent`]: its state machine, its
//! installers, its HTTP client) talking real HTTP to a server URL. The
//! simulator plays what is not the agent: the bootloader's power-up step
//! after each reboot, power cuts, a flaky network, and a health check that
//! fails on a chosen version — each fault for a stable share of devices
//! picked by a hash of (seed, serial), so runs are reproducible. The flaky
//! network is the test kit's proxy
//! ([`airlift_testkit::proxy::FlakyProxy`], by seeded chance).
//!
//! Devices wait in a queue ordered by their next poll time and a few worker
//! threads step the ones that are due, so ten thousand devices need no ten
//! thousand threads.
//!
//! **What it must not know:** the server's internals or its store. It
//! depends on neither `airlift-server` nor `airlift-store`; it speaks HTTP
//! to a URL (the device API through the agent, and one management call,
//! pre-authorisation, with a token it is given).
//!
//! ```no_run
//! use airlift_sim::{Fleet, FleetConfig};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = FleetConfig::new("http://127.0.0.1:8080", "release.pub".into(), 500, "pi4");
//! config.admin_token = Some(std::env::var("AIRLIFT_ADMIN_TOKEN")?);
//! config.poll_interval = Some(Duration::from_secs(1));
//! config.faults.fail_health_on = Some("2.0.0".into());
//! config.faults.fail_health_share = "40".parse()?;
//! let fleet = Fleet::start(config)?;
//! // … create a deployment through the management API …
//! let _ = fleet.wait_until(Duration::from_secs(60), |s| s.with_outcome("none") == 0);
//! println!("{}", fleet.stop());
//! # Ok(())
//! # }
//! ```
//!
//! Packages for the simulator carry images made by [`image::build`], whose
//! first line names their version, so that the simulator can tell what a
//! device runs. The agent must unwind on panic (a power cut is an unwinding
//! panic caught by the worker): do not build the simulator with
//! `panic = "abort"`.

pub mod admin;
pub mod config;
pub mod device;
pub mod fleet;
pub mod image;
mod schedule;
pub mod select;
pub mod server;
pub mod summary;

pub use config::{ConfigError, Factory, Faults, FleetConfig};
pub use fleet::{Fleet, PowerCut, SimError, TimedOut};
pub use select::{Mix, Share};
pub use summary::{DeviceReport, Snapshot, Summary};
