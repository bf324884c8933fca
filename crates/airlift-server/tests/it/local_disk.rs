//! Package files on local disk changed under a running download (issue 17):
//! a file truncated behind the server's back ends that one download with an
//! error, logged and counted — never the process — and a file replaced by a
//! rename keeps serving its old bytes to the downloads already running.
//!
//! Both transports are tried because they failed differently when files
//! were served from memory maps: over TLS the encryption read the map past
//! the file's new end and the server died of SIGBUS; over plain HTTP the
//! kernel's copy out of the map failed (`EFAULT`), so the server lived but
//! neither logged nor counted the broken download.
//!
//! These servers keep their blobs on local disk whatever `AIRLIFT_TEST_BLOBS`
//! says: they are started here, not through `support::TestServer`.

use crate::support::{build_package_sized, json_status, ADMIN_TOKEN};
use airlift_protocol::management::Package;
use airlift_protocol::DeploymentId;
use airlift_testkit::device::{DeviceApi, TestDevice};
use airlift_testkit::packages::Signer;
use airlift_testkit::server::ServerProcess;
use reqwest::{Client, StatusCode};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

/// The image of the package downloaded slowly: larger than what the
/// server's socket buffers, the client's and the server's read-ahead hold
/// together, so the server still has most of it to read when it changes.
const LARGE_IMAGE: u32 = 24 << 20;

/// What the slow client reads before the file is changed under it.
const READ_BEFORE: usize = 1 << 20;

/// Where the large package is cut.
const TRUNCATED_TO: u64 = 2 << 20;

/// How long the slow client waits for any one piece of the body.
const PIECE_WAIT: Duration = Duration::from_secs(30);

const INTERRUPTED: &str = r#"airlift_blob_errors_total{kind="interrupted"}"#;

#[tokio::test]
async fn a_package_file_truncated_mid_download_ends_only_that_download() {
    let mut server = DiskServer::start(false).await;
    truncated_mid_download(&mut server).await;
}

#[tokio::test]
async fn a_package_file_truncated_mid_download_over_tls_ends_only_that_download() {
    let mut server = DiskServer::start(true).await;
    truncated_mid_download(&mut server).await;
}

async fn truncated_mid_download(server: &mut DiskServer) {
    let (large, large_file) = server.upload("os", "2.0.0", LARGE_IMAGE).await;
    let (small, small_file) = server.upload("app", "1.0.0", 300_000).await;
    let first = server.device("SN-SLOW").await;
    let second = server.device("SN-OTHER").await;
    let slow = server.deploy(&large, &first).await;
    let other = server.deploy(&small, &second).await;

    let mut download = first.download(server, slow, &[]).await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.content_length(), Some(large_file.len() as u64));
    let mut received = read_at_least(&mut download, READ_BEFORE).await;
    assert_eq!(received[..], large_file[..received.len()]);

    let path = server.blob_path(&large);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|file| file.set_len(TRUNCATED_TO))
        .unwrap_or_else(|e| panic!("truncating {}: {e}", path.display()));

    let ended = loop {
        match tokio::time::timeout(PIECE_WAIT, download.chunk()).await {
            Ok(Ok(Some(piece))) => received.extend_from_slice(&piece),
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(error)) => break Err(error),
            Err(_) => panic!(
                "the download neither went on nor ended for {PIECE_WAIT:?} after {} bytes",
                received.len()
            ),
        }
    };
    assert!(
        ended.is_err() && received.len() < large_file.len(),
        "the download ends early with an error, not as a whole body: {ended:?} after {} of {} bytes",
        received.len(),
        large_file.len()
    );
    let kept = received.len().min(TRUNCATED_TO as usize);
    assert_eq!(
        received[..kept],
        large_file[..kept],
        "the bytes sent before the cut are the package's"
    );

    server.assert_alive();
    let healthy = server.get("/healthz").await;
    assert_eq!(healthy.status(), StatusCode::OK);
    let whole = second.download(server, other, &[]).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(
        whole.bytes().await.expect("the other package")[..],
        small_file[..]
    );
    assert_eq!(server.metric(INTERRUPTED).await, 1.0, "counted once");
    let logged = server
        .process
        .log_tail()
        .lines()
        .filter(|line| line.contains("shorter than its recorded size"))
        .count();
    assert_eq!(logged, 1, "one log line:\n{}", server.process.log_tail());
}

#[tokio::test]
async fn a_package_file_replaced_mid_download_still_serves_its_old_bytes() {
    let server = DiskServer::start(false).await;
    let (package, file) = server.upload("os", "2.0.0", LARGE_IMAGE).await;
    let device = server.device("SN-REPLACED").await;
    let deployment = server.deploy(&package, &device).await;

    let mut download = device.download(&server, deployment, &[]).await;
    assert_eq!(download.status(), StatusCode::OK);
    let mut received = read_at_least(&mut download, READ_BEFORE).await;

    // What a restore from backup or a careless `cp` + `mv` would do.
    let path = server.blob_path(&package);
    let replacement = path.with_extension("new");
    std::fs::write(&replacement, vec![0xa5u8; file.len()]).expect("write the replacement");
    std::fs::rename(&replacement, &path).expect("rename it over the package's file");

    while let Some(piece) = tokio::time::timeout(PIECE_WAIT, download.chunk())
        .await
        .expect("the download goes on")
        .expect("the download is not broken off")
    {
        received.extend_from_slice(&piece);
    }
    assert!(
        received == file,
        "the running download got the old file whole"
    );

    let later = device.download(&server, deployment, &[]).await;
    assert_eq!(later.status(), StatusCode::OK);
    let later = later.bytes().await.expect("body");
    assert!(
        later.iter().all(|&b| b == 0xa5),
        "a download started after the rename gets the new file"
    );
    assert_eq!(server.metric(INTERRUPTED).await, 0.0);
}

/// Reads `download`'s body until at least `at_least` bytes came.
async fn read_at_least(download: &mut reqwest::Response, at_least: usize) -> Vec<u8> {
    let mut received = Vec::new();
    while received.len() < at_least {
        let piece = tokio::time::timeout(PIECE_WAIT, download.chunk())
            .await
            .expect("the download goes on")
            .expect("the body reads")
            .expect("the body is longer");
        received.extend_from_slice(&piece);
    }
    received
}

/// A server on SQLite with its package files on local disk, over plain
/// HTTP or TLS.
struct DiskServer {
    process: ServerProcess,
    /// `process`'s URL, by a name its certificate holds.
    url: String,
    client: Client,
    signer: Signer,
    _dir: TempDir,
}

impl DiskServer {
    async fn start(tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = Signer::new();
        let mut builder = ServerProcess::builder(
            env!("CARGO_BIN_EXE_airlift-server"),
            dir.path().join("data"),
        )
        .trust(signer.public_key_file())
        .admin_token(ADMIN_TOKEN)
        .env("AIRLIFT_LOG", "info")
        .args(["--poll-interval", "1", "--max-package-mib", "64"]);
        let mut client = reqwest::Client::builder().pool_max_idle_per_host(0);
        if tls {
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .expect("self-signed certificate");
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            std::fs::write(&cert, certified.cert.pem()).expect("write cert");
            std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
            builder = builder
                .arg("--tls-cert")
                .arg(&cert)
                .arg("--tls-key")
                .arg(&key);
            let root = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes());
            client = client.add_root_certificate(root.expect("pem"));
        }
        let process = builder.start().unwrap_or_else(|e| panic!("{e}"));
        Self {
            url: process.url().replace("127.0.0.1", "localhost"),
            process,
            client: client.build().expect("client"),
            signer,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}; {}", self.process.log_tail()))
    }

    async fn admin_post(&self, path: &str, body: reqwest::Body) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request")
    }

    /// A package of about `image_bytes`, signed by the trusted key, uploaded.
    async fn upload(&self, name: &str, version: &str, image_bytes: u32) -> (Package, Vec<u8>) {
        let file = build_package_sized(self.signer.key(), name, version, "pi4", 0, image_bytes);
        let answer = self.admin_post("/packages", file.clone().into()).await;
        let body = json_status(answer, StatusCode::CREATED).await;
        (serde_json::from_value(body).expect("a package"), file)
    }

    async fn device(&self, serial: &str) -> TestDevice {
        let mut device = TestDevice::new(serial, "pi4");
        assert_eq!(device.authenticate(self).await, StatusCode::ACCEPTED);
        let id = device.id.expect("device made contact");
        let accepted = self
            .admin_post(
                &format!("/devices/{id}/accept"),
                reqwest::Body::from("null"),
            )
            .await;
        assert_eq!(accepted.status(), StatusCode::OK);
        assert_eq!(device.authenticate(self).await, StatusCode::OK);
        device
    }

    async fn deploy(&self, package: &Package, device: &TestDevice) -> DeploymentId {
        let id = device.id.expect("known").to_string();
        let body = json!({"name": "test", "package_id": package.id, "target": {"devices": [id]}});
        let answer = self
            .admin_post("/deployments", body.to_string().into())
            .await;
        let body = json_status(answer, StatusCode::CREATED).await;
        body["id"].as_str().expect("id").parse().expect("uuid")
    }

    /// Where the server keeps `package`'s file (`blobs::package_key` under
    /// the data directory's `blobs`).
    fn blob_path(&self, package: &Package) -> PathBuf {
        let path = self
            .process
            .data_dir()
            .join(format!("blobs/packages/{}.airlift", package.id));
        assert!(path.is_file(), "no package file at {}", path.display());
        path
    }

    async fn metric(&self, sample: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        airlift_testkit::server::metric_sample(&text, sample).unwrap_or(0.0)
    }

    /// Panics with the end of its log when the process is gone.
    fn assert_alive(&mut self) {
        assert!(
            !self.process.has_exited(),
            "the server is gone:\n{}",
            self.process.log_tail()
        );
    }
}

impl DeviceApi for DiskServer {
    fn base_url(&self) -> &str {
        &self.url
    }

    fn http(&self) -> &Client {
        &self.client
    }
}
