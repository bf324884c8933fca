//! Dynamic deployments — they take in devices that join their target later
//! and finish only once ended — and the pages of tokens and audit entries.

use crate::support::{deployment, devices, stored_package, t, Ctx};
use airlift_protocol::management::ApiToken;
use airlift_protocol::state::{DeploymentStatus, Role, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId, TokenId};
use airlift_store::{
    ApiTokenRecord, AuditFilter, DeploymentDevicesFilter, NewAuditEntry, PageRequest, SharedStore,
};
use chrono::{DateTime, Utc};

conformance!(
    a_dynamic_deployment_finishes_only_once_ended,
    an_end_date_ends_it_and_an_operator_may_end_it_sooner,
    tokens_come_in_pages,
    audit_entries_come_in_pages_that_stay_put,
);

/// A dynamic deployment of a fresh package to `devices`, ending at `ends_at`.
async fn dynamic(
    store: &SharedStore,
    devices: &[DeviceId],
    ends_at: Option<DateTime<Utc>>,
) -> DeploymentId {
    let mut record = deployment(stored_package(store).await, 10);
    record.dynamic = true;
    record.ends_at = ends_at;
    let initial: Vec<_> = devices.iter().map(|d| (*d, UpdateState::Pending)).collect();
    store
        .insert_deployment(&record, &initial)
        .await
        .expect("insert deployment");
    record.id
}

async fn succeed(store: &SharedStore, deployment: DeploymentId, device: DeviceId, at: i64) {
    store
        .record_update_state(deployment, device, UpdateState::Success, None, t(at))
        .await
        .expect("report");
}

async fn status(store: &SharedStore, id: DeploymentId) -> DeploymentStatus {
    store
        .deployment(id)
        .await
        .expect("read")
        .expect("exists")
        .status
}

async fn a_dynamic_deployment_finishes_only_once_ended(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 3).await;
    let id = dynamic(store, &ids[..1], None).await;
    let stored = store.deployment(id).await.expect("read").expect("exists");
    assert!(stored.dynamic && stored.ends_at.is_none());
    assert!(stored.takes_in_devices(t(20)) && !stored.may_finish(t(20)));

    // Every device it has is done: it stays active, waiting for more.
    succeed(store, id, ids[0], 20).await;
    assert!(!store
        .finish_deployment_if_done(id, t(21))
        .await
        .expect("finish"));
    assert_eq!(status(store, id).await, DeploymentStatus::Active);

    // Two devices join the target later; they are marked and counted.
    for device in &ids[1..] {
        let added = store
            .add_device_to_deployment(id, *device, UpdateState::Pending, None, t(22))
            .await
            .expect("add");
        assert!(added.joined_late);
    }
    let listed = store.deployment_devices(id).await.expect("devices");
    let late: Vec<_> = listed
        .iter()
        .filter(|d| d.joined_late)
        .map(|d| d.device_id)
        .collect();
    assert_eq!(late.len(), 2);
    assert!(
        !late.contains(&ids[0]),
        "the first device was there from the start"
    );
    let paged = store
        .deployment_devices_page(id, &DeploymentDevicesFilter::default(), page(1, 10))
        .await
        .expect("page");
    assert_eq!(paged.iter().filter(|d| d.joined_late).count(), 2);
    let counted = store
        .late_joiners(&[id, DeploymentId::new()])
        .await
        .expect("count");
    assert_eq!(counted.get(&id), Some(&2));
    assert_eq!(counted.len(), 1, "deployments none joined are absent");

    // An operator ends it while a late device is still updating: it takes
    // in no more, and finishes once that device is done.
    succeed(store, id, ids[1], 23).await;
    assert!(store.end_deployment(id, t(24)).await.expect("end"));
    assert!(!store
        .end_deployment(id, t(25))
        .await
        .expect("ended already"));
    let ended = store.deployment(id).await.expect("read").expect("exists");
    assert_eq!(ended.ends_at, Some(t(24)));
    assert!(!ended.takes_in_devices(t(24)) && ended.may_finish(t(24)));
    assert!(!store
        .finish_deployment_if_done(id, t(25))
        .await
        .expect("finish"));
    succeed(store, id, ids[2], 26).await;
    assert!(store
        .finish_deployment_if_done(id, t(27))
        .await
        .expect("finish"));
    assert_eq!(status(store, id).await, DeploymentStatus::Finished);
    assert!(!store.end_deployment(id, t(28)).await.expect("finished"));

    // A deployment that is not dynamic cannot be ended, and finishes as
    // it always did.
    let fixed = crate::support::active_deployment(store, &ids[..1]).await;
    assert!(!store
        .end_deployment(fixed, t(30))
        .await
        .expect("not dynamic"));
    succeed(store, fixed, ids[0], 31).await;
    assert!(store
        .finish_deployment_if_done(fixed, t(32))
        .await
        .expect("finish"));
    assert!(!store
        .end_deployment(DeploymentId::new(), t(33))
        .await
        .expect("unknown"));
}

async fn an_end_date_ends_it_and_an_operator_may_end_it_sooner(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 2).await;
    let id = dynamic(store, &ids[..1], Some(t(50))).await;
    succeed(store, id, ids[0], 20).await;
    assert!(!store
        .finish_deployment_if_done(id, t(49))
        .await
        .expect("before"));
    assert!(store
        .finish_deployment_if_done(id, t(50))
        .await
        .expect("at its end"));
    let finished = store.deployment(id).await.expect("read").expect("exists");
    assert_eq!(finished.status, DeploymentStatus::Finished);
    assert_eq!(finished.finished_at, Some(t(50)));

    // Ending before the date moves the end; after it, there is nothing to end.
    let sooner = dynamic(store, &ids[1..], Some(t(100))).await;
    assert!(store.end_deployment(sooner, t(60)).await.expect("end"));
    let ended = store
        .deployment(sooner)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(ended.ends_at, Some(t(60)));
    let past = dynamic(store, &[], Some(t(70))).await;
    assert!(!store
        .end_deployment(past, t(80))
        .await
        .expect("ended by its date"));
}

fn page(page: u32, per_page: u32) -> PageRequest {
    PageRequest { page, per_page }
}

async fn tokens_come_in_pages(ctx: Ctx) {
    let store = &ctx.store;
    let (empty, total) = store.list_api_tokens_page(page(1, 10)).await.expect("page");
    assert!(empty.is_empty() && total == 0);
    for n in 0..5u8 {
        store
            .insert_api_token(&ApiTokenRecord {
                token: ApiToken {
                    id: TokenId::new(),
                    name: format!("token-{n}"),
                    role: Role::Viewer,
                    created_at: t(i64::from(n)),
                },
                secret_sha256: [n; 32],
            })
            .await
            .expect("insert");
    }
    let names =
        |tokens: Vec<ApiToken>| -> Vec<String> { tokens.into_iter().map(|t| t.name).collect() };
    let (second, total) = store.list_api_tokens_page(page(2, 2)).await.expect("page");
    assert_eq!(total, 5);
    assert_eq!(names(second), ["token-2", "token-3"], "oldest first");
    let (last, _) = store.list_api_tokens_page(page(3, 2)).await.expect("page");
    assert_eq!(names(last), ["token-4"]);
    let (past, total) = store.list_api_tokens_page(page(9, 2)).await.expect("page");
    assert!(past.is_empty() && total == 5);
    // Page 0 reads as page 1; per_page is clamped.
    let (first, _) = store.list_api_tokens_page(page(0, 0)).await.expect("page");
    assert_eq!(names(first), ["token-0"]);
}

async fn audit_entries_come_in_pages_that_stay_put(ctx: Ctx) {
    let store = &ctx.store;
    for n in 0..7 {
        store
            .append_audit(&NewAuditEntry {
                at: t(n),
                actor: format!("{} (token {n})", if n % 2 == 0 { "ci" } else { "ops" }),
                action: if n < 4 {
                    "deployment.create"
                } else {
                    "token.create"
                }
                .into(),
                object: format!("object-{n}"),
                details: serde_json::json!({}),
            })
            .await
            .expect("append");
    }
    let any = AuditFilter::default();
    let objects = |entries: &[airlift_protocol::management::AuditEntry]| -> Vec<String> {
        entries.iter().map(|e| e.object.clone()).collect()
    };
    let (first, total) = store
        .list_audit_page(&any, None, page(1, 3))
        .await
        .expect("page");
    assert_eq!(total, 7);
    assert_eq!(
        objects(&first),
        ["object-6", "object-5", "object-4"],
        "newest first"
    );
    let (third, _) = store
        .list_audit_page(&any, None, page(3, 3))
        .await
        .expect("page");
    assert_eq!(objects(&third), ["object-0"]);

    // Counted below the first page's newest entry, page 2 stays put while
    // the log grows.
    let anchor = first[0].id + 1;
    store
        .append_audit(&NewAuditEntry {
            at: t(9),
            actor: "ci (token 9)".into(),
            action: "token.delete".into(),
            object: "object-new".into(),
            details: serde_json::json!({}),
        })
        .await
        .expect("append");
    let (second, total) = store
        .list_audit_page(&any, Some(anchor), page(2, 3))
        .await
        .expect("page");
    assert_eq!(total, 7, "the new entry is above the anchor");
    assert_eq!(objects(&second), ["object-3", "object-2", "object-1"]);

    // Filters count too.
    let by_ci = AuditFilter {
        actor: Some("ci".into()),
        action: Some("deployment.".into()),
        ..AuditFilter::default()
    };
    let (entries, total) = store
        .list_audit_page(&by_ci, None, page(1, 10))
        .await
        .expect("page");
    assert_eq!(total, 2);
    assert_eq!(objects(&entries), ["object-2", "object-0"]);
}
