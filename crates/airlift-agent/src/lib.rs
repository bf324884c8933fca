//! The Airlift device agent.
//!
//! Its one promise: whatever happens — power cut, network loss, a bad
//! package, a broken release — the device ends up running either the old
//! version or the new one, healthy, and the server knows which.
//!
//! - [`boot`]: boot control behind a trait — GRUB, U-Boot, and
//!   [`boot::FileBootEnv`], a file-backed model of a bootloader's trial-boot
//!   logic for tests and simulation.
//! - [`install`]: installers behind a trait — raw images into the inactive
//!   slot (read back and checked), files replaced atomically with a backup
//!   kept until commit, and external update modules called per state.
//! - [`machine`]: the update state machine, without I/O:
//!   `step(state, event) -> (state, effects)`, and its atomic persistence.
//! - [`driver`]: performs the machine's effects and feeds back events —
//!   check-in, offer, download, install, trial boot, commit or roll back.
//! - [`client`], [`download`], [`identity`]: the device API from the
//!   device's side — a signed authentication with the device's own key,
//!   check-ins, reports, and downloads that resume with `Range`.
//! - [`system`]: the running system as it is — the version its root
//!   filesystem holds, and slot devices checked against what runs.
//! - `process`: the one way a child process is run (health checks, update
//!   modules, bootloader tools): its own process group killed on timeout,
//!   bounded output.
//!
//! This crate must not know the server's internals or its store: it speaks
//! only the device API of `airlift-protocol`.

pub mod boot;
pub mod client;
pub mod config;
pub mod defer;
pub mod download;
pub mod driver;
mod fault;
pub mod health;
pub mod identity;
pub mod install;
pub mod installed;
pub mod machine;
mod process;
pub mod progress;
pub mod push;
pub mod shadow;
pub mod stream;
pub mod system;
pub mod tls;
