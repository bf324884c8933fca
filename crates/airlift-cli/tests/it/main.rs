//! End-to-end tests of the `airlift` binary: every test runs the real
//! executable on real files in a fresh temporary directory, and the admin
//! commands against a real airlift-server started in-process.

mod admin;
mod bad_input;
mod blocks;
mod config_where;
#[cfg(feature = "demo")]
mod demo;
mod expressions;
mod help;
mod keys;
mod operated;
mod rejections;
mod repair;
mod root;
mod round_trip;
mod soft;
use airlift_server::testing as server;
mod support;
