//! `airlift deployment show`, and how a deployment reads on a terminal
//! (also after `create`, `list` and the controls): its fields, target,
//! strategy and counts. The devices come a page at a time from
//! `GET /deployments/{id}/devices`; the deployment's detail has only
//! their counts.

use super::deployment::ShowArgs;
use crate::client::Client;
use crate::output::{self, Table};
use airlift_protocol::management::{
    Deployment, DeploymentDetail, DeviceUpdate, Page, Strategy, Target,
};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// `deployment show --json`: the deployment's detail (counts, rollback
/// links, deferrals) with one page of its devices under `devices`.
#[derive(serde::Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    detail: &'a DeploymentDetail,
    devices: &'a Page<DeviceUpdate>,
}

/// `airlift deployment show`: the deployment, then one page of its devices.
pub(super) async fn show(args: &ShowArgs, client: &Client) -> Result<()> {
    let detail = if args.watch {
        super::watch::watch(client, args.id, args.interval).await?
    } else {
        client
            .deployment(args.id)
            .await
            .with_context(|| format!("reading deployment {}", args.id))?
    };
    let devices = client
        .deployment_devices(args.id, args.page, args.per_page, args.state)
        .await
        .with_context(|| format!("reading the devices of deployment {}", args.id))?;
    if args.json {
        return output::print_json(&Shown {
            detail: &detail,
            devices: &devices,
        });
    }
    print_deployment(&detail.deployment);
    if let Some(original) = detail.rollback_of {
        output::field("rollback of", original);
    }
    for rollback in &detail.rolled_back_by {
        output::field("rolled back by", rollback);
    }
    if let Some(summary) = &detail.deferrals {
        output::field("deferrals", super::soft::deferrals(summary));
    }
    println!();
    if devices.items.is_empty() {
        let none = if args.state.is_some() {
            "no devices in that state"
        } else {
            "no devices"
        };
        println!("{}", output::empty_page(&devices, none, "devices"));
        return Ok(());
    }
    let mut table = Table::new(&["DEVICE", "STATE", "UPDATED", "MESSAGE"]);
    for device in &devices.items {
        let late = if device.joined_late {
            " (joined late)"
        } else {
            ""
        };
        table.row(vec![
            format!("{}{late}", device.device_id),
            state_with_progress(device),
            output::time(&device.updated_at),
            device
                .message
                .clone()
                .unwrap_or_default()
                .replace('\n', " "),
        ]);
    }
    table.print();
    println!("{}", output::page_footer(&devices, "devices"));
    Ok(())
}

/// The device's state; while downloading, with how far it got
/// ("downloading 43 %").
fn state_with_progress(device: &DeviceUpdate) -> String {
    match device.progress {
        Some(progress) if progress.total > 0 => {
            let percent = u128::from(progress.done) * 100 / u128::from(progress.total);
            format!("{} {percent} %", device.state)
        }
        _ => device.state.to_string(),
    }
}

/// The deployment's fields, one a line, its phases last.
pub(super) fn print_deployment(deployment: &Deployment) {
    output::field("id", deployment.id);
    output::field("name", &deployment.name);
    output::field("status", deployment.status);
    output::field("package", deployment.package_id);
    output::field("target", target(&deployment.target));
    output::field("strategy", strategy(&deployment.strategy));
    if let Some(window) = &deployment.install.window {
        output::field("install window", window);
    }
    if deployment.install.download_only {
        output::field(
            "install",
            "download only: held until `airlift deployment install`",
        );
    }
    output::field("mode", super::soft::mode(&deployment.install));
    if deployment.dynamic {
        output::field("dynamic", dynamic(deployment, chrono::Utc::now()));
        output::field(
            "joined late",
            format!(
                "{} devices joined the target after it was created",
                deployment.joined_late
            ),
        );
    }
    output::field("created", output::time(&deployment.created_at));
    if let Some(finished) = &deployment.finished_at {
        output::field("finished", output::time(finished));
    }
    output::field("devices", counts(&deployment.counts));
    if let Some(rollout) = &deployment.rollout {
        if let Some(reason) = &rollout.reason {
            output::field("reason", reason);
        }
        for (i, phase) in rollout.phases.iter().enumerate() {
            let marker = if i == rollout.phase { " ◀ now" } else { "" };
            output::field(
                &format!("phase {}", i + 1),
                format!(
                    "{}: {} admitted, {} succeeded, {} failed, {} skipped{marker}",
                    phase.name, phase.admitted, phase.succeeded, phase.failed, phase.skipped
                ),
            );
        }
    }
}

/// Whether a dynamic deployment still takes in devices, and until when.
fn dynamic(deployment: &Deployment, now: chrono::DateTime<chrono::Utc>) -> String {
    let open = matches!(
        deployment.status,
        DeploymentStatus::Active | DeploymentStatus::Paused
    );
    match deployment.ends_at {
        Some(ends) if ends <= now => format!(
            "ended {}: takes in no more devices; finishes once its devices are done",
            output::time(&ends)
        ),
        _ if !open => "took in devices that joined the target later".to_owned(),
        Some(ends) => format!(
            "takes in devices that join the target until {}",
            output::time(&ends)
        ),
        None => "takes in devices that join the target until `airlift deployment end`".to_owned(),
    }
}

/// `tag canary`, `3 devices`, `attributes region=eu-west`.
pub(super) fn target(target: &Target) -> String {
    match target {
        Target::Devices(ids) if ids.len() == 1 => format!("device {}", ids[0]),
        Target::Devices(ids) => format!("{} devices", ids.len()),
        Target::Tag(tag) => format!("tag {tag}"),
        Target::Expression(expression) => format!("devices where {expression}"),
        Target::Attributes(attributes) => {
            format!("attributes {}", output::pairs(attributes, "none"))
        }
    }
}

/// `all at once`, `3 phases: canary → 10 % → 100 %`.
fn strategy(strategy: &Strategy) -> String {
    match strategy {
        Strategy::All => "all at once".to_owned(),
        Strategy::Phased(phased) => format!(
            "{} phases: {}",
            phased.phases.len(),
            phased
                .phases
                .iter()
                .map(|p| p.display_name())
                .collect::<Vec<_>>()
                .join(" → ")
        ),
    }
}

/// `3 in all: 2 success, 1 pending` (states in the order of an update's path).
pub(super) fn counts(counts: &BTreeMap<UpdateState, u64>) -> String {
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
    fn a_download_shows_how_far_it_got() {
        use airlift_protocol::device::Progress;
        let mut device = DeviceUpdate {
            device_id: airlift_protocol::DeviceId::new(),
            state: UpdateState::Downloading,
            message: None,
            updated_at: chrono::Utc::now(),
            phase: None,
            progress: Some(Progress {
                done: 433,
                total: 1000,
            }),
            progress_at: None,
            joined_late: false,
        };
        assert_eq!(state_with_progress(&device), "downloading 43 %");
        device.progress = None;
        assert_eq!(state_with_progress(&device), "downloading");
    }

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
