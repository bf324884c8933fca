//! The engine's kept views: a tick reads whole only when it takes a
//! deployment on, then only the rows that changed — written by the engine
//! itself or straight through the store, as another instance's API does.

use super::engine::RolloutEngine;
use super::engine_tests::{fleet, staged, t0, Fleet};
use super::view::DevicesRead;
use airlift_protocol::install::InstallPolicy;
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::strategy::{BreakerAction, FailureThreshold, Strategy};
use airlift_protocol::DeploymentId;
use chrono::{DateTime, Duration, Utc};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The database stamps rows in milliseconds: a few of them between steps
/// keep one step's writes apart from the next step's reads.
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

/// A staged rollout to the fleet, and an engine whose reads of changed
/// rows do not overlap, so that each tick reads exactly what changed.
async fn deploy(
    fleet: &Fleet,
    threshold: FailureThreshold,
) -> Result<(DeploymentId, RolloutEngine)> {
    let strategy = staged(threshold, BreakerAction::Pause);
    let id = fleet
        .insert(Strategy::Phased(strategy), InstallPolicy::default(), None)
        .await?;
    let engine =
        RolloutEngine::new(fleet.store.clone()).with_read_overlap(std::time::Duration::ZERO);
    settle().await;
    Ok((id, engine))
}

/// How the one deployment's devices were read by a tick at `now`. Settled
/// before too: a row the test wrote in the very millisecond of the tick's
/// clock read is read by this tick and, rightly (`changed_at >=` its mark),
/// by the next, which then counts one row more than changed.
async fn tick(engine: &RolloutEngine, now: DateTime<Utc>) -> Result<DevicesRead> {
    settle().await;
    let reports = engine.tick(now).await?;
    let [report] = reports.as_slice() else {
        return Err(format!("one deployment advanced, not {}", reports.len()).into());
    };
    settle().await;
    Ok(report.devices_read)
}

fn whole(rows: usize) -> DevicesRead {
    DevicesRead { rows, whole: true }
}

fn changed(rows: usize) -> DevicesRead {
    DevicesRead { rows, whole: false }
}

#[tokio::test]
async fn after_the_first_tick_a_tick_reads_only_the_rows_that_changed() -> Result {
    let fleet = fleet(200, 5).await?;
    let (id, engine) = deploy(&fleet, FailureThreshold::Percent(20)).await?;

    assert_eq!(
        tick(&engine, t0()).await?,
        whole(200),
        "taken on: read whole"
    );
    assert_eq!(fleet.admitted(id).await?.len(), 5);
    assert_eq!(
        tick(&engine, t0() + Duration::seconds(1)).await?,
        changed(5),
        "the five canaries it admitted"
    );
    assert_eq!(
        tick(&engine, t0() + Duration::seconds(2)).await?,
        changed(0),
        "nothing changed, nothing read"
    );

    // The canaries succeed: five rows; the soak, the next phase's 15
    // admissions and the 10 % they make are decided from the kept view.
    for canary in &fleet.canaries {
        fleet
            .store
            .record_update_state(id, *canary, UpdateState::Success, None, t0())
            .await?;
    }
    assert_eq!(
        tick(&engine, t0() + Duration::minutes(1)).await?,
        changed(5)
    );
    assert_eq!(
        tick(&engine, t0() + Duration::minutes(61)).await?,
        changed(0)
    );
    assert_eq!(fleet.deployment(id).await?.rollout.phase, 1);
    assert_eq!(fleet.admitted(id).await?.len(), 20, "10 % of 200");
    assert_eq!(
        tick(&engine, t0() + Duration::minutes(62)).await?,
        changed(15)
    );
    Ok(())
}

#[tokio::test]
async fn a_row_written_straight_through_the_store_is_seen_at_the_next_tick() -> Result {
    let fleet = fleet(20, 4).await?;
    let (id, engine) = deploy(&fleet, FailureThreshold::Count(1)).await?;
    assert_eq!(tick(&engine, t0()).await?, whole(20));
    assert_eq!(
        tick(&engine, t0() + Duration::seconds(1)).await?,
        changed(4)
    );

    // Two canaries fail, reported through the store as another instance's
    // device API would: the next tick reads those two rows, and the
    // breaker (more than one failure) trips on them.
    for canary in &fleet.canaries[..2] {
        fleet
            .store
            .record_update_state(id, *canary, UpdateState::Failure, Some("broken"), t0())
            .await?;
    }
    settle().await;
    let reports = engine.tick(t0() + Duration::seconds(2)).await?;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].devices_read, changed(2));
    assert_eq!(reports[0].status, Some(DeploymentStatus::Paused));
    Ok(())
}

#[tokio::test]
async fn a_lost_lease_an_operator_action_or_an_end_reads_whole_again() -> Result {
    let fleet = fleet(30, 3).await?;
    let (id, first) = deploy(&fleet, FailureThreshold::Percent(50)).await?;
    assert_eq!(tick(&first, t0()).await?, whole(30));
    assert_eq!(first.views_kept().await, 1);

    // The first instance stalls past its lease; a second takes over.
    let second = RolloutEngine::new(fleet.store.clone());
    assert_eq!(tick(&second, t0() + Duration::hours(1)).await?, whole(30));
    assert!(first.tick(t0() + Duration::hours(1)).await?.is_empty());
    assert_eq!(first.views_kept().await, 0, "the lease is the other's");
    let later = t0() + Duration::hours(2);
    assert_eq!(tick(&first, later).await?, whole(30), "back: read whole");

    // An operator acknowledges failures (resuming past them): read whole,
    // so the breaker never counts against half of what they saw.
    let deployment = fleet.deployment(id).await?;
    let mut rollout = deployment.rollout.clone();
    rollout.acknowledged_failures += 1;
    assert!(
        fleet
            .store
            .update_rollout(id, deployment.status, deployment.status, &rollout, later)
            .await?
    );
    assert_eq!(tick(&first, later).await?, whole(30));
    assert_eq!(tick(&first, later).await?, changed(0));

    // Cancelled: the deployment is no longer advanced, and its view goes.
    assert!(fleet.store.cancel_deployment(id, later).await?);
    assert!(first.tick(later).await?.is_empty());
    assert_eq!(first.views_kept().await, 0);
    Ok(())
}
