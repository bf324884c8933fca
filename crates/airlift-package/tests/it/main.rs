//! Integration tests of the package format through its public API only.

mod blocks;
mod hostile;
mod round_trip;
mod support;
