//! A deployment's devices by what changed (`DeploymentChanges`): every
//! write a rollout decides on is seen from a mark taken before it, by this
//! instance or another; rows that did not change are not read again.

use crate::support::{active_deployment, devices, inventory, t, Ctx};
use airlift_protocol::device::Progress;
use airlift_protocol::state::UpdateState;
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::{ChangeMark, DeviceChanges, SharedStore};
use std::time::Duration;

conformance!(
    a_whole_read_has_every_device_without_messages,
    each_write_a_rollout_decides_on_is_read_once_changed,
    a_write_through_another_instance_is_read_from_the_mark,
    an_earlier_mark_reads_what_committed_since_it,
);

async fn read(store: &SharedStore, id: DeploymentId, since: Option<ChangeMark>) -> DeviceChanges {
    store
        .rollout_devices(id, since)
        .await
        .expect("read rollout devices")
}

fn ids(changes: &DeviceChanges) -> Vec<DeviceId> {
    changes.devices.iter().map(|d| d.device_id).collect()
}

/// A mark after every write so far: the stamps are milliseconds on the
/// database's clock, so the clock must move past the last write's.
async fn mark_after_writes(store: &SharedStore, id: DeploymentId) -> ChangeMark {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mark = read(store, id, None).await.read_at;
    tokio::time::sleep(Duration::from_millis(5)).await;
    mark
}

async fn a_whole_read_has_every_device_without_messages(ctx: Ctx) {
    let store = &ctx.store;
    let mut all = devices(store, 4).await;
    let id = active_deployment(store, &all).await;
    // Another deployment's devices are not this one's.
    active_deployment(store, &all[..2]).await;
    let failed = all[0];
    store
        .record_update_state(id, failed, UpdateState::Failure, Some("log tail"), t(20))
        .await
        .expect("report");
    let whole = read(store, id, None).await;
    all.sort();
    assert_eq!(ids(&whole), all, "every device, by id");
    assert!(whole.devices.iter().all(|d| d.message.is_none()));
    let states: Vec<_> = whole
        .devices
        .iter()
        .map(|d| (d.device_id == failed, d.state))
        .collect();
    assert!(states.iter().all(|(is_failed, state)| {
        *state
            == if *is_failed {
                UpdateState::Failure
            } else {
                UpdateState::Pending
            }
    }));
    assert!(read(store, DeploymentId::new(), None)
        .await
        .devices
        .is_empty());
}

async fn each_write_a_rollout_decides_on_is_read_once_changed(ctx: Ctx) {
    let store = &ctx.store;
    let all = devices(store, 6).await;
    let id = active_deployment(store, &all[..5]).await;

    let mark = mark_after_writes(store, id).await;
    let quiet = read(store, id, Some(mark)).await;
    assert!(quiet.devices.is_empty(), "nothing changed: nothing read");
    assert!(
        quiet.read_at > mark,
        "the mark moves with the database's clock"
    );

    // A report (state, updated_at, message).
    let mark = mark_after_writes(store, id).await;
    store
        .record_update_state(id, all[0], UpdateState::Failure, Some("boom"), t(30))
        .await
        .expect("report");
    let changed = read(store, id, Some(mark)).await;
    assert_eq!(ids(&changed), vec![all[0]]);
    assert_eq!(changed.devices[0].state, UpdateState::Failure);
    assert_eq!(changed.devices[0].message, None);

    // Admission (phase only).
    let mark = mark_after_writes(store, id).await;
    assert_eq!(
        store.admit_devices(id, 0, &[all[1]]).await.expect("admit"),
        1
    );
    let changed = read(store, id, Some(mark)).await;
    assert_eq!(ids(&changed), vec![all[1]]);
    assert_eq!(changed.devices[0].phase, Some(0));

    // Download progress (neither state nor updated_at moves).
    store
        .record_update_state(id, all[2], UpdateState::Downloading, None, t(40))
        .await
        .expect("report");
    let mark = mark_after_writes(store, id).await;
    let progress = Progress { done: 5, total: 10 };
    assert!(store
        .record_progress(id, all[2], progress, t(50))
        .await
        .expect("progress"));
    let changed = read(store, id, Some(mark)).await;
    assert_eq!(ids(&changed), vec![all[2]]);
    assert_eq!(changed.devices[0].progress_at, Some(t(50)));

    // A device joining the target (an insert).
    let mark = mark_after_writes(store, id).await;
    store
        .add_device_to_deployment(id, all[5], UpdateState::Pending, None, t(60))
        .await
        .expect("join");
    let changed = read(store, id, Some(mark)).await;
    assert_eq!(ids(&changed), vec![all[5]]);
    assert!(changed.devices[0].joined_late);

    // An operator's retry moves the failed device back to pending.
    let mark = mark_after_writes(store, id).await;
    let retried = store
        .retry_failed(id, 3, "try again", t(70))
        .await
        .expect("retry");
    assert_eq!(retried.retried, vec![all[0]]);
    let changed = read(store, id, Some(mark)).await;
    assert_eq!(ids(&changed), vec![all[0]]);
    assert_eq!(changed.devices[0].state, UpdateState::Pending);

    // What no rollout decision reads changes no row it is asked for.
    let mark = mark_after_writes(store, id).await;
    store
        .record_check_in(all[3], &inventory(&[("os", "1.0")], &[]), t(80))
        .await
        .expect("check-in");
    assert!(read(store, id, Some(mark)).await.devices.is_empty());

    // Cancelling moves every open device.
    let mark = mark_after_writes(store, id).await;
    assert!(store.cancel_deployment(id, t(90)).await.expect("cancel"));
    let changed = read(store, id, Some(mark)).await;
    assert_eq!(
        changed.devices.len(),
        6,
        "the five targeted and the one that joined"
    );
    assert!(changed
        .devices
        .iter()
        .all(|d| d.state == UpdateState::Cancelled));
}

async fn a_write_through_another_instance_is_read_from_the_mark(ctx: Ctx) {
    let store = &ctx.store;
    let all = devices(store, 3).await;
    let id = active_deployment(store, &all).await;
    let other = ctx.open_again().await;
    let mark = mark_after_writes(store, id).await;
    other
        .record_update_state(id, all[1], UpdateState::Downloading, None, t(20))
        .await
        .expect("report through the other instance");
    let changed = read(store, id, Some(mark)).await;
    assert_eq!(ids(&changed), vec![all[1]]);
    assert_eq!(changed.devices[0].state, UpdateState::Downloading);
}

async fn an_earlier_mark_reads_what_committed_since_it(ctx: Ctx) {
    let store = &ctx.store;
    let all = devices(store, 3).await;
    let id = active_deployment(store, &all).await;
    let before = mark_after_writes(store, id).await;
    store
        .record_update_state(id, all[0], UpdateState::Downloading, None, t(20))
        .await
        .expect("report");
    let after = mark_after_writes(store, id).await;
    assert!(read(store, id, Some(after)).await.devices.is_empty());
    // Asked from a minute before: the write is read (again), as a reader
    // that asks with an overlap reads a transaction that committed late.
    let overlapping = after.earlier_by(Duration::from_secs(60));
    assert!(overlapping < before);
    let again = ids(&read(store, id, Some(overlapping)).await);
    assert!(again.contains(&all[0]), "the write is read again");
    assert_eq!(again.len(), 3, "as is every row of that minute: the insert");
    assert_eq!(
        ChangeMark::from_millis(10).earlier_by(Duration::from_millis(20)),
        ChangeMark::from_millis(-10)
    );
}
