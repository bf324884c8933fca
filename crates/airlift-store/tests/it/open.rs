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

/// PostgreSQL only: a statement that runs past the store's statement
/// timeout — here one waiting on a lock another session holds — is
/// cancelled by the database, reported as `Unavailable`, and gives its
/// connection back, so the pool does not run dry behind it.
#[tokio::test]
async fn a_statement_past_its_timeout_is_cancelled_and_the_store_goes_on() {
    use sqlx::Connection;
    let Some(schema) = crate::support::FreshSchema::create("t") else {
        eprintln!("PostgreSQL not tested");
        return;
    };
    let url = schema.url().to_owned();
    let options = airlift_store::OpenOptions {
        statement_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let store = airlift_store::open_with(&DatabaseUrl::parse(&url).expect("url"), options)
        .await
        .expect("open");
    let mut locker = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE devices IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock");
    let filter = airlift_store::DeviceFilter::default();
    let page = airlift_store::PageRequest {
        page: 1,
        per_page: 10,
    };
    // More waits than the pool has connections: each must give its back.
    for _ in 0..12 {
        let started = std::time::Instant::now();
        let error = store
            .list_devices(&filter, page)
            .await
            .expect_err("the table is locked");
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
    }
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    let (devices, total) = store
        .list_devices(&filter, page)
        .await
        .expect("answers again");
    assert!(devices.is_empty() && total == 0);
    drop(store);
    drop(locker);
    drop(schema);
}

/// PostgreSQL only: pool connections the database killed while they sat
/// idle (a failover, a restart, a firewall's idle cut) are found by the
/// ping before use and replaced; no statement fails on them. (A
/// connection used again within a second is not pinged: the ping when it
/// was given back proved it alive.)
#[tokio::test]
async fn pool_connections_killed_while_idle_are_replaced_before_use() {
    use sqlx::Connection;
    let Some(schema) = crate::support::FreshSchema::create("t") else {
        eprintln!("PostgreSQL not tested");
        return;
    };
    // Its own application name: this kills this store's connections only,
    // not those of tests running beside it.
    let name = format!("airlift-{}", schema.name());
    let url = format!("{}&application_name={name}", schema.url());
    let store = open(&DatabaseUrl::parse(&url).expect("url"))
        .await
        .expect("open");
    let filter = airlift_store::DeviceFilter::default();
    let page = airlift_store::PageRequest {
        page: 1,
        per_page: 10,
    };
    // A few at once: more than one pooled connection.
    let (a, b, c, d) = tokio::join!(
        store.list_devices(&filter, page),
        store.list_devices(&filter, page),
        store.list_devices(&filter, page),
        store.list_devices(&filter, page),
    );
    for read in [a, b, c, d] {
        read.expect("a read before the kill");
    }
    let mut admin = sqlx::PgConnection::connect(schema.url())
        .await
        .expect("connect");
    let killed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND query NOT LIKE 'LISTEN %') AS killed",
    )
    .bind(&name)
    .fetch_one(&mut admin)
    .await
    .expect("terminate");
    assert!(killed >= 1, "no pooled connection to kill");
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    for _ in 0..8 {
        store
            .list_devices(&filter, page)
            .await
            .expect("a read after the kill, on a replaced connection");
    }
}
