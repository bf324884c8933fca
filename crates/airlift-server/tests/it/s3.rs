//! Package files in S3 (`s3s-fs`, a real S3 server that checks SigV4
//! signatures): streamed into a multipart upload while verified, committed
//! only once verified, served with ranges, deleted with their package; a
//! refused or interrupted upload leaves nothing in the bucket and no record;
//! an upload a crash abandoned is aborted at the next start; a missing
//! object is a clear 5xx the server survives; a bucket the server cannot
//! use stops it at startup with one line naming the variable to fix.

use crate::support::*;
use airlift_testkit::s3::{S3Server, ACCESS_KEY_ID, BUCKET, REGION, SECRET_ACCESS_KEY};
use airlift_testkit::server::{ServerError, ServerProcess};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::MultipartStore;
use object_store::path::Path as BlobPath;
use object_store::{ObjectStore, PutPayload};
use reqwest::StatusCode;
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const PREFIX: &str = "fleet/a";

/// A server on `backend` whose blobs are under [`PREFIX`] in an `s3s-fs`
/// of its own (so that its bucket holds nothing else), streaming downloads
/// itself (offloaded ones: `offload.rs`).
async fn on_s3(backend: Backend) -> (TestServer, S3Blobs) {
    let blobs = S3Blobs::on(Arc::new(S3Server::start()), PREFIX);
    let flags: Vec<&str> = blobs.flags().chain(["--blob-offload", "off"]).collect();
    let server = TestServer::start_with(backend, &flags).await;
    (server, blobs)
}

/// A client of the bucket through the S3 API, as an operator would list it.
fn bucket(s3: &S3Server) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_bucket_name(BUCKET)
        .with_region(REGION)
        .with_access_key_id(ACCESS_KEY_ID)
        .with_secret_access_key(SECRET_ACCESS_KEY)
        .build()
        .expect("an S3 client")
}

/// Every object in the bucket: key and size.
async fn listing(s3: &S3Server) -> Vec<(String, u64)> {
    let mut objects: Vec<(String, u64)> = bucket(s3)
        .list(None)
        .map_ok(|meta| (meta.location.to_string(), meta.size))
        .try_collect()
        .await
        .expect("list the bucket");
    objects.sort();
    objects
}

fn key_of(package_id: impl std::fmt::Display) -> String {
    format!("{PREFIX}/packages/{package_id}.airlift")
}

/// The server's database, opened beside it.
async fn database(server: &TestServer) -> airlift_store::SharedStore {
    let url = match &server.backend {
        Backend::Sqlite => format!("sqlite://{}", data_dir(server).join("airlift.db").display()),
        Backend::Postgres(schema) => schema.url().to_owned(),
    };
    let url = airlift_store::DatabaseUrl::parse(&url).expect("database url");
    airlift_store::open(&url)
        .await
        .expect("open the server's database")
}

/// The multipart uploads the server has recorded as under way.
async fn upload_records(server: &TestServer) -> Vec<airlift_store::StaleUpload> {
    let far = chrono::Utc::now() + chrono::TimeDelta::days(365);
    database(server)
        .await
        .stale_uploads(far, 1000)
        .await
        .expect("read the upload records")
}

/// Waits until nothing of an upload is left: no multipart upload in the
/// bucket, no record in the database.
async fn until_no_upload_is_left(server: &TestServer, s3: &S3Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (open, records) = (s3.unfinished_uploads(), upload_records(server).await);
        if open == 0 && records.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} multipart uploads open, records: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A package of about 20 MB (stored uncompressed): three parts of 8 MiB.
fn large_package(server: &TestServer, version: &str) -> Vec<u8> {
    build_package_sized(server.signer.key(), "os", version, "pi4", 0, 20_000_000)
}

/// Sends the head of an upload of `file` and `sent` of its bytes on a
/// socket of its own, and returns the socket (dropping it hangs up).
async fn partial_upload(server: &TestServer, file: &[u8], sent: usize) -> tokio::net::TcpStream {
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/packages HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        file.len()
    );
    socket.write_all(head.as_bytes()).await.expect("head");
    socket
        .write_all(&file[..sent])
        .await
        .expect("part of the body");
    socket
}

async fn management_download(
    server: &TestServer,
    package_id: impl std::fmt::Display,
    range: Option<&str>,
) -> reqwest::Response {
    let mut request = server
        .client
        .get(server.api(&format!("/packages/{package_id}/download")))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.expect("download")
}

#[tokio::test]
async fn packages_on_s3_are_stored_whole_served_in_ranges_and_deleted_with_their_row() {
    for backend in Backend::all().await {
        let (server, blobs) = on_s3(backend).await;
        let (package, file) = server.upload("os", "2.0.0", "pi4").await;
        let (other, _) = server.upload("os", "2.0.1", "pi4").await;
        assert_eq!(package.size, file.len() as u64);
        let mut expected = vec![
            (key_of(package.id), package.size),
            (key_of(other.id), other.size),
        ];
        expected.sort();
        assert_eq!(
            listing(&blobs.server).await,
            expected,
            "one object per package, under the prefix, as large as the package"
        );
        assert_eq!(blobs.server.unfinished_uploads(), 0, "every upload ended");

        // The management API: whole, a range, a suffix, a stale If-Range, past the end.
        let whole = management_download(&server, package.id, None).await;
        assert_eq!(whole.status(), StatusCode::OK);
        let etag = whole.headers()["etag"].to_str().expect("etag").to_owned();
        assert_eq!(etag, format!("\"{}\"", package.sha256));
        assert_eq!(whole.bytes().await.expect("body")[..], file[..]);
        let part = management_download(&server, package.id, Some("bytes=1000-1999")).await;
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            part.headers()["content-range"],
            format!("bytes 1000-1999/{}", file.len()).as_str()
        );
        assert_eq!(part.bytes().await.expect("body")[..], file[1000..2000]);
        let tail = management_download(&server, package.id, Some("bytes=-10")).await;
        assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            tail.bytes().await.expect("body")[..],
            file[file.len() - 10..]
        );
        let stale = server
            .client
            .get(server.api(&format!("/packages/{}/download", package.id)))
            .bearer_auth(ADMIN_TOKEN)
            .header("range", "bytes=0-9")
            .header("if-range", "\"another\"")
            .send()
            .await
            .expect("download");
        assert_eq!(
            stale.status(),
            StatusCode::OK,
            "a stale If-Range gets it whole"
        );
        assert_eq!(stale.bytes().await.expect("body").len(), file.len());
        let past = management_download(&server, package.id, Some("bytes=99999999-")).await;
        assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);

        // A device resumes its download where it stopped.
        let device = accepted_device(&server, "SN-S3-1", "pi4").await;
        let deployment = server.deploy(&package, &[&device]).await;
        let first = device
            .download(
                &server,
                deployment,
                &[("range", format!("bytes=0-{}", file.len() / 2))],
            )
            .await;
        assert_eq!(first.status(), StatusCode::PARTIAL_CONTENT);
        let mut got = first.bytes().await.expect("body").to_vec();
        let rest = device
            .download(
                &server,
                deployment,
                &[
                    ("range", format!("bytes={}-", got.len())),
                    ("if-range", etag.clone()),
                ],
            )
            .await;
        assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
        got.extend_from_slice(&rest.bytes().await.expect("body"));
        assert_eq!(got, file, "the resumed download is the package");

        // Deleting a package deletes its object, and only its.
        let deleted = server
            .client
            .delete(server.api(&format!("/packages/{}", other.id)))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("delete");
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            listing(&blobs.server).await,
            vec![(key_of(package.id), file.len() as u64)]
        );
    }
}

#[tokio::test]
async fn a_refused_or_interrupted_upload_leaves_nothing_in_the_bucket() {
    for backend in Backend::all().await {
        let (server, blobs) = on_s3(backend).await;
        let upload = |bytes: Vec<u8>| {
            server
                .client
                .post(server.api("/packages"))
                .bearer_auth(ADMIN_TOKEN)
                .body(bytes)
                .send()
        };
        let stranger = airlift_package::SigningKey::generate().expect("key");
        let untrusted = upload(build_package(&stranger, "os", "1.0.0", "pi4", 0))
            .await
            .expect("upload");
        assert_eq!(untrusted.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let mut tampered = build_package(server.signer.key(), "os", "1.0.0", "pi4", 0);
        let at = tampered.len() - 100;
        tampered[at] ^= 0x01;
        let tampered = upload(tampered).await.expect("upload");
        assert_eq!(tampered.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let garbage = upload(b"not a package".to_vec()).await.expect("upload");
        assert_eq!(garbage.status(), StatusCode::UNPROCESSABLE_ENTITY);

        // Half a package, then the connection closes.
        let file = build_package(server.signer.key(), "os", "1.0.1", "pi4", 0);
        drop(partial_upload(&server, &file, file.len() / 2).await);
        until_no_upload_is_left(&server, &blobs.server).await;

        // A verified package whose row cannot be written (a duplicate): its
        // object is put, then deleted again.
        server.upload("os", "3.0.0", "pi4").await;
        let duplicate = upload(build_package(server.signer.key(), "os", "3.0.0", "pi4", 0))
            .await
            .expect("upload");
        assert_eq!(duplicate.status(), StatusCode::CONFLICT);

        let packages = server.admin_get("/packages").await["items"].clone();
        let packages = packages.as_array().expect("a list");
        assert_eq!(packages.len(), 1, "only 3.0.0: {packages:?}");
        let kept = packages[0]["id"].as_str().expect("id");
        let objects: Vec<String> = listing(&blobs.server)
            .await
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(objects, vec![key_of(kept)], "nothing else in the bucket");
        assert_eq!(
            blobs.server.unfinished_uploads(),
            0,
            "no multipart upload left open"
        );
        assert!(
            upload_records(&server).await.is_empty(),
            "no upload record left"
        );
    }
}

/// The answer to an upload sent by hand: the status line and the rest.
async fn answer(mut socket: tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), socket.read_to_string(&mut answer));
    read.await
        .expect("an answer in time")
        .expect("read the answer");
    answer
}

/// Waits until the upload under way has sent a part to the bucket and is
/// recorded: the body is in S3 before its end has arrived.
async fn until_a_part_is_in_the_bucket(server: &TestServer, s3: &S3Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = upload_records(server).await;
        let parts = s3.root().read_dir().map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with(".upload_id-") && name.contains(".part-")
                })
                .count()
        });
        if s3.unfinished_uploads() == 1 && records.len() == 1 && parts > 0 {
            let record = &records[0].upload;
            assert!(
                record
                    .object_key
                    .starts_with(&format!("{PREFIX}/packages/")),
                "{record:?}"
            );
            assert_eq!(format!("{PREFIX}/{}", record.blob_key), record.object_key);
            assert!(!record.instance.is_empty());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no part in the bucket: {} uploads open, {parts} parts, records {records:?}",
            s3.unfinished_uploads()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_large_upload_streams_into_s3_as_it_arrives_and_is_committed_only_once_verified() {
    for backend in Backend::all().await {
        let (server, blobs) = on_s3(backend).await;
        let file = large_package(&server, "4.0.0");
        let first = 12 << 20;

        // Cut after more than a part: the parts sent are aborted.
        let socket = partial_upload(&server, &file, first).await;
        until_a_part_is_in_the_bucket(&server, &blobs.server).await;
        drop(socket);
        until_no_upload_is_left(&server, &blobs.server).await;

        // Damaged at its very end: refused after its parts went to S3.
        let mut damaged = file.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let mut socket = partial_upload(&server, &damaged, first).await;
        until_a_part_is_in_the_bucket(&server, &blobs.server).await;
        socket.write_all(&damaged[first..]).await.expect("the rest");
        let refused = answer(socket).await;
        assert!(refused.starts_with("HTTP/1.1 422"), "{refused}");
        until_no_upload_is_left(&server, &blobs.server).await;

        // A stranger's signature: refused at its head, answered in full.
        let stranger = airlift_package::SigningKey::generate().expect("key");
        let untrusted = build_package_sized(&stranger, "os", "4.0.0", "pi4", 0, 20_000_000);
        let response = server
            .client
            .post(server.api("/packages"))
            .bearer_auth(ADMIN_TOKEN)
            .body(untrusted)
            .send()
            .await
            .expect("an answer, not a reset connection");
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        until_no_upload_is_left(&server, &blobs.server).await;
        assert!(
            listing(&blobs.server).await.is_empty(),
            "nothing in the bucket"
        );
        assert_eq!(server.admin_get("/packages").await["total"], 0, "no row");

        // The whole package: in S3 before its end arrived, committed once verified.
        let mut socket = partial_upload(&server, &file, first).await;
        until_a_part_is_in_the_bucket(&server, &blobs.server).await;
        assert!(
            listing(&blobs.server).await.is_empty(),
            "nothing committed yet"
        );
        socket.write_all(&file[first..]).await.expect("the rest");
        let stored = answer(socket).await;
        assert!(stored.starts_with("HTTP/1.1 201"), "{stored}");
        until_no_upload_is_left(&server, &blobs.server).await;
        let packages = server.admin_get("/packages").await["items"].clone();
        let id = packages[0]["id"]
            .as_str()
            .expect("the package's id")
            .to_owned();
        let object = bucket(&blobs.server)
            .get(&BlobPath::from(key_of(&id)))
            .await
            .expect("the object")
            .bytes()
            .await
            .expect("its bytes");
        assert!(
            object[..] == file[..],
            "the object is the file, byte for byte"
        );
    }
}

/// Records an upload as `server` would have, started `hours` ago.
async fn record(server: &TestServer, object_key: &str, upload_id: &str, hours: i64) {
    let blob_key = object_key
        .strip_prefix(&format!("{PREFIX}/"))
        .expect("under the prefix");
    database(server)
        .await
        .record_upload(&airlift_store::UploadRecord {
            object_key: object_key.to_owned(),
            upload_id: upload_id.to_owned(),
            blob_key: blob_key.to_owned(),
            started_at: chrono::Utc::now() - chrono::TimeDelta::hours(hours),
            instance: "a crashed instance".into(),
        })
        .await
        .expect("record the upload");
}

#[tokio::test]
async fn uploads_a_crash_abandoned_are_aborted_at_the_next_start() {
    for backend in Backend::all().await {
        let (mut server, blobs) = on_s3(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let bucket = bucket(&blobs.server);
        let started = |name: &'static str| {
            let bucket = &bucket;
            async move {
                let key = BlobPath::from(format!("{PREFIX}/packages/{name}.airlift"));
                let id = bucket
                    .create_multipart(&key)
                    .await
                    .expect("start an upload");
                let part = bucket
                    .put_part(&key, &id, 0, PutPayload::from(vec![1u8; 1000]))
                    .await
                    .expect("a part");
                (key, id, part)
            }
        };
        // Abandoned with a part stored.
        let (abandoned, id, _) = started("abandoned").await;
        record(&server, abandoned.as_ref(), &id, 30).await;
        // Committed, but its package row was never written.
        let (orphan, id, part) = started("orphan").await;
        bucket
            .complete_multipart(&orphan, &id, vec![part])
            .await
            .expect("commit");
        record(&server, orphan.as_ref(), &id, 30).await;
        // Committed and its row written; only the record was left.
        record(&server, &key_of(package.id), "long-finished", 30).await;
        // Started two hours ago: it may still be running.
        let (recent, recent_id, _) = started("recent").await;
        record(&server, recent.as_ref(), &recent_id, 2).await;
        assert_eq!(blobs.server.unfinished_uploads(), 2);

        server.crash_and_restart();
        let deadline = Instant::now() + Duration::from_secs(20);
        let left = loop {
            let left = upload_records(&server).await;
            if left.len() == 1 {
                break left;
            }
            assert!(Instant::now() < deadline, "not swept: {left:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(left[0].upload.upload_id, recent_id, "the recent one stays");
        assert_eq!(
            blobs.server.unfinished_uploads(),
            1,
            "the abandoned one is aborted"
        );
        assert_eq!(
            listing(&blobs.server).await,
            vec![(key_of(package.id), package.size)],
            "the orphan object is deleted, the package's kept"
        );
        assert_eq!(
            server.metric("airlift_blob_uploads_swept_total").await,
            2.0,
            "counted in /metrics"
        );
        bucket
            .abort_multipart(&recent, &recent_id)
            .await
            .expect("tidy up");
    }
}

#[tokio::test]
async fn a_missing_object_is_a_clear_5xx_with_a_log_line_and_a_metric_and_the_server_carries_on() {
    for backend in Backend::all().await {
        let (server, blobs) = on_s3(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let device = accepted_device(&server, "SN-S3-GONE", "pi4").await;
        let deployment = server.deploy(&package, &[&device]).await;
        bucket(&blobs.server)
            .delete(&BlobPath::from(key_of(package.id)))
            .await
            .expect("delete the object behind the server's back");

        let missing = r#"airlift_blob_errors_total{kind="missing"}"#;
        let before = server.metric(missing).await;
        let answer = device.download(&server, deployment, &[]).await;
        assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = answer.json().await.expect("a JSON error body");
        assert_eq!(body["code"], "package_file_missing", "{body}");
        let answer = management_download(&server, package.id, Some("bytes=0-9")).await;
        assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            server.metric(missing).await >= before + 2.0,
            "counted in /metrics"
        );

        // Still serving: a new package goes in and comes out.
        let (again, file) = server.upload("os", "2.0.1", "pi4").await;
        let whole = management_download(&server, again.id, None).await;
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(whole.bytes().await.expect("body")[..], file[..]);
    }

    // The same on local disk.
    let server = TestServer::start_with(Backend::Sqlite, &[]).await;
    if server.s3.is_none() {
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let path = data_dir(&server).join(format!("blobs/packages/{}.airlift", package.id));
        std::fs::remove_file(&path).expect("delete the file behind the server's back");
        let answer = management_download(&server, package.id, None).await;
        assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = answer.json().await.expect("a JSON error body");
        assert_eq!(body["code"], "package_file_missing", "{body}");
        let healthy = server
            .client
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .expect("healthz");
        assert_eq!(healthy.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_package_uploaded_to_one_instance_is_served_by_another() {
    let Some(backend) = Backend::all()
        .await
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres(_)))
    else {
        eprintln!(
            "{} is not set: several instances not tested",
            airlift_testkit::postgres::URL_VAR
        );
        return;
    };
    let a = TestServer::start(backend.clone()).await;
    let b = TestServer::start(backend).await;
    let (Some(blobs), Some(_)) = (&a.s3, &b.s3) else {
        eprintln!(
            "{BLOBS_VAR}=disk: instances on one database but separate disks share no package"
        );
        return;
    };
    let (package, file) = a.upload("os", "2.0.0", "pi4").await;
    let key = format!("{}/packages/{}.airlift", blobs.prefix, package.id);
    let objects = listing(&blobs.server).await;
    assert!(
        objects.contains(&(key, package.size)),
        "in the shared bucket: {objects:?}"
    );
    let device = accepted_device(&b, "SN-S3-OTHER", "pi4").await;
    // Deployed where its signing key is trusted (each test instance has a
    // key of its own); the download is from the other one.
    let deployment = a.deploy(&package, &[&device]).await;
    let answer = device.download(&b, deployment, &[]).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.bytes().await.expect("body")[..], file[..]);
}

/// What `airlift-server` did with `args` and `env` (and no other AWS
/// variable): `Ok` with its log once ready (then it is stopped), or `Err`
/// with its exit code and log when it exited.
fn start_outcome(args: &[&str], env: &[(&str, String)]) -> Result<String, (i32, String)> {
    let data = tempfile::tempdir().expect("data directory");
    let mut builder =
        ServerProcess::builder(env!("CARGO_BIN_EXE_airlift-server"), data.path()).args(args);
    for name in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        builder = builder.env_remove(name);
    }
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    match builder.start() {
        Ok(mut server) => {
            let log = server.log_tail();
            server.kill();
            Ok(log)
        }
        Err(ServerError::Exited { code, log }) => Err((code.unwrap_or(-1), log)),
        Err(other) => panic!("neither ready nor stopped: {other}"),
    }
}

/// What is wrong, the environment and flags, and the variable to fix.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a [&'a str], &'a str);

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test]
async fn a_bucket_the_server_cannot_use_stops_it_at_startup_with_one_line_naming_the_variable() {
    let s3 = S3Server::start();
    let env = |overrides: &[(&'static str, String)]| {
        let mut env: Vec<(&str, String)> = s3
            .env()
            .into_iter()
            .filter(|(name, _)| overrides.iter().all(|(o, _)| o != name))
            .collect();
        env.extend(overrides.iter().cloned());
        env
    };
    let bucket_url = s3.url("fleet");
    let args = ["--blob-url", bucket_url.as_str(), "--blob-path-style"];

    // The usual AWS variables reach it.
    let started = start_outcome(&args, &env(&[]));
    assert!(started.is_ok(), "{started:?}");

    let wrong_secret = "wrong-secret-never-shown-0123456789";
    let cases: [Case; 4] = [
        (
            "a wrong secret",
            env(&[("AWS_SECRET_ACCESS_KEY", wrong_secret.into())]),
            &args,
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            "an unknown key id",
            env(&[("AWS_ACCESS_KEY_ID", "AKIDUNKNOWN".into())]),
            &args,
            "AWS_ACCESS_KEY_ID",
        ),
        (
            "an unreachable endpoint",
            env(&[(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", closed_port()),
            )]),
            &args,
            "AWS_ENDPOINT_URL",
        ),
        (
            "a bucket that does not exist",
            env(&[]),
            &[
                "--blob-url",
                "s3://no-such-bucket/fleet",
                "--blob-path-style",
            ],
            "AIRLIFT_BLOB_URL",
        ),
    ];
    for (what, env, args, variable) in cases {
        let started = Instant::now();
        let Err((code, stderr)) = start_outcome(args, &env) else {
            panic!("{what}: the server started");
        };
        assert_ne!(code, 0, "{what}: a failed start exits non-zero");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|line| line.contains("blob store:"))
            .collect();
        assert_eq!(lines.len(), 1, "{what}: one line says it:\n{stderr}");
        assert!(
            lines[0].contains(variable),
            "{what}: the line names {variable}: {}",
            lines[0]
        );
        assert!(
            !stderr.contains(wrong_secret) && !stderr.contains(SECRET_ACCESS_KEY),
            "{what}: no secret in the log:\n{stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: it stops at once, not after retrying for minutes"
        );
        eprintln!("{what}: {}", lines[0]);
    }
}

#[test]
fn secrets_never_show_in_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_airlift-server"))
        .arg("--help")
        .env("AWS_SECRET_ACCESS_KEY", "help-secret-0123456789")
        .env("AWS_SESSION_TOKEN", "help-session-token-0123456789")
        .env("AWS_ACCESS_KEY_ID", "AKIDHELP")
        .output()
        .expect("airlift-server --help");
    let help = String::from_utf8_lossy(&output.stdout);
    for shown in [
        "--blob-url",
        "--blob-secret-access-key",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        assert!(help.contains(shown), "--help names {shown}:\n{help}");
    }
    assert!(!help.contains("help-secret-0123456789"), "{help}");
    assert!(!help.contains("help-session-token-0123456789"), "{help}");
}
