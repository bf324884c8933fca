//! The admin commands: everything that talks to an airlift-server's
//! management API (`/api/v1`) through [`crate::client`].
//!
//! Which server and token: `--server`/`--token` (or `AIRLIFT_SERVER`/
//! `AIRLIFT_TOKEN`) win over the login stored by `airlift server login`. The
//! stored token is only ever sent to the stored server: naming another
//! server without a token is an error, not a leak.

pub mod audit;
pub mod deployment;
pub mod deployment_show;
pub mod device;
pub mod device_config;
pub mod package;
pub mod repair;
pub mod server;
pub mod soft;
pub mod strategy;
pub mod token;
pub mod watch;

use crate::client::Client;
use crate::config::{self, Login};
use crate::server_url::ServerUrl;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::str::FromStr;

/// An admin command, borrowed from the parsed command line.
#[derive(Debug, Clone, Copy)]
pub enum Admin<'a> {
    /// `airlift server …`
    Server(&'a server::ServerCommand),
    /// `airlift package upload|list|show|delete|download`
    Package(&'a package::PackageServerCommand),
    /// `airlift device …`
    Device(&'a device::DeviceCommand),
    /// `airlift deployment …`
    Deployment(&'a deployment::DeploymentCommand),
    /// `airlift token …`
    Token(&'a token::TokenCommand),
    /// `airlift audit …`
    Audit(&'a audit::AuditCommand),
}

/// Runs an admin command on a runtime made for it.
pub fn run(command: Admin<'_>, connection: &ConnectionArgs, quiet: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match command {
            Admin::Server(command) => server::run(command, connection).await,
            Admin::Package(command) => package::run(command, &connect(connection)?, quiet).await,
            Admin::Device(command) => device::run(command, &connect(connection)?).await,
            Admin::Deployment(command) => deployment::run(command, &connect(connection)?).await,
            Admin::Token(command) => token::run(command, &connect(connection)?).await,
            Admin::Audit(command) => audit::run(command, &connect(connection)?).await,
        }
    })
}

/// The global `--server` and `--token` flags.
#[derive(Clone, Default, Args)]
pub struct ConnectionArgs {
    /// The airlift-server to talk to, e.g. https://updates.example.com [default: the one `airlift server login` stored].
    #[arg(
        long,
        global = true,
        env = "AIRLIFT_SERVER",
        value_name = "URL",
        help_heading = "Server connection"
    )]
    pub server: Option<ServerUrl>,

    /// Management API token [default: the one `airlift server login` stored]; prefer AIRLIFT_TOKEN to keep it out of `ps`.
    #[arg(
        long,
        global = true,
        env = "AIRLIFT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Server connection"
    )]
    pub token: Option<String>,
}

impl std::fmt::Debug for ConnectionArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionArgs")
            .field("server", &self.server)
            .field("token", &self.token.as_deref().map(config::mask))
            .finish()
    }
}

/// The server and token to use: flags and environment over the stored login.
pub fn resolve(connection: &ConnectionArgs, stored: Option<Login>) -> Result<Login> {
    let login_hint = "run `airlift server login URL --token T`, or pass --server URL --token T (or set AIRLIFT_SERVER and AIRLIFT_TOKEN)";
    let server = match (&connection.server, &stored) {
        (Some(server), _) => server.clone(),
        (None, Some(stored)) => stored.server.clone(),
        (None, None) => bail!("no server to talk to: {login_hint}"),
    };
    let token = match (&connection.token, stored) {
        (Some(token), _) => token.clone(),
        (None, Some(stored)) if stored.server == server => stored.token,
        (None, Some(stored)) => bail!(
            "no token for {server}: the stored login is for {}; pass --token T (or set AIRLIFT_TOKEN), or run `airlift server login {server} --token T`",
            stored.server
        ),
        (None, None) => bail!("no token for {server}: {login_hint}"),
    };
    if token.trim().is_empty() {
        bail!("the token is empty: {login_hint}");
    }
    Ok(Login { server, token })
}

/// A client for the server and token in effect.
pub fn connect(connection: &ConnectionArgs) -> Result<Client> {
    let path = config::path()?;
    let login = resolve(connection, config::load(&path)?)?;
    warn_if_plain_http(&login.server);
    Client::new(login.server, login.token)
}

/// Tokens sent over plain HTTP to another machine can be read on the way.
pub fn warn_if_plain_http(server: &ServerUrl) {
    if server.is_plain_http_to_remote_host() {
        eprintln!(
            "warning: {server} is plain HTTP: the API token crosses the network unencrypted; use https://"
        );
    }
}

/// Parses `KEY=VALUE` (the value may hold `=`).
pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    if key.trim().is_empty() {
        return Err(format!("{text:?} has an empty KEY; expected KEY=VALUE"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Parses `KEY=VALUE` for a device-list filter: the server takes a list of
/// them joined by commas, so neither part may hold a comma, and it trims
/// spaces around each part.
pub fn parse_filter_pair(text: &str) -> Result<(String, String), String> {
    let (key, value) = parse_pair(text)?;
    if key.contains(',') || value.contains(',') {
        return Err(format!(
            "{text:?} holds a comma, which the server's filter syntax cannot carry"
        ));
    }
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

/// The pairs as a map; a key given twice is an error, not a silent overwrite.
pub fn unique_map(pairs: &[(String, String)], flag: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if map.insert(key.clone(), value.clone()).is_some() {
            bail!("{flag} {key}=… is given twice; give each key once");
        }
    }
    Ok(map)
}

/// Parses an id (a UUID), saying where to find one when it is not.
fn parse_id<T: FromStr>(text: &str, list_command: &str) -> Result<T, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not an id (a UUID like 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56); `{list_command}` shows them"
        )
    })
}

/// A `--where` target expression, checked here so that a typo is pointed
/// at before anything is sent.
pub fn parse_target_expr(text: &str) -> Result<airlift_protocol::target_expr::TargetExpr, String> {
    text.parse().map_err(|e| {
        format!(
            "{e}\n  (the grammar and examples: docs/targets.md, or `airlift device list --help`)"
        )
    })
}

/// [`parse_target_expr`], boxed: for an argument struct that must stay small.
pub fn parse_boxed_target_expr(
    text: &str,
) -> Result<Box<airlift_protocol::target_expr::TargetExpr>, String> {
    parse_target_expr(text).map(Box::new)
}

/// `--package ID` and package id arguments.
pub fn parse_package_id(text: &str) -> Result<airlift_protocol::PackageId, String> {
    parse_id(text, "airlift package list")
}

/// Device id arguments.
pub fn parse_device_id(text: &str) -> Result<airlift_protocol::DeviceId, String> {
    parse_id(text, "airlift device list")
}

/// Deployment id arguments.
pub fn parse_deployment_id(text: &str) -> Result<airlift_protocol::DeploymentId, String> {
    parse_id(text, "airlift deployment list")
}

/// Token id arguments.
pub fn parse_token_id(text: &str) -> Result<airlift_protocol::TokenId, String> {
    parse_id(text, "airlift token list")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> ServerUrl {
        text.parse().expect("valid URL")
    }

    fn stored() -> Option<Login> {
        Some(Login {
            server: url("https://updates.example.com"),
            token: "alt_stored".into(),
        })
    }

    #[test]
    fn the_stored_login_applies_without_flags() {
        let login = resolve(&ConnectionArgs::default(), stored()).expect("resolves");
        assert_eq!(login, stored().expect("some"));
    }

    #[test]
    fn flags_win_over_the_stored_login() {
        let flags = ConnectionArgs {
            server: Some(url("https://updates.example.com/")),
            token: Some("alt_flag".into()),
        };
        assert_eq!(
            resolve(&flags, stored()).expect("resolves").token,
            "alt_flag"
        );
        let token_only = ConnectionArgs {
            token: Some("alt_flag".into()),
            ..ConnectionArgs::default()
        };
        let login = resolve(&token_only, stored()).expect("resolves");
        assert_eq!(login.server, url("https://updates.example.com"));
        assert_eq!(login.token, "alt_flag");
        let same_server = ConnectionArgs {
            server: Some(url("https://updates.example.com/api/v1")),
            ..ConnectionArgs::default()
        };
        assert_eq!(
            resolve(&same_server, stored()).expect("resolves").token,
            "alt_stored"
        );
    }

    #[test]
    fn the_stored_token_never_goes_to_another_server() {
        let other = ConnectionArgs {
            server: Some(url("https://evil.example.net")),
            ..ConnectionArgs::default()
        };
        let error = resolve(&other, stored()).expect_err("no token for it");
        let text = error.to_string();
        assert!(
            text.contains("no token for https://evil.example.net"),
            "{text}"
        );
        assert!(!text.contains("alt_stored"), "{text}");
    }

    #[test]
    fn nothing_configured_says_how_to_log_in() {
        let error = resolve(&ConnectionArgs::default(), None).expect_err("nothing");
        assert!(
            error.to_string().contains("airlift server login"),
            "{error}"
        );
        let server_only = ConnectionArgs {
            server: Some(url("http://localhost:8080")),
            ..ConnectionArgs::default()
        };
        let error = resolve(&server_only, None).expect_err("no token");
        assert!(error.to_string().contains("no token for"), "{error}");
    }

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_pair("serial=A=1"),
            Ok(("serial".into(), "A=1".into()))
        );
        assert_eq!(parse_pair("k="), Ok(("k".into(), String::new())));
        assert!(parse_pair("serial").is_err());
        assert!(parse_pair("=v").is_err());
        assert_eq!(
            parse_filter_pair(" region = eu "),
            Ok(("region".into(), "eu".into()))
        );
        assert!(parse_filter_pair("region=eu,us")
            .expect_err("comma")
            .contains("comma"));
    }

    #[test]
    fn ids_that_are_not_uuids_say_where_to_look() {
        let error = parse_device_id("rpi-17").expect_err("not a UUID");
        assert!(error.contains("airlift device list"), "{error}");
        assert!(parse_package_id("0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56").is_ok());
    }
}
