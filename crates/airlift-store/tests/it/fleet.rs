//! The fleet as a whole (the dashboard's numbers), and device listings
//! sorted, searched and filtered by silence and by updates.

use crate::support::{active_deployment, device, inventory, map, package, t, Ctx};
use airlift_protocol::device::Progress;
use airlift_protocol::management::Device;
use airlift_protocol::state::{DeviceStatus, UpdateState};
use airlift_protocol::DeviceId;
use airlift_store::{
    CheckInCount, DeviceFilter, DeviceSort, PageRequest, SharedStore, UpdateFilter,
};
use std::collections::BTreeMap;

conformance!(
    device_counts_match_the_listing,
    offline_counts_and_filters_follow_status_changes_and_check_ins,
    check_in_filters_and_order_combine_with_what_devices_carry,
    listing_sorts_both_ways_and_pages_in_order,
    search_finds_identity_text_and_ids_only,
    updates_filter_by_deployment_state_and_reason,
    installed_versions_top_names_and_versions,
    open_deployment_counts_by_state_and_phase,
    recent_failures_grouped_by_reason,
    installs_per_day_by_version,
    check_in_minutes_add_up_and_old_ones_go,
    current_updates_prefer_the_one_under_way,
);

const ALL: PageRequest = PageRequest {
    page: 1,
    per_page: 1000,
};

async fn insert(store: &SharedStore, device: &Device) {
    store.insert_device(device).await.expect("insert device");
}

async fn listed(store: &SharedStore, filter: &DeviceFilter) -> (Vec<DeviceId>, u64) {
    let (devices, total) = store.list_devices(filter, ALL).await.expect("list");
    (devices.into_iter().map(|d| d.id).collect(), total)
}

/// Accepted devices: 0 checked in at 1000, 1 at 5000, 2 never (created at
/// 2), 3 never (created at 9000); plus one pending, one rejected, and one
/// pending device silent since long ago.
async fn mixed_fleet(store: &SharedStore) -> Vec<Device> {
    let mut fleet = Vec::new();
    for (n, created, check_in, status) in [
        (0, 0, Some(1000), DeviceStatus::Accepted),
        (1, 1, Some(5000), DeviceStatus::Accepted),
        (2, 2, None, DeviceStatus::Accepted),
        (3, 9000, None, DeviceStatus::Accepted),
        (4, 4, None, DeviceStatus::Pending),
        (5, 5, Some(100), DeviceStatus::Rejected),
        (6, 6, Some(10), DeviceStatus::Pending),
    ] {
        let mut d = device(n, created);
        d.status = status;
        d.last_check_in = check_in.map(t);
        insert(store, &d).await;
        fleet.push(d);
    }
    fleet
}

async fn device_counts_match_the_listing(ctx: Ctx) {
    let store = &ctx.store;
    let empty = store.device_counts(t(0)).await.expect("counts");
    assert!(empty.by_status.is_empty());
    assert_eq!(empty.offline, 0);

    let fleet = mixed_fleet(store).await;
    let counts = store.device_counts(t(4000)).await.expect("counts");
    assert_eq!(
        counts.by_status,
        BTreeMap::from([
            (DeviceStatus::Accepted, 4),
            (DeviceStatus::Pending, 2),
            (DeviceStatus::Rejected, 1),
        ])
    );
    // Silent since 4000: device 0 (heard at 1000) and 2 (created at 2,
    // never checked in); 1 checked in at 5000, 3 was created at 9000.
    assert_eq!(counts.offline, 2);

    let offline = DeviceFilter {
        status: Some(DeviceStatus::Accepted),
        silent_since: Some(t(4000)),
        ..Default::default()
    };
    assert_eq!(
        listed(store, &offline).await,
        (vec![fleet[0].id, fleet[2].id], 2)
    );
    let online = DeviceFilter {
        status: Some(DeviceStatus::Accepted),
        heard_since: Some(t(4000)),
        ..Default::default()
    };
    assert_eq!(
        listed(store, &online).await,
        (vec![fleet[1].id, fleet[3].id], 2)
    );
    for (status, n) in &counts.by_status {
        let filter = DeviceFilter {
            status: Some(*status),
            ..Default::default()
        };
        assert_eq!(listed(store, &filter).await.1, *n, "{status}");
    }
}

/// The check-in time lives apart from the device's row, with copies of its
/// status and creation time: a status change or a check-in is seen by the
/// counts and filters that read the copies.
async fn offline_counts_and_filters_follow_status_changes_and_check_ins(ctx: Ctx) {
    let store = &ctx.store;
    let fleet = mixed_fleet(store).await;
    let offline = DeviceFilter {
        status: Some(DeviceStatus::Accepted),
        silent_since: Some(t(4000)),
        ..Default::default()
    };
    assert_eq!(
        store.device_counts(t(4000)).await.expect("counts").offline,
        2
    );

    // Device 0 (offline) rejected; device 4 (pending, created at 4, never
    // heard of) accepted: still two offline, 4 in 0's place.
    assert!(store
        .set_device_status(fleet[0].id, DeviceStatus::Rejected)
        .await
        .expect("reject"));
    assert!(store
        .transition_device_status(
            fleet[4].id,
            DeviceStatus::Pending,
            DeviceStatus::Accepted,
            None
        )
        .await
        .expect("accept"));
    let counts = store.device_counts(t(4000)).await.expect("counts");
    assert_eq!(counts.offline, 2);
    assert_eq!(counts.by_status[&DeviceStatus::Rejected], 2);
    assert_eq!(
        listed(store, &offline).await,
        (vec![fleet[2].id, fleet[4].id], 2)
    );

    // Device 2 checks in (at 6000), device 4's time moves through the
    // write-behind: neither is offline any more.
    store
        .record_check_in(fleet[2].id, &inventory(&[("rootfs", "1.0")], &[]), t(6000))
        .await
        .expect("check in");
    let digest = airlift_store::inventory_digest(&inventory(&[], &[])).expect("digest");
    store
        .record_check_in(fleet[4].id, &inventory(&[], &[]), t(5000))
        .await
        .expect("check in");
    let moved = store
        .record_check_in_times(&[airlift_store::CheckInTime {
            device: fleet[4].id,
            inventory_sha256: digest,
            at: t(7000),
        }])
        .await
        .expect("times");
    assert_eq!(moved, 1);
    assert_eq!(
        store.device_counts(t(4000)).await.expect("counts").offline,
        0
    );
    assert_eq!(listed(store, &offline).await, (vec![], 0));
    let heard = store
        .device(fleet[4].id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(heard.last_check_in, Some(t(7000)));
}

/// Filters and orders on the check-in time combined with what only the
/// devices hold (type, tags, identity): the listing joins the two.
async fn check_in_filters_and_order_combine_with_what_devices_carry(ctx: Ctx) {
    let store = &ctx.store;
    let fleet = mixed_fleet(store).await;
    for n in [0, 2, 5] {
        assert!(store
            .set_device_tags(fleet[n].id, &["lab".to_owned()])
            .await
            .expect("tags"));
    }
    let ids = |order: &[usize]| order.iter().map(|&i| fleet[i].id).collect::<Vec<_>>();
    let lab = DeviceFilter {
        tag: Some("lab".into()),
        ..Default::default()
    };
    // Silent since 4000, tagged: 0 (heard at 1000), 2 (created at 2), 5
    // (heard at 100).
    let silent_lab = DeviceFilter {
        silent_since: Some(t(4000)),
        ..lab.clone()
    };
    assert_eq!(listed(store, &silent_lab).await, (ids(&[0, 2, 5]), 3));
    // By last check-in, never first, then by time.
    let by_check_in = DeviceFilter {
        sort: DeviceSort::LastCheckIn,
        ..lab.clone()
    };
    assert_eq!(listed(store, &by_check_in).await, (ids(&[2, 5, 0]), 3));
    // Heard of since 4000 and searched by identity: 1 alone.
    let searched = DeviceFilter {
        search: Some("sn000".into()),
        heard_since: Some(t(4000)),
        sort: DeviceSort::LastCheckIn,
        descending: true,
        ..Default::default()
    };
    assert_eq!(listed(store, &searched).await, (ids(&[1, 3]), 2));
    // Silent devices sorted by identity, the other way.
    let by_identity = DeviceFilter {
        silent_since: Some(t(4000)),
        sort: DeviceSort::Identity,
        descending: true,
        ..Default::default()
    };
    assert_eq!(
        listed(store, &by_identity).await,
        (ids(&[6, 5, 4, 2, 0]), 5)
    );
}

async fn listing_sorts_both_ways_and_pages_in_order(ctx: Ctx) {
    let store = &ctx.store;
    let fleet = mixed_fleet(store).await;
    let ids = |order: &[usize]| order.iter().map(|&i| fleet[i].id).collect::<Vec<_>>();
    let sorted = |sort, descending| DeviceFilter {
        sort,
        descending,
        ..Default::default()
    };

    let by = |sort, descending| {
        let filter = sorted(sort, descending);
        async move { listed(store, &filter).await.0 }
    };
    assert_eq!(
        by(DeviceSort::CreatedAt, false).await,
        ids(&[0, 1, 2, 4, 5, 6, 3])
    );
    assert_eq!(
        by(DeviceSort::CreatedAt, true).await,
        ids(&[3, 6, 5, 4, 2, 1, 0])
    );
    // Never checked in first (oldest first), then by time.
    assert_eq!(
        by(DeviceSort::LastCheckIn, false).await,
        ids(&[2, 4, 3, 6, 5, 0, 1])
    );
    assert_eq!(
        by(DeviceSort::LastCheckIn, true).await,
        ids(&[1, 0, 5, 6, 3, 4, 2])
    );
    // accepted < pending < rejected, then oldest first.
    assert_eq!(
        by(DeviceSort::Status, false).await,
        ids(&[0, 1, 2, 3, 4, 6, 5])
    );
    // Identities are SN0000 … SN0006.
    assert_eq!(
        by(DeviceSort::Identity, true).await,
        ids(&[6, 5, 4, 3, 2, 1, 0])
    );

    // Device types: none reported comes last, first when reversed.
    let mut untyped = device(7, 7);
    untyped.device_type = None;
    insert(store, &untyped).await;
    let mut other = device(8, 8);
    other.device_type = Some("imx8".into());
    insert(store, &other).await;
    let types = by(DeviceSort::DeviceType, false).await;
    assert_eq!(types.first(), Some(&other.id));
    assert_eq!(types.last(), Some(&untyped.id));
    let types = by(DeviceSort::DeviceType, true).await;
    assert_eq!(types.first(), Some(&untyped.id));
    assert_eq!(types.last(), Some(&other.id));

    // Pages cut the sorted list where it is sorted, with the whole total
    // (pages past the middle are read from the other end).
    for (sort, descending) in [
        (DeviceSort::LastCheckIn, true),
        (DeviceSort::DeviceType, false),
        (DeviceSort::CreatedAt, false),
    ] {
        let filter = sorted(sort, descending);
        for per_page in [2, 3, 4, 9] {
            let mut paged = Vec::new();
            for page in 1..=6 {
                let (devices, total) = store
                    .list_devices(&filter, PageRequest { page, per_page })
                    .await
                    .expect("page");
                assert_eq!(total, 9);
                paged.extend(devices.into_iter().map(|d| d.id));
            }
            assert_eq!(
                paged,
                listed(store, &filter).await.0,
                "{filter:?} by {per_page}"
            );
        }
    }
}

async fn search_finds_identity_text_and_ids_only(ctx: Ctx) {
    let store = &ctx.store;
    let mut a = device(1, 1);
    a.identity = map(&[("serial", "Alpha-100"), ("mac", "aa:bb")]);
    let mut b = device(2, 2);
    b.identity = map(&[("serial", "beta_100%")]);
    let c = device(3, 3);
    for d in [&a, &b, &c] {
        insert(store, d).await;
    }
    let search = |text: &str| DeviceFilter {
        search: Some(text.into()),
        ..Default::default()
    };
    assert_eq!(listed(store, &search("ALPHA")).await, (vec![a.id], 1));
    assert_eq!(listed(store, &search("100")).await.1, 2);
    // LIKE's wildcards are searched for as themselves.
    assert_eq!(listed(store, &search("_100%")).await, (vec![b.id], 1));
    // As a wildcard, `_` would also find "alpha-100".
    assert_eq!(listed(store, &search("a_1")).await, (vec![b.id], 1));
    assert_eq!(listed(store, &search("%")).await, (vec![b.id], 1));
    assert_eq!(
        listed(store, &search(&c.id.to_string().to_uppercase())).await,
        (vec![c.id], 1)
    );
    assert_eq!(listed(store, &search("nothing like it")).await.1, 0);
    // A search's matches page and sort like any listing, from either end.
    let mut matches = Vec::new();
    for n in 10..17 {
        let mut d = device(n, i64::from(n));
        d.identity = map(&[("serial", &format!("gamma-{n}"))]);
        insert(store, &d).await;
        matches.push(d.id);
    }
    for (sort, descending) in [(DeviceSort::CreatedAt, false), (DeviceSort::Identity, true)] {
        let mut expected = matches.clone();
        if descending {
            expected.reverse();
        }
        let mut paged = Vec::new();
        for page in 1..=4 {
            let filter = DeviceFilter {
                sort,
                descending,
                ..search("GAMMA-")
            };
            let (devices, total) = store
                .list_devices(&filter, PageRequest { page, per_page: 2 })
                .await
                .expect("page");
            assert_eq!(total, 7);
            paged.extend(devices.into_iter().map(|d| d.id));
        }
        assert_eq!(paged, expected, "{sort:?}");
    }
    // Combined with the other filters.
    let filter = DeviceFilter {
        status: Some(DeviceStatus::Pending),
        ..search("alpha")
    };
    assert_eq!(listed(store, &filter).await.1, 0);
}

async fn updates_filter_by_deployment_state_and_reason(ctx: Ctx) {
    let store = &ctx.store;
    let ids = crate::support::devices(store, 4).await;
    let first = active_deployment(store, &ids[..3]).await;
    let second = active_deployment(store, &ids[2..]).await;
    for (deployment, device, state, message) in [
        (first, ids[0], UpdateState::Failure, Some("disk full")),
        (
            first,
            ids[1],
            UpdateState::RolledBack,
            Some("health check failed"),
        ),
        (second, ids[2], UpdateState::Failure, Some("disk full")),
        (second, ids[3], UpdateState::Success, None),
    ] {
        store
            .record_update_state(deployment, device, state, message, t(100))
            .await
            .expect("report");
    }
    let failed = vec![
        UpdateState::Failure,
        UpdateState::RolledBack,
        UpdateState::TimedOut,
    ];
    let by = |update: UpdateFilter| DeviceFilter {
        update: Some(update),
        ..Default::default()
    };
    assert_eq!(
        listed(
            store,
            &by(UpdateFilter {
                deployment: Some(first),
                ..Default::default()
            })
        )
        .await,
        (ids[..3].to_vec(), 3)
    );
    assert_eq!(
        listed(
            store,
            &by(UpdateFilter {
                states: failed.clone(),
                ..Default::default()
            })
        )
        .await,
        (ids[..3].to_vec(), 3)
    );
    assert_eq!(
        listed(
            store,
            &by(UpdateFilter {
                states: failed.clone(),
                message: Some("disk full".into()),
                ..Default::default()
            })
        )
        .await,
        (vec![ids[0], ids[2]], 2)
    );
    // A device with matching updates in two deployments is one device:
    // device 2 is pending in the first and failed in the second.
    assert_eq!(
        listed(
            store,
            &by(UpdateFilter {
                states: vec![UpdateState::Pending, UpdateState::Failure],
                ..Default::default()
            })
        )
        .await,
        (vec![ids[0], ids[2]], 2)
    );
    assert_eq!(
        listed(store, &by(UpdateFilter::default())).await,
        (ids.to_vec(), 4)
    );
    // Every condition holds for one and the same update: device 2 failed
    // in the second deployment, and is only pending in the first.
    assert_eq!(
        listed(
            store,
            &by(UpdateFilter {
                deployment: Some(first),
                states: failed,
                message: Some("disk full".into()),
            })
        )
        .await,
        (vec![ids[0]], 1)
    );
}

async fn installed_versions_top_names_and_versions(ctx: Ctx) {
    let store = &ctx.store;
    assert!(store
        .installed_versions(5, 5)
        .await
        .expect("none")
        .is_empty());
    let ids = crate::support::devices(store, 6).await;
    let reports: [&[(&str, &str)]; 6] = [
        &[("rootfs", "2.0"), ("app", "1")],
        &[("rootfs", "2.0"), ("app", "1")],
        &[("rootfs", "2.0"), ("app", "2")],
        &[("rootfs", "1.0")],
        &[("rootfs", "1.1")],
        &[("boot", "7")],
    ];
    for (id, installed) in ids.iter().zip(reports) {
        store
            .record_check_in(*id, &inventory(installed, &[]), t(50))
            .await
            .expect("check in");
    }
    let counts = store.installed_versions(2, 2).await.expect("versions");
    let rows: Vec<(&str, &str, u64, u64)> = counts
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.version.as_str(),
                v.devices,
                v.name_devices,
            )
        })
        .collect();
    // rootfs (5 devices) before app (3); boot is the third name. Ties in
    // a version's count go by version.
    assert_eq!(
        rows,
        vec![
            ("rootfs", "2.0", 3, 5),
            ("rootfs", "1.0", 1, 5),
            ("app", "1", 2, 3),
            ("app", "2", 1, 3),
        ]
    );
    // Each count is what the listing's installed filter finds.
    for v in &counts {
        let filter = DeviceFilter {
            installed: map(&[(&v.name, &v.version)]),
            ..Default::default()
        };
        assert_eq!(listed(store, &filter).await.1, v.devices, "{v:?}");
    }
}

async fn open_deployment_counts_by_state_and_phase(ctx: Ctx) {
    let store = &ctx.store;
    let ids = crate::support::devices(store, 4).await;
    let open = active_deployment(store, &ids).await;
    let done = active_deployment(store, &ids[..1]).await;
    store
        .admit_devices(open, 0, &ids[..2])
        .await
        .expect("admit");
    store
        .record_update_state(open, ids[0], UpdateState::Failure, Some("x"), t(5))
        .await
        .expect("report");
    store.cancel_deployment(done, t(6)).await.expect("cancel");
    let mut counts: Vec<_> = store
        .open_deployment_counts()
        .await
        .expect("counts")
        .into_iter()
        .map(|c| (c.deployment, c.state, c.phase, c.devices))
        .collect();
    counts.sort_by_key(|c| (c.1, c.2));
    assert_eq!(
        counts,
        vec![
            (open, UpdateState::Pending, None, 2),
            (open, UpdateState::Pending, Some(0), 1),
            (open, UpdateState::Failure, Some(0), 1),
        ]
    );
    // They add up to the deployment's own counts.
    let own = store.deployment_counts(open).await.expect("own");
    let mut summed = BTreeMap::new();
    for (_, state, _, n) in &counts {
        *summed.entry(*state).or_insert(0) += n;
    }
    assert_eq!(own, summed);
}

async fn recent_failures_grouped_by_reason(ctx: Ctx) {
    let store = &ctx.store;
    let ids = crate::support::devices(store, 5).await;
    let first = active_deployment(store, &ids).await;
    let second = active_deployment(store, &ids[..1]).await;
    for (deployment, device, state, message, at) in [
        (first, ids[0], UpdateState::Failure, Some("disk full"), 1000),
        (
            first,
            ids[1],
            UpdateState::RolledBack,
            Some("disk full"),
            2000,
        ),
        (
            second,
            ids[0],
            UpdateState::Failure,
            Some("disk full"),
            3000,
        ),
        (
            first,
            ids[2],
            UpdateState::Failure,
            Some("no network"),
            4000,
        ),
        (first, ids[3], UpdateState::Failure, None, 5000),
        // Before the window.
        (first, ids[4], UpdateState::Failure, Some("disk full"), 10),
    ] {
        store
            .record_update_state(deployment, device, state, message, t(at))
            .await
            .expect("report");
    }
    // A late report is history but no failure of its own.
    store
        .record_update_state(first, ids[0], UpdateState::Failure, Some("again"), t(6000))
        .await
        .expect("late");
    let groups = store.recent_failures(t(500), 10).await.expect("failures");
    let rows: Vec<_> = groups
        .iter()
        .map(|g| {
            (
                g.reason.as_deref(),
                g.failures,
                g.devices,
                g.deployments,
                g.last_at,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (Some("disk full"), 3, 2, 2, t(3000)),
            (None, 1, 1, 1, t(5000)),
            (Some("no network"), 1, 1, 1, t(4000)),
        ]
    );
    assert_eq!(
        store.recent_failures(t(500), 1).await.expect("top").len(),
        1
    );
}

async fn installs_per_day_by_version(ctx: Ctx) {
    let store = &ctx.store;
    let ids = crate::support::devices(store, 3).await;
    let old = package("rootfs", "1.0.0", 0);
    let new = package("rootfs", "2.0.0", 0);
    let mut deployments = Vec::new();
    for p in [&old, &new] {
        store.insert_package(p).await.expect("package");
        let mut d = crate::support::deployment(p.package.id, 1);
        d.target = airlift_protocol::management::Target::Devices(ids.clone());
        let targets: Vec<_> = ids.iter().map(|id| (*id, UpdateState::Pending)).collect();
        store
            .insert_deployment(&d, &targets)
            .await
            .expect("deployment");
        deployments.push(d.id);
    }
    let day = 86_400_000;
    // t(0) is 22:13:20 UTC: t(2 h) is on the next day.
    let next_day_at = 2 * 3_600_000;
    for (deployment, device, at) in [
        (deployments[0], ids[0], 0),
        (deployments[0], ids[1], 1000),
        (deployments[1], ids[0], next_day_at),
        (deployments[1], ids[2], next_day_at + 1),
    ] {
        store
            .record_update_state(deployment, device, UpdateState::Success, None, t(at))
            .await
            .expect("success");
    }
    store
        .record_update_state(deployments[1], ids[1], UpdateState::Failure, None, t(5))
        .await
        .expect("failure");
    let first_day = t(0).timestamp_millis() / day * day;
    let rows: Vec<_> = store
        .installs_per_day(t(-10))
        .await
        .expect("installs")
        .into_iter()
        .map(|c| (c.day.timestamp_millis(), c.name, c.version, c.installs))
        .collect();
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        rows,
        vec![
            (first_day, some("rootfs"), some("1.0.0"), 2),
            (first_day + day, some("rootfs"), some("2.0.0"), 2),
        ]
    );
    assert_eq!(
        store
            .installs_per_day(t(next_day_at))
            .await
            .expect("later")
            .len(),
        1
    );
}

async fn check_in_minutes_add_up_and_old_ones_go(ctx: Ctx) {
    let store = &ctx.store;
    let minute = |m: i64| t(m * 60_000);
    let count = |m: i64, n: u64| CheckInCount {
        minute: minute(m),
        check_ins: n,
    };
    store
        .add_check_ins(&[count(1, 3), count(2, 1)], minute(0))
        .await
        .expect("add");
    // A second instance adds to the same minutes.
    let other = ctx.open_again().await;
    other
        .add_check_ins(&[count(2, 4), count(3, 2)], minute(0))
        .await
        .expect("add again");
    assert_eq!(
        store.check_ins_per_minute(minute(0)).await.expect("read"),
        vec![count(1, 3), count(2, 5), count(3, 2)]
    );
    assert_eq!(
        store.check_ins_per_minute(minute(2)).await.expect("since"),
        vec![count(2, 5), count(3, 2)]
    );
    // Nothing to add still forgets what is old.
    store.add_check_ins(&[], minute(3)).await.expect("forget");
    assert_eq!(
        store.check_ins_per_minute(minute(0)).await.expect("read"),
        vec![count(3, 2)]
    );
}

async fn current_updates_prefer_the_one_under_way(ctx: Ctx) {
    let store = &ctx.store;
    let ids = crate::support::devices(store, 3).await;
    assert!(store.current_updates(&ids).await.expect("none").is_empty());
    let older = active_deployment(store, &ids[..2]).await;
    let newer = active_deployment(store, &ids[..2]).await;
    // Device 0 downloads in the older deployment and has just finished in
    // the newer one: the download is where it stands.
    store
        .record_update_state(older, ids[0], UpdateState::Downloading, None, t(100))
        .await
        .expect("downloading");
    let progress = Progress {
        done: 50,
        total: 200,
    };
    store
        .record_progress(older, ids[0], progress, t(150))
        .await
        .expect("progress");
    store
        .record_update_state(newer, ids[0], UpdateState::Failure, Some("x"), t(200))
        .await
        .expect("failure");
    // Device 1 finished both: the latest change is where it stands.
    store
        .record_update_state(older, ids[1], UpdateState::Success, None, t(300))
        .await
        .expect("success");
    store
        .record_update_state(newer, ids[1], UpdateState::Failure, Some("late"), t(250))
        .await
        .expect("failure");
    let mut found = store.current_updates(&ids).await.expect("current");
    found.sort_by_key(|c| ids.iter().position(|id| *id == c.update.device_id));
    assert_eq!(found.len(), 2, "device 2 was never targeted: {found:?}");
    assert_eq!(found[0].deployment, older);
    assert_eq!(found[0].update.state, UpdateState::Downloading);
    assert_eq!(found[0].update.progress, Some(progress));
    assert_eq!(found[1].deployment, older);
    assert_eq!(found[1].update.state, UpdateState::Success);
}
