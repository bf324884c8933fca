//! Settings: read, and insert-unless-present under races.

use crate::support::Ctx;

conformance!(absent_then_first_value_wins, racing_first_starts_agree);

async fn absent_then_first_value_wins(ctx: Ctx) {
    let store = &ctx.store;
    assert_eq!(store.setting("secret").await.expect("read"), None);
    let first = store
        .setting_or_insert("secret", "one")
        .await
        .expect("insert");
    assert_eq!(first, "one");
    let second = store
        .setting_or_insert("secret", "two")
        .await
        .expect("insert");
    assert_eq!(second, "one");
    assert_eq!(
        store.setting("secret").await.expect("read").as_deref(),
        Some("one")
    );
    assert_eq!(store.setting("other").await.expect("read"), None);
}

async fn racing_first_starts_agree(ctx: Ctx) {
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let store = ctx.store.clone();
            tokio::spawn(async move {
                store
                    .setting_or_insert("secret", &format!("value-{n}"))
                    .await
            })
        })
        .collect();
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.expect("task").expect("setting_or_insert"));
    }
    let stored = ctx
        .store
        .setting("secret")
        .await
        .expect("read")
        .expect("a value");
    assert!(
        values.iter().all(|v| *v == stored),
        "{values:?} vs {stored}"
    );
}
