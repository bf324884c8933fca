//! Trust roots: stored only as the next version, read back whole and in
//! order; the highest security version of the stored packages.

use crate::support::{stored_package, t, Ctx};
use airlift_store::{StoreError, TrustRootRecord};

conformance!(
    roots_are_stored_one_version_after_another,
    the_latest_security_version_is_the_highest_of_the_packages
);

fn root(version: u64) -> TrustRootRecord {
    TrustRootRecord {
        version,
        expires: 4_000_000_000 + version,
        sha256: format!("{version:064x}"),
        document: format!("{{\"signed\":{{\"version\":{version}}},\"signatures\":[]}}"),
        created_at: t(1_000 * i64::try_from(version).expect("small")),
    }
}

async fn roots_are_stored_one_version_after_another(ctx: Ctx) {
    let store = &ctx.store;
    assert_eq!(store.latest_trust_root().await.expect("latest"), None);
    assert!(matches!(
        store.insert_trust_root(&root(2)).await,
        Err(StoreError::Conflict(_))
    ));
    for version in 1..=3 {
        store.insert_trust_root(&root(version)).await.expect("next");
    }
    for version in [1, 3, 5] {
        assert!(
            matches!(
                store.insert_trust_root(&root(version)).await,
                Err(StoreError::Conflict(_))
            ),
            "version {version}"
        );
    }
    assert_eq!(
        store.latest_trust_root().await.expect("latest"),
        Some(root(3))
    );
    assert_eq!(
        store.trust_roots_after(1, 10).await.expect("after"),
        vec![root(2), root(3)]
    );
    assert_eq!(
        store.trust_roots_after(0, 1).await.expect("bounded"),
        vec![root(1)]
    );
    assert!(store
        .trust_roots_after(u64::MAX, 10)
        .await
        .expect("none")
        .is_empty());
}

async fn the_latest_security_version_is_the_highest_of_the_packages(ctx: Ctx) {
    let store = &ctx.store;
    assert_eq!(store.latest_security_version().await.expect("none"), 0);
    stored_package(store).await;
    // The support package's security version.
    assert_eq!(store.latest_security_version().await.expect("one"), 3);
}
