//! `airlift deployment show ID --watch`: redraws a deployment's progress —
//! a bar per phase of a phased rollout, one bar for an all-at-once one —
//! until it ends (finished, aborted or cancelled; a paused rollout may
//! still resume, so watching goes on), then prints it as `show` does.
//! The bars go to standard error and only to a terminal; the final state
//! goes to standard output, so a script can wait on a deployment with
//! `--watch` and read what it ended as.

use crate::client::Client;
use airlift_protocol::management::{Deployment, DeploymentDetail};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Whether a deployment has ended: nothing will move it any more.
pub fn ended(status: DeploymentStatus) -> bool {
    matches!(
        status,
        DeploymentStatus::Finished | DeploymentStatus::Aborted | DeploymentStatus::Cancelled
    )
}

/// One bar's worth: a label, devices done and out of how many, and a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// The phase's name, or `devices`.
    pub label: String,
    /// Devices done (succeeded, or in a final state for all-at-once).
    pub position: u64,
    /// Devices it is out of.
    pub length: u64,
    /// Admitted, failed, and the cumulative admitted count.
    pub message: String,
}

/// The bars of a deployment as it stands.
pub fn bars(deployment: &Deployment) -> Vec<Bar> {
    if let Some(rollout) = &deployment.rollout {
        let mut admitted = 0;
        return rollout
            .phases
            .iter()
            .enumerate()
            .map(|(i, phase)| {
                admitted += phase.admitted;
                let now = if i == rollout.phase { " ◀ now" } else { "" };
                let mut message = format!("{} admitted ({admitted} in all)", phase.admitted);
                if phase.failed > 0 {
                    message.push_str(&format!(", {} failed", phase.failed));
                }
                message.push_str(now);
                Bar {
                    label: phase.name.clone(),
                    position: phase.succeeded + phase.failed + phase.skipped,
                    length: phase.admitted,
                    message,
                }
            })
            .collect();
    }
    let total: u64 = deployment.counts.values().sum();
    let done: u64 = deployment
        .counts
        .iter()
        .filter(|(state, _)| state.is_final())
        .map(|(_, n)| n)
        .sum();
    let failed: u64 = deployment
        .counts
        .iter()
        .filter(|(state, _)| state.is_failure())
        .map(|(_, n)| n)
        .sum();
    let succeeded = deployment
        .counts
        .get(&UpdateState::Success)
        .copied()
        .unwrap_or(0);
    vec![Bar {
        label: "devices".into(),
        position: done,
        length: total,
        message: format!("{succeeded} succeeded, {failed} failed"),
    }]
}

/// Redraws `id` every `interval` until it ends; returns its detail then.
pub async fn watch(
    client: &Client,
    id: airlift_protocol::DeploymentId,
    interval: Duration,
) -> Result<DeploymentDetail> {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let multi = MultiProgress::with_draw_target(target);
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos:>5}/{len:5} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let status = multi.add(ProgressBar::new_spinner());
    let mut drawn: Vec<ProgressBar> = Vec::new();
    loop {
        let detail = client
            .deployment(id)
            .await
            .with_context(|| format!("reading deployment {id}"))?;
        let deployment = &detail.deployment;
        for (i, bar) in bars(deployment).into_iter().enumerate() {
            if drawn.len() <= i {
                let shown = multi.add(ProgressBar::new(0).with_style(style.clone()));
                shown.set_prefix(bar.label.clone());
                drawn.push(shown);
            }
            drawn[i].set_length(bar.length);
            drawn[i].set_position(bar.position);
            drawn[i].set_message(bar.message);
        }
        let reason = deployment
            .rollout
            .as_ref()
            .and_then(|r| r.reason.clone())
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        status.set_message(format!("{} {}{reason}", deployment.name, deployment.status));
        if ended(deployment.status) {
            for bar in &drawn {
                bar.finish();
            }
            status.finish_and_clear();
            return Ok(detail);
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_protocol::management::Target;
    use airlift_protocol::strategy::{PhaseProgress, RolloutProgress, Strategy};
    use airlift_protocol::{DeploymentId, PackageId};

    fn deployment() -> Deployment {
        Deployment {
            id: DeploymentId::new(),
            name: "d".into(),
            package_id: PackageId::new(),
            target: Target::Tag("t".into()),
            strategy: Strategy::All,
            install: Default::default(),
            status: DeploymentStatus::Active,
            rollout: None,
            counts: [
                (UpdateState::Success, 3),
                (UpdateState::Failure, 1),
                (UpdateState::Downloading, 2),
            ]
            .into(),
            created_at: chrono::Utc::now(),
            finished_at: None,
            dynamic: false,
            ends_at: None,
            joined_late: 0,
        }
    }

    #[test]
    fn an_all_at_once_deployment_is_one_bar_of_devices_done() {
        let bars = bars(&deployment());
        assert_eq!(bars.len(), 1);
        assert_eq!((bars[0].position, bars[0].length), (4, 6));
        assert_eq!(bars[0].message, "3 succeeded, 1 failed");
    }

    #[test]
    fn phases_show_cumulative_admitted_counts_and_the_phase_under_way() {
        let mut d = deployment();
        let phase = |name: &str, admitted, succeeded, failed| PhaseProgress {
            name: name.into(),
            admitted,
            succeeded,
            failed,
            skipped: 0,
        };
        d.rollout = Some(RolloutProgress {
            phase: 1,
            phase_started_at: chrono::Utc::now(),
            phase_met_at: None,
            reason: None,
            phases: vec![phase("canary", 5, 5, 0), phase("50 %", 45, 10, 2)],
        });
        let bars = bars(&d);
        assert_eq!(bars[0].message, "5 admitted (5 in all)");
        assert_eq!(bars[1].message, "45 admitted (50 in all), 2 failed ◀ now");
        assert_eq!((bars[1].position, bars[1].length), (12, 45));
    }

    #[test]
    fn only_finished_aborted_and_cancelled_end_a_watch() {
        assert!(ended(DeploymentStatus::Finished));
        assert!(ended(DeploymentStatus::Aborted));
        assert!(ended(DeploymentStatus::Cancelled));
        assert!(!ended(DeploymentStatus::Paused));
        assert!(!ended(DeploymentStatus::Active));
    }
}
