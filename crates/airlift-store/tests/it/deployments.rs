//! Deployments: creation, listing, counts, cancel and finish.

use crate::support::{active_deployment, deployment, devices, stored_package, t, Ctx};
use airlift_protocol::management::{Strategy, Target};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::StoreError;
use std::collections::BTreeMap;

conformance!(
    round_trip,
    duplicate_id_conflicts,
    unknown_device_is_not_found_and_nothing_is_stored,
    cancel_moves_non_final_devices_only,
    finish_only_when_every_device_is_final,
    add_device_once,
    release_install_lifts_download_only_and_restarts_the_waiting_clock,
    download_progress_is_kept_while_downloading_only,
);

async fn round_trip(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 3).await;
    let package_id = stored_package(store).await;

    let mut older = deployment(package_id, 100);
    older.target = Target::Devices(ids.clone());
    let mut newer = deployment(package_id, 200);
    newer.target = Target::Attributes(
        [("region".to_string(), "eu".to_string())]
            .into_iter()
            .collect(),
    );
    newer.strategy = Strategy::All;
    let mut done = deployment(package_id, 50);
    done.status = DeploymentStatus::Finished;
    done.finished_at = Some(t(60));

    store
        .insert_deployment(
            &older,
            &[
                (ids[0], UpdateState::Pending),
                (ids[1], UpdateState::Incompatible),
                (ids[2], UpdateState::AlreadyInstalled),
            ],
        )
        .await
        .expect("insert");
    store
        .insert_deployment(&newer, &[(ids[0], UpdateState::Pending)])
        .await
        .expect("insert");
    store.insert_deployment(&done, &[]).await.expect("insert");

    assert_eq!(
        store.deployment(older.id).await.expect("get"),
        Some(older.clone())
    );
    assert_eq!(
        store.deployment(done.id).await.expect("get"),
        Some(done.clone())
    );
    assert_eq!(
        store.deployment(DeploymentId::new()).await.expect("get"),
        None
    );
    assert_eq!(
        store.list_deployments().await.expect("list"),
        vec![newer.clone(), older.clone(), done.clone()],
        "newest first"
    );
    assert_eq!(
        store.active_deployments().await.expect("active"),
        vec![older.clone(), newer.clone()],
        "active, oldest first"
    );

    let counts = store.deployment_counts(older.id).await.expect("counts");
    let expected: BTreeMap<_, _> = [
        (UpdateState::Pending, 1),
        (UpdateState::Incompatible, 1),
        (UpdateState::AlreadyInstalled, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expected);
    assert!(store
        .deployment_counts(DeploymentId::new())
        .await
        .expect("counts")
        .is_empty());

    let mut listed = store.deployment_devices(older.id).await.expect("devices");
    listed.sort_by_key(|u| u.device_id);
    let mut expected_ids = ids.clone();
    expected_ids.sort();
    assert_eq!(
        listed.iter().map(|u| u.device_id).collect::<Vec<_>>(),
        expected_ids
    );
    assert!(listed
        .iter()
        .all(|u| u.updated_at == t(100) && u.message.is_none()));

    let one = store
        .device_update(older.id, ids[1])
        .await
        .expect("get")
        .expect("targeted");
    assert_eq!(one.state, UpdateState::Incompatible);
    assert_eq!(
        store.device_update(newer.id, ids[1]).await.expect("get"),
        None
    );
    assert_eq!(
        store
            .device_update(DeploymentId::new(), ids[1])
            .await
            .expect("get"),
        None
    );
}

async fn duplicate_id_conflicts(ctx: Ctx) {
    let store = &ctx.store;
    let package_id = stored_package(store).await;
    let first = deployment(package_id, 0);
    store.insert_deployment(&first, &[]).await.expect("insert");
    let error = store
        .insert_deployment(&first, &[])
        .await
        .expect_err("same id");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
}

async fn unknown_device_is_not_found_and_nothing_is_stored(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 1).await;
    let package_id = stored_package(store).await;
    let record = deployment(package_id, 0);
    let error = store
        .insert_deployment(
            &record,
            &[
                (ids[0], UpdateState::Pending),
                (DeviceId::new(), UpdateState::Pending),
            ],
        )
        .await
        .expect_err("unknown device");
    assert!(matches!(error, StoreError::NotFound(_)), "{error:?}");
    assert_eq!(store.deployment(record.id).await.expect("get"), None);
    assert_eq!(
        store.device_update(record.id, ids[0]).await.expect("get"),
        None
    );
}

async fn cancel_moves_non_final_devices_only(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 5).await;
    let package_id = stored_package(store).await;
    let record = deployment(package_id, 0);
    let initial = [
        UpdateState::Pending,
        UpdateState::Pending,
        UpdateState::Incompatible,
        UpdateState::Pending,
        UpdateState::Pending,
    ];
    let targets: Vec<_> = ids.iter().copied().zip(initial).collect();
    store
        .insert_deployment(&record, &targets)
        .await
        .expect("insert");
    // 0 stays pending, 1 downloading, 2 incompatible, 3 succeeded, 4 failed.
    for (device, state) in [
        (ids[1], UpdateState::Downloading),
        (ids[3], UpdateState::Success),
        (ids[4], UpdateState::Failure),
    ] {
        let outcome = store
            .record_update_state(record.id, device, state, None, t(10))
            .await
            .expect("report");
        assert!(outcome.applied);
    }

    assert!(store
        .cancel_deployment(record.id, t(20))
        .await
        .expect("cancel"));
    let cancelled = store
        .deployment(record.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(cancelled.status, DeploymentStatus::Cancelled);
    assert_eq!(cancelled.finished_at, Some(t(20)));
    assert!(store.active_deployments().await.expect("active").is_empty());

    let expected = [
        UpdateState::Cancelled,
        UpdateState::Cancelled,
        UpdateState::Incompatible,
        UpdateState::Success,
        UpdateState::Failure,
    ];
    for (device, state) in ids.iter().zip(expected) {
        let update = store
            .device_update(record.id, *device)
            .await
            .expect("get")
            .expect("kept");
        assert_eq!(update.state, state, "{device:?}");
        let history = store.device_history(*device).await.expect("history");
        let cancelled_events = history
            .iter()
            .filter(|e| e.state == UpdateState::Cancelled)
            .count();
        if state == UpdateState::Cancelled {
            assert_eq!(update.updated_at, t(20));
            assert_eq!(cancelled_events, 1);
            assert!(history[0].applied && history[0].at == t(20));
            assert_eq!(history[0].deployment_id, record.id);
        } else {
            assert_eq!(cancelled_events, 0);
        }
    }

    // Once cancelled, there is nothing to cancel or finish, and late reports are stale.
    assert!(!store
        .cancel_deployment(record.id, t(30))
        .await
        .expect("cancel again"));
    assert!(!store
        .finish_deployment_if_done(record.id, t(30))
        .await
        .expect("finish"));
    assert!(!store
        .cancel_deployment(DeploymentId::new(), t(30))
        .await
        .expect("unknown"));
    let late = store
        .record_update_state(record.id, ids[1], UpdateState::Downloaded, None, t(40))
        .await
        .expect("late report");
    assert_eq!((late.state, late.applied), (UpdateState::Cancelled, false));
}

async fn finish_only_when_every_device_is_final(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 2).await;
    let deployment_id = active_deployment(store, &ids).await;

    assert!(!store
        .finish_deployment_if_done(deployment_id, t(20))
        .await
        .expect("finish"));
    store
        .record_update_state(deployment_id, ids[0], UpdateState::Success, None, t(21))
        .await
        .expect("report");
    store
        .record_update_state(deployment_id, ids[1], UpdateState::Installing, None, t(21))
        .await
        .expect("report");
    assert!(!store
        .finish_deployment_if_done(deployment_id, t(22))
        .await
        .expect("finish"));
    store
        .record_update_state(
            deployment_id,
            ids[1],
            UpdateState::RolledBack,
            Some("health check failed"),
            t(23),
        )
        .await
        .expect("report");
    assert!(store
        .finish_deployment_if_done(deployment_id, t(24))
        .await
        .expect("finish"));

    let finished = store
        .deployment(deployment_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(finished.status, DeploymentStatus::Finished);
    assert_eq!(finished.finished_at, Some(t(24)));
    assert!(!store
        .finish_deployment_if_done(deployment_id, t(25))
        .await
        .expect("again"));
    assert!(!store
        .cancel_deployment(deployment_id, t(25))
        .await
        .expect("cancel finished"));
    assert!(!store
        .finish_deployment_if_done(DeploymentId::new(), t(25))
        .await
        .expect("unknown"));
}

async fn add_device_once(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 2).await;
    let deployment_id = active_deployment(store, &ids[..1]).await;

    let added = store
        .add_device_to_deployment(
            deployment_id,
            ids[1],
            UpdateState::Pending,
            Some("joined tag"),
            t(30),
        )
        .await
        .expect("add");
    assert_eq!(added.device_id, ids[1]);
    assert_eq!(added.state, UpdateState::Pending);
    assert_eq!(added.message.as_deref(), Some("joined tag"));
    assert_eq!(added.updated_at, t(30));

    // There already: its state is kept and returned.
    store
        .record_update_state(deployment_id, ids[1], UpdateState::Downloading, None, t(31))
        .await
        .expect("report");
    let again = store
        .add_device_to_deployment(
            deployment_id,
            ids[1],
            UpdateState::Incompatible,
            None,
            t(32),
        )
        .await
        .expect("add again");
    assert_eq!(again.state, UpdateState::Downloading);
    assert_eq!(again.updated_at, t(31));
    assert_eq!(
        store
            .deployment_devices(deployment_id)
            .await
            .expect("devices")
            .len(),
        2
    );

    for (deployment, device) in [
        (deployment_id, DeviceId::new()),
        (DeploymentId::new(), ids[0]),
    ] {
        let error = store
            .add_device_to_deployment(deployment, device, UpdateState::Pending, None, t(33))
            .await
            .expect_err("unknown");
        assert!(matches!(error, StoreError::NotFound(_)), "{error:?}");
    }
}

async fn release_install_lifts_download_only_and_restarts_the_waiting_clock(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 2).await;
    let package_id = stored_package(store).await;
    let mut record = deployment(package_id, 0);
    record.install = airlift_protocol::install::InstallPolicy {
        window: Some("02:00-04:00".parse().expect("window")),
        download_only: true,
        soft: None,
    };
    let targets: Vec<_> = ids.iter().map(|d| (*d, UpdateState::Pending)).collect();
    store
        .insert_deployment(&record, &targets)
        .await
        .expect("insert");
    assert_eq!(
        store
            .deployment(record.id)
            .await
            .expect("get")
            .expect("exists")
            .install,
        record.install,
        "the policy round-trips"
    );
    for (device, state) in [
        (ids[0], UpdateState::Downloading),
        (ids[0], UpdateState::Downloaded),
    ] {
        store
            .record_update_state(record.id, device, state, None, t(10))
            .await
            .expect("report");
    }

    assert!(store
        .release_install(record.id, t(50))
        .await
        .expect("release"));
    let released = store
        .deployment(record.id)
        .await
        .expect("get")
        .expect("exists");
    assert!(!released.install.download_only);
    assert_eq!(
        released.install.window, record.install.window,
        "the window stays"
    );
    let updates: BTreeMap<DeviceId, _> = store
        .deployment_devices(record.id)
        .await
        .expect("devices")
        .into_iter()
        .map(|u| (u.device_id, u))
        .collect();
    assert_eq!(
        updates[&ids[0]].updated_at,
        t(50),
        "the waiting device's clock restarts"
    );
    assert_eq!(
        updates[&ids[1]].updated_at,
        t(0),
        "a pending device's does not"
    );
    assert!(
        !store
            .release_install(record.id, t(60))
            .await
            .expect("again"),
        "a released deployment is not held"
    );

    assert!(store
        .cancel_deployment(record.id, t(70))
        .await
        .expect("cancel"));
    let mut held = deployment(package_id, 80);
    held.install.download_only = true;
    store.insert_deployment(&held, &[]).await.expect("insert");
    store
        .cancel_deployment(held.id, t(90))
        .await
        .expect("cancel");
    assert!(
        !store
            .release_install(held.id, t(95))
            .await
            .expect("release"),
        "a cancelled deployment is not released"
    );
}

async fn download_progress_is_kept_while_downloading_only(ctx: Ctx) {
    use airlift_protocol::device::Progress;
    let store = &ctx.store;
    let ids = devices(store, 1).await;
    let package_id = stored_package(store).await;
    let record = deployment(package_id, 0);
    store
        .insert_deployment(&record, &[(ids[0], UpdateState::Pending)])
        .await
        .expect("insert");
    let progress = |done| Progress { done, total: 1000 };
    let shown = || async {
        store
            .device_update(record.id, ids[0])
            .await
            .expect("get")
            .expect("in the deployment")
    };

    assert!(
        !store
            .record_progress(record.id, ids[0], progress(10), t(5))
            .await
            .expect("progress"),
        "not downloading yet"
    );
    store
        .record_update_state(record.id, ids[0], UpdateState::Downloading, None, t(10))
        .await
        .expect("report");
    assert_eq!(shown().await.progress, None);
    for (done, at) in [(250, 12), (600, 15)] {
        assert!(store
            .record_progress(record.id, ids[0], progress(done), t(at))
            .await
            .expect("progress"));
    }
    let downloading = shown().await;
    assert_eq!(downloading.progress, Some(progress(600)), "the latest");
    assert_eq!(downloading.progress_at, Some(t(15)));
    assert_eq!(
        downloading.updated_at,
        t(10),
        "the state's clock is not moved"
    );
    let history = store.device_history(ids[0]).await.expect("history");
    assert_eq!(history.len(), 1, "progress is not history: {history:?}");

    store
        .record_update_state(record.id, ids[0], UpdateState::Downloaded, None, t(20))
        .await
        .expect("report");
    assert_eq!(shown().await.progress, None, "past the download");
    assert!(!store
        .record_progress(record.id, ids[0], progress(700), t(25))
        .await
        .expect("progress"));
    let unknown = DeploymentId::new();
    assert!(!store
        .record_progress(unknown, ids[0], progress(1), t(25))
        .await
        .expect("progress"));
}
