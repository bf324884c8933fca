//! `airlift`, the command-line tool of the Airlift OTA update system: it
//! makes signing and encryption keys, builds, inspects and verifies update
//! packages, and drives an airlift-server's management API (packages,
//! devices, deployments, tokens).
//!
//! It is a thin shell over `airlift-package` and `airlift-protocol`: the
//! package format, its rules and its error messages live in the first, the
//! API's wire types in the second, and this crate only moves bytes between
//! files, the library and the server, and shows results. It must not know
//! the server's storage or database internals; anything it does against the
//! server goes through the server's public API ([`client`]).
//!
//! ```text
//! airlift key generate --out keys/
//! airlift package build --name rootfs --version 1.2.0 --device-type rpi4 \
//!     --payload image:rootfs=rootfs.img --key keys/airlift-signing.key --out rootfs.airlift
//! airlift package verify rootfs.airlift --trust keys/airlift-signing.pub
//! airlift server login https://updates.example.com --token alt_…
//! airlift package upload rootfs.airlift
//! ```

mod admin;
mod cli;
mod client;
mod config;
#[cfg(feature = "demo")]
mod demo;
mod keys;
mod output;
mod package;
mod root;
mod server_url;

use admin::Admin;
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
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(args, cli.quiet),
        Command::Package { command } => package::run(command, &cli.connection, cli.quiet),
        Command::Server { command } => {
            admin::run(Admin::Server(command), &cli.connection, cli.quiet)
        }
        Command::Device { command } => {
            admin::run(Admin::Device(command), &cli.connection, cli.quiet)
        }
        Command::Deployment { command } => {
            admin::run(Admin::Deployment(command), &cli.connection, cli.quiet)
        }
        Command::Token { command } => admin::run(Admin::Token(command), &cli.connection, cli.quiet),
        Command::Audit { command } => admin::run(Admin::Audit(command), &cli.connection, cli.quiet),
        Command::Root { command } => root::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error);
            ExitCode::FAILURE
        }
    }
}
