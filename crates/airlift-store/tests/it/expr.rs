//! Target expressions compiled to SQL agree with their evaluation in
//! memory, on both backends, and the version keys they compare are written
//! with every inventory and filled for rows recorded before them.

use crate::support::{device, inventory, map, strings, t, Ctx};
use airlift_protocol::management::Device;
use airlift_protocol::state::DeviceStatus;
use airlift_protocol::target_expr::TargetExpr;
use airlift_protocol::DeviceId;
use airlift_store::{DeviceFilter, PageRequest, SharedStore};
use std::collections::BTreeSet;

conformance!(
    sql_and_memory_agree_on_every_device,
    inventories_carry_version_keys,
    keys_are_filled_for_versions_recorded_before_them,
);

/// A fleet with every case a term distinguishes: tags with and without a
/// wildcard's match, no device type, an attribute missing, software
/// missing, a version that is not one, pre-releases, another status,
/// values holding the wildcard and LIKE/GLOB special characters.
/// Tags, device type, attributes, installed software, status.
type DeviceSpec = (
    &'static [&'static str],
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
    &'static [(&'static str, &'static str)],
    DeviceStatus,
);

fn fleet() -> Vec<Device> {
    let spec: [DeviceSpec; 12] = [
        (
            &["lab"],
            Some("gateway"),
            &[("region", "eu-west")],
            &[("rootfs", "2.3.9")],
            DeviceStatus::Accepted,
        ),
        (
            &["lab", "bench"],
            Some("gateway"),
            &[("region", "eu-north")],
            &[("rootfs", "2.4.0")],
            DeviceStatus::Accepted,
        ),
        (
            &["lab"],
            Some("sensor"),
            &[("region", "us-east")],
            &[("rootfs", "2.4.0-rc.1")],
            DeviceStatus::Accepted,
        ),
        (
            &["field"],
            Some("gateway"),
            &[("region", "EU-WEST")],
            &[("rootfs", "v10.0")],
            DeviceStatus::Accepted,
        ),
        (&["field-2"], None, &[], &[], DeviceStatus::Accepted),
        (
            &[],
            Some("sensor"),
            &[("region", "eu_west")],
            &[("rootfs", "nightly")],
            DeviceStatus::Accepted,
        ),
        (
            &["lab*"],
            Some("gate%way"),
            &[("region", "eu-[1]")],
            &[("rootfs", "2.4")],
            DeviceStatus::Accepted,
        ),
        (
            &["l?b"],
            Some("gateway"),
            &[("room", "a b")],
            &[("rootfs", "2.10.1"), ("boot", "1.0")],
            DeviceStatus::Accepted,
        ),
        (
            &["lab"],
            Some("gateway"),
            &[("region", "eu-west")],
            &[("rootfs", "2.3.9")],
            DeviceStatus::Pending,
        ),
        (
            &["lab"],
            Some("gateway"),
            &[("region", "é-west")],
            &[("rootfs", "2.3.10")],
            DeviceStatus::Rejected,
        ),
        (
            &["LAB"],
            Some("Gateway"),
            &[("region", "eu-west")],
            &[("rootfs", "1.9.9-beta")],
            DeviceStatus::Accepted,
        ),
        (
            &["lab"],
            Some("gateway"),
            &[("region", "eu\\west")],
            &[("boot", "2.0")],
            DeviceStatus::Accepted,
        ),
    ];
    spec.iter()
        .enumerate()
        .map(
            |(n, (tags, device_type, attributes, installed, status))| Device {
                status: *status,
                tags: strings(tags),
                device_type: device_type.map(str::to_owned),
                attributes: map(attributes),
                installed: map(installed),
                ..device(n as u32, n as i64)
            },
        )
        .collect()
}

/// Terms that split the fleet in different ways.
const TERMS: &[&str] = &[
    "tag:lab",
    "tag:lab*",
    r#"tag:"lab\*""#,
    "tag:l?b",
    r#"tag:"l\?b""#,
    "tag:*",
    "tag:field*",
    "attr.region = eu-*",
    "attr.region = eu?west",
    "attr.region != eu-*",
    r#"attr.region = "eu-[1]""#,
    r#"attr.region = "eu\\*""#,
    "attr.region = ?-west",
    r#"attr."room" = "a b""#,
    "device_type = gateway",
    "device_type != gateway",
    "device_type = gate*",
    r#"device_type = "gate%way""#,
    "status = accepted",
    "status != pending",
    "installed.rootfs < 2.4.0",
    "installed.rootfs <= 2.4",
    "installed.rootfs = 2.4.0",
    "installed.rootfs != 2.4.0",
    "installed.rootfs >= 2.4.0-rc.1",
    "installed.rootfs > 2.9",
    "installed.boot < 3",
];

async fn listed(store: &SharedStore, expression: &TargetExpr) -> (BTreeSet<DeviceId>, u64) {
    let filter = DeviceFilter {
        expression: Some(expression.clone()),
        ..DeviceFilter::default()
    };
    let page = PageRequest {
        page: 1,
        per_page: 1000,
    };
    let (devices, total) = store
        .list_devices(&filter, page)
        .await
        .unwrap_or_else(|e| panic!("{expression}: {e}"));
    let walked = store
        .devices_after(&filter, None, 1000)
        .await
        .unwrap_or_else(|e| panic!("{expression}: {e}"));
    let ids: BTreeSet<DeviceId> = devices.iter().map(|d| d.id).collect();
    let walked: BTreeSet<DeviceId> = walked.iter().map(|d| d.id).collect();
    assert_eq!(ids, walked, "{expression}: the page and the walk differ");
    (ids, total)
}

async fn sql_and_memory_agree_on_every_device(ctx: Ctx) {
    let store = &ctx.store;
    let fleet = fleet();
    for device in &fleet {
        store.insert_device(device).await.expect("insert device");
    }
    let mut expressions: Vec<String> = TERMS.iter().map(|t| t.to_string()).collect();
    for (i, a) in TERMS.iter().enumerate() {
        for b in TERMS.iter().skip(i + 1).step_by(3) {
            expressions.push(format!("{a} AND NOT {b}"));
            expressions.push(format!("NOT ({a} OR {b})"));
        }
    }
    expressions.push(
        "(tag:lab OR tag:field*) AND NOT installed.rootfs >= 2.4 OR status = rejected".into(),
    );
    let mut matched_some = 0;
    for text in &expressions {
        let expression: TargetExpr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        let in_memory: BTreeSet<DeviceId> = fleet
            .iter()
            .filter(|d| expression.matches(&(*d).into()))
            .map(|d| d.id)
            .collect();
        let (in_sql, total) = listed(store, &expression).await;
        assert_eq!(in_sql, in_memory, "{expression}");
        assert_eq!(total, in_memory.len() as u64, "{expression}: the count");
        if !in_memory.is_empty() && in_memory.len() < fleet.len() {
            matched_some += 1;
        }
    }
    // The table is worth something only if it splits the fleet.
    assert!(matched_some > expressions.len() / 2, "{matched_some}");
    // The expression combines with the other filters.
    let filter = DeviceFilter {
        tag: Some("lab".into()),
        status: Some(DeviceStatus::Accepted),
        expression: Some("installed.rootfs < 2.4.0".parse().expect("parses")),
        ..DeviceFilter::default()
    };
    let (devices, total) = store
        .list_devices(
            &filter,
            PageRequest {
                page: 1,
                per_page: 10,
            },
        )
        .await
        .expect("list");
    let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
    assert_eq!(ids, [fleet[0].id, fleet[2].id]);
    assert_eq!(total, 2);
}

async fn inventories_carry_version_keys(ctx: Ctx) {
    let store = &ctx.store;
    let fleet = fleet();
    store.insert_device(&fleet[4]).await.expect("insert device");
    let id = fleet[4].id;
    let old: TargetExpr = "installed.rootfs < 2.4.0".parse().expect("parses");
    assert!(listed(store, &old).await.0.is_empty());
    store
        .record_check_in(id, &inventory(&[("rootfs", "2.3.0")], &[]), t(100))
        .await
        .expect("check in");
    assert_eq!(listed(store, &old).await.0, BTreeSet::from([id]));
    store
        .record_check_in(id, &inventory(&[("rootfs", "2.4.1")], &[]), t(200))
        .await
        .expect("check in");
    assert!(listed(store, &old).await.0.is_empty());
    let newer: TargetExpr = "installed.rootfs > 2.4.0".parse().expect("parses");
    assert_eq!(listed(store, &newer).await.0, BTreeSet::from([id]));
}

async fn keys_are_filled_for_versions_recorded_before_them(ctx: Ctx) {
    let store = &ctx.store;
    let fleet = fleet();
    for device in &fleet {
        store.insert_device(device).await.expect("insert device");
    }
    let expression: TargetExpr = "installed.rootfs >= 2.3.10 OR NOT installed.boot > 0"
        .parse()
        .expect("parses");
    let before = listed(store, &expression).await;
    // As a database migrated from before the keys holds them.
    ctx.execute("UPDATE device_installed SET version_key = NULL")
        .await;
    let (unkeyed, _) = listed(store, &expression).await;
    assert_ne!(unkeyed, before.0, "without keys no comparison holds");
    let installed: usize = fleet.iter().map(|d| d.installed.len()).sum();
    assert_eq!(
        store.fill_version_keys().await.expect("fill"),
        installed as u64
    );
    assert_eq!(listed(store, &expression).await, before);
    assert_eq!(store.fill_version_keys().await.expect("fill again"), 0);
    // Opening the database fills them too.
    ctx.execute("UPDATE device_installed SET version_key = NULL")
        .await;
    let again = ctx.open_again().await;
    assert_eq!(listed(&again, &expression).await, before);
}
