//! The change feed: which writes announce what, on both backends; and on
//! PostgreSQL, that another instance hears them and that a dropped listening
//! connection is announced and healed.

use crate::support::{active_deployment, device, devices, inventory, strings, t, Ctx};
use airlift_protocol::state::{DeviceStatus, UpdateState};
use airlift_store::{
    inventory_digest, ChangeFeed, CheckInTime, DeviceRecord, DeviceSummary, StoreEvent,
};
use std::collections::BTreeMap;
use std::time::Duration;

conformance!(
    device_writes_are_announced,
    deployment_writes_are_announced,
    a_subscriber_starts_listening,
    device_record_carries_the_inventory_digest,
    check_in_times_move_forward_only_for_unchanged_inventories,
    check_in_requests_are_announced_as_this_instances_own,
    reports_that_move_an_update_are_announced_and_refused_ones_are_not,
);

/// How long an announced change may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(10);

async fn next(feed: &mut ChangeFeed) -> StoreEvent {
    tokio::time::timeout(ARRIVAL, feed.recv())
        .await
        .expect("an event within the time limit")
        .expect("the feed is open")
}

/// The feed, past its first event (which says it is listening).
async fn listening(ctx: &Ctx) -> ChangeFeed {
    let mut feed = ctx.store.changes();
    assert_eq!(next(&mut feed).await, StoreEvent::Listening);
    feed
}

async fn a_subscriber_starts_listening(ctx: Ctx) {
    let mut feed = ctx.store.changes();
    assert_eq!(next(&mut feed).await, StoreEvent::Listening);
}

async fn device_writes_are_announced(ctx: Ctx) {
    let store = &ctx.store;
    let mut feed = listening(&ctx).await;
    let changed = |id| StoreEvent::DeviceChanged(id);

    let stored = device(1, 0);
    store.insert_device(&stored).await.expect("insert");
    assert_eq!(next(&mut feed).await, changed(stored.id));
    let id = stored.id;

    store
        .set_device_status(id, DeviceStatus::Rejected)
        .await
        .expect("status");
    assert_eq!(next(&mut feed).await, changed(id));
    store
        .set_device_tags(id, &strings(&["lab"]))
        .await
        .expect("tags");
    assert_eq!(next(&mut feed).await, changed(id));
    let identity: BTreeMap<String, String> = [("serial".to_owned(), "X".to_owned())].into();
    store
        .set_device_identity(id, &identity)
        .await
        .expect("identity");
    assert_eq!(next(&mut feed).await, changed(id));
    let reported = inventory(&[("os", "1.0")], &[]);
    store
        .record_check_in(id, &reported, t(10))
        .await
        .expect("check-in");
    assert_eq!(
        next(&mut feed).await,
        StoreEvent::InventoryChanged(id),
        "a new inventory"
    );

    // Only the time moves: no change to announce. Nor for unknown devices.
    store
        .record_check_in(id, &reported, t(20))
        .await
        .expect("check-in");
    let digest = inventory_digest(&reported).expect("digest");
    store
        .record_check_in_times(&[CheckInTime {
            device: id,
            inventory_sha256: digest,
            at: t(30),
        }])
        .await
        .expect("times");
    let unknown = airlift_protocol::DeviceId::new();
    assert!(!store
        .set_device_status(unknown, DeviceStatus::Accepted)
        .await
        .expect("status"));
    assert!(!store.set_device_tags(unknown, &[]).await.expect("tags"));
    // The next thing heard is the marker, so nothing came in between.
    let marker = device(2, 1);
    store.insert_device(&marker).await.expect("insert");
    assert_eq!(next(&mut feed).await, changed(marker.id));
}

async fn check_in_requests_are_announced_as_this_instances_own(ctx: Ctx) {
    let store = &ctx.store;
    let mut feed = listening(&ctx).await;
    let id = airlift_protocol::DeviceId::new();
    store.request_check_in(id).await.expect("request");
    let heard = tokio::time::timeout(Duration::from_secs(10), feed.recv_heard())
        .await
        .expect("an event in time")
        .expect("the feed is open");
    assert_eq!(heard.event, StoreEvent::CheckInRequested(id));
    assert!(heard.local, "this store made the request");
}

async fn deployment_writes_are_announced(ctx: Ctx) {
    let store = &ctx.store;
    let mut feed = listening(&ctx).await;
    let ids = devices(store, 2).await;
    for id in &ids {
        assert_eq!(next(&mut feed).await, StoreEvent::DeviceChanged(*id));
    }
    let changed = |id| StoreEvent::DeploymentChanged(id);

    let deployment = active_deployment(store, &ids).await;
    assert_eq!(next(&mut feed).await, changed(deployment));
    assert!(!store
        .finish_deployment_if_done(deployment, t(20))
        .await
        .expect("not done"));
    for id in &ids {
        store
            .decide_update_state(deployment, *id, UpdateState::Incompatible, None, t(30))
            .await
            .expect("decide");
        assert_eq!(
            next(&mut feed).await,
            StoreEvent::UpdateChanged {
                deployment,
                device: *id
            },
            "a device's update moved"
        );
    }
    assert!(store
        .finish_deployment_if_done(deployment, t(40))
        .await
        .expect("done"));
    assert_eq!(next(&mut feed).await, changed(deployment), "finished");

    let other = active_deployment(store, &ids).await;
    assert_eq!(next(&mut feed).await, changed(other));
    assert!(store.cancel_deployment(other, t(50)).await.expect("cancel"));
    assert_eq!(next(&mut feed).await, changed(other), "cancelled");
    assert!(!store.cancel_deployment(other, t(60)).await.expect("again"));
    let marker = device(9, 9);
    store.insert_device(&marker).await.expect("insert");
    assert_eq!(
        next(&mut feed).await,
        StoreEvent::DeviceChanged(marker.id),
        "a refused cancel announces nothing"
    );
}

async fn reports_that_move_an_update_are_announced_and_refused_ones_are_not(ctx: Ctx) {
    let store = &ctx.store;
    // Listening first, so that the setup's own announcements arrive in
    // order (on PostgreSQL they come back through the database).
    let mut feed = listening(&ctx).await;
    let ids = devices(store, 1).await;
    assert_eq!(next(&mut feed).await, StoreEvent::DeviceChanged(ids[0]));
    let deployment = active_deployment(store, &ids).await;
    assert_eq!(
        next(&mut feed).await,
        StoreEvent::DeploymentChanged(deployment)
    );
    let moved = StoreEvent::UpdateChanged {
        deployment,
        device: ids[0],
    };
    let outcome = store
        .record_update_state(deployment, ids[0], UpdateState::Downloading, None, t(30))
        .await
        .expect("report");
    assert!(outcome.applied);
    assert_eq!(next(&mut feed).await, moved);
    let outcome = store
        .record_update_state(deployment, ids[0], UpdateState::Pending, None, t(31))
        .await
        .expect("late report");
    assert!(!outcome.applied, "a late report moves nothing");
    let marker = device(9, 9);
    store.insert_device(&marker).await.expect("insert");
    assert_eq!(
        next(&mut feed).await,
        StoreEvent::DeviceChanged(marker.id),
        "a refused report announces nothing"
    );
}

async fn device_record_carries_the_inventory_digest(ctx: Ctx) {
    let store = &ctx.store;
    let mut stored = device(1, 0);
    stored.tags = strings(&["b", "a"]);
    store.insert_device(&stored).await.expect("insert");
    let record = store
        .device_record(stored.id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.inventory_sha256, None, "no check-in yet");
    assert_eq!(record.device.tags, strings(&["a", "b"]));

    let reported = inventory(&[("os", "1.0"), ("app", "2")], &[("region", "eu")]);
    store
        .record_check_in(stored.id, &reported, t(5))
        .await
        .expect("check-in");
    let record = store
        .device_record(stored.id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(
        store
            .device_summary_with_documents(stored.id)
            .await
            .expect("read")
            .map(|(summary, _)| summary),
        Some(DeviceSummary::from(record.clone())),
        "the summary is the record's status, tags and digest"
    );
    let DeviceRecord {
        device,
        inventory_sha256,
    } = record;
    assert_eq!(
        inventory_sha256,
        Some(inventory_digest(&reported).expect("digest"))
    );
    assert_eq!(device.installed, reported.installed);
    assert_eq!(device.attributes, reported.attributes);
    assert_eq!(
        store.device(stored.id).await.expect("read"),
        Some(device),
        "device() is the record without its digest"
    );
    assert_eq!(
        store
            .device_record(airlift_protocol::DeviceId::new())
            .await
            .expect("read"),
        None
    );
}

async fn check_in_times_move_forward_only_for_unchanged_inventories(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 3).await;
    let first = inventory(&[("os", "1.0")], &[]);
    let second = inventory(&[("os", "2.0")], &[]);
    for id in &ids {
        store
            .record_check_in(*id, &first, t(100))
            .await
            .expect("check-in");
    }
    let same = inventory_digest(&first).expect("digest");
    let other = inventory_digest(&second).expect("digest");
    let time = |device, inventory_sha256, at| CheckInTime {
        device,
        inventory_sha256,
        at,
    };
    let moved = store
        .record_check_in_times(&[
            time(ids[0], same, t(200)),
            // Its inventory changed through another instance meanwhile.
            time(ids[1], other, t(200)),
            // Never backwards.
            time(ids[2], same, t(50)),
            time(airlift_protocol::DeviceId::new(), same, t(200)),
        ])
        .await
        .expect("times");
    assert_eq!(moved, 1);
    let last = |n: usize| {
        let store = store.clone();
        let id = ids[n];
        async move {
            store
                .device(id)
                .await
                .expect("read")
                .expect("found")
                .last_check_in
        }
    };
    assert_eq!(last(0).await, Some(t(200)));
    assert_eq!(last(1).await, Some(t(100)));
    assert_eq!(last(2).await, Some(t(100)));
    let device = store.device(ids[1]).await.expect("read").expect("found");
    assert_eq!(device.installed, first.installed, "inventory left alone");
    assert_eq!(store.record_check_in_times(&[]).await.expect("none"), 0);
}

// --- PostgreSQL only: several instances on one database -----------------------

/// Everything `feed` hears up to and including `wanted`.
async fn heard_until(feed: &mut ChangeFeed, wanted: StoreEvent) -> Vec<airlift_store::Heard> {
    let mut heard = Vec::new();
    loop {
        let next = tokio::time::timeout(ARRIVAL, feed.recv_heard())
            .await
            .expect("in time")
            .expect("open");
        heard.push(next);
        if next.event == wanted {
            return heard;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_another_instance_hears_the_changes() {
    crate::support::run_postgres(|ctx: Ctx| async move {
        let other = ctx.open_again().await;
        let mut heard = other.changes();
        assert_eq!(next(&mut heard).await, StoreEvent::Listening);
        let stored = device(1, 0);
        ctx.store.insert_device(&stored).await.expect("insert");
        assert_eq!(next(&mut heard).await, StoreEvent::DeviceChanged(stored.id));
        ctx.store
            .set_device_status(stored.id, DeviceStatus::Rejected)
            .await
            .expect("reject");
        assert_eq!(next(&mut heard).await, StoreEvent::DeviceChanged(stored.id));
        // And the other way round; each change is heard as made here or
        // elsewhere. (Changes made earlier may still be on their way.)
        let mut own = ctx.store.changes();
        assert_eq!(next(&mut own).await, StoreEvent::Listening);
        let mut others = other.changes();
        assert_eq!(next(&mut others).await, StoreEvent::Listening);
        other
            .set_device_tags(stored.id, &strings(&["lab"]))
            .await
            .expect("tags");
        other.request_check_in(stored.id).await.expect("request");
        let requested = StoreEvent::CheckInRequested(stored.id);
        let heard_here = heard_until(&mut own, requested).await;
        assert!(heard_here
            .iter()
            .any(|h| h.event == StoreEvent::DeviceChanged(stored.id) && !h.local));
        assert!(
            !heard_here[heard_here.len() - 1].local,
            "the other instance asked"
        );
        let heard_there = heard_until(&mut others, requested).await;
        assert!(heard_there.iter().all(|h| h.local), "{heard_there:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_dropped_listener_is_announced_and_heals() {
    crate::support::run_postgres(|ctx: Ctx| async move {
        let schema = ctx.schema().expect("a PostgreSQL schema");
        let mut feed = listening(&ctx).await;
        // Kill the listening connection the way a failover or a network
        // drop would.
        ctx.execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN %{schema}%'"
        ))
        .await;
        assert_eq!(next(&mut feed).await, StoreEvent::Interrupted);
        assert_eq!(next(&mut feed).await, StoreEvent::Listening);
        let stored = device(1, 0);
        ctx.store.insert_device(&stored).await.expect("insert");
        assert_eq!(
            next(&mut feed).await,
            StoreEvent::DeviceChanged(stored.id),
            "changes are heard again"
        );
    })
    .await;
}
