//! Shadow writes announce themselves on the change feed, in their own
//! transaction, so that every instance drops the documents it keeps for
//! check-ins: a device's own desired or reported document as
//! `ShadowChanged`, a group's document as `GroupShadowsChanged`. A write
//! that changes nothing, or is refused, announces no change.

use crate::support::{devices, t, Ctx};
use airlift_protocol::shadow::{Document, ShadowGroup};
use airlift_store::{ChangeFeed, DesiredChange, ShadowLimits, ShadowWrite, StoreEvent};
use serde_json::json;
use std::time::Duration;

conformance!(shadow_writes_are_announced_and_no_change_is_not);

fn doc(value: serde_json::Value) -> Document {
    value.as_object().cloned().unwrap_or_default()
}

async fn next(feed: &mut ChangeFeed) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .expect("an event within the time limit")
        .expect("the feed is open")
}

async fn shadow_writes_are_announced_and_no_change_is_not(ctx: Ctx) {
    let store = &ctx.store;
    let mut feed = store.changes();
    assert_eq!(next(&mut feed).await, StoreEvent::Listening);
    let ids = devices(store, 1).await;
    let id = ids[0];
    // The device's own announcements (on PostgreSQL they arrive later).
    while next(&mut feed).await != StoreEvent::DeviceChanged(id) {}
    let limits = ShadowLimits::default();
    // A marker: whatever was announced before it arrives first.
    let marker = || async {
        store.request_check_in(id).await.expect("marker");
    };

    let set = DesiredChange::Merge(doc(json!({"level": "debug"})));
    store
        .change_device_desired(id, &set, &limits, t(1))
        .await
        .expect("set");
    assert_eq!(next(&mut feed).await, StoreEvent::ShadowChanged(id));
    // The device is nudged, as before.
    assert_eq!(next(&mut feed).await, StoreEvent::CheckInRequested(id));
    // The same value again: a nudge, no change.
    store
        .change_device_desired(id, &set, &limits, t(2))
        .await
        .expect("again");
    assert_eq!(next(&mut feed).await, StoreEvent::CheckInRequested(id));

    store
        .record_reported(id, &doc(json!({"level": "debug"})), None, t(3))
        .await
        .expect("reported");
    assert_eq!(next(&mut feed).await, StoreEvent::ShadowChanged(id));

    let tag = ShadowGroup::Tag("lab".into());
    let group_set = DesiredChange::Replace(doc(json!({"mode": "a"})));
    store
        .change_group_desired(&tag, &group_set, &limits, t(4))
        .await
        .expect("group");
    assert_eq!(next(&mut feed).await, StoreEvent::GroupShadowsChanged);
    store
        .change_group_desired(&tag, &group_set, &limits, t(5))
        .await
        .expect("group again");
    // Refused: over the size limit, nothing written, nothing announced.
    let small = ShadowLimits {
        max_document_bytes: 8,
        ..limits
    };
    let big = DesiredChange::Replace(doc(json!({"much": "too long for the limit"})));
    let refused = store
        .change_device_desired(id, &big, &small, t(6))
        .await
        .expect("refused");
    assert!(matches!(refused, ShadowWrite::TooLarge(_)), "{refused:?}");
    marker().await;
    assert_eq!(next(&mut feed).await, StoreEvent::CheckInRequested(id));

    assert!(store.delete_group_desired(&tag).await.expect("delete"));
    assert_eq!(next(&mut feed).await, StoreEvent::GroupShadowsChanged);
    assert!(!store.delete_group_desired(&tag).await.expect("none left"));
    marker().await;
    assert_eq!(next(&mut feed).await, StoreEvent::CheckInRequested(id));
}
