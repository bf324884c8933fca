//! Device shadows: a device's own desired document, group documents for a
//! tag, an attribute filter and a target expression merged into the
//! effective document by the documented rule, the delta against what the
//! device reported, limits refused with nothing written, and a tag's
//! document written as one row.

use crate::support::{devices, inventory, map, strings, t, Ctx};
use airlift_protocol::shadow::{Document, ShadowGroup};
use airlift_protocol::target_expr::TargetExpr;
use airlift_store::{DesiredChange, ShadowLimits, ShadowWrite, StoreError};
use serde_json::json;

conformance!(
    a_device_desired_document_is_versioned_and_stamped_per_key,
    group_documents_reach_devices_by_tag_and_attributes_and_the_device_wins,
    between_groups_the_key_set_last_wins,
    reporting_what_was_applied_empties_the_delta_and_a_failure_is_kept_until_success,
    over_the_limits_nothing_is_written,
    a_tag_document_is_one_row_for_any_number_of_devices,
    an_unknown_device_has_no_shadow,
    an_expression_document_reaches_the_devices_whose_last_check_in_matches_it
);

fn doc(value: serde_json::Value) -> Document {
    value.as_object().cloned().unwrap_or_default()
}

fn written(write: ShadowWrite) -> airlift_protocol::shadow::VersionedDocument {
    match write {
        ShadowWrite::Written(doc) => doc,
        other => panic!("not written: {other:?}"),
    }
}

async fn a_device_desired_document_is_versioned_and_stamped_per_key(ctx: Ctx) {
    let store = &ctx.store;
    let id = devices(store, 1).await[0];
    let limits = ShadowLimits::default();
    let set = DesiredChange::Replace(doc(json!({"level": "info", "port": 80})));
    let first = written(
        store
            .change_device_desired(id, &set, &limits, t(1))
            .await
            .expect("set"),
    );
    assert_eq!(first.version, 1);
    let patch = DesiredChange::Merge(doc(json!({"port": 81, "level": "info"})));
    let second = written(
        store
            .change_device_desired(id, &patch, &limits, t(2))
            .await
            .expect("patch"),
    );
    assert_eq!(second.version, 2);
    assert_eq!(second.metadata["level"], t(1));
    assert_eq!(second.metadata["port"], t(2));
    let shadow = store.device_shadow(id).await.expect("read").expect("some");
    assert_eq!(shadow.desired, second);
    assert_eq!(shadow.effective, doc(json!({"level": "info", "port": 81})));
    assert_eq!(shadow.delta, shadow.effective);
    let unset = DesiredChange::Merge(doc(json!({"port": null})));
    let third = written(
        store
            .change_device_desired(id, &unset, &limits, t(3))
            .await
            .expect("unset"),
    );
    assert_eq!(third.document, doc(json!({"level": "info"})));
    assert_eq!(third.version, 3);
}

async fn group_documents_reach_devices_by_tag_and_attributes_and_the_device_wins(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 3).await;
    let limits = ShadowLimits::default();
    store
        .set_device_tags(ids[0], &strings(&["lab"]))
        .await
        .expect("tag");
    store
        .record_check_in(
            ids[1],
            &inventory(&[], &[("site", "north"), ("rack", "2")]),
            t(1),
        )
        .await
        .expect("check in");
    let tag = ShadowGroup::Tag("lab".into());
    let site = ShadowGroup::Attributes(map(&[("site", "north")]));
    let both = DesiredChange::Replace(doc(json!({"level": "debug", "mode": "x"})));
    written(
        store
            .change_group_desired(&tag, &both, &limits, t(2))
            .await
            .expect("tag"),
    );
    let north = DesiredChange::Replace(doc(json!({"ntp": "n.example"})));
    written(
        store
            .change_group_desired(&site, &north, &limits, t(3))
            .await
            .expect("site"),
    );
    // The device's own key wins over the tag's.
    let own = DesiredChange::Replace(doc(json!({"level": "warn"})));
    written(
        store
            .change_device_desired(ids[0], &own, &limits, t(4))
            .await
            .expect("own"),
    );

    let lab = store
        .device_shadow(ids[0])
        .await
        .expect("read")
        .expect("some");
    assert_eq!(lab.effective, doc(json!({"level": "warn", "mode": "x"})));
    assert_eq!(lab.sources["level"], "device");
    assert_eq!(lab.sources["mode"], "tag:lab");
    assert_eq!(lab.groups.len(), 1);
    let northern = store
        .device_shadow(ids[1])
        .await
        .expect("read")
        .expect("some");
    assert_eq!(northern.effective, doc(json!({"ntp": "n.example"})));
    assert_eq!(northern.sources["ntp"], site.id());
    let neither = store
        .device_shadow(ids[2])
        .await
        .expect("read")
        .expect("some");
    assert!(neither.effective.is_empty() && neither.delta.is_empty());

    assert_eq!(
        store
            .group_shadow(&site)
            .await
            .expect("read")
            .map(|g| g.group),
        Some(site.clone())
    );
    assert_eq!(store.list_group_shadows(10).await.expect("list").len(), 2);
    assert!(store.delete_group_desired(&site).await.expect("delete"));
    assert!(!store.delete_group_desired(&site).await.expect("again"));
    let northern = store
        .device_shadow(ids[1])
        .await
        .expect("read")
        .expect("some");
    assert!(northern.effective.is_empty());
}

async fn between_groups_the_key_set_last_wins(ctx: Ctx) {
    let store = &ctx.store;
    let id = devices(store, 1).await[0];
    let limits = ShadowLimits::default();
    store
        .set_device_tags(id, &strings(&["a", "b"]))
        .await
        .expect("tag");
    let (a, b) = (ShadowGroup::Tag("a".into()), ShadowGroup::Tag("b".into()));
    let set = |v: &str| DesiredChange::Merge(doc(json!({ "k": v })));
    written(
        store
            .change_group_desired(&b, &set("b"), &limits, t(1))
            .await
            .expect("b"),
    );
    written(
        store
            .change_group_desired(&a, &set("a"), &limits, t(2))
            .await
            .expect("a"),
    );
    let shadow = store.device_shadow(id).await.expect("read").expect("some");
    assert_eq!(shadow.effective["k"], json!("a"));
    written(
        store
            .change_group_desired(&b, &set("b2"), &limits, t(3))
            .await
            .expect("b2"),
    );
    let shadow = store.device_shadow(id).await.expect("read").expect("some");
    assert_eq!(shadow.effective["k"], json!("b2"));
    assert_eq!(shadow.sources["k"], "tag:b");
}

async fn reporting_what_was_applied_empties_the_delta_and_a_failure_is_kept_until_success(
    ctx: Ctx,
) {
    let store = &ctx.store;
    let id = devices(store, 1).await[0];
    let limits = ShadowLimits::default();
    let set = DesiredChange::Replace(doc(json!({"level": "debug"})));
    written(
        store
            .change_device_desired(id, &set, &limits, t(1))
            .await
            .expect("set"),
    );
    let stale = doc(json!({"old": true}));
    let failed = store
        .record_reported(id, &stale, Some("reload exited with 1"), t(2))
        .await
        .expect("report");
    assert_eq!(failed.delta, doc(json!({"level": "debug", "old": null})));
    let failure = failed.failure.expect("failure kept");
    assert_eq!(failure.reason, "reload exited with 1");
    assert_eq!(failure.at, t(2));
    assert_eq!(failed.reported.version, 1);
    let applied = store
        .record_reported(id, &doc(json!({"level": "debug"})), None, t(3))
        .await
        .expect("report");
    // The device's own documents, alone and with its summary: the whole
    // shadow's, without groups or merge.
    let own = store
        .device_documents(id)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(own.desired, applied.desired);
    assert_eq!(own.reported, applied.reported);
    let (summary, documents) = store
        .device_summary_with_documents(id)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(documents, own);
    assert_eq!(summary.id, id);
    assert!(applied.delta.is_empty());
    assert_eq!(applied.failure, None);
    assert_eq!(applied.reported.version, 2);
    assert_eq!(applied.reported.metadata["level"], t(3));
    // The same document again changes nothing.
    let again = store
        .record_reported(id, &doc(json!({"level": "debug"})), None, t(4))
        .await
        .expect("report");
    assert_eq!(again.reported.version, 2);
}

async fn over_the_limits_nothing_is_written(ctx: Ctx) {
    let store = &ctx.store;
    let id = devices(store, 1).await[0];
    let limits = ShadowLimits {
        max_document_bytes: 32,
        max_keys: 2,
        max_groups: 1,
    };
    let big = DesiredChange::Replace(doc(json!({"k": "x".repeat(40)})));
    match store.change_device_desired(id, &big, &limits, t(1)).await {
        Ok(ShadowWrite::TooLarge(why)) => assert!(why.contains("limit is 32 bytes"), "{why}"),
        other => panic!("{other:?}"),
    }
    let two = DesiredChange::Replace(doc(json!({"a": 1, "b": 2})));
    written(
        store
            .change_device_desired(id, &two, &limits, t(2))
            .await
            .expect("fits"),
    );
    let third = DesiredChange::Merge(doc(json!({"c": 3})));
    assert!(matches!(
        store.change_device_desired(id, &third, &limits, t(3)).await,
        Ok(ShadowWrite::TooLarge(_))
    ));
    let shadow = store.device_shadow(id).await.expect("read").expect("some");
    assert_eq!(shadow.desired.document, doc(json!({"a": 1, "b": 2})));
    let one = DesiredChange::Replace(doc(json!({"a": 1})));
    let tag = |t: &str| ShadowGroup::Tag(t.into());
    written(
        store
            .change_group_desired(&tag("x"), &one, &limits, t(4))
            .await
            .expect("x"),
    );
    assert_eq!(
        store
            .change_group_desired(&tag("y"), &one, &limits, t(5))
            .await
            .expect("y"),
        ShadowWrite::TooManyGroups(1)
    );
    // Changing the existing group is still allowed.
    written(
        store
            .change_group_desired(&tag("x"), &two, &limits, t(6))
            .await
            .expect("x"),
    );
}

async fn a_tag_document_is_one_row_for_any_number_of_devices(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 20).await;
    for id in &ids {
        store
            .set_device_tags(*id, &strings(&["fleet"]))
            .await
            .expect("tag");
    }
    let limits = ShadowLimits::default();
    let set = DesiredChange::Replace(doc(json!({"level": "info"})));
    written(
        store
            .change_group_desired(&ShadowGroup::Tag("fleet".into()), &set, &limits, t(1))
            .await
            .expect("set"),
    );
    // No per-device row was written: only the group's.
    for id in &ids {
        let shadow = store.device_shadow(*id).await.expect("read").expect("some");
        assert_eq!(shadow.desired.version, 0);
        assert_eq!(shadow.delta, doc(json!({"level": "info"})));
    }
}

async fn an_unknown_device_has_no_shadow(ctx: Ctx) {
    let store = &ctx.store;
    let id = airlift_protocol::DeviceId::new();
    assert_eq!(store.device_shadow(id).await.expect("read"), None);
    assert_eq!(store.device_documents(id).await.expect("read"), None);
    assert_eq!(
        store.device_summary_with_documents(id).await.expect("read"),
        None
    );
    let set = DesiredChange::Replace(doc(json!({"a": 1})));
    assert!(matches!(
        store
            .change_device_desired(id, &set, &ShadowLimits::default(), t(1))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .record_reported(id, &Document::new(), None, t(1))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn an_expression_document_reaches_the_devices_whose_last_check_in_matches_it(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 3).await;
    let limits = ShadowLimits {
        max_groups: 2,
        ..ShadowLimits::default()
    };
    let facts = [
        (&["lab"][..], "2.3.0", &[("site", "north")][..]),
        (&["lab"][..], "2.4.0", &[][..]),
        (&[][..], "2.3.0", &[][..]),
    ];
    for (id, (tags, version, attributes)) in ids.iter().zip(facts) {
        store
            .set_device_tags(*id, &strings(tags))
            .await
            .expect("tags");
        store
            .record_check_in(*id, &inventory(&[("rootfs", version)], attributes), t(1))
            .await
            .expect("check in");
    }
    let parse = |text: &str| text.parse::<TargetExpr>().expect("parses");
    let lab = ShadowGroup::expression(&parse("tag:lab and installed.rootfs<2.4.0"));
    assert_eq!(
        lab,
        ShadowGroup::Expression("tag:lab AND installed.rootfs < 2.4.0".into())
    );
    let set = DesiredChange::Replace(doc(json!({"banner": "update due"})));
    written(
        store
            .change_group_desired(&lab, &set, &limits, t(2))
            .await
            .expect("expression"),
    );
    // An attribute filter beside it: the expression group, which has no
    // pairs, must not pass for one that every device matches.
    let north = ShadowGroup::Attributes(map(&[("site", "north")]));
    let ntp = DesiredChange::Replace(doc(json!({"ntp": "n.example"})));
    written(
        store
            .change_group_desired(&north, &ntp, &limits, t(3))
            .await
            .expect("site"),
    );
    let shadow_of = |id: airlift_protocol::DeviceId| async move {
        store.device_shadow(id).await.expect("read").expect("some")
    };
    let first = shadow_of(ids[0]).await;
    assert_eq!(
        first.effective,
        doc(json!({"banner": "update due", "ntp": "n.example"}))
    );
    assert_eq!(first.groups.len(), 2, "{:?}", first.groups);
    assert_eq!(first.sources["banner"], lab.id());
    assert!(shadow_of(ids[1]).await.groups.is_empty());
    assert!(shadow_of(ids[2]).await.groups.is_empty());

    // Another spelling is the same row: it changes it, and counts once.
    let patch = DesiredChange::Merge(doc(json!({"level": "debug"})));
    let same = ShadowGroup::expression(&parse("tag:lab  AND  installed.rootfs < 2.4.0"));
    assert_eq!(
        written(
            store
                .change_group_desired(&same, &patch, &limits, t(4))
                .await
                .expect("same group"),
        )
        .version,
        2
    );
    assert_eq!(store.list_group_shadows(10).await.expect("list").len(), 2);
    let other = ShadowGroup::expression(&parse("device_type = rpi4"));
    assert_eq!(
        store
            .change_group_desired(&other, &set, &limits, t(5))
            .await
            .expect("over the limit"),
        ShadowWrite::TooManyGroups(2)
    );

    // Facts change at a check-in: the first device updated past the bound
    // leaves the group, the second rolled back below it joins.
    store
        .record_check_in(ids[0], &inventory(&[("rootfs", "2.4.0")], &[]), t(6))
        .await
        .expect("check in");
    store
        .record_check_in(ids[1], &inventory(&[("rootfs", "2.3.9")], &[]), t(6))
        .await
        .expect("check in");
    assert!(shadow_of(ids[0]).await.effective.is_empty());
    let second = shadow_of(ids[1]).await;
    assert_eq!(
        second.effective,
        doc(json!({"banner": "update due", "level": "debug"}))
    );
    assert_eq!(
        store
            .group_shadow(&lab)
            .await
            .expect("read")
            .map(|g| g.group),
        Some(lab.clone())
    );
    assert!(store.delete_group_desired(&lab).await.expect("delete"));
    assert!(shadow_of(ids[1]).await.effective.is_empty());
}
