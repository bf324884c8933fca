//! `airlift`, the command-line tool of the Airlift OTA update system: it
//! makes signing and encryption keys, and builds, inspects and verifies
//! update packages. Later it will also hold admin commands against the
//! server and `demo`.
//!
//! It is a thin shell over `airlift-package`: the package format, its
//! rules and its error messages live there, and this crate only moves bytes
//! between files and the library and shows results. It must not know the
//! server's storage or database internals; anything it does against the
//! server goes through the server's public API.
//!
//! ```text
//! airlift key generate --out keys/
//! airlift package build --name rootfs --version 1.2.0 --device-type rpi4 \
//!     --payload image:rootfs=rootfs.img --key keys/airlift-signing.key --out rootfs.airlift
//! airlift package verify rootfs.airlift --trust keys/airlift-signing.pub
//! ```

mod cli;
mod keys;
mod output;
mod package;

use clap::Parser;
use cli::{Cli, Command, KeyCommand};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Key { command } => match command {
            KeyCommand::Generate(args) => keys::generate(args),
            KeyCommand::GenerateEncryption(args) => keys::generate_encryption(args),
            KeyCommand::Id { file } => keys::id(file),
        },
        Command::Package { command } => package::run(command, cli.quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error);
            ExitCode::FAILURE
        }
    }
}
