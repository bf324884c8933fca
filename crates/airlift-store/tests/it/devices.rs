//! Devices: identity, admission, tags, check-ins, and listing.

use crate::support::{device, inventory, map, strings, t, Ctx};
use airlift_protocol::device::Inventory;
use airlift_protocol::management::Device;
use airlift_protocol::state::DeviceStatus;
use airlift_protocol::DeviceId;
use airlift_store::{DeviceFilter, PageRequest, StoreError};
use std::collections::BTreeMap;

conformance!(
    round_trip,
    duplicate_public_key_conflicts,
    status_identity_and_tags,
    racing_tag_replacements_leave_one_set,
    admission_never_overwrites_a_decision_made_since_the_read,
    admission_moves_status_and_identity_together,
    check_in_replaces_what_was_known,
    unchanged_check_in_only_moves_the_time,
    check_in_of_unknown_device_is_not_found,
    filters,
    pages_oldest_first_with_total,
    walks_every_match_by_id,
);

async fn round_trip(ctx: Ctx) {
    let store = &ctx.store;
    let mut stored = device(1, 100);
    stored.status = DeviceStatus::Preauthorized;
    stored.tags = strings(&["lab", "east", "lab"]);
    stored.installed = map(&[("rootfs", "1.0.0"), ("app", "2.1")]);
    stored.attributes = map(&[("region", "eu"), ("kernel", "6.1")]);
    stored.hardware_revision = Some("rev-b".into());
    stored.security_version = 4;
    stored.last_check_in = Some(t(150));
    store.insert_device(&stored).await.expect("insert");

    let mut expected = stored.clone();
    expected.tags = strings(&["east", "lab"]); // a set: sorted, once each
    assert_eq!(
        store.device(stored.id).await.expect("get"),
        Some(expected.clone())
    );
    assert_eq!(
        store
            .device_by_public_key(&stored.public_key)
            .await
            .expect("by key"),
        Some(expected)
    );
    assert_eq!(store.device(DeviceId::new()).await.expect("get"), None);
    assert_eq!(
        store.device_by_public_key("unknown").await.expect("by key"),
        None
    );

    let bare = device(2, 200);
    store.insert_device(&bare).await.expect("insert");
    assert_eq!(store.device(bare.id).await.expect("get"), Some(bare));
}

async fn duplicate_public_key_conflicts(ctx: Ctx) {
    let store = &ctx.store;
    let first = device(1, 0);
    store.insert_device(&first).await.expect("insert");
    let mut second = device(1, 1);
    second.tags = strings(&["x"]);
    let error = store.insert_device(&second).await.expect_err("same key");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    assert_eq!(store.device(second.id).await.expect("get"), None);

    let mut same_id = device(2, 2);
    same_id.id = first.id;
    let error = store.insert_device(&same_id).await.expect_err("same id");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
}

async fn status_identity_and_tags(ctx: Ctx) {
    let store = &ctx.store;
    let stored = device(1, 0);
    store.insert_device(&stored).await.expect("insert");
    let unknown = DeviceId::new();

    assert!(store
        .set_device_status(stored.id, DeviceStatus::Rejected)
        .await
        .expect("status"));
    assert!(!store
        .set_device_status(unknown, DeviceStatus::Rejected)
        .await
        .expect("status"));

    let identity = map(&[("serial", "SN-NEW"), ("mac", "00:11:22:33:44:55")]);
    assert!(store
        .set_device_identity(stored.id, &identity)
        .await
        .expect("identity"));
    assert!(!store
        .set_device_identity(unknown, &identity)
        .await
        .expect("identity"));

    assert!(store
        .set_device_tags(stored.id, &strings(&["b", "a"]))
        .await
        .expect("tags"));
    assert!(store
        .set_device_tags(stored.id, &strings(&["c", "b", "c"]))
        .await
        .expect("tags"));
    assert!(!store
        .set_device_tags(unknown, &strings(&["a"]))
        .await
        .expect("tags"));

    let read = store.device(stored.id).await.expect("get").expect("exists");
    assert_eq!(read.status, DeviceStatus::Rejected);
    assert_eq!(read.identity, identity);
    assert_eq!(read.tags, strings(&["b", "c"]));

    assert!(store.set_device_tags(stored.id, &[]).await.expect("tags"));
    let read = store.device(stored.id).await.expect("get").expect("exists");
    assert!(read.tags.is_empty());
}

/// The interleaving the server's first contact used to lose: it reads a
/// pre-authorised device, an operator rejects it, then admission writes.
async fn admission_never_overwrites_a_decision_made_since_the_read(ctx: Ctx) {
    let store = &ctx.store;
    let mut stored = device(1, 0);
    stored.status = DeviceStatus::Preauthorized;
    store.insert_device(&stored).await.expect("insert");

    let read = store.device(stored.id).await.expect("get").expect("exists");
    assert_eq!(read.status, DeviceStatus::Preauthorized);
    // The operator's reject, through another instance, lands here.
    let operator = ctx.open_again().await;
    assert!(operator
        .set_device_status(stored.id, DeviceStatus::Rejected)
        .await
        .expect("reject"));
    let admitted = store
        .transition_device_status(
            read.id,
            DeviceStatus::Preauthorized,
            DeviceStatus::Accepted,
            None,
        )
        .await
        .expect("transition");
    assert!(!admitted, "a reject since the read must win");
    let now = store.device(stored.id).await.expect("get").expect("exists");
    assert_eq!(now.status, DeviceStatus::Rejected);

    // Racing admissions (two requests of one device): exactly one moves it.
    let mut racer = device(2, 1);
    racer.status = DeviceStatus::Preauthorized;
    store.insert_device(&racer).await.expect("insert");
    let admissions: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .transition_device_status(
                        racer.id,
                        DeviceStatus::Preauthorized,
                        DeviceStatus::Accepted,
                        None,
                    )
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for task in admissions {
        accepted += usize::from(task.await.expect("task").expect("transition"));
    }
    assert_eq!(
        accepted, 1,
        "one admission moves the device, the others see it moved"
    );
    assert!(!store
        .transition_device_status(
            DeviceId::new(),
            DeviceStatus::Preauthorized,
            DeviceStatus::Accepted,
            None
        )
        .await
        .expect("unknown device"));
}

async fn admission_moves_status_and_identity_together(ctx: Ctx) {
    let store = &ctx.store;
    let mut stored = device(1, 0);
    stored.status = DeviceStatus::Preauthorized;
    store.insert_device(&stored).await.expect("insert");
    let presented = map(&[("serial", "SN-OTHER")]);

    assert!(!store
        .transition_device_status(
            stored.id,
            DeviceStatus::Accepted,
            DeviceStatus::Pending,
            Some(&presented)
        )
        .await
        .expect("not at that status"));
    let read = store.device(stored.id).await.expect("get").expect("exists");
    assert_eq!(read.identity, stored.identity, "nothing changed");

    assert!(store
        .transition_device_status(
            stored.id,
            DeviceStatus::Preauthorized,
            DeviceStatus::Pending,
            Some(&presented)
        )
        .await
        .expect("transition"));
    let read = store.device(stored.id).await.expect("get").expect("exists");
    assert_eq!(read.status, DeviceStatus::Pending);
    assert_eq!(read.identity, presented);
}

async fn racing_tag_replacements_leave_one_set(ctx: Ctx) {
    let stored = device(1, 0);
    ctx.store.insert_device(&stored).await.expect("insert");
    let sets: Vec<Vec<String>> = (0..8)
        .map(|n| vec!["common".to_string(), format!("only-{n}")])
        .collect();
    let tasks: Vec<_> = sets
        .iter()
        .cloned()
        .map(|tags| {
            let store = ctx.store.clone();
            tokio::spawn(async move { store.set_device_tags(stored.id, &tags).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.expect("task").expect("set tags"));
    }
    let read = ctx
        .store
        .device(stored.id)
        .await
        .expect("get")
        .expect("exists");
    assert!(sets.contains(&read.tags), "{:?}", read.tags);
}

async fn check_in_replaces_what_was_known(ctx: Ctx) {
    let store = &ctx.store;
    let mut stored = device(1, 0);
    stored.installed = map(&[("preloaded", "0.1")]);
    store.insert_device(&stored).await.expect("insert");

    let first = inventory(&[("rootfs", "2.0.0"), ("app", "1.5")], &[("region", "eu")]);
    store
        .record_check_in(stored.id, &first, t(1_000))
        .await
        .expect("check in");
    let read = store.device(stored.id).await.expect("get").expect("exists");
    assert_eq!(read.device_type.as_deref(), Some("rpi4"));
    assert_eq!(read.hardware_revision.as_deref(), Some("1.2"));
    assert_eq!(read.security_version, 2);
    assert_eq!(read.installed, first.installed);
    assert_eq!(read.attributes, first.attributes);
    assert_eq!(read.last_check_in, Some(t(1_000)));

    // The device's word is the truth: a version that went down is stored as
    // reported, software and attributes it no longer reports are gone.
    let second = Inventory {
        device_type: "rpi5".into(),
        hardware_revision: None,
        installed: map(&[("rootfs", "1.9.0")]),
        security_version: 1,
        attributes: BTreeMap::new(),
    };
    store
        .record_check_in(stored.id, &second, t(2_000))
        .await
        .expect("check in");
    let read = store.device(stored.id).await.expect("get").expect("exists");
    assert_eq!(read.device_type.as_deref(), Some("rpi5"));
    assert_eq!(read.hardware_revision, None);
    assert_eq!(read.security_version, 1);
    assert_eq!(read.installed, map(&[("rootfs", "1.9.0")]));
    assert!(read.attributes.is_empty());
    assert_eq!(read.last_check_in, Some(t(2_000)));
    // What the check-in does not carry is left alone.
    assert_eq!(read.identity, stored.identity);
    assert_eq!(read.status, stored.status);
    assert_eq!(read.created_at, stored.created_at);

    // Back to the first inventory: a change again, not mistaken for "unchanged".
    store
        .record_check_in(stored.id, &first, t(3_000))
        .await
        .expect("check in");
    let read = store.device(stored.id).await.expect("get").expect("exists");
    assert_eq!(read.installed, first.installed);
    assert_eq!(read.attributes, first.attributes);
}

async fn unchanged_check_in_only_moves_the_time(ctx: Ctx) {
    let store = &ctx.store;
    let stored = device(1, 0);
    store.insert_device(&stored).await.expect("insert");
    let reported = inventory(&[("rootfs", "2.0.0")], &[("region", "eu")]);
    store
        .record_check_in(stored.id, &reported, t(1_000))
        .await
        .expect("check in");
    let before = store.device(stored.id).await.expect("get").expect("exists");

    store
        .record_check_in(stored.id, &reported, t(5_000))
        .await
        .expect("check in");
    let after = store.device(stored.id).await.expect("get").expect("exists");
    assert_eq!(after.last_check_in, Some(t(5_000)));
    assert_eq!(
        Device {
            last_check_in: before.last_check_in,
            ..after
        },
        before
    );
}

async fn check_in_of_unknown_device_is_not_found(ctx: Ctx) {
    let error = ctx
        .store
        .record_check_in(DeviceId::new(), &inventory(&[], &[]), t(0))
        .await
        .expect_err("unknown device");
    assert!(matches!(error, StoreError::NotFound(_)), "{error:?}");
}

async fn filters(ctx: Ctx) {
    let store = &ctx.store;
    let all = PageRequest {
        page: 1,
        per_page: 100,
    };
    // 0: accepted rpi4, lab, eu, rootfs 1.0
    // 1: accepted rpi4, lab+east, us, rootfs 2.0
    // 2: pending rpi5, east, eu, rootfs 1.0 + app 1
    // 3: rejected, no type, nothing
    let mut made = Vec::new();
    for (n, (status, device_type, tags, attributes, installed)) in [
        (
            DeviceStatus::Accepted,
            Some("rpi4"),
            vec!["lab"],
            vec![("region", "eu")],
            vec![("rootfs", "1.0")],
        ),
        (
            DeviceStatus::Accepted,
            Some("rpi4"),
            vec!["lab", "east"],
            vec![("region", "us"), ("kernel", "6.1")],
            vec![("rootfs", "2.0")],
        ),
        (
            DeviceStatus::Pending,
            Some("rpi5"),
            vec!["east"],
            vec![("region", "eu"), ("kernel", "6.1")],
            vec![("rootfs", "1.0"), ("app", "1")],
        ),
        (DeviceStatus::Rejected, None, vec![], vec![], vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = device(n as u32, n as i64);
        d.status = status;
        d.device_type = device_type.map(str::to_string);
        d.tags = strings(&tags);
        d.attributes = map(&attributes);
        d.installed = map(&installed);
        store.insert_device(&d).await.expect("insert");
        made.push(d.id);
    }
    let ids = |devices: Vec<Device>| devices.into_iter().map(|d| d.id).collect::<Vec<_>>();
    let check = |filter: DeviceFilter, expected: Vec<usize>| {
        let store = store.clone();
        let expected: Vec<DeviceId> = expected.into_iter().map(|i| made[i]).collect();
        async move {
            let (devices, total) = store.list_devices(&filter, all).await.expect("list");
            assert_eq!(ids(devices), expected, "{filter:?}");
            assert_eq!(total, expected.len() as u64, "{filter:?}");
        }
    };

    check(DeviceFilter::default(), vec![0, 1, 2, 3]).await;
    check(
        DeviceFilter {
            status: Some(DeviceStatus::Accepted),
            ..Default::default()
        },
        vec![0, 1],
    )
    .await;
    check(
        DeviceFilter {
            status: Some(DeviceStatus::Decommissioned),
            ..Default::default()
        },
        vec![],
    )
    .await;
    check(
        DeviceFilter {
            device_type: Some("rpi5".into()),
            ..Default::default()
        },
        vec![2],
    )
    .await;
    check(
        DeviceFilter {
            tag: Some("east".into()),
            ..Default::default()
        },
        vec![1, 2],
    )
    .await;
    check(
        DeviceFilter {
            attributes: map(&[("region", "eu")]),
            ..Default::default()
        },
        vec![0, 2],
    )
    .await;
    check(
        DeviceFilter {
            attributes: map(&[("region", "eu"), ("kernel", "6.1")]),
            ..Default::default()
        },
        vec![2],
    )
    .await;
    check(
        DeviceFilter {
            installed: map(&[("rootfs", "1.0")]),
            ..Default::default()
        },
        vec![0, 2],
    )
    .await;
    check(
        DeviceFilter {
            installed: map(&[("rootfs", "1.0"), ("app", "1")]),
            ..Default::default()
        },
        vec![2],
    )
    .await;
    check(
        DeviceFilter {
            status: Some(DeviceStatus::Accepted),
            tag: Some("east".into()),
            attributes: map(&[("kernel", "6.1")]),
            installed: map(&[("rootfs", "2.0")]),
            device_type: Some("rpi4".into()),
            ..Default::default()
        },
        vec![1],
    )
    .await;
    check(
        DeviceFilter {
            tag: Some("lab".into()),
            installed: map(&[("app", "1")]),
            ..Default::default()
        },
        vec![],
    )
    .await;
    // Only what devices carry (counted from those tables): every set holds.
    check(
        DeviceFilter {
            tag: Some("east".into()),
            attributes: map(&[("kernel", "6.1"), ("region", "eu")]),
            installed: map(&[("rootfs", "1.0"), ("app", "1")]),
            ..Default::default()
        },
        vec![2],
    )
    .await;
    check(
        DeviceFilter {
            tag: Some("lab".into()),
            attributes: map(&[("kernel", "6.1")]),
            installed: map(&[("rootfs", "2.0")]),
            ..Default::default()
        },
        vec![1],
    )
    .await;
}

async fn pages_oldest_first_with_total(ctx: Ctx) {
    let store = &ctx.store;
    let mut expected = Vec::new();
    // Inserted newest first, so the order comes from created_at alone.
    for n in (0..25).rev() {
        let mut d = device(n, i64::from(n) * 10);
        if n % 5 == 0 {
            d.status = DeviceStatus::Pending;
        }
        store.insert_device(&d).await.expect("insert");
        expected.push(d);
    }
    expected.reverse();

    let mut seen = Vec::new();
    for page in 1..=3 {
        let (devices, total) = store
            .list_devices(&DeviceFilter::default(), PageRequest { page, per_page: 10 })
            .await
            .expect("page");
        assert_eq!(total, 25);
        assert_eq!(devices.len(), if page < 3 { 10 } else { 5 });
        seen.extend(devices);
    }
    assert_eq!(seen, expected);

    let (beyond, total) = store
        .list_devices(
            &DeviceFilter::default(),
            PageRequest {
                page: 4,
                per_page: 10,
            },
        )
        .await
        .expect("beyond");
    assert!(beyond.is_empty());
    assert_eq!(total, 25);

    let pending = DeviceFilter {
        status: Some(DeviceStatus::Pending),
        ..Default::default()
    };
    let (devices, total) = store
        .list_devices(
            &pending,
            PageRequest {
                page: 2,
                per_page: 2,
            },
        )
        .await
        .expect("filtered page");
    assert_eq!(total, 5);
    let ids: Vec<_> = devices.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![expected[10].id, expected[15].id]);
}

async fn walks_every_match_by_id(ctx: Ctx) {
    let store = &ctx.store;
    let mut tagged = Vec::new();
    for n in 0..23 {
        let mut d = device(n, i64::from(n));
        if n % 3 != 0 {
            d.tags = strings(&["walk"]);
            tagged.push(d.id);
        }
        store.insert_device(&d).await.expect("insert");
    }
    tagged.sort();
    let filter = DeviceFilter {
        tag: Some("walk".into()),
        // Ignored: the walk is by id.
        descending: true,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .devices_after(&filter, after, 4)
            .await
            .expect("a page");
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.iter().map(|d| d.id));
    }
    assert_eq!(seen, tagged, "every tagged device once, by id");
    assert!(store
        .devices_after(&filter, tagged.last().copied(), 4)
        .await
        .expect("past the end")
        .is_empty());
}
