//! Multipart uploads under way: recorded, forgotten once, found when stale
//! (oldest first, bounded), and told apart when a package row already holds
//! their key.

use crate::support::{package, t, Ctx};
use airlift_store::{StaleUpload, StoreError, UploadRecord};

conformance!(
    recorded_uploads_are_stale_once_older_than_asked_and_forgotten_once,
    a_stale_upload_whose_package_row_exists_says_so,
    one_upload_is_recorded_once
);

fn upload(n: u32, started: i64) -> UploadRecord {
    UploadRecord {
        object_key: format!("fleet/packages/{n}.airlift"),
        upload_id: format!("upload-{n}"),
        blob_key: format!("packages/{n}.airlift"),
        started_at: t(started),
        instance: "host-a pid 42".into(),
    }
}

async fn recorded_uploads_are_stale_once_older_than_asked_and_forgotten_once(ctx: Ctx) {
    let store = &ctx.store;
    for (n, started) in [(1, 3_000), (2, 1_000), (3, 2_000), (4, 9_000)] {
        store
            .record_upload(&upload(n, started))
            .await
            .expect("record");
    }
    let stale = store.stale_uploads(t(5_000), 100).await.expect("stale");
    let found: Vec<&UploadRecord> = stale.iter().map(|s| &s.upload).collect();
    assert_eq!(
        found,
        vec![&upload(2, 1_000), &upload(3, 2_000), &upload(1, 3_000)],
        "older than the cutoff, oldest first, read back whole"
    );
    assert!(stale.iter().all(|s| !s.package_stored));
    let first = store.stale_uploads(t(5_000), 1).await.expect("stale");
    assert_eq!(first.len(), 1, "at most the limit");
    assert_eq!(first[0].upload, upload(2, 1_000));
    assert!(store
        .stale_uploads(t(1_000), 100)
        .await
        .expect("stale")
        .is_empty());

    let two = upload(2, 1_000);
    assert!(store
        .forget_upload(&two.object_key, &two.upload_id)
        .await
        .expect("forget"));
    assert!(
        !store
            .forget_upload(&two.object_key, &two.upload_id)
            .await
            .expect("forget again"),
        "a second instance's sweep finds it gone"
    );
    assert!(
        !store
            .forget_upload(&two.object_key, "upload-3")
            .await
            .expect("forget a mismatch"),
        "key and id together name an upload"
    );
    let left: Vec<String> = store
        .stale_uploads(t(10_000), 100)
        .await
        .expect("stale")
        .into_iter()
        .map(|s| s.upload.upload_id)
        .collect();
    assert_eq!(left, ["upload-3", "upload-1", "upload-4"]);
}

async fn a_stale_upload_whose_package_row_exists_says_so(ctx: Ctx) {
    let store = &ctx.store;
    let committed = package("rootfs", "2.0.0", 0);
    store.insert_package(&committed).await.expect("package");
    let mut kept = upload(7, 1_000);
    kept.blob_key = committed.blob_key.clone();
    store.record_upload(&kept).await.expect("record");
    store
        .record_upload(&upload(8, 1_000))
        .await
        .expect("record");
    let stale = store.stale_uploads(t(2_000), 10).await.expect("stale");
    assert_eq!(
        stale,
        vec![
            StaleUpload {
                upload: kept,
                package_stored: true,
            },
            StaleUpload {
                upload: upload(8, 1_000),
                package_stored: false,
            },
        ],
        "the same start: by key; upload 7's blob key is a package's"
    );
}

async fn one_upload_is_recorded_once(ctx: Ctx) {
    let store = &ctx.store;
    store
        .record_upload(&upload(5, 1_000))
        .await
        .expect("record");
    let again = store.record_upload(&upload(5, 2_000)).await;
    assert!(
        matches!(again, Err(StoreError::Conflict(_))),
        "the same key and id twice: {again:?}"
    );
}
