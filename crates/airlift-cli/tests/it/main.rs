//! End-to-end tests of the `airlift` binary: every test runs the real
//! executable on real files in a fresh temporary directory.

mod bad_input;
mod help;
mod keys;
mod rejections;
mod round_trip;
mod support;
