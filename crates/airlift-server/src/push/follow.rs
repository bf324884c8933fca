//! From the store's change feed to nudges: which devices a change concerns.

use crate::state::AppState;
use airlift_protocol::management::DeviceUpdate;
use airlift_protocol::push::NudgeReason;
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::strategy::Strategy;
use airlift_protocol::DeviceId;
use airlift_store::{ChangeFeed, DeploymentRecord, StoreEvent};

/// Nudges devices for every change the feed announces, until the store
/// closes it. Subscribe before serving, so that no change is missed.
pub async fn follow(mut feed: ChangeFeed, state: AppState) {
    while let Some(heard) = feed.recv_heard().await {
        let hub = state.push();
        let mqtt = state.mqtt().filter(|_| heard.local);
        let (reason, devices) = match heard.event {
            StoreEvent::DeviceChanged(id) => (NudgeReason::Device, vec![id]),
            StoreEvent::CheckInRequested(id) => (NudgeReason::Requested, vec![id]),
            StoreEvent::DeploymentChanged(id) => {
                if hub.connected() == 0 && mqtt.is_none() {
                    continue;
                }
                let found = async {
                    let store = state.store();
                    let Some(deployment) = store.deployment(id).await? else {
                        return Ok(None);
                    };
                    let devices = store.deployment_devices(id).await?;
                    Ok::<_, airlift_store::StoreError>(Some(concerned(&deployment, &devices)))
                };
                match found.await {
                    Ok(Some(Some(concerned))) => concerned,
                    Ok(_) => continue,
                    Err(error) => {
                        // The devices will hear at their next poll.
                        tracing::warn!(deployment_id = %id, %error, "push: reading the deployment failed");
                        continue;
                    }
                }
            }
            _ => continue,
        };
        let nudged = hub.nudge(&devices, reason);
        if let Some(mqtt) = mqtt {
            mqtt.publish(&devices, reason);
        }
        tracing::debug!(?reason, devices = devices.len(), nudged, "push: nudged");
    }
}

/// The devices a deployment's new state concerns, and why: on an active
/// deployment, those it offers an update to and that have not started or
/// wait at `downloaded` (of a phased one, those admitted); on a cancelled or aborted one, those
/// it cancelled. `None` when no device needs to hear (paused, finished).
pub fn concerned(
    deployment: &DeploymentRecord,
    devices: &[DeviceUpdate],
) -> Option<(NudgeReason, Vec<DeviceId>)> {
    let phased = matches!(deployment.strategy, Strategy::Phased(_));
    let (reason, wanted): (_, &dyn Fn(&DeviceUpdate) -> bool) = match deployment.status {
        // Pending: there is an offer to take. Downloaded: the install may
        // have been released.
        DeploymentStatus::Active => (NudgeReason::Deployment, &|d: &DeviceUpdate| {
            matches!(d.state, UpdateState::Pending | UpdateState::Downloaded)
                && (!phased || d.phase.is_some())
        }),
        DeploymentStatus::Cancelled | DeploymentStatus::Aborted => {
            (NudgeReason::Cancelled, &|d: &DeviceUpdate| {
                d.state == UpdateState::Cancelled
            })
        }
        DeploymentStatus::Paused | DeploymentStatus::Finished => return None,
    };
    let devices: Vec<DeviceId> = devices
        .iter()
        .filter(|d| wanted(d))
        .map(|d| d.device_id)
        .collect();
    (!devices.is_empty()).then_some((reason, devices))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_protocol::strategy::{FailureThreshold, Phase, PhaseDevices, Phased};
    use airlift_protocol::PackageId;
    use airlift_store::RolloutState;
    use chrono::Utc;

    fn deployment(strategy: Strategy, status: DeploymentStatus) -> DeploymentRecord {
        DeploymentRecord {
            id: airlift_protocol::DeploymentId::new(),
            name: "d".into(),
            package_id: PackageId::new(),
            target: airlift_protocol::management::Target::Devices(vec![]),
            strategy,
            install: Default::default(),
            status,
            created_at: Utc::now(),
            finished_at: None,
            rollout: RolloutState::default(),
            dynamic: false,
            ends_at: None,
        }
    }

    fn update(state: UpdateState, phase: Option<u32>) -> DeviceUpdate {
        DeviceUpdate {
            device_id: DeviceId::new(),
            state,
            message: None,
            updated_at: Utc::now(),
            phase,
            progress: None,
            progress_at: None,
            joined_late: false,
        }
    }

    fn phased() -> Strategy {
        Strategy::Phased(Phased {
            phases: vec![Phase {
                name: None,
                devices: PhaseDevices::Percent(100),
                soak_secs: 0,
                success_percent: 100,
                deadline_secs: None,
            }],
            failure_threshold: FailureThreshold::Count(1),
            on_failure: Default::default(),
            advance: Default::default(),
            device_timeout_secs: 60,
            rollback_package: None,
        })
    }

    #[test]
    fn an_active_deployment_concerns_the_devices_it_may_offer_to_that_have_not_started_or_wait_to_install(
    ) {
        let devices = [
            update(UpdateState::Pending, None),
            update(UpdateState::Pending, Some(0)),
            update(UpdateState::Downloading, Some(0)),
            update(UpdateState::Success, Some(0)),
            update(UpdateState::Incompatible, None),
            // Waiting for its install: a release concerns it.
            update(UpdateState::Downloaded, Some(0)),
        ];
        let all = deployment(Strategy::All, DeploymentStatus::Active);
        let (reason, ids) = concerned(&all, &devices).expect("some");
        assert_eq!(reason, NudgeReason::Deployment);
        assert_eq!(
            ids,
            vec![
                devices[0].device_id,
                devices[1].device_id,
                devices[5].device_id
            ]
        );
        // Of a phased one, only the admitted.
        let staged = deployment(phased(), DeploymentStatus::Active);
        let (_, ids) = concerned(&staged, &devices).expect("some");
        assert_eq!(ids, vec![devices[1].device_id, devices[5].device_id]);
    }

    #[test]
    fn a_cancelled_deployment_concerns_the_devices_it_cancelled_and_a_paused_one_none() {
        let devices = [
            update(UpdateState::Cancelled, None),
            update(UpdateState::Success, None),
        ];
        for status in [DeploymentStatus::Cancelled, DeploymentStatus::Aborted] {
            let (reason, ids) =
                concerned(&deployment(Strategy::All, status), &devices).expect("some");
            assert_eq!(reason, NudgeReason::Cancelled);
            assert_eq!(ids, vec![devices[0].device_id]);
        }
        for status in [DeploymentStatus::Paused, DeploymentStatus::Finished] {
            assert_eq!(
                concerned(&deployment(Strategy::All, status), &devices),
                None
            );
        }
        let done = [update(UpdateState::Success, None)];
        let active = deployment(Strategy::All, DeploymentStatus::Active);
        assert_eq!(concerned(&active, &done), None);
    }
}
