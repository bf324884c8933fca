//! `airlift device …`: list, inspect, admit, retire and tag devices.

use super::{parse_device_id, parse_filter_pair, parse_pair, unique_map};
use crate::client::{Client, DeviceAction, DeviceQuery};
use crate::output::{self, Table};
use airlift_package::PublicKey;
use airlift_protocol::management::{Device, DeviceDetail, PreauthorizeRequest, SetTagsRequest};
use airlift_protocol::state::DeviceStatus;
use airlift_protocol::DeviceId;
use anyhow::{Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::PathBuf;

/// `airlift device …`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List devices, with filters, a page at a time.
    #[command(
        long_about = "List devices, with filters, a page at a time.\n\n\
            Every filter given must match. Devices are listed oldest first; the last line says \
            how many match in all and how to see the next page.",
        after_help = "Examples:
  airlift device list --status pending
  airlift device list --device-type rpi4 --tag canary
  airlift device list --attribute region=eu-west --installed rootfs=1.2.0
  airlift device list --where 'tag:lab AND installed.rootfs < 2.4.0'
  airlift device list --where 'attr.region = eu-* OR NOT (device_type = gateway)'
  airlift device list --offline   # not heard of for 3 poll intervals
  airlift device list --page 2 --per-page 50 --json | jq -r '.items[].id'"
    )]
    List(ListArgs),

    /// Show one device: inventory and update history.
    #[command(after_help = "Examples:
  airlift device show 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56
  airlift device show 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --json | jq .history")]
    Show(ShowArgs),

    /// Accept a device: it may authenticate and receive updates.
    #[command(after_help = "Examples:
  airlift device list --status pending
  airlift device accept 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56")]
    Accept(StatusArgs),

    /// Reject a device: its authentication is refused from now on.
    #[command(after_help = "Examples:
  airlift device reject 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56")]
    Reject(StatusArgs),

    /// Retire a device for good: its key stops working.
    #[command(
        long_about = "Retire a device for good: its key stops working.\n\n\
            A decommissioned device cannot be accepted again; if the hardware comes back with a \
            new key, pre-authorise that key instead.",
        after_help = "Examples:
  airlift device decommission 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56"
    )]
    Decommission(StatusArgs),

    /// Ask a device to check in now, instead of at its next poll.
    #[command(
        long_about = "Ask a device to check in now, instead of at its next poll.\n\n\
            A device holding a push connection (the server's stream, on any instance, or MQTT) \
            checks in within a second; one that only polls hears it at its next poll. The nudge \
            carries nothing: the device checks in and verifies as always.",
        after_help = "Examples:
  airlift device check-in 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56"
    )]
    CheckIn(StatusArgs),

    /// Announce a device before it first connects.
    #[command(
        long_about = "Announce a device before it first connects.\n\n\
            The device is accepted on its first contact if it presents these identity \
            attributes and this public key, with no operator step. Needs an operator or admin \
            token.",
        after_help = "Examples:
  airlift device preauthorize --identity serial=RPI-00017 --identity mac=dc:a6:32:01:02:03 \\
      --public-key rpi-00017.pub --tag canary"
    )]
    Preauthorize(PreauthorizeArgs),

    /// Replace a device's tags.
    #[command(
        long_about = "Replace a device's tags: the device ends up with exactly the --tag values \
            given. Deployments that target a tag reach devices that carry it later too.",
        after_help = "Examples:
  airlift device tag 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --tag canary --tag site:berlin
  airlift device tag 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --clear"
    )]
    Tag(TagArgs),

    /// Desired configuration (the device shadow): get, set and unset keys
    /// for a device, a tag or an attribute filter.
    #[command(
        subcommand,
        long_about = "Desired configuration (the device shadow): get, set and unset keys for a \
            device, a tag or an attribute filter, and see what each device reported.\n\n\
            Devices apply it through the `[shadow]` module of their agent.toml \
            (docs/operations.md, \"Device configuration (shadow)\").",
        after_help = "Examples:
  airlift device config set --tag canary log_level=debug
  airlift device config get 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56
  airlift device config unset --tag canary log_level"
    )]
    Config(super::device_config::ConfigCommand),

    /// Reset a device stuck in one state of its update, with a reason.
    #[command(
        long_about = super::repair::RESET_ABOUT,
        after_help = "Examples:
  airlift device reset 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --reason 'stuck rebooting since the power cut'"
    )]
    Reset(super::repair::DeviceResetArgs),
}

fn status_parser() -> impl TypedValueParser<Value = DeviceStatus> {
    PossibleValuesParser::new(DeviceStatus::ALL.iter().map(DeviceStatus::as_str))
        .try_map(|text| text.parse::<DeviceStatus>())
}

/// Arguments of `airlift device list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only devices with this admission status.
    #[arg(long, value_parser = status_parser())]
    pub status: Option<DeviceStatus>,
    /// Only devices that reported this device type.
    #[arg(long, value_name = "TYPE")]
    pub device_type: Option<String>,
    /// Only devices carrying this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Only devices whose inventory attribute KEY is VALUE; repeatable, all must match.
    #[arg(long = "attribute", value_name = "KEY=VALUE", value_parser = parse_filter_pair)]
    pub attributes: Vec<(String, String)>,
    /// Only devices running software NAME at VERSION; repeatable, all must match.
    #[arg(long = "installed", value_name = "NAME=VERSION", value_parser = parse_filter_pair)]
    pub installed: Vec<(String, String)>,
    /// Only devices matching this target expression (docs/targets.md):
    /// AND, OR, NOT and parentheses over tag:TAG, attr.KEY = VALUE,
    /// device_type = TYPE, status = STATUS and installed.NAME < VERSION
    /// (< <= = != >= >); `*` and `?` are wildcards in values.
    #[arg(long = "where", value_name = "EXPRESSION", value_parser = super::parse_target_expr)]
    pub where_expression: Option<airlift_protocol::target_expr::TargetExpr>,
    /// Only accepted devices not heard of for 3 poll intervals (the
    /// server's --poll-interval; a device that never checked in counts
    /// from its first contact).
    #[arg(long)]
    pub offline: bool,
    /// Which page, from 1.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub page: u32,
    /// Devices per page, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub per_page: u32,
    /// Print the page ({items, total, page, per_page}) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift device show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The device's id (`airlift device list` shows them).
    #[arg(value_parser = parse_device_id)]
    pub id: DeviceId,
    /// Print the device, its key id and its history as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift device accept|reject|decommission`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The device's id (`airlift device list` shows them).
    #[arg(value_parser = parse_device_id)]
    pub id: DeviceId,
    /// Print the device as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift device preauthorize`.
#[derive(Debug, Args)]
pub struct PreauthorizeArgs {
    /// An identity attribute the device will send, e.g. serial=RPI-00017; repeatable.
    #[arg(long = "identity", value_name = "KEY=VALUE", required = true, value_parser = parse_pair)]
    pub identity: Vec<(String, String)>,
    /// The device's Ed25519 public key file (SPKI PEM).
    #[arg(long, value_name = "FILE")]
    pub public_key: PathBuf,
    /// A tag to start with; repeatable.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Print the device as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift device tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The device's id.
    #[arg(value_parser = parse_device_id)]
    pub id: DeviceId,
    /// A tag the device should carry; repeatable.
    #[arg(
        long = "tag",
        required_unless_present = "clear",
        conflicts_with = "clear"
    )]
    pub tags: Vec<String>,
    /// Remove every tag.
    #[arg(long)]
    pub clear: bool,
    /// Print the device as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs one `airlift device` subcommand.
pub async fn run(command: &DeviceCommand, client: &Client) -> Result<()> {
    match command {
        DeviceCommand::List(args) => list(args, client).await,
        DeviceCommand::Show(args) => show(args, client).await,
        DeviceCommand::Accept(args) => set_status(args, DeviceAction::Accept, client).await,
        DeviceCommand::Reject(args) => set_status(args, DeviceAction::Reject, client).await,
        DeviceCommand::Decommission(args) => {
            set_status(args, DeviceAction::Decommission, client).await
        }
        DeviceCommand::CheckIn(args) => check_in(args, client).await,
        DeviceCommand::Preauthorize(args) => preauthorize(args, client).await,
        DeviceCommand::Tag(args) => tag(args, client).await,
        DeviceCommand::Config(command) => super::device_config::run(command, client).await,
        DeviceCommand::Reset(args) => super::repair::reset_device(args, client).await,
    }
}

async fn list(args: &ListArgs, client: &Client) -> Result<()> {
    let query = DeviceQuery {
        status: args.status,
        device_type: args.device_type.clone(),
        tag: args.tag.clone(),
        attributes: args.attributes.clone(),
        installed: args.installed.clone(),
        where_expression: args.where_expression.clone(),
        page: Some(args.page),
        per_page: Some(args.per_page),
        offline: args.offline,
    };
    let page = client
        .list_devices(&query)
        .await
        .context("listing devices")?;
    if args.json {
        return output::print_json(&page);
    }
    let pages = page.total.div_ceil(u64::from(page.per_page.max(1))).max(1);
    if page.items.is_empty() {
        if page.total == 0 && args.offline {
            println!(
                "no devices match: none is silent for {} poll intervals",
                crate::client::OFFLINE_POLLS
            );
        } else if page.total == 0 {
            println!("no devices match");
        } else {
            println!(
                "page {} is empty: {} devices match, {} pages of {}",
                page.page, page.total, pages, page.per_page
            );
        }
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID",
        "STATUS",
        "DEVICE TYPE",
        "IDENTITY",
        "TAGS",
        "LAST CHECK-IN",
    ]);
    for device in &page.items {
        table.row(vec![
            device.id.to_string(),
            device.status.to_string(),
            device.device_type.clone().unwrap_or_else(|| "-".into()),
            output::pairs(&device.identity, "-").replace(", ", ","),
            output::list(&device.tags, "-").replace(", ", ","),
            device
                .last_check_in
                .as_ref()
                .map_or_else(|| "never".into(), output::time),
        ]);
    }
    table.print();
    let mut footer = format!(
        "page {} of {pages}, {} of {} devices",
        page.page,
        page.items.len(),
        page.total
    );
    if u64::from(page.page) < pages {
        footer.push_str(&format!("; next: --page {}", page.page + 1));
    }
    println!("{footer}");
    Ok(())
}

async fn show(args: &ShowArgs, client: &Client) -> Result<()> {
    let detail = client
        .device(args.id)
        .await
        .with_context(|| format!("reading device {}", args.id))?;
    if args.json {
        return output::print_json(&ShowJson {
            key_id: key_id(&detail.device.public_key),
            detail: &detail,
        });
    }
    print_device(&detail.device);
    println!();
    if detail.history.is_empty() {
        println!("no update history");
        return Ok(());
    }
    println!("update history, newest first:");
    let mut table = Table::new(&["AT", "DEPLOYMENT", "STATE", "APPLIED", "MESSAGE"]);
    for event in &detail.history {
        table.row(vec![
            output::time(&event.at),
            event.deployment_id.to_string(),
            event.state.to_string(),
            if event.applied { "yes" } else { "no (late)" }.into(),
            event.message.clone().unwrap_or_default().replace('\n', " "),
        ]);
    }
    table.print();
    Ok(())
}

fn print_device(device: &Device) {
    output::field("id", device.id);
    output::field("status", device.status);
    output::field("identity", output::pairs(&device.identity, "none"));
    output::field("public key", key_summary(&device.public_key));
    output::field("tags", output::list(&device.tags, "none"));
    output::field(
        "device type",
        device.device_type.as_deref().unwrap_or("not reported"),
    );
    output::field(
        "hardware revision",
        device
            .hardware_revision
            .as_deref()
            .unwrap_or("not reported"),
    );
    output::field(
        "installed",
        output::pairs(&device.installed, "nothing reported"),
    );
    output::field("security version", device.security_version);
    output::field("attributes", output::pairs(&device.attributes, "none"));
    output::field("created", output::time(&device.created_at));
    output::field(
        "last check-in",
        device
            .last_check_in
            .as_ref()
            .map_or_else(|| "never".into(), output::time),
    );
}

/// `device show --json`: the device and its history as the server sends
/// them, and the key id the text output shows.
#[derive(Debug, Serialize)]
struct ShowJson<'a> {
    #[serde(flatten)]
    detail: &'a DeviceDetail,
    /// The id of the device's public key; null if it is not an Ed25519
    /// key this airlift reads.
    key_id: Option<String>,
}

/// The key id of an Ed25519 public key in PEM form.
fn key_id(pem: &str) -> Option<String> {
    PublicKey::from_pem(pem.trim())
        .ok()
        .map(|key| key.key_id().to_string())
}

/// `key id 3f2a…` for an Ed25519 PEM, else a note.
fn key_summary(pem: &str) -> String {
    match key_id(pem) {
        Some(id) => format!("Ed25519, key id {id}"),
        None => "not an Ed25519 key this airlift reads".into(),
    }
}

async fn set_status(args: &StatusArgs, action: DeviceAction, client: &Client) -> Result<()> {
    let device = client
        .set_device_status(args.id, action)
        .await
        .with_context(|| format!("{} device {}", verb(action), args.id))?;
    if args.json {
        return output::print_json(&device);
    }
    println!("device {} is now {}", device.id, device.status);
    Ok(())
}

async fn check_in(args: &StatusArgs, client: &Client) -> Result<()> {
    client
        .request_check_in(args.id)
        .await
        .with_context(|| format!("asking device {} to check in", args.id))?;
    if args.json {
        return output::print_json(&serde_json::json!({"device_id": args.id, "asked": true}));
    }
    println!("asked device {} to check in now", args.id);
    Ok(())
}

fn verb(action: DeviceAction) -> &'static str {
    match action {
        DeviceAction::Accept => "accepting",
        DeviceAction::Reject => "rejecting",
        DeviceAction::Decommission => "decommissioning",
    }
}

async fn preauthorize(args: &PreauthorizeArgs, client: &Client) -> Result<()> {
    let path = &args.public_key;
    let pem = crate::keys::read_pem(path, "public key")?;
    if pem.contains("PRIVATE KEY") {
        anyhow::bail!(
            "{} is a private key; give the device's public key (SPKI PEM, `-----BEGIN PUBLIC KEY-----`)",
            path.display()
        );
    }
    PublicKey::from_pem(&pem)
        .with_context(|| format!("{} is not an Ed25519 public key (SPKI PEM)", path.display()))?;
    let request = PreauthorizeRequest {
        identity: unique_map(&args.identity, "--identity")?,
        public_key: pem,
        tags: args.tags.clone(),
    };
    let device = client
        .preauthorize_device(&request)
        .await
        .context("pre-authorising the device")?;
    if args.json {
        return output::print_json(&device);
    }
    println!(
        "pre-authorised device {}: accepted on first contact with this key",
        device.id
    );
    print_device(&device);
    Ok(())
}

async fn tag(args: &TagArgs, client: &Client) -> Result<()> {
    let request = SetTagsRequest {
        tags: args.tags.clone(),
    };
    let device = client
        .set_device_tags(args.id, &request)
        .await
        .with_context(|| format!("setting the tags of device {}", args.id))?;
    if args.json {
        return output::print_json(&device);
    }
    println!(
        "device {} now carries: {}",
        device.id,
        output::list(&device.tags, "no tags")
    );
    Ok(())
}
