//! The audit log: newest first, paged by id.

use crate::support::{t, Ctx};
use airlift_store::{AuditFilter, NewAuditEntry};

conformance!(newest_first_and_paged_by_id, filtered_by_actor_and_action);

async fn newest_first_and_paged_by_id(ctx: Ctx) {
    let store = &ctx.store;
    let any = AuditFilter::default();
    assert!(store
        .list_audit(&any, 10, None)
        .await
        .expect("list")
        .is_empty());

    for n in 0..5 {
        store
            .append_audit(&NewAuditEntry {
                at: t(n),
                actor: "admin (token 1)".into(),
                action: format!("action.{n}"),
                object: format!("object-{n}"),
                details: serde_json::json!({"n": n, "nested": {"list": [1, 2]}}),
            })
            .await
            .expect("append");
    }

    let all = store.list_audit(&any, 10, None).await.expect("list");
    let actions: Vec<_> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["action.4", "action.3", "action.2", "action.1", "action.0"]
    );
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "ids descend");
    assert_eq!(all[0].at, t(4));
    assert_eq!(all[0].object, "object-4");
    assert_eq!(
        all[0].details,
        serde_json::json!({"n": 4, "nested": {"list": [1, 2]}})
    );

    // Page through two at a time with `before`.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.list_audit(&any, 2, before).await.expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        before = page.last().map(|e| e.id);
        seen.extend(page);
    }
    assert_eq!(seen, all);

    let below = store
        .list_audit(&any, 10, Some(all[1].id))
        .await
        .expect("before");
    assert_eq!(below, all[2..]);
    assert!(store
        .list_audit(&any, 0, None)
        .await
        .expect("limit 0")
        .is_empty());
}

async fn filtered_by_actor_and_action(ctx: Ctx) {
    let store = &ctx.store;
    let entries = [
        ("ci (token-1)", "package.upload"),
        ("ci (token-1)", "deployment.create"),
        ("ops_100% (token-2)", "deployment.cancel"),
        ("ops_1000 (token-3)", "deployment.create"),
        ("ci (token-1)", "deployment.createx"),
    ];
    for (n, (actor, action)) in entries.iter().enumerate() {
        store
            .append_audit(&NewAuditEntry {
                at: t(n as i64),
                actor: (*actor).into(),
                action: (*action).into(),
                object: format!("object-{n}"),
                details: serde_json::json!({}),
            })
            .await
            .expect("append");
    }
    let objects = |filter: AuditFilter, before: Option<i64>| async move {
        store
            .list_audit(&filter, 10, before)
            .await
            .expect("list")
            .into_iter()
            .map(|e| e.object)
            .collect::<Vec<_>>()
    };
    let by_name = AuditFilter {
        actor: Some("ci".into()),
        ..AuditFilter::default()
    };
    assert_eq!(
        objects(by_name.clone(), None).await,
        ["object-4", "object-1", "object-0"],
        "a token's name matches its entries"
    );
    let whole = AuditFilter {
        actor: Some("ops_100% (token-2)".into()),
        ..AuditFilter::default()
    };
    assert_eq!(objects(whole, None).await, ["object-2"]);
    let wildcards = AuditFilter {
        actor: Some("ops_100%".into()),
        ..AuditFilter::default()
    };
    assert_eq!(
        objects(wildcards, None).await,
        ["object-2"],
        "% and _ in a name are no wildcards"
    );
    let exact = AuditFilter {
        action: Some("deployment.create".into()),
        ..AuditFilter::default()
    };
    assert_eq!(objects(exact, None).await, ["object-3", "object-1"]);
    let family = AuditFilter {
        action: Some("deployment.".into()),
        ..AuditFilter::default()
    };
    assert_eq!(
        objects(family, None).await,
        ["object-4", "object-3", "object-2", "object-1"]
    );
    let both = AuditFilter {
        actor: Some("ci".into()),
        action: Some("deployment.create".into()),
        ..AuditFilter::default()
    };
    assert_eq!(objects(both, None).await, ["object-1"]);

    // `before` pages within the filter.
    let page = store.list_audit(&by_name, 1, None).await.expect("page");
    assert_eq!(page.len(), 1);
    assert_eq!(
        objects(by_name, Some(page[0].id)).await,
        ["object-1", "object-0"]
    );
    let nobody = AuditFilter {
        actor: Some("nobody".into()),
        ..AuditFilter::default()
    };
    assert!(objects(nobody, None).await.is_empty());
}
