//! Certificate devices: a device stored with its certificate key in one
//! transaction, found by that key and by its id; a second registration of
//! the same key (a concurrent first contact) answers the device that won,
//! and a key that is a key device's public key is a conflict.

use crate::support::{device, Ctx};
use airlift_store::{CertificateRegistration, StoreError};

conformance!(
    a_certificate_device_is_found_by_its_key_and_its_id,
    the_first_registration_of_a_key_wins,
    a_public_key_taken_by_a_key_device_is_a_conflict
);

const KEY: &str = "5c0f3b0e9a4a42c1a1c3b0f0e8d7c6b5a4938271605f4e3d2c1b0a9988776655";

async fn a_certificate_device_is_found_by_its_key_and_its_id(ctx: Ctx) {
    let store = &ctx.store;
    let stored = device(1, 1_000);
    assert_eq!(
        store
            .insert_certificate_device(&stored, KEY, "SN-0001")
            .await
            .expect("insert"),
        CertificateRegistration::Registered
    );
    let bound = store
        .certificate_by_key(KEY)
        .await
        .expect("by key")
        .expect("bound");
    assert_eq!(
        (bound.device_id, bound.subject_cn.as_str()),
        (stored.id, "SN-0001")
    );
    let same = store
        .certificate_of_device(stored.id)
        .await
        .expect("by device")
        .expect("bound");
    assert_eq!(same, bound);
    assert_eq!(
        store.device(stored.id).await.expect("device").map(|d| d.id),
        Some(stored.id)
    );
    assert_eq!(
        store
            .certificate_by_key(&"0".repeat(64))
            .await
            .expect("none"),
        None
    );
    let key_device = device(2, 2_000);
    store.insert_device(&key_device).await.expect("key device");
    assert_eq!(
        store
            .certificate_of_device(key_device.id)
            .await
            .expect("none"),
        None
    );
}

async fn the_first_registration_of_a_key_wins(ctx: Ctx) {
    let store = &ctx.store;
    let first = device(1, 1_000);
    let mut second = device(1, 2_000);
    second.identity.insert("attempt".into(), "second".into());
    store
        .insert_certificate_device(&first, KEY, "SN-0001")
        .await
        .expect("first");
    assert_eq!(
        store
            .insert_certificate_device(&second, KEY, "SN-0001")
            .await
            .expect("second"),
        CertificateRegistration::AlreadyBound(first.id)
    );
    assert_eq!(
        store.device(second.id).await.expect("read"),
        None,
        "nothing of the loser is stored"
    );
}

async fn a_public_key_taken_by_a_key_device_is_a_conflict(ctx: Ctx) {
    let store = &ctx.store;
    let key_device = device(7, 1_000);
    store.insert_device(&key_device).await.expect("key device");
    let mut same_key = device(7, 2_000);
    same_key.identity.insert("via".into(), "certificate".into());
    assert!(matches!(
        store
            .insert_certificate_device(&same_key, KEY, "SN-0007")
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.certificate_by_key(KEY).await.expect("none"), None);
    assert_eq!(store.device(same_key.id).await.expect("read"), None);
}
