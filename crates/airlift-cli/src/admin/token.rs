//! `airlift token create|list|revoke`: management API tokens (admin only).

use super::parse_token_id;
use crate::client::Client;
use crate::output::{self, Table};
use airlift_protocol::management::CreateTokenRequest;
use airlift_protocol::state::Role;
use airlift_protocol::TokenId;
use anyhow::{Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};

/// `airlift token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a management API token and print its secret once.
    #[command(
        long_about = "Make a management API token and print its secret once.\n\n\
            Roles: viewer reads everything; operator also uploads and deletes packages, admits \
            and tags devices, and runs deployments; admin also manages tokens. The server keeps \
            only a hash of the secret: copy it now, it cannot be shown again. Needs an admin \
            token.",
        after_help = "Examples:
  airlift token create --name ci-release --role operator
  airlift token create --name grafana --role viewer --json | jq -r .secret"
    )]
    Create(CreateArgs),

    /// List management API tokens (without their secrets), a page at a time.
    #[command(after_help = "Examples:
  airlift token list
  airlift token list --page 2 --per-page 20
  airlift token list --json | jq -r '.items[] | select(.role == \"admin\") | .name'")]
    List(ListArgs),

    /// Revoke a management API token: it stops working at once.
    #[command(after_help = "Examples:
  airlift token list
  airlift token revoke 0190d5f2-3a4b-7c5d-8e6f-708192a3b4c5")]
    Revoke(RevokeArgs),
}

fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.iter().map(Role::as_str))
        .try_map(|text| text.parse::<Role>())
}

/// Arguments of `airlift token create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Who or what uses the token, e.g. ci-release.
    #[arg(long)]
    pub name: String,
    /// What the token may do.
    #[arg(long, value_parser = role_parser())]
    pub role: Role,
    /// Print the token, secret included, as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift token list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Which page, from 1.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub page: u32,
    /// Tokens per page, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub per_page: u32,
    /// Print the page ({items, total, page, per_page}) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift token revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's id (`airlift token list` shows them), not its secret.
    #[arg(value_parser = parse_token_id)]
    pub id: TokenId,
}

/// Runs one `airlift token` subcommand.
pub async fn run(command: &TokenCommand, client: &Client) -> Result<()> {
    match command {
        TokenCommand::Create(args) => create(args, client).await,
        TokenCommand::List(args) => list(args, client).await,
        TokenCommand::Revoke(args) => revoke(args, client).await,
    }
}

async fn create(args: &CreateArgs, client: &Client) -> Result<()> {
    let request = CreateTokenRequest {
        name: args.name.clone(),
        role: args.role,
    };
    let created = client
        .create_token(&request)
        .await
        .with_context(|| format!("creating token {:?}", args.name))?;
    if args.json {
        return output::print_json(&created);
    }
    let token = &created.token;
    println!(
        "created token {:?} (id {}, role {})",
        token.name, token.id, token.role
    );
    println!();
    println!("    {}", created.secret);
    println!();
    println!("This secret is shown only now; the server stores only its hash. Use it with:");
    println!(
        "    airlift server login {} --token {}",
        client.server(),
        created.secret
    );
    println!("or set AIRLIFT_TOKEN for a single command or a CI job.");
    Ok(())
}

async fn list(args: &ListArgs, client: &Client) -> Result<()> {
    let page = client
        .list_tokens(args.page, args.per_page)
        .await
        .context("listing tokens")?;
    if args.json {
        return output::print_json(&page);
    }
    if page.items.is_empty() {
        println!("{}", output::empty_page(&page, "no tokens", "tokens"));
        return Ok(());
    }
    let mut table = Table::new(&["ID", "NAME", "ROLE", "CREATED"]);
    for token in &page.items {
        table.row(vec![
            token.id.to_string(),
            token.name.clone(),
            token.role.to_string(),
            output::time(&token.created_at),
        ]);
    }
    table.print();
    println!("{}", output::page_footer(&page, "tokens"));
    Ok(())
}

async fn revoke(args: &RevokeArgs, client: &Client) -> Result<()> {
    client
        .revoke_token(args.id)
        .await
        .with_context(|| format!("revoking token {}", args.id))?;
    println!("revoked token {}", args.id);
    Ok(())
}
