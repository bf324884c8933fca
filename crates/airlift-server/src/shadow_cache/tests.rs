//! The shadow cache against a real SQLite store, through a wrapper that
//! counts the shadow reads reaching the store.

use super::*;
use airlift_protocol::management::Device;
use airlift_protocol::shadow::{ShadowGroup, VersionedDocument};
use airlift_protocol::state::DeviceStatus;
use airlift_store::{DatabaseUrl, DesiredChange, ShadowLimits, SharedStore};
use chrono::Utc;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The store, counting every shadow read, and apart the reads of a whole
/// shadow (two queries or three, where the others are one).
struct Counting {
    store: SharedStore,
    reads: AtomicUsize,
    whole_shadows: AtomicUsize,
}

impl Counting {
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    fn count(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

impl ShadowReads for Counting {
    async fn device_shadow(&self, device: DeviceId) -> StoreResult<Option<DeviceShadow>> {
        self.count();
        self.whole_shadows.fetch_add(1, Ordering::SeqCst);
        ShadowStore::device_shadow(self.store.as_ref(), device).await
    }

    async fn device_documents(&self, device: DeviceId) -> StoreResult<Option<DeviceDocuments>> {
        self.count();
        ShadowStore::device_documents(self.store.as_ref(), device).await
    }

    async fn list_group_shadows(&self, limit: u32) -> StoreResult<Vec<GroupShadow>> {
        self.count();
        ShadowStore::list_group_shadows(self.store.as_ref(), limit).await
    }
}

fn doc(value: serde_json::Value) -> Document {
    value.as_object().cloned().unwrap_or_default()
}

fn device(tags: &[&str]) -> Device {
    let id = DeviceId::new();
    Device {
        id,
        status: DeviceStatus::Accepted,
        identity: BTreeMap::from([("serial".to_owned(), id.to_string())]),
        public_key: format!("key-{id}"),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        device_type: Some("pi4".into()),
        hardware_revision: None,
        installed: BTreeMap::new(),
        security_version: 0,
        attributes: BTreeMap::new(),
        created_at: Utc::now(),
        last_check_in: None,
    }
}

async fn store() -> (tempfile::TempDir, Arc<Counting>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = DatabaseUrl::parse(&format!("sqlite://{}", dir.path().join("db").display()))
        .expect("a SQLite URL");
    let store = airlift_store::open(&url).await.expect("the store opens");
    let counting = Arc::new(Counting {
        store,
        reads: AtomicUsize::new(0),
        whole_shadows: AtomicUsize::new(0),
    });
    (dir, counting)
}

/// The device's delta, as a check-in reporting what `device` holds asks
/// for it.
async fn delta_of(
    cache: &ShadowCache,
    store: &Counting,
    device: &Device,
) -> (Option<Document>, Lookup) {
    cache
        .delta(store, device.id, &DeviceFacts::from(device))
        .await
        .expect("delta")
}

/// Checks in until the delta is `want`, for at most five seconds (the
/// feed's follower is a task of its own); the last delta.
async fn delta_becomes(
    cache: &ShadowCache,
    store: &Counting,
    device: &Device,
    want: Option<Document>,
) -> Option<Document> {
    let mut last = None;
    for _ in 0..500 {
        last = delta_of(cache, store, device).await.0;
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    last
}

#[tokio::test]
async fn a_steady_check_in_reads_no_shadow_and_a_change_is_seen_at_once() {
    let (_dir, store) = store().await;
    let cache = ShadowCache::new(1024 * 1024);
    cache.follow(|| store.store.changes());
    let mut lobby = device(&["lobby"]);
    let attributes = BTreeMap::from([("site".to_owned(), "oslo".to_owned())]);
    lobby.attributes = attributes.clone();
    store.store.insert_device(&lobby).await.expect("device");
    let limits = ShadowLimits::default();
    let at = Utc::now();
    let lobby_group = ShadowGroup::Tag("lobby".into());
    store
        .store
        .change_group_desired(
            &lobby_group,
            &DesiredChange::Replace(doc(json!({"volume": 3}))),
            &limits,
            at,
        )
        .await
        .expect("group desired");
    let oslo = ShadowGroup::Attributes(attributes.clone());
    store
        .store
        .change_group_desired(
            &oslo,
            &DesiredChange::Replace(doc(json!({"tz": "Europe/Oslo"}))),
            &limits,
            at,
        )
        .await
        .expect("attribute group desired");
    // Until the feed listens, every check-in reads the store.
    let mut kept = false;
    for _ in 0..500 {
        if delta_of(&cache, &store, &lobby).await.1 == Lookup::Hit {
            kept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(kept, "the cache never kept the documents");
    let reads = store.reads();
    let (steady, lookup) = delta_of(&cache, &store, &lobby).await;
    assert_eq!(lookup, Lookup::Hit);
    assert_eq!(steady, Some(doc(json!({"volume": 3, "tz": "Europe/Oslo"}))));
    for _ in 0..10 {
        delta_of(&cache, &store, &lobby).await;
    }
    assert_eq!(store.reads(), reads, "a steady check-in read the store");

    // Another attribute value: the attribute group no longer reaches it.
    let mut elsewhere = lobby.clone();
    elsewhere.attributes = BTreeMap::from([("site".to_owned(), "bergen".to_owned())]);
    let (moved, _) = delta_of(&cache, &store, &elsewhere).await;
    assert_eq!(moved, Some(doc(json!({"volume": 3}))));

    // The device reports what it applied: its delta empties.
    store
        .store
        .record_reported(lobby.id, &steady.unwrap_or_default(), None, Utc::now())
        .await
        .expect("reported");
    let after = delta_becomes(&cache, &store, &lobby, None).await;
    assert_eq!(after, None);
    // A group change is heard, and the device's own key wins over the group's.
    store
        .store
        .change_group_desired(
            &lobby_group,
            &DesiredChange::Merge(doc(json!({"volume": 5}))),
            &limits,
            Utc::now(),
        )
        .await
        .expect("group change");
    store
        .store
        .change_device_desired(
            lobby.id,
            &DesiredChange::Merge(doc(json!({"tz": "UTC"}))),
            &limits,
            Utc::now(),
        )
        .await
        .expect("device change");
    let want = Some(doc(json!({"volume": 5, "tz": "UTC"})));
    let after = delta_becomes(&cache, &store, &lobby, want.clone()).await;
    assert_eq!(after, want);
    assert!(cache.devices_held() >= 1);
}

#[tokio::test]
async fn nothing_is_kept_while_the_feed_is_deaf_and_local_writes_are_forgotten_at_once() {
    let (_dir, store) = store().await;
    let store = store.as_ref();
    let cache = ShadowCache::new(1024 * 1024);
    let plain = device(&[]);
    store.store.insert_device(&plain).await.expect("device");
    // Not following: the feed's state is unknown, so nothing is kept.
    for _ in 0..3 {
        let (delta, lookup) = cache
            .delta(store, plain.id, &DeviceFacts::from(&plain))
            .await
            .expect("delta");
        assert_eq!((delta, lookup), (None, Lookup::Miss));
    }
    assert_eq!(cache.devices_held(), 0);
    cache.shared.apply(StoreEvent::Listening);
    cache
        .delta(store, plain.id, &DeviceFacts::from(&plain))
        .await
        .expect("delta");
    assert_eq!(cache.devices_held(), 1);
    store
        .store
        .change_device_desired(
            plain.id,
            &DesiredChange::Replace(doc(json!({"led": "on"}))),
            &ShadowLimits::default(),
            Utc::now(),
        )
        .await
        .expect("desired");
    cache.forget_device(plain.id);
    let (delta, _) = cache
        .delta(store, plain.id, &DeviceFacts::from(&plain))
        .await
        .expect("delta");
    assert_eq!(delta, Some(doc(json!({"led": "on"}))));
    cache.shared.apply(StoreEvent::Interrupted);
    assert_eq!(cache.devices_held(), 0);
    // An unknown device has no delta.
    let unknown = device(&[]);
    let (delta, _) = cache
        .delta(store, unknown.id, &DeviceFacts::from(&unknown))
        .await
        .expect("delta");
    assert_eq!(delta, None);
}

#[test]
fn the_byte_bound_evicts_and_an_oversized_entry_is_not_kept() {
    let cache = ShadowCache::new(4096);
    cache.shared.apply(StoreEvent::Listening);
    let big = OwnDocuments {
        desired: VersionedDocument::default(),
        reported: Document::new(),
        bytes: 8192,
    };
    cache.shared.devices.insert(DeviceId::new(), Arc::new(big));
    assert_eq!(cache.devices_held(), 0);
    for _ in 0..100 {
        let small = OwnDocuments {
            desired: VersionedDocument::default(),
            reported: Document::new(),
            bytes: ENTRY_OVERHEAD,
        };
        cache
            .shared
            .devices
            .insert(DeviceId::new(), Arc::new(small));
    }
    assert!(cache.shared.devices.weight() <= 4096);
    assert!(cache.devices_held() < 100);
}

/// Sets `document` as the desired document of the devices `expression`
/// matches.
async fn set_for_expression(store: &Counting, expression: &str, document: serde_json::Value) {
    let expression = expression.parse().expect("the expression parses");
    store
        .store
        .change_group_desired(
            &ShadowGroup::expression(&expression),
            &DesiredChange::Replace(doc(document)),
            &ShadowLimits::default(),
            Utc::now(),
        )
        .await
        .expect("expression group desired");
}

/// The store's delta for the device after it checked in reporting what
/// `device` holds: what a check-in without the cache would answer.
async fn stored_delta(store: &Counting, device: &Device) -> Option<Document> {
    let inventory = airlift_protocol::device::Inventory {
        device_type: device.device_type.clone().unwrap_or_default(),
        hardware_revision: None,
        installed: device.installed.clone(),
        security_version: 0,
        attributes: device.attributes.clone(),
    };
    store
        .store
        .record_check_in(device.id, &inventory, Utc::now())
        .await
        .expect("check-in recorded");
    ShadowStore::device_shadow(store.store.as_ref(), device.id)
        .await
        .expect("shadow")
        .map(|shadow| shadow.delta)
        .filter(|delta| !delta.is_empty())
}

#[tokio::test]
async fn an_expression_group_follows_what_each_check_in_reports_without_reading_the_store() {
    let (_dir, store) = store().await;
    let cache = ShadowCache::new(1024 * 1024);
    cache.shared.apply(StoreEvent::Listening);
    let mut lobby = device(&["lobby"]);
    lobby.installed = BTreeMap::from([("os".to_owned(), "2.3.9".to_owned())]);
    store.store.insert_device(&lobby).await.expect("device");
    set_for_expression(
        &store,
        "tag:lobby AND installed.os < 2.4.0",
        json!({"banner": "update soon"}),
    )
    .await;
    set_for_expression(&store, "installed.os >= 2.4.0", json!({"feature": true})).await;
    set_for_expression(&store, "device_type = pi5", json!({"never": 1})).await;

    let old = Some(doc(json!({"banner": "update soon"})));
    assert_eq!(
        delta_of(&cache, &store, &lobby).await,
        (old.clone(), Lookup::Miss)
    );
    assert_eq!(stored_delta(&store, &lobby).await, old);
    assert_eq!(delta_of(&cache, &store, &lobby).await, (old, Lookup::Hit));
    let reads = store.reads();

    // An update moves its version past the first bound: at the check-in
    // that reports it, it leaves that group and joins the other, from
    // memory.
    let mut updated = lobby.clone();
    updated.installed.insert("os".into(), "2.4.0".into());
    let new = Some(doc(json!({"feature": true})));
    assert_eq!(
        delta_of(&cache, &store, &updated).await,
        (new.clone(), Lookup::Hit)
    );
    assert_eq!(store.reads(), reads, "the facts' change read the store");
    assert_eq!(stored_delta(&store, &updated).await, new);

    // It applies that; rolled back to the old version, it is asked to
    // drop the key again and take the old group's.
    store
        .store
        .record_reported(lobby.id, &doc(json!({"feature": true})), None, Utc::now())
        .await
        .expect("reported");
    cache.forget_device(lobby.id);
    assert_eq!(delta_of(&cache, &store, &updated).await.0, None);
    let back = Some(doc(json!({"banner": "update soon", "feature": null})));
    assert_eq!(delta_of(&cache, &store, &lobby).await.0, back);
    assert_eq!(stored_delta(&store, &lobby).await, back);
}

#[tokio::test]
async fn a_device_not_held_costs_one_read_of_its_own_documents_when_the_groups_are_held() {
    let (_dir, store) = store().await;
    let limits = ShadowLimits::default();
    let at = Utc::now();
    store
        .store
        .change_group_desired(
            &ShadowGroup::Tag("lobby".into()),
            &DesiredChange::Replace(doc(json!({"volume": 3}))),
            &limits,
            at,
        )
        .await
        .expect("group desired");
    let first = device(&["lobby"]);
    store.store.insert_device(&first).await.expect("device");
    let second = device(&["lobby"]);
    store.store.insert_device(&second).await.expect("device");
    store
        .store
        .change_device_desired(
            second.id,
            &DesiredChange::Replace(doc(json!({"mode": "quiet"}))),
            &limits,
            at,
        )
        .await
        .expect("own desired");
    // Written before the cache follows the feed: no event of them is late.
    let cache = ShadowCache::new(1024 * 1024);
    cache.follow(|| store.store.changes());
    let mut kept = false;
    for _ in 0..500 {
        if delta_of(&cache, &store, &first).await.1 == Lookup::Hit {
            kept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(kept, "the cache never kept the groups");
    let (reads, whole) = (store.reads(), store.whole_shadows.load(Ordering::SeqCst));
    let (delta, lookup) = delta_of(&cache, &store, &second).await;
    assert_eq!(lookup, Lookup::Miss);
    assert_eq!(delta, Some(doc(json!({"volume": 3, "mode": "quiet"}))));
    assert_eq!(store.reads(), reads + 1, "one read for a device not held");
    assert_eq!(
        store.whole_shadows.load(Ordering::SeqCst),
        whole,
        "the device's whole shadow was read, groups and all"
    );
    assert_eq!(
        delta_of(&cache, &store, &second).await,
        (
            Some(doc(json!({"volume": 3, "mode": "quiet"}))),
            Lookup::Hit
        )
    );
}

#[tokio::test]
async fn a_device_read_with_its_record_needs_no_second_read_for_its_delta() {
    let (_dir, store) = store().await;
    let lobby = device(&["lobby"]);
    store.store.insert_device(&lobby).await.expect("device");
    store
        .store
        .change_device_desired(
            lobby.id,
            &DesiredChange::Replace(doc(json!({"mode": "quiet"}))),
            &ShadowLimits::default(),
            Utc::now(),
        )
        .await
        .expect("own desired");
    let cache = ShadowCache::new(1024 * 1024);
    cache.shared.apply(StoreEvent::Listening);
    // The groups held, the device's documents not.
    delta_of(&cache, &store, &lobby).await;
    cache.forget_device(lobby.id);

    let caches = crate::cache::Caches::new(crate::cache::CacheLimits::default());
    caches.apply(StoreEvent::Listening);
    let held = caches
        .device_with_documents(store.store.as_ref(), &cache, lobby.id)
        .await
        .expect("read")
        .expect("the device");
    assert_eq!(&held.tags[..], ["lobby".to_owned()]);
    let reads = store.reads();
    assert_eq!(
        delta_of(&cache, &store, &lobby).await,
        (Some(doc(json!({"mode": "quiet"}))), Lookup::Hit)
    );
    assert_eq!(store.reads(), reads, "the delta read the store again");
}
