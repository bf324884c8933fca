//! `airlift audit list`: who changed what on the server, newest first
//! (admin only).

use crate::client::{AuditQuery, Client};
use crate::output::{self, Table};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};

/// `airlift audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List the audit log, newest first, a page at a time.
    #[command(
        long_about = "List the audit log, newest first, a page at a time.\n\n\
            Every change made through the API or the dashboard — uploads, deployments and \
            their controls, admissions, tags, tokens — is an entry naming who (the token's name \
            and id), what (an action such as deployment.create) and on which object. Filter by \
            --actor (a token's name, or its whole `name (id)`) and --action (one action, or a \
            family ending with a dot). Needs an admin token.",
        after_help = "Examples:
  airlift audit list
  airlift audit list --actor ci-release --action deployment.
  airlift audit list --action token.delete --json | jq -r '.items[] | \"\\(.at) \\(.actor) \\(.object)\"'
  airlift audit list --page 2 --per-page 50"
    )]
    List(ListArgs),
}

/// Arguments of `airlift audit list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only changes by this token: its name, or its whole `name (id)`.
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Only this action (deployment.create), or every action of a family (deployment.).
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// Only entries older than the one with this id: pages that stay put
    /// while new entries arrive.
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,
    /// Which page, from 1.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub page: u32,
    /// Entries per page, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub per_page: u32,
    /// Print the page ({items, total, page, per_page}) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs one `airlift audit` subcommand.
pub async fn run(command: &AuditCommand, client: &Client) -> Result<()> {
    match command {
        AuditCommand::List(args) => list(args, client).await,
    }
}

async fn list(args: &ListArgs, client: &Client) -> Result<()> {
    let query = AuditQuery {
        actor: args.actor.clone(),
        action: args.action.clone(),
        before: args.before,
        page: args.page,
        per_page: args.per_page,
    };
    let page = client
        .list_audit(&query)
        .await
        .context("reading the audit log")?;
    if args.json {
        return output::print_json(&page);
    }
    if page.items.is_empty() {
        let filtered = args.actor.is_some() || args.action.is_some() || args.before.is_some();
        let none = if filtered {
            "no entry matches"
        } else {
            "nothing has been changed yet"
        };
        println!("{}", output::empty_page(&page, none, "entries"));
        return Ok(());
    }
    let mut table = Table::new(&["ID", "AT", "ACTOR", "ACTION", "OBJECT"]);
    for entry in &page.items {
        table.row(vec![
            entry.id.to_string(),
            output::time(&entry.at),
            entry.actor.clone(),
            entry.action.clone(),
            entry.object.clone(),
        ]);
    }
    table.print();
    println!("{}", output::page_footer(&page, "entries"));
    Ok(())
}
