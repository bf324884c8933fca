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
            and id; the rollout engine's own decisions, such as an automatic rollback, name \
            `rollout engine`), what (an action such as deployment.create) and on which object. \
            Filter by --actor (a token's name, or its whole `name (id)`), --action (one action, \
            or a family ending with a dot), --target (the object's id) and a span of time \
            (--since, --until; RFC 3339, or a duration back from now such as 2h or 7d). Needs an \
            admin token.",
        after_help = "Examples:
  airlift audit list
  airlift audit list --actor ci-release --action deployment.
  airlift audit list --action token.delete --json | jq -r '.items[] | \"\\(.at) \\(.actor) \\(.object)\"'
  airlift audit list --target 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b --since 7d
  airlift audit list --action deployment.rollback --since 2026-12-01T00:00:00Z --until 2026-12-08T00:00:00Z
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
    /// Only changes to this object: a deployment's, device's, package's or token's id.
    #[arg(long, value_name = "ID")]
    pub target: Option<String>,
    /// Only entries at or after this time: RFC 3339, or a duration back from now (2h, 7d).
    #[arg(long, value_name = "TIME", value_parser = parse_when)]
    pub since: Option<When>,
    /// Only entries before this time: RFC 3339, or a duration back from now.
    #[arg(long, value_name = "TIME", value_parser = parse_when)]
    pub until: Option<When>,
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
        object: args.target.clone(),
        since: args.since.map(|w| w.at(chrono::Utc::now())),
        until: args.until.map(|w| w.at(chrono::Utc::now())),
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
        let filtered = args.actor.is_some()
            || args.action.is_some()
            || args.before.is_some()
            || args.target.is_some()
            || args.since.is_some()
            || args.until.is_some();
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

/// A point in time: given, or a duration back from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This time.
    At(chrono::DateTime<chrono::Utc>),
    /// This long before now.
    Ago(std::time::Duration),
}

impl When {
    /// The time it names, with `now` as now.
    pub fn at(self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        match self {
            When::At(at) => at,
            When::Ago(ago) => chrono::Duration::from_std(ago)
                .ok()
                .and_then(|ago| now.checked_sub_signed(ago))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
        }
    }
}

/// RFC 3339 (`2026-12-01T00:00:00Z`) or a duration (`90m`, `2h`, `7d`).
fn parse_when(text: &str) -> Result<When, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(When::At(at.with_timezone(&chrono::Utc)));
    }
    super::strategy::duration(text).map(When::Ago).map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time (2026-12-01T00:00:00Z) nor a duration back from now (2h, 7d)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_a_duration_back_from_now() {
        let now = chrono::Utc::now();
        let at = parse_when("2026-12-01T00:00:00+01:00").expect("a time");
        assert_eq!(at.at(now).to_rfc3339(), "2026-11-30T23:00:00+00:00");
        let ago = parse_when("2h").expect("a duration");
        assert_eq!(ago.at(now), now - chrono::Duration::hours(2));
        let error = parse_when("yesterday").expect_err("neither");
        assert!(error.contains("RFC 3339"), "{error}");
    }
}
