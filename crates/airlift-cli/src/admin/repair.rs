//! `airlift deployment retry|reset` and `airlift device reset`: offer a
//! deployment again to its failed devices, and reset a device stuck in one
//! state of its update, with a reason for the audit log.

use super::{parse_deployment_id, parse_device_id};
use crate::client::Client;
use crate::output;
use airlift_protocol::repair::{
    ResetRequest, ResetResult, RetryRequest, RetryResult, DEFAULT_RETRY_LIMIT, MAX_RETRY_LIMIT,
};
use airlift_protocol::{DeploymentId, DeviceId};
use anyhow::{Context, Result};
use clap::Args;

/// Arguments of `airlift deployment retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The deployment's id (`airlift deployment list` shows them).
    #[arg(value_parser = parse_deployment_id)]
    pub id: DeploymentId,
    /// Leave out devices already offered it again this many times (1–100).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RETRY_LIMIT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RETRY_LIMIT)))]
    pub limit: u32,
    /// Print what it did as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift deployment reset`.
#[derive(Debug, Args)]
pub struct DeploymentResetArgs {
    /// The deployment's id.
    #[arg(value_parser = parse_deployment_id)]
    pub id: DeploymentId,
    /// The stuck device's id (`airlift deployment show ID --state rebooting` finds them).
    #[arg(long, value_name = "DEVICE_ID", value_parser = parse_device_id)]
    pub device: DeviceId,
    /// Why, for the audit log and the device's history.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Reset it before its device timeout has passed (you know it is
    /// stuck: re-imaged, replaced); audited as forced.
    #[arg(long)]
    pub force: bool,
    /// Print what it did as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift device reset`.
#[derive(Debug, Args)]
pub struct DeviceResetArgs {
    /// The stuck device's id.
    #[arg(value_parser = parse_device_id)]
    pub id: DeviceId,
    /// Why, for the audit log and the device's history.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Reset it before its device timeout has passed (you know it is
    /// stuck: re-imaged, replaced); audited as forced.
    #[arg(long)]
    pub force: bool,
    /// Print what it did as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The help of `airlift deployment retry`.
pub const RETRY_ABOUT: &str = "Offer a deployment again to its failed devices.\n\n\
    Devices that failed, rolled back or timed out go back to pending and are offered the \
    update at their next check-in (a phased rollout keeps the phase that admitted them; the \
    circuit breaker forgets their failures). Each retry is counted per device: a device \
    already retried --limit times is left as it is. A finished deployment becomes active \
    again; an aborted or cancelled one cannot be retried. Needs an operator or admin token.";

/// The help of `airlift deployment reset` and `airlift device reset`.
pub const RESET_ABOUT: &str = "Reset a device stuck in one state of its update.\n\n\
    A device that has been downloading, installing or rebooting for longer than its \
    deployment's device timeout (a phased rollout's --device-timeout; 6 h for an all-at-once \
    deployment) goes back to pending and is offered the update again at its next check-in; \
    --force resets it sooner. The reason is written to the audit log and the device's history. Needs an operator or \
    admin token.";

/// `airlift deployment retry`.
pub async fn retry(args: &RetryArgs, client: &Client) -> Result<()> {
    let result: RetryResult = client
        .post_json(
            &format!("/deployments/{}/retry", args.id),
            &RetryRequest {
                limit: Some(args.limit),
            },
        )
        .await
        .with_context(|| format!("retrying deployment {}", args.id))?;
    if args.json {
        return output::print_json(&result);
    }
    println!("{}", retry_summary(&result));
    Ok(())
}

/// What a retry did, in a sentence or two.
fn retry_summary(result: &RetryResult) -> String {
    let mut text = match result.retried.len() {
        0 => format!(
            "no failed device of deployment {} to offer it again",
            result.deployment_id
        ),
        n => format!(
            "offered deployment {} again to {n} failed devices; they get it at their next check-in",
            result.deployment_id
        ),
    };
    if result.reopened {
        text.push_str(" (the finished deployment is active again)");
    }
    if result.at_limit > 0 {
        text.push_str(&format!(
            "\n{} failed devices were left as they are: retried {} times already (raise --limit to go on)",
            result.at_limit, result.limit
        ));
    }
    text
}

/// `airlift deployment reset ID --device D --reason …`.
pub async fn reset_in_deployment(args: &DeploymentResetArgs, client: &Client) -> Result<()> {
    let result: ResetResult = client
        .post_json(
            &format!("/deployments/{}/devices/{}/reset", args.id, args.device),
            &ResetRequest {
                reason: args.reason.clone(),
                force: args.force,
            },
        )
        .await
        .with_context(|| format!("resetting device {} in deployment {}", args.device, args.id))?;
    print_reset(&result, args.json)
}

/// `airlift device reset D --reason …`.
pub async fn reset_device(args: &DeviceResetArgs, client: &Client) -> Result<()> {
    let result: ResetResult = client
        .post_json(
            &format!("/devices/{}/reset", args.id),
            &ResetRequest {
                reason: args.reason.clone(),
                force: args.force,
            },
        )
        .await
        .with_context(|| format!("resetting device {}", args.id))?;
    print_reset(&result, args.json)
}

fn print_reset(result: &ResetResult, json: bool) -> Result<()> {
    if json {
        return output::print_json(result);
    }
    let forced = if result.forced {
        ", before its timeout (forced)"
    } else {
        ""
    };
    println!(
        "reset device {} in deployment {}: it was {} for {} s{forced}; now {}, offered the update again at its next check-in",
        result.device_id, result.deployment_id, result.was, result.stuck_secs, result.state
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_says_who_was_left_out_and_how_to_go_on() {
        let mut result = RetryResult {
            deployment_id: DeploymentId::new(),
            retried: vec![DeviceId::new(), DeviceId::new()],
            at_limit: 1,
            limit: 3,
            reopened: true,
        };
        let text = retry_summary(&result);
        assert!(text.contains("again to 2 failed devices"), "{text}");
        assert!(text.contains("active again"), "{text}");
        assert!(text.contains("1 failed devices were left"), "{text}");
        assert!(text.contains("--limit"), "{text}");
        result.retried.clear();
        result.at_limit = 0;
        result.reopened = false;
        assert!(retry_summary(&result).starts_with("no failed device"));
    }
}
