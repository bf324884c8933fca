//! Pages of packages and deployments, a page of deployments counted in one
//! query, and a deployment's devices by state and reason: what the
//! dashboard and the management API's lists read.

use crate::support::{deployment, devices, package, stored_package, t, Ctx};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::DeploymentId;
use airlift_store::{
    DeploymentDevicesFilter, DeploymentFilter, PageRequest, ReasonMatch, UpdateCount,
};

conformance!(
    packages_page_newest_first,
    deployments_page_filtered_by_status,
    tallies_count_a_page_by_state_and_phase,
    failures_grouped_by_reason_and_devices_listed_by_it,
);

fn page(page: u32, per_page: u32) -> PageRequest {
    PageRequest { page, per_page }
}

async fn packages_page_newest_first(ctx: Ctx) {
    let store = &ctx.store;
    let (empty, total) = store.list_packages_page(page(1, 10)).await.expect("list");
    assert!(empty.is_empty());
    assert_eq!(total, 0);
    let mut stored = Vec::new();
    for n in 0..5 {
        let record = package("rootfs", &format!("1.{n}.0"), i64::from(n) * 1000);
        store.insert_package(&record).await.expect("insert");
        stored.push(record);
    }
    stored.reverse();
    let (first, total) = store.list_packages_page(page(1, 2)).await.expect("page 1");
    assert_eq!(total, 5);
    assert_eq!(first, stored[..2]);
    let (last, _) = store.list_packages_page(page(3, 2)).await.expect("page 3");
    assert_eq!(last, stored[4..]);
    let (zero, _) = store.list_packages_page(page(0, 2)).await.expect("page 0");
    assert_eq!(zero, first, "page 0 reads as page 1");
    let (beyond, total) = store.list_packages_page(page(9, 2)).await.expect("beyond");
    assert!(beyond.is_empty());
    assert_eq!(total, 5);
}

async fn deployments_page_filtered_by_status(ctx: Ctx) {
    let store = &ctx.store;
    let package_id = stored_package(store).await;
    let mut records = Vec::new();
    for n in 0..5 {
        let mut record = deployment(package_id, i64::from(n) * 100);
        if n % 2 == 1 {
            record.status = DeploymentStatus::Finished;
            record.finished_at = Some(t(i64::from(n) * 100 + 50));
        }
        store.insert_deployment(&record, &[]).await.expect("insert");
        records.push(record);
    }
    records.reverse();
    let any = DeploymentFilter::default();
    let (first, total) = store
        .list_deployments_page(&any, page(1, 3))
        .await
        .expect("page");
    assert_eq!(total, 5);
    assert_eq!(first, records[..3], "newest first");
    let (second, _) = store
        .list_deployments_page(&any, page(2, 3))
        .await
        .expect("page 2");
    assert_eq!(second, records[3..]);

    let finished = DeploymentFilter {
        status: Some(DeploymentStatus::Finished),
    };
    let (listed, total) = store
        .list_deployments_page(&finished, page(1, 10))
        .await
        .expect("finished");
    assert_eq!(total, 2);
    assert!(listed
        .iter()
        .all(|d| d.status == DeploymentStatus::Finished));
    let paused = DeploymentFilter {
        status: Some(DeploymentStatus::Paused),
    };
    let (none, total) = store
        .list_deployments_page(&paused, page(1, 10))
        .await
        .expect("paused");
    assert!(none.is_empty());
    assert_eq!(total, 0);
}

async fn tallies_count_a_page_by_state_and_phase(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 4).await;
    let package_id = stored_package(store).await;
    let first = deployment(package_id, 0);
    let second = deployment(package_id, 1);
    let targets: Vec<_> = ids.iter().map(|d| (*d, UpdateState::Pending)).collect();
    store
        .insert_deployment(&first, &targets)
        .await
        .expect("insert");
    store
        .insert_deployment(&second, &targets[..1])
        .await
        .expect("insert");
    store
        .admit_devices(first.id, 0, &ids[..2])
        .await
        .expect("admit");
    store
        .record_update_state(first.id, ids[0], UpdateState::Failure, None, t(6))
        .await
        .expect("report");

    let mut tallies = store
        .deployment_tallies(&[first.id, second.id, DeploymentId::new()])
        .await
        .expect("tallies");
    tallies.sort_by_key(|c| (c.deployment != first.id, c.state, c.phase));
    let count = |deployment, state, phase, devices| UpdateCount {
        deployment,
        state,
        phase,
        devices,
    };
    assert_eq!(
        tallies,
        vec![
            count(first.id, UpdateState::Pending, None, 2),
            count(first.id, UpdateState::Pending, Some(0), 1),
            count(first.id, UpdateState::Failure, Some(0), 1),
            count(second.id, UpdateState::Pending, None, 1),
        ]
    );
    assert!(store
        .deployment_tallies(&[])
        .await
        .expect("nothing asked")
        .is_empty());
}

async fn failures_grouped_by_reason_and_devices_listed_by_it(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 6).await;
    let package_id = stored_package(store).await;
    let record = deployment(package_id, 0);
    let targets: Vec<_> = ids.iter().map(|d| (*d, UpdateState::Pending)).collect();
    store
        .insert_deployment(&record, &targets)
        .await
        .expect("insert");
    let disk = "disk full: 100% of /data";
    for (device, state, message) in [
        (ids[0], UpdateState::Failure, Some(disk)),
        (ids[1], UpdateState::RolledBack, Some(disk)),
        (ids[2], UpdateState::Failure, Some("health check failed")),
        (ids[3], UpdateState::Failure, None),
        (ids[4], UpdateState::Success, Some(disk)),
    ] {
        store
            .record_update_state(record.id, device, state, message, t(10))
            .await
            .expect("report");
    }

    let groups = store
        .deployment_failures(record.id, 10)
        .await
        .expect("failures");
    assert_eq!(groups[0].reason.as_deref(), Some(disk));
    assert_eq!(
        groups[0].devices, 2,
        "a success with the same words is no failure"
    );
    assert_eq!(groups[0].last_at, t(10));
    let mut rest: Vec<_> = groups[1..]
        .iter()
        .map(|g| (g.reason.clone(), g.devices))
        .collect();
    rest.sort();
    assert_eq!(
        rest,
        vec![(None, 1), (Some("health check failed".into()), 1)]
    );
    assert_eq!(
        store
            .deployment_failures(record.id, 1)
            .await
            .expect("largest")
            .len(),
        1
    );

    let list = |filter: DeploymentDevicesFilter, per_page: u32| {
        let store = store.clone();
        async move {
            let devices = store
                .deployment_devices_page(record.id, &filter, page(1, per_page))
                .await
                .expect("devices");
            let total = store
                .count_deployment_devices(record.id, &filter)
                .await
                .expect("count");
            (devices, total)
        }
    };
    let failed: Vec<UpdateState> = UpdateState::ALL
        .iter()
        .copied()
        .filter(UpdateState::is_failure)
        .collect();
    let (all, total) = list(DeploymentDevicesFilter::default(), 100).await;
    assert_eq!(total, 6);
    assert!(
        all.windows(2).all(|w| w[0].device_id < w[1].device_id),
        "by id"
    );
    let (two, total) = list(DeploymentDevicesFilter::default(), 2).await;
    assert_eq!((two.len(), total), (2, 6));
    let (by_reason, total) = list(
        DeploymentDevicesFilter {
            states: failed.clone(),
            reason: Some(ReasonMatch::StartsWith("disk full: 100%".into())),
        },
        100,
    )
    .await;
    assert_eq!(total, 2);
    let mut found: Vec<_> = by_reason.iter().map(|u| u.device_id).collect();
    found.sort();
    let mut expected = vec![ids[0], ids[1]];
    expected.sort();
    assert_eq!(found, expected);
    let (wildcard, _) = list(
        DeploymentDevicesFilter {
            states: Vec::new(),
            reason: Some(ReasonMatch::StartsWith("disk full: 1_0".into())),
        },
        100,
    )
    .await;
    assert!(wildcard.is_empty(), "_ is no wildcard");
    let (silent, _) = list(
        DeploymentDevicesFilter {
            states: failed,
            reason: Some(ReasonMatch::Missing),
        },
        100,
    )
    .await;
    assert_eq!(
        silent.iter().map(|u| u.device_id).collect::<Vec<_>>(),
        [ids[3]]
    );
    let (pending, total) = list(
        DeploymentDevicesFilter {
            states: vec![UpdateState::Pending],
            reason: None,
        },
        100,
    )
    .await;
    assert_eq!(total, 1);
    assert_eq!(pending[0].device_id, ids[5]);
}
