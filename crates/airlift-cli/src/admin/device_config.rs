//! `airlift device config get|set|unset`: the desired configuration of a
//! device (its shadow), of every device carrying a tag, of every device
//! whose inventory attributes match, or of every device a target
//! expression matches — and, for a device, what it reported and what
//! still differs.

use crate::client::{Client, DeviceQuery};
use crate::output::{self, Table};
use airlift_protocol::shadow::{DeviceShadow, GroupShadow, VersionedDocument};
use airlift_protocol::state::DeviceStatus;
use airlift_protocol::target_expr::TargetExpr;
use airlift_protocol::DeviceId;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

/// `airlift device config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the desired configuration: of a device (with what it reported
    /// and what differs), a tag, an attribute filter, or an expression.
    #[command(
        long_about = "Show the desired configuration.\n\n\
            For a device: every key of its effective document (its own keys over its groups'), \
            where the value comes from, what the device reported, and whether it has converged; \
            the last failure the device reported, if any. For --tag, --attribute or --where: \
            that group's document.",
        after_help = "Examples:
  airlift device config get 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56
  airlift device config get --tag canary
  airlift device config get --attribute site=berlin --json
  airlift device config get --where 'tag:lab AND installed.rootfs < 2.4.0'"
    )]
    Get(GetArgs),

    /// Set keys of a desired configuration: `KEY=VALUE`, the value as JSON
    /// if it parses (`port=8080`, `debug=true`, `servers=["a","b"]`), else
    /// as a string.
    #[command(
        long_about = "Set keys of a desired configuration.\n\n\
            Each KEY=VALUE sets one top-level key; VALUE is taken as JSON if it parses (a \
            number, true/false, an object, an array, a quoted string), else as a string. A \
            device's own keys win over its tags', filters' and expressions'; between groups, \
            the key set last wins. The devices concerned are nudged to check in; each applies \
            the change through its `[shadow]` module and reports back.\n\n\
            With --where, the document is for every device the target expression matches \
            (docs/targets.md), decided at each check-in from what the device reports then: a \
            device that comes to match starts receiving the keys, one that stops matching \
            (say, its installed version moves past the bound) is asked to remove them. The \
            command says how many accepted devices match today.",
        after_help = "Examples:
  airlift device config set 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 log_level=debug
  airlift device config set --tag canary log_level=debug max_connections=64
  airlift device config set --attribute site=berlin ntp='[\"ntp1.example\",\"ntp2.example\"]'
  airlift device config set --where 'tag:lab AND installed.rootfs < 2.4.0' banner='update due'"
    )]
    Set(ChangeArgs),

    /// Remove keys from a desired configuration (a device then falls back
    /// to its groups' value, or removes the key).
    #[command(after_help = "Examples:
  airlift device config unset 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 log_level
  airlift device config unset --tag canary log_level max_connections
  airlift device config unset --where 'tag:lab AND installed.rootfs < 2.4.0' banner")]
    Unset(ChangeArgs),
}

/// Whose configuration: a device (first argument), a tag, an attribute
/// filter, or a target expression.
#[derive(Debug, Args)]
pub struct Target {
    /// A tag's configuration, for every device carrying it.
    #[arg(long, conflicts_with_all = ["attributes", "where_expression"])]
    pub tag: Option<String>,
    /// An attribute filter's configuration, for every device whose
    /// inventory attribute KEY is VALUE; repeatable, all must match.
    #[arg(
        long = "attribute",
        value_name = "KEY=VALUE",
        conflicts_with = "where_expression"
    )]
    pub attributes: Vec<String>,
    /// A target expression's configuration, for every device it matches
    /// at its check-in (docs/targets.md), e.g. `tag:lab AND
    /// installed.rootfs < 2.4.0`.
    #[arg(long = "where", value_name = "EXPRESSION", value_parser = super::parse_boxed_target_expr)]
    pub where_expression: Option<Box<TargetExpr>>,
}

impl Target {
    /// Whether a group is named (rather than a device).
    fn is_group(&self) -> bool {
        self.tag.is_some() || !self.attributes.is_empty() || self.where_expression.is_some()
    }
}

/// Arguments of `airlift device config get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The device (unless --tag, --attribute or --where is given).
    #[arg(
        value_name = "DEVICE",
        required_unless_present_any = ["tag", "attributes", "where_expression"]
    )]
    pub device: Option<String>,
    #[command(flatten)]
    pub target: Target,
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift device config set|unset`.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// `DEVICE KEY=VALUE…` (set) or `DEVICE KEY…` (unset); without DEVICE
    /// when --tag, --attribute or --where is given.
    #[arg(value_name = "ARGS", required = true, num_args = 1..)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub target: Target,
    /// Print the new document as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where a target's desired document lives, and how it is named.
enum Whose {
    Device(DeviceId),
    Group(String, String),
    /// An expression's group: its document's path, and the expression.
    Expression(String, TargetExpr),
}

impl Whose {
    fn of(target: &Target, device: Option<&str>) -> Result<Self> {
        if let Some(tag) = &target.tag {
            return Ok(Self::Group(
                format!("/shadows/tags/{}", encode(tag)),
                format!("tag {tag}"),
            ));
        }
        if !target.attributes.is_empty() {
            if let Some(bad) = target.attributes.iter().find(|p| !p.contains('=')) {
                bail!("--attribute {bad:?}: give KEY=VALUE");
            }
            let text = target.attributes.join(",");
            return Ok(Self::Group(
                format!("/shadows/attributes?attributes={}", encode(&text)),
                format!("devices with {text}"),
            ));
        }
        if let Some(expression) = &target.where_expression {
            return Ok(Self::Expression(
                format!(
                    "/shadows/expression?where={}",
                    encode(&expression.to_string())
                ),
                (**expression).clone(),
            ));
        }
        let device = device.context("name a DEVICE, or give --tag, --attribute or --where")?;
        let id = device.parse::<DeviceId>().map_err(|_| {
            anyhow::anyhow!("{device:?} is not a device id; `airlift device list` shows them")
        })?;
        Ok(Self::Device(id))
    }

    fn desired_path(&self) -> String {
        match self {
            Self::Device(id) => format!("/devices/{id}/shadow/desired"),
            Self::Group(path, _) | Self::Expression(path, _) => path.clone(),
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Device(id) => format!("device {id}"),
            Self::Group(_, name) => name.clone(),
            Self::Expression(_, expression) => format!("devices where {expression}"),
        }
    }
}

/// Runs one `airlift device config` subcommand.
pub async fn run(command: &ConfigCommand, client: &Client) -> Result<()> {
    match command {
        ConfigCommand::Get(args) => get(args, client).await,
        ConfigCommand::Set(args) => change(args, true, client).await,
        ConfigCommand::Unset(args) => change(args, false, client).await,
    }
}

async fn get(args: &GetArgs, client: &Client) -> Result<()> {
    let whose = Whose::of(&args.target, args.device.as_deref())?;
    match &whose {
        Whose::Device(id) => {
            let shadow: DeviceShadow = client
                .call(Method::GET, &format!("/devices/{id}/shadow"), None)
                .await
                .with_context(|| format!("reading the configuration of device {id}"))?;
            if args.json {
                return output::print_json(&shadow);
            }
            print_shadow(&shadow);
        }
        Whose::Group(path, _) | Whose::Expression(path, _) => {
            let name = whose.name();
            let group: GroupShadow = client
                .call(Method::GET, path, None)
                .await
                .with_context(|| format!("reading the configuration of {name}"))?;
            if args.json {
                return output::print_json(&group);
            }
            print_document(&group.desired);
        }
    }
    Ok(())
}

fn print_shadow(shadow: &DeviceShadow) {
    if shadow.effective.is_empty() && shadow.reported.document.is_empty() {
        println!(
            "no configuration is desired for device {}",
            shadow.device_id
        );
    } else {
        let mut table = Table::new(&["KEY", "DESIRED", "FROM", "REPORTED", "CONVERGED"]);
        let keys: std::collections::BTreeSet<&String> = shadow
            .effective
            .keys()
            .chain(shadow.reported.document.keys())
            .collect();
        for key in keys {
            let show = |v: Option<&Value>| v.map_or_else(|| "-".into(), Value::to_string);
            table.row(vec![
                key.clone(),
                show(shadow.effective.get(key)),
                shadow
                    .sources
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
                show(shadow.reported.document.get(key)),
                if shadow.delta.contains_key(key) {
                    "no"
                } else {
                    "yes"
                }
                .into(),
            ]);
        }
        table.print();
    }
    if let Some(failure) = &shadow.failure {
        println!(
            "the device failed to apply it at {}: {}",
            output::time(&failure.at),
            failure.reason
        );
    } else if shadow.delta.is_empty() {
        println!("converged (reported version {})", shadow.reported.version);
    } else {
        println!("{} key(s) still to apply", shadow.delta.len());
    }
}

fn print_document(document: &VersionedDocument) {
    if document.document.is_empty() {
        println!("no keys");
        return;
    }
    let mut table = Table::new(&["KEY", "VALUE", "SET"]);
    for (key, value) in &document.document {
        table.row(vec![
            key.clone(),
            value.to_string(),
            document
                .metadata
                .get(key)
                .map_or_else(|| "-".into(), output::time),
        ]);
    }
    table.print();
    println!("version {}", document.version);
}

async fn change(args: &ChangeArgs, set: bool, client: &Client) -> Result<()> {
    let (device, keys) = match args.target.is_group() {
        true => (None, &args.args[..]),
        false => (args.args.first().map(String::as_str), &args.args[1..]),
    };
    let whose = Whose::of(&args.target, device)?;
    if keys.is_empty() {
        bail!(
            "give at least one {}",
            if set { "KEY=VALUE" } else { "KEY" }
        );
    }
    let mut patch = serde_json::Map::new();
    for item in keys {
        let (key, value) = if set {
            let (key, text) = item
                .split_once('=')
                .with_context(|| format!("{item:?}: give KEY=VALUE"))?;
            let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()));
            (key, value)
        } else {
            (item.as_str(), Value::Null)
        };
        if key.is_empty() {
            bail!("{item:?}: the key is empty");
        }
        patch.insert(key.to_owned(), value);
    }
    let body = Value::Object(patch);
    let name = whose.name();
    let answer: Value = client
        .call(Method::PATCH, &whose.desired_path(), Some(&body))
        .await
        .with_context(|| format!("changing the configuration of {name}"))?;
    if args.json {
        return output::print_json(&answer);
    }
    let document: VersionedDocument = match &whose {
        Whose::Device(_) => serde_json::from_value(answer)?,
        Whose::Group(..) | Whose::Expression(..) => {
            serde_json::from_value::<GroupShadow>(answer)?.desired
        }
    };
    println!(
        "{} {} key(s) of {name}; its devices are asked to check in",
        if set { "set" } else { "unset" },
        keys.len()
    );
    if let (true, Whose::Expression(_, expression)) = (set, &whose) {
        let reached = matching_today(client, expression).await?;
        println!(
            "{reached} accepted device(s) match it today; the match is decided again at each \
             check-in from what the device reports"
        );
    }
    print_document(&document);
    Ok(())
}

/// How many accepted devices `expression` matches now (the device list
/// counts them).
async fn matching_today(client: &Client, expression: &TargetExpr) -> Result<u64> {
    let query = DeviceQuery {
        status: Some(DeviceStatus::Accepted),
        where_expression: Some(expression.clone()),
        per_page: Some(1),
        ..DeviceQuery::default()
    };
    let page = client
        .list_devices(&query)
        .await
        .context("counting the devices the expression matches")?;
    Ok(page.total)
}

/// Percent-encodes everything but unreserved characters, for a path
/// segment or a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_characters_only() {
        assert_eq!(
            encode("site=berlin,rack=2 b"),
            "site%3Dberlin%2Crack%3D2%20b"
        );
        assert_eq!(encode("canary-1.x"), "canary-1.x");
    }
}
