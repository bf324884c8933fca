//! Authentication nonces: each used once, forgotten when expired.

use crate::support::{t, Ctx};

conformance!(
    second_use_is_refused,
    expired_nonces_are_forgotten,
    racing_uses_admit_one
);

async fn second_use_is_refused(ctx: Ctx) {
    let store = &ctx.store;
    assert!(store.use_nonce("n1", t(60_000), t(0)).await.expect("first"));
    assert!(!store
        .use_nonce("n1", t(60_000), t(1))
        .await
        .expect("replay"));
    assert!(store.use_nonce("n2", t(60_000), t(2)).await.expect("other"));
}

async fn expired_nonces_are_forgotten(ctx: Ctx) {
    let store = &ctx.store;
    assert!(store.use_nonce("n", t(1_000), t(0)).await.expect("first"));
    assert!(!store
        .use_nonce("n", t(2_000), t(999))
        .await
        .expect("not yet expired"));
    // At its expiry it is forgotten, so the same text is new again.
    assert!(store
        .use_nonce("n", t(5_000), t(1_000))
        .await
        .expect("expired"));
    assert!(!store
        .use_nonce("n", t(6_000), t(2_000))
        .await
        .expect("replay"));
}

async fn racing_uses_admit_one(ctx: Ctx) {
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = ctx.store.clone();
            tokio::spawn(async move { store.use_nonce("raced", t(60_000), t(0)).await })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        if task.await.expect("task").expect("use_nonce") {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 1);
}
