//! A server process per test (the test kit's `ServerProcess`, on SQLite or
//! a fresh PostgreSQL schema), the packages it is given, and the operator's
//! side of its API; devices are the test kit's `TestDevice`.

use airlift_package::{Compression, SigningKey};
use airlift_protocol::management::Package;
use airlift_protocol::DeploymentId;
use airlift_testkit::device::{fresh_client, DeviceApi};
use airlift_testkit::packages::{image, PackageBuilder, Signer};
use airlift_testkit::postgres::FreshSchema;
use airlift_testkit::server::ServerProcess;
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use tempfile::TempDir;

pub use airlift_testkit::device::TestDevice;
pub use airlift_testkit::server::ADMIN_TOKEN;

/// Which database a test server uses.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// A schema of its own, dropped when the last clone goes.
    Postgres(Arc<FreshSchema>),
}

impl Backend {
    /// SQLite, plus PostgreSQL (a fresh schema) when the variable is set.
    /// A set variable with an unreachable server fails the test.
    pub async fn all() -> Vec<Backend> {
        let mut backends = vec![Backend::Sqlite];
        if let Some(schema) = FreshSchema::create("srv") {
            backends.push(Backend::Postgres(Arc::new(schema)));
        }
        backends
    }
}

/// One `airlift-server` process with its own data directory.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`, the same after a restart.
    pub url: String,
    pub dir: TempDir,
    pub signer: Signer,
    pub backend: Backend,
    process: ServerProcess,
    pub client: Client,
    /// Where its package files are, when on S3 (see `blob_store`).
    pub s3: Option<S3Blobs>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// Starts with extra command-line arguments.
    pub async fn start_with(backend: Backend, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = Signer::new();
        let s3 = blob_store(&backend, &dir, extra);
        let extra: Vec<&str> = extra
            .iter()
            .copied()
            .chain(s3.iter().flat_map(S3Blobs::flags))
            .collect();
        let mut builder = ServerProcess::builder(
            env!("CARGO_BIN_EXE_airlift-server"),
            dir.path().join("data"),
        )
        .trust(signer.public_key_file())
        .admin_token(ADMIN_TOKEN)
        .env("AIRLIFT_LOG", "info")
        .args(["--poll-interval", "1", "--max-package-mib", "64"])
        .args(&extra);
        if let Backend::Postgres(schema) = &backend {
            builder = builder.arg("--database-url").arg(schema.url());
        }
        let process = builder.start().unwrap_or_else(|e| panic!("{e}"));
        Self {
            url: process.url().to_owned(),
            process,
            dir,
            signer,
            backend,
            // One connection per request: a refused upload or a killed
            // server must not poison the next request through a pooled
            // socket.
            client: fresh_client(),
            s3,
        }
    }

    /// `kill -9`, then start again on the same data, database and port.
    pub fn crash_and_restart(&mut self) {
        self.process
            .crash_and_restart()
            .unwrap_or_else(|e| panic!("{e}"));
        self.url = self.process.url().to_owned();
    }
}

impl DeviceApi for TestServer {
    fn base_url(&self) -> &str {
        &self.url
    }

    fn http(&self) -> &Client {
        &self.client
    }
}

impl TestServer {
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.api(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        json_ok(response).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.api(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Builds a package signed by the trusted key and uploads it.
    pub async fn upload(&self, name: &str, version: &str, device_type: &str) -> (Package, Vec<u8>) {
        let file = build_package(self.signer.key(), name, version, device_type, 0);
        let response = self
            .client
            .post(self.api("/packages"))
            .bearer_auth(ADMIN_TOKEN)
            .body(file.clone())
            .send()
            .await
            .expect("upload");
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{:?}",
            response.text().await
        );
        (response.json().await.expect("package json"), file)
    }

    pub async fn accept(&self, device: &TestDevice) {
        let id = device.id.expect("device made contact");
        let response = self
            .admin_post(&format!("/devices/{id}/accept"), Value::Null)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// A deployment of `package` to these devices; returns its id.
    pub async fn deploy(&self, package: &Package, devices: &[&TestDevice]) -> DeploymentId {
        let ids: Vec<String> = devices
            .iter()
            .map(|d| d.id.expect("known").to_string())
            .collect();
        let response = self
            .admin_post(
                "/deployments",
                serde_json::json!({"name": "test", "package_id": package.id, "target": {"devices": ids}}),
            )
            .await;
        let body = json_status(response, StatusCode::CREATED).await;
        body["id"].as_str().expect("id").parse().expect("uuid")
    }
}

impl Drop for TestServer {
    /// Stops the server before its data directory and database go.
    fn drop(&mut self) {
        self.process.kill();
    }
}

/// Gives `device` the one tag `tag` through the management API.
pub async fn tag_device(server: &TestServer, device: &TestDevice, tag: &str) {
    let id = device.id.expect("known");
    let response = server
        .client
        .put(server.api(&format!("/devices/{id}/tags")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"tags": [tag]}))
        .send()
        .await
        .expect("tags");
    json_ok(response).await;
}

pub async fn json_ok(response: Response) -> Value {
    json_status(response, StatusCode::OK).await
}

pub async fn json_status(response: Response, expected: StatusCode) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, expected, "body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A small image package for `device_type`.
pub fn build_package(
    key: &SigningKey,
    name: &str,
    version: &str,
    device_type: &str,
    security_version: u64,
) -> Vec<u8> {
    build_package_sized(key, name, version, device_type, security_version, 300_000)
}

/// A package whose image is `image_bytes` long and stored uncompressed
/// above 1 MB, so the file is about that large.
pub fn build_package_sized(
    key: &SigningKey,
    name: &str,
    version: &str,
    device_type: &str,
    security_version: u64,
    image_bytes: u32,
) -> Vec<u8> {
    let compression = if image_bytes > 1_000_000 {
        Compression::None
    } else {
        Compression::Zstd
    };
    PackageBuilder::new(name, version)
        .signed_by(key)
        .device_type(device_type)
        .security_version(security_version)
        .image(&image(version, image_bytes as usize), compression)
        .build()
}

/// A device the server has accepted and that holds a token.
pub async fn accepted_device(server: &TestServer, serial: &str, device_type: &str) -> TestDevice {
    let mut device = TestDevice::new(serial, device_type);
    assert_eq!(device.authenticate(server).await, StatusCode::ACCEPTED);
    server.accept(&device).await;
    assert_eq!(device.authenticate(server).await, StatusCode::OK);
    device
}

pub fn data_dir(server: &TestServer) -> PathBuf {
    server.dir.path().join("data")
}

impl TestServer {
    /// The value of one sample in `/metrics`, e.g.
    /// `airlift_connections_refused_total{reason="limit"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        airlift_testkit::server::metric_sample(&text, sample).unwrap_or(0.0)
    }
}

// --- The blob store dimension (issue 17) ---------------------------------
//
// SQLite servers keep package files on local disk and PostgreSQL servers in
// S3 (`s3s-fs`, shared by the servers running at once, a prefix per
// database: instances on one schema share their packages as they would in
// production), so that with AIRLIFT_TEST_POSTGRES_URL set every scenario
// runs on both blob stores. AIRLIFT_TEST_BLOBS=s3 or =disk puts every
// server on one. A test that gives --blob-url itself is left alone.

/// The variable that puts every test server's blobs on one store.
pub const BLOBS_VAR: &str = "AIRLIFT_TEST_BLOBS";

/// A test server's package files in S3.
#[derive(Clone)]
pub struct S3Blobs {
    pub server: Arc<airlift_testkit::s3::S3Server>,
    /// The key prefix in the bucket.
    pub prefix: String,
    flags: Vec<String>,
}

impl S3Blobs {
    /// On the shared `s3s-fs`, under `prefix`, with downloads streamed by
    /// the server (`--blob-offload off`): the suite's scenarios check the
    /// server's own download answers; offloaded ones have `offload.rs`.
    pub fn new(prefix: &str) -> Self {
        let mut blobs = Self::on(shared_s3(), prefix);
        blobs
            .flags
            .extend(["--blob-offload", "off"].map(str::to_owned));
        blobs
    }

    /// On `server`, under `prefix`.
    pub fn on(server: Arc<airlift_testkit::s3::S3Server>, prefix: &str) -> Self {
        let flags = [
            "--blob-url",
            &server.url(prefix),
            "--blob-endpoint",
            server.endpoint(),
            "--blob-path-style",
            "--blob-access-key-id",
            airlift_testkit::s3::ACCESS_KEY_ID,
            "--blob-secret-access-key",
            airlift_testkit::s3::SECRET_ACCESS_KEY,
        ]
        .map(str::to_owned)
        .to_vec();
        Self {
            server,
            prefix: prefix.to_owned(),
            flags,
        }
    }

    /// The `airlift-server` flags that keep blobs here.
    pub fn flags(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().map(String::as_str)
    }
}

fn blob_store(backend: &Backend, dir: &TempDir, extra: &[&str]) -> Option<S3Blobs> {
    if extra.iter().any(|a| a.starts_with("--blob-url")) {
        return None;
    }
    let on_s3 = match std::env::var(BLOBS_VAR).as_deref() {
        Ok("s3") => true,
        Ok("disk") => false,
        Ok(other) => panic!("{BLOBS_VAR}={other:?}: expected s3 or disk"),
        Err(_) => matches!(backend, Backend::Postgres(_)),
    };
    let prefix = match backend {
        Backend::Postgres(schema) => schema.name().to_owned(),
        Backend::Sqlite => dir
            .path()
            .file_name()?
            .to_str()?
            .trim_start_matches('.')
            .to_owned(),
    };
    on_s3.then(|| S3Blobs::new(&prefix))
}

/// The `s3s-fs` of the servers running now: started by the first, stopped
/// when the last is dropped.
fn shared_s3() -> Arc<airlift_testkit::s3::S3Server> {
    static SHARED: std::sync::Mutex<std::sync::Weak<airlift_testkit::s3::S3Server>> =
        std::sync::Mutex::new(std::sync::Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(server) = shared.upgrade() {
        return server;
    }
    let server = Arc::new(airlift_testkit::s3::S3Server::start());
    *shared = Arc::downgrade(&server);
    server
}
