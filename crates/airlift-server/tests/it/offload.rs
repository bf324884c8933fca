//! Downloads offloaded to S3 (`s3s-fs`, which checks presigned URLs'
//! signatures and expiry): the device's download is a `307` to a presigned
//! URL that serves the package, whole or in ranges, to anyone holding it
//! and no device token; `--blob-offload off` streams as before;
//! `--download-base-url` puts a CDN's origin in the URL; the checks before
//! a redirect are those before a stream, so no URL leaks to a device the
//! deployment is not for.

use crate::support::*;
use airlift_testkit::device::DeviceApi;
use airlift_testkit::proxy::{Faults, FlakyProxy};
use airlift_testkit::s3::{S3Server, BUCKET};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;

const PREFIX: &str = "fleet/offload";
const OFFLOADED: &str = "airlift_downloads_offloaded_total";

/// A server on `backend` with its blobs in an `s3s-fs` of its own, and
/// `extra` flags.
async fn on_s3(backend: Backend, extra: &[&str]) -> (TestServer, S3Blobs) {
    let blobs = S3Blobs::on(Arc::new(S3Server::start()), PREFIX);
    let flags: Vec<&str> = blobs.flags().chain(extra.iter().copied()).collect();
    let server = TestServer::start_with(backend, &flags).await;
    (server, blobs)
}

/// The server's device API through a client that follows no redirect, so
/// the test sees the `307` itself.
struct Unfollowed<'a> {
    base: &'a str,
    http: Client,
}

impl<'a> Unfollowed<'a> {
    fn new(server: &'a TestServer) -> Self {
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .expect("a client");
        Self {
            base: &server.url,
            http,
        }
    }
}

impl DeviceApi for Unfollowed<'_> {
    fn base_url(&self) -> &str {
        self.base
    }

    fn http(&self) -> &Client {
        &self.http
    }
}

/// The `Location` of a `307`, which must be one (no body, not cached).
async fn redirected(response: reqwest::Response) -> String {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body");
    assert_eq!(
        status,
        StatusCode::TEMPORARY_REDIRECT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(body.is_empty(), "a redirect has no body");
    assert_eq!(headers["cache-control"], "no-store");
    headers["location"]
        .to_str()
        .expect("a text Location")
        .to_owned()
}

/// A refusal that carries no presigned URL.
async fn refused(response: reqwest::Response, expected: StatusCode) {
    assert!(response.headers().get("location").is_none());
    let body = json_status(response, expected).await;
    let text = body.to_string();
    assert!(!text.contains("X-Amz-Signature"), "{text}");
}

#[tokio::test]
async fn a_device_download_is_redirected_to_a_presigned_url_that_serves_the_package() {
    for backend in Backend::all().await {
        let (server, blobs) = on_s3(backend, &[]).await;
        let (package, file) = server.upload("os", "2.0.0", "pi4").await;
        let device = accepted_device(&server, "SN-OFF-1", "pi4").await;
        let stranger = accepted_device(&server, "SN-OFF-2", "pi4").await;
        let deployment = server.deploy(&package, &[&device]).await;
        let api = Unfollowed::new(&server);
        let before = server.metric(OFFLOADED).await;

        let location = redirected(device.download(&api, deployment, &[]).await).await;
        let key = format!("{BUCKET}/{PREFIX}/packages/{}.airlift", package.id);
        assert!(
            location.starts_with(&format!("{}/{key}?", blobs.server.endpoint())),
            "the package's object at the store's endpoint: {location}"
        );
        assert!(location.contains("X-Amz-Signature="), "{location}");
        assert!(
            location.contains("X-Amz-Expires=900&"),
            "15 min: {location}"
        );
        assert_eq!(server.metric(OFFLOADED).await, before + 1.0, "counted");

        // No device token, no S3 credentials: the URL is all it takes.
        let anyone = reqwest::Client::new();
        let whole = anyone.get(&location).send().await.expect("GET");
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(whole.bytes().await.expect("body")[..], file[..]);
        let rest = anyone
            .get(&location)
            .header("range", "bytes=1000-")
            .send()
            .await
            .expect("ranged GET");
        assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            rest.headers()["content-range"],
            format!("bytes 1000-{}/{}", file.len() - 1, file.len()).as_str()
        );
        assert_eq!(rest.bytes().await.expect("body")[..], file[1000..]);
        // The signature covers the key: another key is refused.
        let other = location.replace(".airlift?", ".airlift.x?");
        let forged = anyone.get(&other).send().await.expect("GET");
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);

        // A resume request is redirected too: the device resumes at the store.
        let resumed = device
            .download(&api, deployment, &[("range", "bytes=10-".into())])
            .await;
        redirected(resumed).await;

        // The same checks as a streamed download, and no URL for a refusal.
        refused(
            stranger.download(&api, deployment, &[]).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        let cancel = server
            .admin_post(&format!("/deployments/{deployment}/cancel"), Value::Null)
            .await;
        assert_eq!(cancel.status(), StatusCode::OK);
        refused(
            device.download(&api, deployment, &[]).await,
            StatusCode::GONE,
        )
        .await;
        assert_eq!(
            server.metric(OFFLOADED).await,
            before + 2.0,
            "refusals are no redirects"
        );
    }
}

#[tokio::test]
async fn with_offload_off_the_server_streams_the_package_itself() {
    let backend = Backend::Sqlite;
    let (server, _blobs) = on_s3(backend, &["--blob-offload", "off"]).await;
    let (package, file) = server.upload("os", "2.0.0", "pi4").await;
    let device = accepted_device(&server, "SN-OFF-3", "pi4").await;
    let deployment = server.deploy(&package, &[&device]).await;
    let api = Unfollowed::new(&server);

    let whole = device.download(&api, deployment, &[]).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert!(whole.headers().get("location").is_none());
    assert_eq!(
        whole.headers()["etag"],
        format!("\"{}\"", package.sha256).as_str()
    );
    assert_eq!(whole.bytes().await.expect("body")[..], file[..]);
    let part = device
        .download(&api, deployment, &[("range", "bytes=100-".into())])
        .await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.expect("body")[..], file[100..]);
    assert_eq!(server.metric(OFFLOADED).await, 0.0);
}

#[tokio::test]
async fn a_download_base_url_puts_the_cdns_origin_in_the_presigned_url() {
    let s3 = Arc::new(S3Server::start());
    // A "CDN": a loopback proxy that forwards path and query to the store
    // (started off the test's runtime: it runs one of its own).
    let upstream = s3.endpoint().to_owned();
    let cdn = tokio::task::spawn_blocking(move || {
        FlakyProxy::start(&upstream, Faults::Planned(Vec::new())).expect("proxy")
    })
    .await
    .expect("the proxy starts");
    let blobs = S3Blobs::on(Arc::clone(&s3), PREFIX);
    let flags: Vec<&str> = blobs
        .flags()
        .chain(["--download-base-url", cdn.url(), "--blob-url-expiry", "2h"])
        .collect();
    let server = TestServer::start_with(Backend::Sqlite, &flags).await;
    let (package, file) = server.upload("os", "2.0.0", "pi4").await;
    let device = accepted_device(&server, "SN-OFF-4", "pi4").await;
    let deployment = server.deploy(&package, &[&device]).await;

    let location = redirected(
        device
            .download(&Unfollowed::new(&server), deployment, &[])
            .await,
    )
    .await;
    let path = format!("/{BUCKET}/{PREFIX}/packages/{}.airlift?", package.id);
    assert!(
        location.starts_with(&format!("{}{path}", cdn.url())),
        "the CDN's origin, the store's path: {location}"
    );
    assert!(location.contains("X-Amz-Expires=7200&"), "{location}");

    // Forwarded with the bucket's Host, as the contract says, it serves.
    let store_host = s3.endpoint().trim_start_matches("http://").to_owned();
    let http = reqwest::Client::new();
    let served = http
        .get(&location)
        .header("host", &store_host)
        .send()
        .await
        .expect("GET through the CDN");
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.bytes().await.expect("body")[..], file[..]);
    // With the CDN's own Host, the signature does not hold.
    let wrong_host = http.get(&location).send().await.expect("GET");
    assert_eq!(wrong_host.status(), StatusCode::FORBIDDEN);
}

#[test]
fn offload_settings_that_cannot_work_stop_the_server_naming_the_flag() {
    let cases: [(&[&str], &str); 4] = [
        (&["--blob-offload", "on"], "--blob-offload"),
        (
            &["--download-base-url", "https://cdn.example.com"],
            "--download-base-url",
        ),
        (
            &["--blob-url", "s3://packages", "--blob-url-expiry", "8d"],
            "--blob-url-expiry",
        ),
        (
            &[
                "--blob-url",
                "s3://packages",
                "--blob-offload",
                "off",
                "--download-base-url",
                "https://cdn.example.com",
            ],
            "--download-base-url",
        ),
    ];
    for (args, flag) in cases {
        let data = tempfile::tempdir().expect("data directory");
        let output = Command::new(env!("CARGO_BIN_EXE_airlift-server"))
            .arg("--data-dir")
            .arg(data.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("AIRLIFT_BLOB_URL")
            .output()
            .expect("run airlift-server");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started:\n{stderr}");
        assert!(stderr.contains(flag), "{args:?}: names {flag}:\n{stderr}");
    }
}
