//! `airlift package …`: build, inspect and verify package files. The
//! format itself (manifest rules, signatures, digests) lives in
//! `airlift-package`; these commands only move bytes between files and it.
//! The subcommands that talk to a server live in [`crate::admin::package`].

mod build;
mod inspect;
mod verify;

use crate::admin::{self, Admin, ConnectionArgs};
use crate::cli::PackageCommand;
use airlift_package::{Compression, Encryption, PayloadEntry};
use anyhow::Result;
use indicatif::BinaryBytes;

/// Buffer size for streaming package and payload bytes.
const BUF_LEN: usize = 1024 * 1024;

/// Runs one `airlift package` subcommand.
pub fn run(command: &PackageCommand, connection: &ConnectionArgs, quiet: bool) -> Result<()> {
    match command {
        PackageCommand::Build(args) => build::run(args, quiet),
        PackageCommand::Inspect(args) => inspect::run(args),
        PackageCommand::Verify(args) => verify::run(args, quiet),
        PackageCommand::Server(command) => admin::run(Admin::Package(command), connection, quiet),
    }
}

/// `image rootfs`, `module:foo uart0`.
fn payload_name(entry: &PayloadEntry) -> String {
    format!("{} {}", entry.kind, entry.target)
}

/// `zstd, age-encrypted` / `not compressed, not encrypted`.
fn encoding(entry: &PayloadEntry) -> String {
    let compression = match entry.compression {
        Compression::None => "not compressed",
        Compression::Zstd => "zstd",
    };
    let encryption = match entry.encryption {
        Encryption::None => "not encrypted",
        Encryption::Age => "age-encrypted",
    };
    format!("{compression}, {encryption}")
}

/// One line per payload for summaries.
fn payload_summary(index: usize, entry: &PayloadEntry) -> String {
    format!(
        "payload {index}: {}, {} installed, {} stored ({})",
        payload_name(entry),
        BinaryBytes(entry.installed.size),
        BinaryBytes(entry.stored.size),
        encoding(entry)
    )
}
