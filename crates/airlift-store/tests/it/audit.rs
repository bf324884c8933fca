//! The audit log: newest first, paged by id.

use crate::support::{t, Ctx};
use airlift_store::NewAuditEntry;

conformance!(newest_first_and_paged_by_id);

async fn newest_first_and_paged_by_id(ctx: Ctx) {
    let store = &ctx.store;
    assert!(store.list_audit(10, None).await.expect("list").is_empty());

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

    let all = store.list_audit(10, None).await.expect("list");
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
        let page = store.list_audit(2, before).await.expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        before = page.last().map(|e| e.id);
        seen.extend(page);
    }
    assert_eq!(seen, all);

    let below = store.list_audit(10, Some(all[1].id)).await.expect("before");
    assert_eq!(below, all[2..]);
    assert!(store.list_audit(0, None).await.expect("limit 0").is_empty());
}
