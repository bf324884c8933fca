//! Fleet-wide automatic rollback through the rollout engine, against a real
//! store: who is rolled back, to what, and that a rollback's own breaker
//! pauses instead of starting another.

use super::engine::RolloutEngine;
use super::engine_tests::{fleet, staged, t0, Fleet};
use super::rollback::ENGINE_ACTOR;
use airlift_package::{Compression, Limits, PackageReader, SigningKey, TrustSet};
use airlift_protocol::install::InstallPolicy;
use airlift_protocol::management::{Package, Target};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::strategy::{BreakerAction, FailureThreshold, Phased, Strategy};
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use airlift_store::{AuditFilter, PackageRecord, PageRequest};
use airlift_testkit::packages::{image, PackageBuilder};
use chrono::Duration;
use std::collections::BTreeMap;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A good release every device committed, then the bad one, rolling back
/// on failure (to `package`, or to what each device ran before).
async fn good_then_bad(
    fleet: &Fleet,
    package: Option<PackageId>,
) -> Result<(PackageId, DeploymentId)> {
    let good = fleet
        .insert(Strategy::All, InstallPolicy::default(), None)
        .await?;
    for device in &fleet.devices {
        fleet
            .store
            .record_update_state(good, *device, UpdateState::Success, None, t0())
            .await?;
    }
    let good_package = fleet.deployment(good).await?.package_id;
    let strategy = Phased {
        rollback_package: package,
        ..staged(FailureThreshold::Percent(10), BreakerAction::Rollback)
    };
    let bad = fleet
        .insert(Strategy::Phased(strategy), InstallPolicy::default(), None)
        .await?;
    Ok((good_package, bad))
}

/// Devices of a deployment in `state`.
async fn in_state(fleet: &Fleet, id: DeploymentId, state: UpdateState) -> Result<Vec<DeviceId>> {
    Ok(fleet
        .store
        .deployment_devices(id)
        .await?
        .into_iter()
        .filter(|d| d.state == state)
        .map(|d| d.device_id)
        .collect())
}

#[tokio::test]
async fn a_tripped_breaker_rolls_back_exactly_the_devices_that_took_the_release() -> Result {
    let fleet = fleet(40, 4).await?;
    let (good_package, bad) = good_then_bad(&fleet, None).await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    engine.tick(t0()).await?; // the canaries are admitted
    let canaries = &fleet.canaries;
    let store = &fleet.store;
    // Two committed it, one is installing it, one failed and rolled back
    // by itself.
    let at = t0() + Duration::minutes(5);
    store
        .record_update_state(bad, canaries[0], UpdateState::Success, None, at)
        .await?;
    store
        .record_update_state(bad, canaries[1], UpdateState::Success, None, at)
        .await?;
    store
        .record_update_state(bad, canaries[2], UpdateState::Installing, None, at)
        .await?;
    store
        .record_update_state(bad, canaries[3], UpdateState::RolledBack, None, at)
        .await?;

    let reports = engine.tick(at + Duration::minutes(1)).await?;
    let report = reports
        .iter()
        .find(|r| r.status.is_some())
        .ok_or("no move")?;
    assert_eq!(report.status, Some(DeploymentStatus::Aborted));
    assert_eq!(report.rollbacks.len(), 1, "{report:?}");
    let rollback = report.rollbacks[0];

    let original = fleet.deployment(bad).await?;
    assert_eq!(original.status, DeploymentStatus::Aborted);
    let reason = original.rollout.reason.unwrap_or_default();
    assert!(reason.starts_with("circuit breaker"), "{reason}");
    assert!(
        reason.contains(&format!(
            "rolling back the 3 devices that installed it in deployment {rollback}"
        )),
        "{reason}"
    );
    let links = store.rollback_links(bad).await?;
    assert_eq!(links.rolled_back_by, vec![rollback]);
    assert_eq!(links.rollback_of, None);
    assert_eq!(store.rollback_links(rollback).await?.rollback_of, Some(bad));

    let back = fleet.deployment(rollback).await?;
    assert_eq!(
        back.package_id, good_package,
        "back to what they ran before"
    );
    assert_eq!(back.status, DeploymentStatus::Active);
    let Strategy::Phased(phased) = &back.strategy else {
        return Err("the rollback is not phased".into());
    };
    assert_eq!(phased.on_failure, BreakerAction::Pause);
    let mut expected = canaries[..3].to_vec();
    expected.sort();
    assert_eq!(back.target, Target::Devices(expected.clone()));
    let mut targeted: Vec<DeviceId> = store
        .deployment_devices(rollback)
        .await?
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    targeted.sort();
    assert_eq!(
        targeted, expected,
        "not the one that rolled back by itself, not the others"
    );

    let (entries, _) = store
        .list_audit_page(
            &AuditFilter {
                action: Some("deployment.rollback".into()),
                ..AuditFilter::default()
            },
            None,
            PageRequest {
                page: 1,
                per_page: 10,
            },
        )
        .await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, ENGINE_ACTOR);
    assert_eq!(entries[0].object, bad.to_string());
    assert_eq!(entries[0].details["rollbacks"][0]["devices"], 3);
    Ok(())
}

#[tokio::test]
async fn a_second_trip_during_the_rollback_pauses_instead_of_looping() -> Result {
    let fleet = fleet(20, 4).await?;
    let (_, bad) = good_then_bad(&fleet, None).await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    engine.tick(t0()).await?;
    let at = t0() + Duration::minutes(5);
    for canary in &fleet.canaries[..3] {
        fleet
            .store
            .record_update_state(bad, *canary, UpdateState::Success, None, at)
            .await?;
    }
    fleet
        .store
        .record_update_state(bad, fleet.canaries[3], UpdateState::Failure, None, at)
        .await?;
    engine.tick(at + Duration::minutes(1)).await?;
    let rollback = *fleet
        .store
        .rollback_links(bad)
        .await?
        .rolled_back_by
        .first()
        .ok_or("no rollback")?;

    // The rollback's canaries are admitted; two fail going back.
    engine.tick(at + Duration::minutes(2)).await?;
    let admitted = fleet.admitted(rollback).await?;
    assert_eq!(admitted.len(), 3, "the canaries that took it: {admitted:?}");
    let mut devices = admitted.keys().copied();
    let later = at + Duration::minutes(3);
    for device in devices.by_ref().take(2) {
        fleet
            .store
            .record_update_state(rollback, device, UpdateState::Failure, None, later)
            .await?;
    }
    let reports = engine.tick(later + Duration::minutes(1)).await?;
    assert!(
        reports.iter().all(|r| r.rollbacks.is_empty()),
        "{reports:?}"
    );
    let paused = fleet.deployment(rollback).await?;
    assert_eq!(paused.status, DeploymentStatus::Paused);
    assert!(paused.rollout.reason.unwrap_or_default().contains("paused"));
    assert!(fleet
        .store
        .rollback_links(rollback)
        .await?
        .rolled_back_by
        .is_empty());
    Ok(())
}

/// A bad release rolling back to `package` (or to what each device ran
/// before), `minutes` after t0: its first canary commits it, the second
/// fails, and the breaker trips. Returns the bad deployment.
async fn trip(
    fleet: &Fleet,
    engine: &RolloutEngine,
    package: Option<PackageId>,
    minutes: i64,
) -> Result<DeploymentId> {
    let strategy = Phased {
        rollback_package: package,
        ..staged(FailureThreshold::Percent(10), BreakerAction::Rollback)
    };
    let bad = fleet
        .insert(Strategy::Phased(strategy), InstallPolicy::default(), None)
        .await?;
    let at = t0() + Duration::minutes(minutes);
    engine.tick(at).await?;
    let (ok, failed) = (fleet.canaries[0], fleet.canaries[1]);
    fleet
        .store
        .record_update_state(bad, ok, UpdateState::Success, None, at)
        .await?;
    fleet
        .store
        .record_update_state(bad, failed, UpdateState::Failure, None, at)
        .await?;
    engine.tick(at + Duration::minutes(1)).await?;
    Ok(bad)
}

#[tokio::test]
async fn a_named_rollback_package_covers_devices_without_an_earlier_release() -> Result {
    let fleet = fleet(10, 2).await?;
    // A package to go back to, which no device has committed.
    let good = fleet
        .insert(Strategy::All, InstallPolicy::default(), None)
        .await?;
    let good_package = fleet.deployment(good).await?.package_id;
    let engine = RolloutEngine::new(fleet.store.clone());
    let store = &fleet.store;

    // Back to what each ran before: nothing on record, so it stays.
    let stranded = trip(&fleet, &engine, None, 0).await?;
    let original = fleet.deployment(stranded).await?;
    assert_eq!(original.status, DeploymentStatus::Aborted);
    let reason = original.rollout.reason.unwrap_or_default();
    assert!(
        reason.contains("1 devices have no earlier release"),
        "{reason}"
    );
    assert!(store
        .rollback_links(stranded)
        .await?
        .rolled_back_by
        .is_empty());
    assert_eq!(
        in_state(&fleet, stranded, UpdateState::Success).await?,
        vec![fleet.canaries[0]]
    );

    // Named: every device that took it goes to that package.
    let named = trip(&fleet, &engine, Some(good_package), 10).await?;
    let links = store.rollback_links(named).await?;
    let rollback = fleet
        .deployment(*links.rolled_back_by.first().ok_or("no rollback")?)
        .await?;
    assert_eq!(rollback.package_id, good_package);
    assert_eq!(rollback.target, Target::Devices(vec![fleet.canaries[0]]));
    Ok(())
}

/// A release signed by `key` alone, stored as an upload stores it (its
/// record carries the package's real head).
async fn signed_release(fleet: &Fleet, key: &SigningKey, version: &str) -> Result<PackageId> {
    let file = PackageBuilder::new("rootfs", version)
        .signed_by(key)
        .device_type("pi4")
        .image(&image(version, 4096), Compression::Zstd)
        .build();
    let head_len = PackageReader::open(&file[..], Limits::default())?.payload_offset();
    let record = PackageRecord {
        package: Package {
            id: PackageId::new(),
            name: "rootfs".into(),
            version: version.into(),
            description: None,
            device_types: vec!["pi4".into()],
            security_version: 0,
            size: file.len() as u64,
            sha256: "00".repeat(32),
            signed_by: vec![key.public_key().key_id().to_string()],
            manifest: serde_json::json!({}),
            created_at: t0(),
        },
        blob_key: "x".into(),
        head: file[..usize::try_from(head_len)?].to_vec(),
        provides: BTreeMap::new(),
    };
    fleet.store.insert_package(&record).await?;
    Ok(record.package.id)
}

#[tokio::test]
async fn a_release_the_current_keys_do_not_sign_strands_its_devices_and_the_trip_goes_on() -> Result
{
    let fleet = fleet(10, 2).await?;
    let (revoked, current) = (SigningKey::generate()?, SigningKey::generate()?);
    let engine = RolloutEngine::new(fleet.store.clone())
        .with_configured_trust(Some(TrustSet::new([current.public_key()], 1)?));
    let store = &fleet.store;
    let old = signed_release(&fleet, &revoked, "1.0.0").await?;
    let resigned = signed_release(&fleet, &current, "1.0.1").await?;

    let bad = trip(&fleet, &engine, Some(old), 0).await?;
    let original = fleet.deployment(bad).await?;
    assert_eq!(
        original.status,
        DeploymentStatus::Aborted,
        "the trip goes on"
    );
    let reason = original.rollout.reason.unwrap_or_default();
    assert!(reason.contains("no rollback started"), "{reason}");
    assert!(
        reason.contains(&format!(
            "1 devices stay on it because their release to go back to, package rootfs 1.0.0 ({old}), is not signed by the release keys of the server's --trust keys"
        )),
        "{reason}"
    );
    assert!(store.rollback_links(bad).await?.rolled_back_by.is_empty());
    assert_eq!(
        in_state(&fleet, bad, UpdateState::Success).await?,
        vec![fleet.canaries[0]],
        "stranded where it is"
    );
    let (entries, _) = store
        .list_audit_page(
            &AuditFilter {
                action: Some("deployment.rollback".into()),
                object: Some(bad.to_string()),
                ..AuditFilter::default()
            },
            None,
            PageRequest {
                page: 1,
                per_page: 10,
            },
        )
        .await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].details["untrusted"][0]["devices"], 1);
    assert_eq!(
        entries[0].details["stranded"],
        serde_json::json!([fleet.canaries[0]])
    );

    // Signed again with the current key, it is rolled back to.
    let named = trip(&fleet, &engine, Some(resigned), 10).await?;
    let links = store.rollback_links(named).await?;
    let rollback = fleet
        .deployment(*links.rolled_back_by.first().ok_or("no rollback")?)
        .await?;
    assert_eq!(rollback.package_id, resigned);
    assert_eq!(rollback.target, Target::Devices(vec![fleet.canaries[0]]));
    Ok(())
}
