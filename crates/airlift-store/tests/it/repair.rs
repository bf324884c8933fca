//! Rollback, retry and reset (`FleetRepair`) on both backends; and the
//! audit log's object and time filters.

use crate::support::{active_deployment, deployment, devices, stored_package, t, Ctx};
use airlift_protocol::management::Target;
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::{
    AuditFilter, DeferralOutcome, NewAuditEntry, NewRollback, PageRequest, RolloutState,
    SharedStore,
};

conformance!(
    a_rollback_aborts_the_original_and_links_the_new_one_at_once,
    previous_releases_are_the_latest_committed_elsewhere,
    retry_moves_failed_devices_back_up_to_a_limit,
    a_retried_device_gets_its_deferrals_back,
    reset_moves_only_a_device_stuck_since_before_the_cutoff,
    audit_entries_filter_by_object_and_time,
);

async fn report(
    store: &SharedStore,
    id: DeploymentId,
    device: DeviceId,
    state: UpdateState,
    at: i64,
) {
    store
        .record_update_state(id, device, state, None, t(at))
        .await
        .expect("report");
}

async fn state_of(store: &SharedStore, id: DeploymentId, device: DeviceId) -> UpdateState {
    store
        .device_update(id, device)
        .await
        .expect("read")
        .expect("in it")
        .state
}

async fn a_rollback_aborts_the_original_and_links_the_new_one_at_once(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 3).await;
    let bad = active_deployment(store, &ids).await;
    report(store, bad, ids[0], UpdateState::Success, 20).await;
    report(store, bad, ids[1], UpdateState::Installing, 20).await;
    let mut back = deployment(stored_package(store).await, 30);
    back.target = Target::Devices(ids[..2].to_vec());
    let rollback = NewRollback {
        deployment: back.clone(),
        devices: ids[..2].to_vec(),
    };
    let rollout = RolloutState {
        reason: Some("circuit breaker; rolling back".into()),
        ..RolloutState::default()
    };
    let started = store
        .start_rollback(
            bad,
            DeploymentStatus::Active,
            &rollout,
            std::slice::from_ref(&rollback),
            t(30),
        )
        .await
        .expect("start");
    assert!(started);
    let original = store.deployment(bad).await.expect("read").expect("exists");
    assert_eq!(original.status, DeploymentStatus::Aborted);
    assert_eq!(
        original.rollout.reason.as_deref(),
        Some("circuit breaker; rolling back")
    );
    assert_eq!(state_of(store, bad, ids[1]).await, UpdateState::Cancelled);
    assert_eq!(state_of(store, bad, ids[2]).await, UpdateState::Cancelled);
    assert_eq!(state_of(store, bad, ids[0]).await, UpdateState::Success);
    let links = store.rollback_links(bad).await.expect("links");
    assert_eq!(links.rolled_back_by, vec![back.id]);
    assert_eq!(
        store
            .rollback_links(back.id)
            .await
            .expect("links")
            .rollback_of,
        Some(bad)
    );
    let targeted = store.deployment_devices(back.id).await.expect("devices");
    assert_eq!(targeted.len(), 2);
    assert!(targeted.iter().all(|d| d.state == UpdateState::Pending));

    // Once moved, a second attempt (another instance) writes nothing.
    let mut again = rollback;
    again.deployment.id = DeploymentId::new();
    let started = store
        .start_rollback(
            bad,
            DeploymentStatus::Active,
            &rollout,
            std::slice::from_ref(&again),
            t(31),
        )
        .await
        .expect("start again");
    assert!(!started);
    assert!(store
        .deployment(again.deployment.id)
        .await
        .expect("read")
        .is_none());
    assert_eq!(
        store
            .rollback_links(bad)
            .await
            .expect("links")
            .rolled_back_by
            .len(),
        1
    );
}

async fn previous_releases_are_the_latest_committed_elsewhere(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 3).await;
    let older = active_deployment(store, &ids).await;
    let newer = active_deployment(store, &ids[..1]).await;
    let bad = active_deployment(store, &ids).await;
    report(store, older, ids[0], UpdateState::Success, 20).await;
    report(store, older, ids[1], UpdateState::Success, 20).await;
    report(store, newer, ids[0], UpdateState::Success, 40).await;
    report(store, older, ids[2], UpdateState::Failure, 20).await;
    report(store, bad, ids[0], UpdateState::Success, 60).await;
    let bad_package = store
        .deployment(bad)
        .await
        .expect("read")
        .expect("exists")
        .package_id;
    let package = |id| async move {
        store
            .deployment(id)
            .await
            .expect("read")
            .expect("exists")
            .package_id
    };
    let previous = store
        .previous_releases(&ids, bad, bad_package)
        .await
        .expect("previous");
    assert_eq!(
        previous.get(&ids[0]),
        Some(&package(newer).await),
        "the latest"
    );
    assert_eq!(previous.get(&ids[1]), Some(&package(older).await));
    assert_eq!(previous.get(&ids[2]), None, "it never committed one");
}

async fn retry_moves_failed_devices_back_up_to_a_limit(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 3).await;
    let id = active_deployment(store, &ids).await;
    report(store, id, ids[0], UpdateState::Failure, 20).await;
    report(store, id, ids[1], UpdateState::Success, 20).await;
    store
        .decide_update_state(id, ids[2], UpdateState::TimedOut, Some("stuck"), t(20))
        .await
        .expect("time out");
    assert!(store
        .finish_deployment_if_done(id, t(21))
        .await
        .expect("finish"));

    let outcome = store
        .retry_failed(id, 1, "offered again", t(30))
        .await
        .expect("retry");
    let mut retried = outcome.retried.clone();
    retried.sort();
    let mut expected = vec![ids[0], ids[2]];
    expected.sort();
    assert_eq!(retried, expected);
    assert!(outcome.reopened);
    assert_eq!(outcome.at_limit, 0);
    let record = store.deployment(id).await.expect("read").expect("exists");
    assert_eq!(record.status, DeploymentStatus::Active);
    assert_eq!(record.finished_at, None);
    assert_eq!(state_of(store, id, ids[0]).await, UpdateState::Pending);
    assert_eq!(state_of(store, id, ids[1]).await, UpdateState::Success);
    let counted = store.retries(id).await.expect("retries");
    assert_eq!(
        (counted.get(&ids[0]), counted.get(&ids[1])),
        (Some(&1), None)
    );

    report(store, id, ids[0], UpdateState::Failure, 40).await;
    let outcome = store
        .retry_failed(id, 1, "again", t(50))
        .await
        .expect("retry");
    assert!(outcome.retried.is_empty());
    assert_eq!(outcome.at_limit, 1);
    let outcome = store
        .retry_failed(id, 2, "again", t(50))
        .await
        .expect("retry");
    assert_eq!(outcome.retried, vec![ids[0]]);
    let history = store.device_history(ids[0]).await.expect("history");
    assert!(history
        .iter()
        .any(|e| e.message.as_deref() == Some("again")));

    assert!(store.cancel_deployment(id, t(60)).await.expect("cancel"));
    assert!(
        store.retry_failed(id, 5, "no", t(70)).await.is_err(),
        "cancelled"
    );
}

async fn a_retried_device_gets_its_deferrals_back(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 2).await;
    let id = active_deployment(store, &ids).await;
    let (used_up, untouched) = (ids[0], ids[1]);
    for device in [used_up, untouched] {
        report(store, id, device, UpdateState::Downloading, 10).await;
        report(store, id, device, UpdateState::Downloaded, 11).await;
    }
    for deferral in 1..=2 {
        let outcome = store
            .record_deferral(id, used_up, deferral, Some(2), None, t(20))
            .await
            .expect("defer");
        assert!(
            matches!(
                outcome,
                Some(DeferralOutcome::Counted { counted: true, .. })
            ),
            "{outcome:?}"
        );
    }
    store
        .record_deferral(id, untouched, 1, Some(2), None, t(20))
        .await
        .expect("defer");
    report(store, id, used_up, UpdateState::Failure, 30).await;

    let outcome = store
        .retry_failed(id, 3, "offered again", t(40))
        .await
        .expect("retry");
    assert_eq!(outcome.retried, vec![used_up]);
    assert_eq!(state_of(store, id, used_up).await, UpdateState::Pending);
    assert_eq!(
        store.deferrals(id, used_up).await.expect("read"),
        Some(0),
        "a retry is a new offer"
    );
    let deferred_at = |device: DeviceId| {
        format!(
            "SELECT deferred_at FROM deployment_devices \
             WHERE deployment_id = '{id}' AND device_id = '{device}'"
        )
    };
    assert_eq!(ctx.scalar_i64(&deferred_at(used_up)).await, None);
    assert_eq!(
        store.deferrals(id, untouched).await.expect("read"),
        Some(1),
        "a device not retried keeps its count"
    );
    assert!(ctx.scalar_i64(&deferred_at(untouched)).await.is_some());

    // Offered again, it may defer from the first deferral on.
    report(store, id, used_up, UpdateState::Downloading, 50).await;
    report(store, id, used_up, UpdateState::Downloaded, 51).await;
    let again = store
        .record_deferral(id, used_up, 1, Some(2), None, t(60))
        .await
        .expect("defer again");
    assert_eq!(
        again,
        Some(DeferralOutcome::Counted {
            deferred: 1,
            counted: true
        })
    );
}

async fn reset_moves_only_a_device_stuck_since_before_the_cutoff(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 2).await;
    let id = active_deployment(store, &ids).await;
    report(store, id, ids[0], UpdateState::Rebooting, 100).await;
    report(store, id, ids[1], UpdateState::Success, 100).await;
    let early = store
        .reset_update(id, ids[0], "why", t(50), t(200))
        .await
        .expect("reset");
    assert_eq!(early, None, "in it only since 100");
    let done = store
        .reset_update(id, ids[1], "why", t(150), t(200))
        .await
        .expect("reset");
    assert_eq!(done, None, "done is not stuck");
    let reset = store
        .reset_update(id, ids[0], "reset by ops: power cut", t(150), t(200))
        .await
        .expect("reset")
        .expect("stuck");
    assert_eq!(reset.was, UpdateState::Rebooting);
    assert_eq!(reset.since, t(100));
    let update = store
        .device_update(id, ids[0])
        .await
        .expect("read")
        .expect("in it");
    assert_eq!(update.state, UpdateState::Pending);
    assert_eq!(update.message.as_deref(), Some("reset by ops: power cut"));
    assert!(store
        .reset_update(id, DeviceId::new(), "why", t(150), t(200))
        .await
        .is_err());
}

async fn audit_entries_filter_by_object_and_time(ctx: Ctx) {
    let store = &ctx.store;
    for (n, object) in ["a", "b", "a"].iter().enumerate() {
        store
            .append_audit(&NewAuditEntry {
                at: t(1000 * (n as i64 + 1)),
                actor: "ops (t1)".into(),
                action: "device.reset".into(),
                object: (*object).into(),
                details: serde_json::json!({}),
            })
            .await
            .expect("append");
    }
    let total = |filter: AuditFilter| async move {
        store
            .list_audit_page(
                &filter,
                None,
                PageRequest {
                    page: 1,
                    per_page: 10,
                },
            )
            .await
            .expect("list")
            .1
    };
    let object = |o: &str| AuditFilter {
        object: Some(o.into()),
        ..AuditFilter::default()
    };
    assert_eq!(total(object("a")).await, 2);
    assert_eq!(total(object("c")).await, 0);
    let span = AuditFilter {
        since: Some(t(2000)),
        until: Some(t(3000)),
        ..object("b")
    };
    assert_eq!(total(span).await, 1, "since is inclusive");
    let before = AuditFilter {
        until: Some(t(2000)),
        ..AuditFilter::default()
    };
    assert_eq!(total(before).await, 1, "until is exclusive");
}
