//! `airlift server login|logout|status`: remember which server to talk to
//! and with which token.

use super::{resolve, warn_if_plain_http, ConnectionArgs};
use crate::client::{api_error, ApiError, Client};
use crate::config::{self, mask, Login};
use crate::output;
use crate::server_url::ServerUrl;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

/// `airlift server …`
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Check a token against a server and remember both.
    #[command(
        long_about = "Check a token against a server and remember both.\n\n\
            Asks the server for its package list with the token (any role may read it); if the \
            server accepts the token, writes the URL and the token to cli.toml in \
            $AIRLIFT_CONFIG_DIR, else $XDG_CONFIG_HOME/airlift, else ~/.config/airlift, \
            readable by you only. Later commands use them unless --server/--token (or \
            AIRLIFT_SERVER/AIRLIFT_TOKEN) say otherwise. The token comes from --token or \
            AIRLIFT_TOKEN; the server prints the first admin token when it starts, and \
            `airlift token create` makes more.",
        after_help = "Examples:
  airlift server login https://updates.example.com --token alt_5f0c…
  AIRLIFT_TOKEN=alt_5f0c… airlift server login http://127.0.0.1:8080"
    )]
    Login(LoginArgs),

    /// Forget the stored server and token.
    #[command(
        long_about = "Forget the stored server and token: deletes cli.toml. The token itself stays \
            valid on the server; an admin revokes it with `airlift token revoke ID`.",
        after_help = "Examples:
  airlift server logout"
    )]
    Logout,

    /// Show which server and token the commands use, and check them.
    #[command(
        long_about = "Show which server and token the commands use, and check them.\n\n\
            Prints the server, the token (masked) and where each comes from, then asks the \
            server whether it accepts the token.",
        after_help = "Examples:
  airlift server status
  airlift server status --server http://127.0.0.1:8080 --token alt_5f0c…"
    )]
    Status,
}

/// Arguments of `airlift server login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The server's base URL, e.g. https://updates.example.com.
    pub url: ServerUrl,
}

/// Runs one `airlift server` subcommand.
pub async fn run(command: &ServerCommand, connection: &ConnectionArgs) -> Result<()> {
    match command {
        ServerCommand::Login(args) => login(args, connection).await,
        ServerCommand::Logout => logout(),
        ServerCommand::Status => status(connection).await,
    }
}

async fn login(args: &LoginArgs, connection: &ConnectionArgs) -> Result<()> {
    let Some(token) = connection.token.clone().filter(|t| !t.trim().is_empty()) else {
        bail!(
            "no token given: run `airlift server login {} --token T` (or set AIRLIFT_TOKEN); an admin makes tokens with `airlift token create`",
            args.url
        );
    };
    let server = args.url.clone();
    warn_if_plain_http(&server);
    let client = Client::new(server.clone(), token.clone())?;
    check(&client).await.map_err(|error| match api_error(&error) {
        Some(ApiError::Unauthorized { message, .. }) => anyhow::anyhow!(
            "{server} refused the token {} ({message}); check it, or ask an admin for a new one (`airlift token create`)",
            mask(&token)
        ),
        _ => error,
    })?;
    let path = config::path()?;
    config::save(
        &path,
        &Login {
            server: server.clone(),
            token: token.clone(),
        },
    )?;
    println!("logged in to {server} with token {}", mask(&token));
    println!("saved to {}", path.display());
    Ok(())
}

fn logout() -> Result<()> {
    let path = config::path()?;
    if config::remove(&path)? {
        println!("logged out: deleted {}", path.display());
    } else {
        println!("not logged in: {} does not exist", path.display());
    }
    Ok(())
}

async fn status(connection: &ConnectionArgs) -> Result<()> {
    let path = config::path()?;
    let stored = config::load(&path)?;
    let login = resolve(connection, stored.clone())?;
    let source = |from_flag: bool| {
        if from_flag {
            "from --server/--token or the environment".to_owned()
        } else {
            format!("from {}", path.display())
        }
    };
    output::field(
        "server",
        format!(
            "{}  ({})",
            login.server,
            source(connection.server.is_some())
        ),
    );
    output::field(
        "token",
        format!(
            "{}  ({})",
            mask(&login.token),
            source(connection.token.is_some())
        ),
    );
    warn_if_plain_http(&login.server);
    let client = Client::new(login.server, login.token)?;
    check(&client).await?;
    output::field("check", "the server accepts the token");
    Ok(())
}

/// Any authenticated read proves the token works.
async fn check(client: &Client) -> Result<()> {
    client
        .list_packages()
        .await
        .with_context(|| format!("checking the token against {}", client.server()))?;
    Ok(())
}
