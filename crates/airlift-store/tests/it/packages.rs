//! Packages: unique name and version, deletion refused while in use.

use crate::support::{deployment, devices, package, t, Ctx};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::PackageId;
use airlift_store::StoreError;

conformance!(
    round_trip,
    duplicate_name_and_version_conflicts,
    delete_unknown_is_not_found,
    delete_refused_while_active_and_allowed_after_cancel,
    delete_allowed_after_finish,
    deployment_of_unknown_package_is_not_found,
    delete_racing_new_deployments_stays_consistent,
);

async fn round_trip(ctx: Ctx) {
    let store = &ctx.store;
    assert!(store.list_packages().await.expect("list").is_empty());
    let older = package("rootfs", "1.0.0", 1_000);
    let mut newer = package("rootfs", "1.1.0", 2_000);
    newer.package.description = None;
    newer.package.security_version = u64::try_from(i64::MAX).expect("fits");
    store.insert_package(&older).await.expect("insert");
    store.insert_package(&newer).await.expect("insert");

    assert_eq!(
        store.package(older.package.id).await.expect("get"),
        Some(older.clone())
    );
    assert_eq!(
        store.package(newer.package.id).await.expect("get"),
        Some(newer.clone())
    );
    assert_eq!(store.package(PackageId::new()).await.expect("get"), None);
    assert_eq!(
        store.list_packages().await.expect("list"),
        vec![newer, older],
        "newest first"
    );
}

async fn duplicate_name_and_version_conflicts(ctx: Ctx) {
    let store = &ctx.store;
    store
        .insert_package(&package("rootfs", "1.0.0", 0))
        .await
        .expect("insert");
    let error = store
        .insert_package(&package("rootfs", "1.0.0", 1))
        .await
        .expect_err("same name and version");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    store
        .insert_package(&package("rootfs", "1.0.1", 2))
        .await
        .expect("other version");
    store
        .insert_package(&package("app", "1.0.0", 3))
        .await
        .expect("other name");
    assert_eq!(store.list_packages().await.expect("list").len(), 3);
}

async fn delete_unknown_is_not_found(ctx: Ctx) {
    let error = ctx
        .store
        .delete_package(PackageId::new())
        .await
        .expect_err("unknown");
    assert!(matches!(error, StoreError::NotFound(_)), "{error:?}");
}

async fn delete_refused_while_active_and_allowed_after_cancel(ctx: Ctx) {
    let store = &ctx.store;
    let record = package("rootfs", "2.0.0", 0);
    store.insert_package(&record).await.expect("insert");
    let ids = devices(store, 2).await;
    let active = deployment(record.package.id, 10);
    let targets: Vec<_> = ids.iter().map(|d| (*d, UpdateState::Pending)).collect();
    store
        .insert_deployment(&active, &targets)
        .await
        .expect("deploy");

    let error = store
        .delete_package(record.package.id)
        .await
        .expect_err("in use");
    assert!(matches!(error, StoreError::InUse(_)), "{error:?}");
    assert!(store
        .package(record.package.id)
        .await
        .expect("get")
        .is_some());

    assert!(store
        .cancel_deployment(active.id, t(20))
        .await
        .expect("cancel"));
    let deleted = store
        .delete_package(record.package.id)
        .await
        .expect("delete");
    assert_eq!(deleted, record);
    assert_eq!(store.package(record.package.id).await.expect("get"), None);
    // The deployment's record outlives its package.
    let kept = store
        .deployment(active.id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(kept.package_id, record.package.id);
    assert_eq!(kept.status, DeploymentStatus::Cancelled);
}

async fn delete_allowed_after_finish(ctx: Ctx) {
    let store = &ctx.store;
    let record = package("rootfs", "3.0.0", 0);
    store.insert_package(&record).await.expect("insert");
    let ids = devices(store, 1).await;
    let active = deployment(record.package.id, 10);
    store
        .insert_deployment(&active, &[(ids[0], UpdateState::Pending)])
        .await
        .expect("deploy");
    store
        .record_update_state(active.id, ids[0], UpdateState::Success, None, t(11))
        .await
        .expect("report");
    assert!(store
        .finish_deployment_if_done(active.id, t(12))
        .await
        .expect("finish"));
    store
        .delete_package(record.package.id)
        .await
        .expect("delete");
}

async fn deployment_of_unknown_package_is_not_found(ctx: Ctx) {
    let store = &ctx.store;
    let record = deployment(PackageId::new(), 0);
    let error = store
        .insert_deployment(&record, &[])
        .await
        .expect_err("no package");
    assert!(matches!(error, StoreError::NotFound(_)), "{error:?}");
    assert_eq!(store.deployment(record.id).await.expect("get"), None);
}

/// Deleting a package while deployments of it are being created: either the
/// deployment exists (and the package too), or its creation failed.
async fn delete_racing_new_deployments_stays_consistent(ctx: Ctx) {
    let store = &ctx.store;
    for round in 0..10 {
        let record = package("raced", &format!("1.0.{round}"), round);
        store.insert_package(&record).await.expect("insert");
        let creations: Vec<_> = (0..3)
            .map(|n| {
                let store = store.clone();
                let deployment = deployment(record.package.id, round * 10 + n);
                tokio::spawn(async move {
                    store
                        .insert_deployment(&deployment, &[])
                        .await
                        .map(|()| deployment.id)
                })
            })
            .collect();
        let deletion = {
            let store = store.clone();
            let id = record.package.id;
            tokio::spawn(async move { store.delete_package(id).await })
        };
        let mut created = Vec::new();
        for creation in creations {
            match creation.await.expect("task") {
                Ok(id) => created.push(id),
                Err(StoreError::NotFound(_)) => {}
                Err(other) => panic!("unexpected: {other:?}"),
            }
        }
        match deletion.await.expect("task") {
            Ok(_) => assert!(created.is_empty(), "deleted a package of {created:?}"),
            Err(StoreError::InUse(_)) => assert!(!created.is_empty()),
            Err(other) => panic!("unexpected: {other:?}"),
        }
        let exists = store
            .package(record.package.id)
            .await
            .expect("get")
            .is_some();
        assert_eq!(exists, !created.is_empty(), "round {round}");
    }
}
