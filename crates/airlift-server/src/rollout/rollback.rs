//! Fleet-wide automatic rollback: what the rollout engine does when the
//! circuit breaker of a deployment with `on_failure: rollback` trips.
//!
//! The deployment is aborted (its devices not yet done are cancelled) and,
//! in the same transaction, rollback deployments are created: one per
//! release to go back to — the deployment's `rollback_package`, or for
//! each device the release it last committed before — each targeting
//! exactly the devices that installed the bad release or were installing
//! it (`installing` and beyond, or timed out on the way), never those that
//! had not started installing. A rollback deployment rolls out through the same phases and
//! breaker, but its breaker pauses for an operator: a second trip never
//! starts another rollback. A release to go back to that the current
//! release keys do not sign (a root published since revoked its key:
//! [`crate::release_trust`]) is not deployed — every device would refuse
//! it —; its devices are stranded, with the reason, and the trip goes on
//! for the others. The audit log (`deployment.rollback`, by
//! `rollout engine`), the deployment's detail (`rolled_back_by`,
//! `rollback_of`) and `/metrics` (`airlift_rollbacks_total`,
//! `airlift_rollback_devices_total`) say what happened.

use crate::release_trust::{self, ReleaseTrust};
use airlift_package::TrustSet;
use airlift_protocol::install::InstallPolicy;
use airlift_protocol::management::{DeviceUpdate, Target};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::strategy::{BreakerAction, Phased, Strategy};
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use airlift_store::{
    DeploymentRecord, NewAuditEntry, NewRollback, RolloutState, Store, StoreResult,
};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// The actor the audit log names for the engine's own decisions.
pub const ENGINE_ACTOR: &str = "rollout engine";
/// Longest deployment name, in bytes (as the API allows).
const MAX_NAME: usize = 128;

/// The devices that installed the release or are installing it: those
/// that committed it, those past downloading that had not finished, and
/// those timed out (stuck somewhere on the way, they may have committed it
/// since; one that did not is marked `already_installed` by the rollback
/// at its next check-in, untouched).
pub fn took_release(devices: &[DeviceUpdate]) -> Vec<DeviceId> {
    devices
        .iter()
        .filter(|d| {
            matches!(
                d.state,
                UpdateState::Success
                    | UpdateState::Installing
                    | UpdateState::Installed
                    | UpdateState::Rebooting
                    | UpdateState::TimedOut
            )
        })
        .map(|d| d.device_id)
        .collect()
}

/// The rollback's strategy: the same phases, thresholds and timeouts, but a
/// breaker that pauses, so that a rollback never starts another.
pub fn rollback_strategy(strategy: &Phased) -> Phased {
    Phased {
        on_failure: BreakerAction::Pause,
        rollback_package: None,
        ..strategy.clone()
    }
}

/// `rollback of <name>`, cut on a character boundary to fit a name.
pub fn rollback_name(original: &str) -> String {
    let mut name = format!("rollback of {original}");
    if name.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// Which devices go back to which package: everything to `fixed` when the
/// deployment names one, else each device to its `previous` release;
/// devices with none on record are returned apart (stranded).
pub fn group_by_release(
    devices: &[DeviceId],
    fixed: Option<PackageId>,
    previous: &BTreeMap<DeviceId, PackageId>,
) -> (BTreeMap<PackageId, Vec<DeviceId>>, Vec<DeviceId>) {
    let mut groups: BTreeMap<PackageId, Vec<DeviceId>> = BTreeMap::new();
    let mut stranded = Vec::new();
    for device in devices {
        match fixed.or_else(|| previous.get(device).copied()) {
            Some(package) => groups.entry(package).or_default().push(*device),
            None => stranded.push(*device),
        }
    }
    (groups, stranded)
}

/// A rollback deployment of `package` to `devices`, started at `now`.
pub fn rollback_record(
    original: &DeploymentRecord,
    strategy: &Phased,
    package: PackageId,
    devices: &[DeviceId],
    now: DateTime<Utc>,
) -> DeploymentRecord {
    DeploymentRecord {
        id: DeploymentId::new(),
        name: rollback_name(&original.name),
        package_id: package,
        target: Target::Devices(devices.to_vec()),
        strategy: Strategy::Phased(rollback_strategy(strategy)),
        // Within the original's install window, but installed at once:
        // a rollback is held neither for an operator's release nor by a
        // device's owner deferring it.
        install: InstallPolicy {
            download_only: false,
            soft: None,
            ..original.install.clone()
        },
        status: DeploymentStatus::Active,
        created_at: now,
        finished_at: None,
        rollout: RolloutState {
            phase_started_at: Some(now),
            ..RolloutState::default()
        },
        dynamic: false,
        ends_at: None,
    }
}

/// What a started rollback did, for the engine's report and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The rollback deployments created.
    pub rollbacks: Vec<DeploymentId>,
    /// Devices they roll back.
    pub devices: usize,
    /// Devices that installed the release but have no earlier release on
    /// record, or one the current release keys do not sign: left where
    /// they are.
    pub stranded: usize,
}

/// A release the rollback does not go back to because the current release
/// keys do not sign it, and how many devices stay for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Untrusted {
    /// The package, for people: `name version (id)`.
    package: String,
    devices: usize,
}

/// Devices left where they are, by why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Stranded {
    /// Without an earlier release on record.
    no_release: usize,
    /// Whose release to go back to is not signed by the current keys.
    untrusted: Vec<Untrusted>,
    /// The source of those keys, for the reason.
    source: Option<release_trust::TrustSource>,
}

/// The current release trust, for the rollback's check; `None` (nothing
/// checked, as before roots existed) when the server trusts no key or its
/// stored root cannot be read — a trip never fails for it.
async fn current_trust(
    store: &dyn Store,
    configured: Option<&TrustSet>,
    deployment: DeploymentId,
) -> StoreResult<Option<ReleaseTrust>> {
    match release_trust::current(store, configured).await {
        Ok(trust) => Ok(trust),
        Err(release_trust::ReleaseTrustError::Store(error)) => Err(error),
        Err(bad_root) => {
            tracing::error!(deployment_id = %deployment, error = %bad_root, "rollback: the current release keys cannot be read; the packages to go back to are not checked");
            Ok(None)
        }
    }
}

/// Takes out of `groups` the releases `trust` does not sign (checked on
/// each package record's stored head), with their devices.
async fn drop_untrusted(
    store: &dyn Store,
    trust: &ReleaseTrust,
    groups: &mut BTreeMap<PackageId, Vec<DeviceId>>,
) -> StoreResult<Vec<(Untrusted, Vec<DeviceId>)>> {
    let mut dropped = Vec::new();
    for package in groups.keys().copied().collect::<Vec<_>>() {
        // A package gone from the store is not this check's to judge.
        let Some(record) = store.package(package).await? else {
            continue;
        };
        if release_trust::check(&record.head, &trust.keys).is_ok() {
            continue;
        }
        let devices = groups.remove(&package).unwrap_or_default();
        dropped.push((
            Untrusted {
                package: format!(
                    "{} {} ({package})",
                    record.package.name, record.package.version
                ),
                devices: devices.len(),
            },
            devices,
        ));
    }
    Ok(dropped)
}

/// Aborts `deployment`, whose breaker tripped with `rollout` (its reason
/// says why), and starts its rollback. `None` if another instance moved
/// the deployment first; a rollback package that no longer exists pauses
/// the deployment for an operator instead. `configured`: the server's
/// `--trust` keys, the release keys while it holds no trust root.
pub async fn start(
    store: &dyn Store,
    configured: Option<&TrustSet>,
    deployment: &DeploymentRecord,
    strategy: &Phased,
    devices: &[DeviceUpdate],
    mut rollout: RolloutState,
    now: DateTime<Utc>,
) -> StoreResult<Option<Started>> {
    let took = took_release(devices);
    if let Some(package) = strategy.rollback_package {
        if store.package(package).await?.is_none() {
            rollout.reason = Some(format!(
                "{}; its rollback package {package} no longer exists, so the rollout paused instead",
                rollout.reason.unwrap_or_default()
            ));
            store
                .update_rollout(
                    deployment.id,
                    deployment.status,
                    DeploymentStatus::Paused,
                    &rollout,
                    now,
                )
                .await?;
            return Ok(None);
        }
    }
    let previous = match strategy.rollback_package {
        Some(_) => BTreeMap::new(),
        None => {
            store
                .previous_releases(&took, deployment.id, deployment.package_id)
                .await?
        }
    };
    let (mut groups, mut stranded_ids) =
        group_by_release(&took, strategy.rollback_package, &previous);
    let mut stranded = Stranded {
        no_release: stranded_ids.len(),
        ..Stranded::default()
    };
    if !groups.is_empty() {
        if let Some(trust) = current_trust(store, configured, deployment.id).await? {
            for (untrusted, devices) in drop_untrusted(store, &trust, &mut groups).await? {
                stranded_ids.extend(devices);
                stranded.untrusted.push(untrusted);
            }
            stranded.source = Some(trust.source);
        }
    }
    let rollbacks: Vec<NewRollback> = groups
        .iter()
        .map(|(package, ids)| NewRollback {
            deployment: rollback_record(deployment, strategy, *package, ids, now),
            devices: ids.clone(),
        })
        .collect();
    let ids: Vec<DeploymentId> = rollbacks.iter().map(|r| r.deployment.id).collect();
    let rolled = took.len() - stranded_ids.len();
    rollout.reason = Some(reason(rollout.reason.as_deref(), rolled, &ids, &stranded));
    if !store
        .start_rollback(deployment.id, deployment.status, &rollout, &rollbacks, now)
        .await?
    {
        return Ok(None);
    }
    store
        .append_audit(&NewAuditEntry {
            at: now,
            actor: ENGINE_ACTOR.to_owned(),
            action: "deployment.rollback".to_owned(),
            object: deployment.id.to_string(),
            details: audit_details(deployment, &rollout, &rollbacks, &stranded_ids, &stranded),
        })
        .await?;
    metrics::counter!("airlift_rollbacks_total").increment(1);
    metrics::counter!("airlift_rollback_devices_total").increment(rolled as u64);
    tracing::warn!(
        deployment_id = %deployment.id,
        devices = rolled,
        stranded = stranded_ids.len(),
        untrusted = stranded.untrusted.len(),
        rollbacks = ?ids,
        "circuit breaker: rolling back"
    );
    Ok(Some(Started {
        rollbacks: ids,
        devices: rolled,
        stranded: stranded_ids.len(),
    }))
}

/// What the audit log keeps of a started rollback.
fn audit_details(
    deployment: &DeploymentRecord,
    rollout: &RolloutState,
    rollbacks: &[NewRollback],
    stranded_ids: &[DeviceId],
    stranded: &Stranded,
) -> serde_json::Value {
    serde_json::json!({
        "name": deployment.name,
        "reason": rollout.reason,
        "rollbacks": rollbacks.iter().map(|r| serde_json::json!({
            "deployment_id": r.deployment.id,
            "package_id": r.deployment.package_id,
            "devices": r.devices.len(),
        })).collect::<Vec<_>>(),
        "stranded": stranded_ids,
        "untrusted": stranded.untrusted.iter().map(|u| serde_json::json!({
            "package": u.package,
            "devices": u.devices,
        })).collect::<Vec<_>>(),
    })
}

/// The aborted deployment's reason: the breaker's, then what the rollback
/// does.
fn reason(
    breaker: Option<&str>,
    devices: usize,
    rollbacks: &[DeploymentId],
    stranded: &Stranded,
) -> String {
    let breaker = breaker.unwrap_or("circuit breaker");
    let mut text = match rollbacks {
        [] if stranded.no_release == 0 && stranded.untrusted.is_empty() => {
            format!("{breaker}; no device had installed it, so there is nothing to roll back")
        }
        [] => format!("{breaker}; no rollback started"),
        [one] => format!(
            "{breaker}; rolling back the {devices} devices that installed it in deployment {one}"
        ),
        many => format!(
            "{breaker}; rolling back the {devices} devices that installed it in deployments {}",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if stranded.no_release > 0 {
        text.push_str(&format!(
            "; {} devices have no earlier release on record and stay on it (name a rollback package to cover them)",
            stranded.no_release
        ));
    }
    let source = stranded
        .source
        .map_or_else(|| "current release keys".to_owned(), |s| s.to_string());
    for untrusted in &stranded.untrusted {
        text.push_str(&format!(
            "; {} devices stay on it because their release to go back to, package {}, is not signed by the release keys of the {source}, and devices would refuse it (sign it again, upload it and deploy it to them)",
            untrusted.devices, untrusted.package
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_protocol::strategy::{Advance, FailureThreshold, Phase, PhaseDevices};

    fn update(state: UpdateState) -> DeviceUpdate {
        DeviceUpdate {
            device_id: DeviceId::new(),
            state,
            message: None,
            updated_at: Utc::now(),
            phase: Some(0),
            progress: None,
            progress_at: None,
            joined_late: false,
        }
    }

    #[test]
    fn only_devices_that_installed_or_are_installing_are_rolled_back() {
        let devices: Vec<DeviceUpdate> = UpdateState::ALL.iter().map(|s| update(*s)).collect();
        let took = took_release(&devices);
        let states: Vec<UpdateState> = devices
            .iter()
            .filter(|d| took.contains(&d.device_id))
            .map(|d| d.state)
            .collect();
        assert_eq!(
            states,
            [
                UpdateState::Installing,
                UpdateState::Installed,
                UpdateState::Rebooting,
                UpdateState::Success,
                UpdateState::TimedOut
            ]
        );
    }

    #[test]
    fn a_rollback_pauses_on_its_own_breaker_and_names_no_package() {
        let strategy = Phased {
            phases: vec![Phase {
                name: None,
                devices: PhaseDevices::Percent(100),
                soak_secs: 5,
                success_percent: 90,
                deadline_secs: None,
            }],
            failure_threshold: FailureThreshold::Count(1),
            on_failure: BreakerAction::Rollback,
            advance: Advance::Automatic,
            device_timeout_secs: 60,
            rollback_package: Some(PackageId::new()),
        };
        let back = rollback_strategy(&strategy);
        assert_eq!(back.on_failure, BreakerAction::Pause);
        assert_eq!(back.rollback_package, None);
        assert_eq!(back.phases, strategy.phases);
        assert_eq!(back.validate(), Ok(()));
    }

    #[test]
    fn devices_go_to_the_named_package_or_each_to_its_previous_release() {
        let (a, b, c) = (DeviceId::new(), DeviceId::new(), DeviceId::new());
        let (old, older, named) = (PackageId::new(), PackageId::new(), PackageId::new());
        let previous = BTreeMap::from([(a, old), (b, older)]);
        let (groups, stranded) = group_by_release(&[a, b, c], None, &previous);
        assert_eq!(groups.get(&old), Some(&vec![a]));
        assert_eq!(groups.get(&older), Some(&vec![b]));
        assert_eq!(stranded, vec![c]);
        let (groups, stranded) = group_by_release(&[a, b, c], Some(named), &previous);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups.get(&named).map(Vec::len), Some(3));
        assert!(stranded.is_empty());
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let name = rollback_name(&"é".repeat(100));
        assert!(name.len() <= MAX_NAME);
        assert!(name.starts_with("rollback of é"));
        assert_eq!(rollback_name("rootfs 2.1.0"), "rollback of rootfs 2.1.0");
    }

    #[test]
    fn the_reason_says_where_the_devices_went_and_who_stayed() {
        let one = DeploymentId::new();
        let stranded = Stranded {
            no_release: 2,
            ..Stranded::default()
        };
        let text = reason(Some("circuit breaker: 3 of 10"), 7, &[one], &stranded);
        assert!(text.starts_with("circuit breaker: 3 of 10; rolling back the 7 devices"));
        assert!(text.contains(&one.to_string()));
        assert!(text.contains("2 devices have no earlier release"));
        assert!(reason(None, 0, &[], &Stranded::default()).contains("nothing to roll back"));
        let untrusted = Stranded {
            untrusted: vec![Untrusted {
                package: "rootfs 1.0.0 (p)".into(),
                devices: 3,
            }],
            source: Some(release_trust::TrustSource::Root(2)),
            ..Stranded::default()
        };
        let text = reason(None, 0, &[], &untrusted);
        assert!(text.contains("no rollback started"), "{text}");
        assert!(
            text.contains("3 devices stay on it because their release to go back to, package rootfs 1.0.0 (p), is not signed by the release keys of the trust root version 2"),
            "{text}"
        );
    }
}
