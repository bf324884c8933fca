//! Reports and decisions on one device's update: ordering rules, history,
//! and consistency under concurrent reports.

use crate::support::{active_deployment, devices, t, Ctx};
use airlift_protocol::management::UpdateEvent;
use airlift_protocol::state::UpdateState::{self, *};
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::{ReportOutcome, SharedStore, StoreError};

conformance!(
    reports_advance_and_are_kept_in_history,
    late_report_is_not_applied_but_kept,
    repeat_is_idempotent,
    refused_states_are_kept_but_not_applied,
    unknown_device_or_deployment_is_not_found,
    decisions_override_unless_final,
    history_spans_deployments_newest_first,
    racing_reports_on_one_device_end_consistent,
    racing_reports_and_cancel_end_consistent,
);

fn outcome(state: UpdateState, applied: bool) -> ReportOutcome {
    ReportOutcome { state, applied }
}

async fn report(
    store: &SharedStore,
    deployment: DeploymentId,
    device: DeviceId,
    state: UpdateState,
    at: i64,
) -> ReportOutcome {
    store
        .record_update_state(deployment, device, state, None, t(at))
        .await
        .expect("report")
}

async fn reports_advance_and_are_kept_in_history(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 1).await;
    let deployment = active_deployment(store, &ids).await;
    let path = [
        Downloading,
        Downloaded,
        Installing,
        Installed,
        Rebooting,
        Success,
    ];
    for (n, state) in path.into_iter().enumerate() {
        let at = 100 + n as i64;
        let message = format!("step {n}");
        let result = store
            .record_update_state(deployment, ids[0], state, Some(&message), t(at))
            .await
            .expect("report");
        assert_eq!(result, outcome(state, true));
        let update = store
            .device_update(deployment, ids[0])
            .await
            .expect("get")
            .expect("targeted");
        assert_eq!(update.state, state);
        assert_eq!(update.message.as_deref(), Some(message.as_str()));
        assert_eq!(update.updated_at, t(at));
    }
    let history = store.device_history(ids[0]).await.expect("history");
    let expected: Vec<UpdateEvent> = path
        .into_iter()
        .enumerate()
        .rev()
        .map(|(n, state)| UpdateEvent {
            deployment_id: deployment,
            device_id: ids[0],
            state,
            applied: true,
            message: Some(format!("step {n}")),
            at: t(100 + n as i64),
        })
        .collect();
    assert_eq!(history, expected, "newest first");

    // Skipping steps is fine; failing from any step before the end too.
    let ids = devices_more(store, 2).await;
    let deployment = active_deployment(store, &ids).await;
    assert_eq!(
        report(store, deployment, ids[0], Installing, 1).await,
        outcome(Installing, true)
    );
    assert_eq!(
        report(store, deployment, ids[0], Failure, 2).await,
        outcome(Failure, true)
    );
    assert_eq!(
        report(store, deployment, ids[1], Rebooting, 1).await,
        outcome(Rebooting, true)
    );
    assert_eq!(
        report(store, deployment, ids[1], RolledBack, 2).await,
        outcome(RolledBack, true)
    );
}

/// More devices in a store that already has some (keys must differ).
async fn devices_more(store: &SharedStore, count: u32) -> Vec<DeviceId> {
    let mut ids = Vec::new();
    for n in 0..count {
        let device = crate::support::device(1_000 + n, 1_000 + i64::from(n));
        store.insert_device(&device).await.expect("insert device");
        ids.push(device.id);
    }
    ids
}

async fn late_report_is_not_applied_but_kept(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 1).await;
    let deployment = active_deployment(store, &ids).await;
    assert_eq!(
        report(store, deployment, ids[0], Installing, 1).await,
        outcome(Installing, true)
    );
    assert_eq!(
        report(store, deployment, ids[0], Success, 2).await,
        outcome(Success, true)
    );
    // A `downloading` report that was delayed in the network arrives last.
    let late = store
        .record_update_state(deployment, ids[0], Downloading, Some("42%"), t(3))
        .await
        .expect("late");
    assert_eq!(late, outcome(Success, false));
    let update = store
        .device_update(deployment, ids[0])
        .await
        .expect("get")
        .expect("targeted");
    assert_eq!((update.state, update.updated_at), (Success, t(2)));

    let history = store.device_history(ids[0]).await.expect("history");
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].state, Downloading);
    assert!(!history[0].applied);
    assert_eq!(history[0].message.as_deref(), Some("42%"));
    assert!(history[1].applied && history[1].state == Success);

    // Backwards before the end is stale too; a final state never changes.
    let ids = devices_more(store, 1).await;
    let deployment = active_deployment(store, &ids).await;
    report(store, deployment, ids[0], Installed, 1).await;
    assert_eq!(
        report(store, deployment, ids[0], Downloaded, 2).await,
        outcome(Installed, false)
    );
    report(store, deployment, ids[0], Failure, 3).await;
    assert_eq!(
        report(store, deployment, ids[0], Success, 4).await,
        outcome(Failure, false)
    );
}

async fn repeat_is_idempotent(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 1).await;
    let deployment = active_deployment(store, &ids).await;
    assert_eq!(
        report(store, deployment, ids[0], Downloading, 1).await,
        outcome(Downloading, true)
    );
    let before = store.device_update(deployment, ids[0]).await.expect("get");
    for at in 2..5 {
        assert_eq!(
            report(store, deployment, ids[0], Downloading, at).await,
            outcome(Downloading, false)
        );
    }
    assert_eq!(
        store.device_update(deployment, ids[0]).await.expect("get"),
        before
    );
    let history = store.device_history(ids[0]).await.expect("history");
    assert_eq!(history.len(), 4);
    assert_eq!(history.iter().filter(|e| e.applied).count(), 1);
}

async fn refused_states_are_kept_but_not_applied(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 1).await;
    let deployment = active_deployment(store, &ids).await;
    for (n, state) in [Pending, Cancelled, Incompatible].into_iter().enumerate() {
        let result = report(store, deployment, ids[0], state, n as i64).await;
        assert_eq!(result, outcome(Pending, false), "{state}");
    }
    report(store, deployment, ids[0], Downloading, 10).await;
    assert_eq!(
        report(store, deployment, ids[0], Cancelled, 11).await,
        outcome(Downloading, false)
    );
    let history = store.device_history(ids[0]).await.expect("history");
    assert_eq!(history.len(), 5);
    assert_eq!(history.iter().filter(|e| e.applied).count(), 1);
}

async fn unknown_device_or_deployment_is_not_found(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 2).await;
    let deployment = active_deployment(store, &ids[..1]).await;
    let cases = [
        (deployment, ids[1]),
        (deployment, DeviceId::new()),
        (DeploymentId::new(), ids[0]),
    ];
    for (deployment_id, device) in cases {
        let error = store
            .record_update_state(deployment_id, device, Downloading, None, t(1))
            .await
            .expect_err("not targeted");
        assert!(matches!(error, StoreError::NotFound(_)), "{error:?}");
        let error = store
            .decide_update_state(deployment_id, device, Cancelled, None, t(1))
            .await
            .expect_err("not targeted");
        assert!(matches!(error, StoreError::NotFound(_)), "{error:?}");
    }
    assert!(store
        .device_history(ids[1])
        .await
        .expect("history")
        .is_empty());
}

async fn decisions_override_unless_final(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 2).await;
    let deployment = active_deployment(store, &ids).await;

    // From a non-final state, the server's word goes, even backwards.
    report(store, deployment, ids[0], Installing, 1).await;
    let decided = store
        .decide_update_state(
            deployment,
            ids[0],
            Incompatible,
            Some("hardware revision"),
            t(2),
        )
        .await
        .expect("decide");
    assert_eq!(decided, outcome(Incompatible, true));
    let update = store
        .device_update(deployment, ids[0])
        .await
        .expect("get")
        .expect("targeted");
    assert_eq!(update.message.as_deref(), Some("hardware revision"));
    // A final state is kept.
    let again = store
        .decide_update_state(deployment, ids[0], Cancelled, None, t(3))
        .await
        .expect("decide");
    assert_eq!(again, outcome(Incompatible, false));
    assert_eq!(
        report(store, deployment, ids[0], Success, 4).await,
        outcome(Incompatible, false)
    );

    let decided = store
        .decide_update_state(deployment, ids[1], AlreadyInstalled, None, t(5))
        .await
        .expect("decide");
    assert_eq!(decided, outcome(AlreadyInstalled, true));

    let history = store.device_history(ids[0]).await.expect("history");
    let states: Vec<_> = history.iter().map(|e| (e.state, e.applied)).collect();
    assert_eq!(
        states,
        [
            (Success, false),
            (Cancelled, false),
            (Incompatible, true),
            (Installing, true)
        ]
    );
}

async fn history_spans_deployments_newest_first(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 1).await;
    let first = active_deployment(store, &ids).await;
    report(store, first, ids[0], Downloading, 1).await;
    store.cancel_deployment(first, t(2)).await.expect("cancel");
    let package = crate::support::package("rootfs", "9.9.9", 3);
    store.insert_package(&package).await.expect("package");
    let second = crate::support::deployment(package.package.id, 3);
    store
        .insert_deployment(&second, &[(ids[0], Pending)])
        .await
        .expect("deploy");
    let second = second.id;
    report(store, second, ids[0], Success, 4).await;

    let history = store.device_history(ids[0]).await.expect("history");
    let seen: Vec<_> = history
        .iter()
        .map(|e| (e.deployment_id, e.state, e.at))
        .collect();
    assert_eq!(
        seen,
        [
            (second, Success, t(4)),
            (first, Cancelled, t(2)),
            (first, Downloading, t(1)),
        ]
    );
}

/// Many tasks report every step of the path at once, in no order: the device
/// ends at the last step, every report is in the history, and the applied
/// ones moved strictly forward, ending at the recorded state.
async fn racing_reports_on_one_device_end_consistent(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 1).await;
    let deployment = active_deployment(store, &ids).await;
    let path = [
        Downloading,
        Downloaded,
        Installing,
        Installed,
        Rebooting,
        Success,
    ];
    let tasks: Vec<_> = (0..36)
        .map(|n| {
            let store = store.clone();
            let state = path[n % path.len()];
            let device = ids[0];
            tokio::spawn(async move {
                store
                    .record_update_state(deployment, device, state, None, t(1))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("report");
    }
    let update = store
        .device_update(deployment, ids[0])
        .await
        .expect("get")
        .expect("targeted");
    assert_eq!(update.state, Success);
    assert_consistent_history(store, deployment, ids[0], Success, 36).await;
}

/// Reports for many devices race with a cancel: afterwards every device is
/// final, and its recorded state is the last one its history applied.
async fn racing_reports_and_cancel_end_consistent(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 8).await;
    let deployment = active_deployment(store, &ids).await;
    let mut tasks = Vec::new();
    for (n, device) in ids.iter().copied().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let path: &[UpdateState] = if n % 2 == 0 {
                &[
                    Downloading,
                    Downloaded,
                    Installing,
                    Installed,
                    Rebooting,
                    Success,
                ]
            } else {
                &[Downloading, Failure]
            };
            for state in path {
                store
                    .record_update_state(deployment, device, *state, None, t(5))
                    .await
                    .expect("report");
                tokio::task::yield_now().await;
            }
        }));
    }
    let cancel = {
        let store = store.clone();
        tokio::spawn(async move { store.cancel_deployment(deployment, t(5)).await })
    };
    for task in tasks {
        task.await.expect("task");
    }
    assert!(cancel.await.expect("task").expect("cancel"));

    let updates = store.deployment_devices(deployment).await.expect("devices");
    assert_eq!(updates.len(), ids.len());
    for update in updates {
        assert!(update.state.is_final(), "{update:?}");
        let history = store
            .device_history(update.device_id)
            .await
            .expect("history");
        let last_applied = history.iter().find(|e| e.applied).map(|e| e.state);
        assert_eq!(last_applied, Some(update.state), "{history:?}");
    }
    let counts = store.deployment_counts(deployment).await.expect("counts");
    assert_eq!(counts.values().sum::<u64>(), ids.len() as u64);
}

async fn assert_consistent_history(
    store: &SharedStore,
    deployment: DeploymentId,
    device: DeviceId,
    end: UpdateState,
    reports: usize,
) {
    let mut history = store.device_history(device).await.expect("history");
    assert_eq!(history.len(), reports);
    assert!(history.iter().all(|e| e.deployment_id == deployment));
    history.reverse(); // oldest first
    let applied: Vec<_> = history
        .iter()
        .filter(|e| e.applied)
        .map(|e| e.state)
        .collect();
    assert!(
        applied.windows(2).all(|w| w[0].rank() < w[1].rank()),
        "applied out of order: {applied:?}"
    );
    assert_eq!(applied.last(), Some(&end));
}
