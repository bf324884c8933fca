//! Opening a database: migrations on an existing file, and setup errors.
//! (SQLite only; the PostgreSQL leg opens a fresh schema for every test.)

use airlift_store::{open, DatabaseUrl, StoreError};

#[tokio::test]
async fn reopening_keeps_data_and_migrates_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = DatabaseUrl::parse(&format!("sqlite://{}", dir.path().join("a.db").display()))
        .expect("url");
    let store = open(&url).await.expect("create");
    store.setting_or_insert("k", "v").await.expect("write");
    drop(store);
    let store = open(&url).await.expect("reopen");
    assert_eq!(
        store.setting("k").await.expect("read").as_deref(),
        Some("v")
    );
}

#[tokio::test]
async fn missing_directory_is_a_setup_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("no/such/dir/a.db");
    let error = open(&DatabaseUrl::Sqlite(path.clone()))
        .await
        .expect_err("no directory");
    assert!(matches!(error, StoreError::Setup(_)), "{error:?}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}
