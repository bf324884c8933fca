//! `airlift deployment create|list|show|cancel`: roll a package out to
//! devices and follow it.

use super::{parse_deployment_id, parse_device_id, parse_package_id, parse_pair, unique_map};
use crate::client::Client;
use crate::output::{self, Table};
use airlift_protocol::management::{CreateDeploymentRequest, Deployment, Strategy, Target};
use airlift_protocol::state::UpdateState;
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use anyhow::{Context, Result};
use clap::{ArgGroup, Args, Subcommand};
use std::collections::BTreeMap;

/// `airlift deployment …`
#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Roll a package out to devices.
    #[command(
        long_about = "Roll a package out to devices.\n\n\
            Targets either the accepted devices named with --device, or every accepted device \
            carrying --tag, or every accepted device whose inventory matches all --attribute \
            values (device_type=T matches the reported device type); tag and attribute \
            targets also reach devices that match later. Devices the package does not fit are \
            marked incompatible and never offered it. Needs an operator or admin token.",
        after_help = "Examples:
  airlift deployment create --name 'rootfs 1.2.0 canary' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --tag canary
  airlift deployment create --name 'rootfs 1.2.0 eu' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --attribute device_type=rpi4 --attribute region=eu-west
  airlift deployment create --name 'hotfix bench' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --device 0190d5e6-0a1b-7c2d-8e3f-405162738495"
    )]
    Create(CreateArgs),

    /// List deployments, newest first, with device counts per state.
    #[command(after_help = "Examples:
  airlift deployment list
  airlift deployment list --json | jq -r '.[] | select(.status == \"active\") | .id'")]
    List(ListArgs),

    /// Show a deployment: counts per state and every device's state.
    #[command(after_help = "Examples:
  airlift deployment show 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b
  airlift deployment show 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b --json | jq .counts")]
    Show(ShowArgs),

    /// Cancel an active deployment.
    #[command(
        long_about = "Cancel an active deployment: devices not yet done are not offered it any \
            more, and a device mid-download is told to stop. Devices that already switched \
            keep the new version. Needs an operator or admin token.",
        after_help = "Examples:
  airlift deployment cancel 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b"
    )]
    Cancel(CancelArgs),
}

/// Arguments of `airlift deployment create`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["devices", "tag", "attributes"])
))]
pub struct CreateArgs {
    /// A name for people, e.g. 'rootfs 1.2.0 canary'.
    #[arg(long)]
    pub name: String,
    /// The id of the package to install (`airlift package list` shows them).
    #[arg(long = "package", value_name = "PACKAGE_ID", value_parser = parse_package_id)]
    pub package: PackageId,
    /// Target this accepted device; repeatable.
    #[arg(long = "device", value_name = "DEVICE_ID", value_parser = parse_device_id)]
    pub devices: Vec<DeviceId>,
    /// Target every accepted device carrying this tag, now and later.
    #[arg(long)]
    pub tag: Option<String>,
    /// Target accepted devices whose inventory attribute KEY is VALUE, now and later; repeatable, all must match.
    #[arg(long = "attribute", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub attributes: Vec<(String, String)>,
    /// Print the deployment as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift deployment list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the deployments as a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift deployment show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The deployment's id (`airlift deployment list` shows them).
    #[arg(value_parser = parse_deployment_id)]
    pub id: DeploymentId,
    /// Print the deployment and its devices as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift deployment cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The deployment's id.
    #[arg(value_parser = parse_deployment_id)]
    pub id: DeploymentId,
    /// Print the cancelled deployment as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs one `airlift deployment` subcommand.
pub async fn run(command: &DeploymentCommand, client: &Client) -> Result<()> {
    match command {
        DeploymentCommand::Create(args) => create(args, client).await,
        DeploymentCommand::List(args) => list(args, client).await,
        DeploymentCommand::Show(args) => show(args, client).await,
        DeploymentCommand::Cancel(args) => cancel(args, client).await,
    }
}

async fn create(args: &CreateArgs, client: &Client) -> Result<()> {
    let target = if let Some(tag) = &args.tag {
        Target::Tag(tag.clone())
    } else if !args.attributes.is_empty() {
        Target::Attributes(unique_map(&args.attributes, "--attribute")?)
    } else {
        Target::Devices(args.devices.clone())
    };
    let request = CreateDeploymentRequest {
        name: args.name.clone(),
        package_id: args.package,
        target,
        strategy: Strategy::All,
    };
    let deployment = client
        .create_deployment(&request)
        .await
        .with_context(|| format!("creating deployment {:?}", args.name))?;
    if args.json {
        return output::print_json(&deployment);
    }
    println!("created deployment {}", deployment.id);
    print_deployment(&deployment);
    Ok(())
}

async fn list(args: &ListArgs, client: &Client) -> Result<()> {
    let deployments = client
        .list_deployments()
        .await
        .context("listing deployments")?;
    if args.json {
        return output::print_json(&deployments);
    }
    if deployments.is_empty() {
        println!("no deployments; create one with `airlift deployment create`");
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID", "NAME", "STATUS", "PACKAGE", "TARGET", "DEVICES", "CREATED",
    ]);
    for deployment in &deployments {
        table.row(vec![
            deployment.id.to_string(),
            deployment.name.clone(),
            deployment.status.to_string(),
            deployment.package_id.to_string(),
            target(&deployment.target),
            counts(&deployment.counts),
            output::time(&deployment.created_at),
        ]);
    }
    table.print();
    Ok(())
}

async fn show(args: &ShowArgs, client: &Client) -> Result<()> {
    let detail = client
        .deployment(args.id)
        .await
        .with_context(|| format!("reading deployment {}", args.id))?;
    if args.json {
        return output::print_json(&detail);
    }
    print_deployment(&detail.deployment);
    println!();
    if detail.devices.is_empty() {
        println!("no devices");
        return Ok(());
    }
    let mut table = Table::new(&["DEVICE", "STATE", "UPDATED", "MESSAGE"]);
    for device in &detail.devices {
        table.row(vec![
            device.device_id.to_string(),
            device.state.to_string(),
            output::time(&device.updated_at),
            device
                .message
                .clone()
                .unwrap_or_default()
                .replace('\n', " "),
        ]);
    }
    table.print();
    Ok(())
}

async fn cancel(args: &CancelArgs, client: &Client) -> Result<()> {
    let deployment = client
        .cancel_deployment(args.id)
        .await
        .with_context(|| format!("cancelling deployment {}", args.id))?;
    if args.json {
        return output::print_json(&deployment);
    }
    println!("cancelled deployment {}", deployment.id);
    print_deployment(&deployment);
    Ok(())
}

fn print_deployment(deployment: &Deployment) {
    output::field("id", deployment.id);
    output::field("name", &deployment.name);
    output::field("status", deployment.status);
    output::field("package", deployment.package_id);
    output::field("target", target(&deployment.target));
    output::field("strategy", strategy(&deployment.strategy));
    output::field("created", output::time(&deployment.created_at));
    if let Some(finished) = &deployment.finished_at {
        output::field("finished", output::time(finished));
    }
    output::field("devices", counts(&deployment.counts));
}

/// `tag canary`, `3 devices`, `attributes region=eu-west`.
fn target(target: &Target) -> String {
    match target {
        Target::Devices(ids) if ids.len() == 1 => format!("device {}", ids[0]),
        Target::Devices(ids) => format!("{} devices", ids.len()),
        Target::Tag(tag) => format!("tag {tag}"),
        Target::Attributes(attributes) => {
            format!("attributes {}", output::pairs(attributes, "none"))
        }
    }
}

fn strategy(strategy: &Strategy) -> &'static str {
    match strategy {
        Strategy::All => "all at once",
    }
}

/// `3 in all: 2 success, 1 pending` (states in the order of an update's path).
fn counts(counts: &BTreeMap<UpdateState, u64>) -> String {
    let total: u64 = counts.values().sum();
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        format!("{total}: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_a_sentence() {
        let mut map = BTreeMap::new();
        assert_eq!(counts(&map), "none");
        map.insert(UpdateState::Success, 2);
        map.insert(UpdateState::Pending, 1);
        map.insert(UpdateState::Failure, 0);
        assert_eq!(counts(&map), "3: 1 pending, 2 success");
    }
}
