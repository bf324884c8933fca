//! A server process per test, a package signer, and a device that speaks
//! the device API.

use airlift_package::{
    encode_payload, Compression, EncodeOptions, Limits, Manifest, PackageWriter, PayloadSpec,
    PayloadType, SignedManifest, SigningKey,
};
use airlift_protocol::auth::{public_key_pem, sign_body};
use airlift_protocol::device::{
    AuthRequest, AuthResponse, CheckInResponse, Inventory, StatusReport, AUTH_PATH, CHECK_IN_PATH,
    SIGNATURE_HEADER,
};
use airlift_protocol::management::Package;
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use airlift_testkit::postgres::FreshSchema;
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

pub const ADMIN_TOKEN: &str = "alt_test_admin_token_0123456789";

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
    pub url: String,
    pub dir: TempDir,
    pub signer: SigningKey,
    pub backend: Backend,
    child: Child,
    extra: Vec<String>,
    pub client: Client,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// Starts with extra command-line arguments.
    pub async fn start_with(backend: Backend, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = SigningKey::generate().expect("key");
        let trust = dir.path().join("release.pub");
        std::fs::write(&trust, signer.public_key().to_pem().expect("pem")).expect("write key");
        let mut server = Self {
            url: String::new(),
            child: spawn(&dir, &backend, None, extra),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            signer,
            backend,
            client: fresh_client(),
        };
        server.url = wait_ready(&mut server.child);
        server
    }

    /// `kill -9`, then start again on the same data, database and port.
    pub fn crash_and_restart(&mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
        let port = self.url.rsplit(':').next().map(str::to_owned);
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = spawn(&self.dir, &self.backend, port.as_deref(), &extra);
        self.url = wait_ready(&mut self.child);
    }
}

/// A client that opens a connection per request: a refused upload or a
/// killed server must not poison the next request through a pooled socket.
fn fresh_client() -> Client {
    Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client")
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
        let file = build_package(&self.signer, name, version, device_type, 0);
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
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &TempDir, backend: &Backend, port: Option<&str>, extra: &[&str]) -> Child {
    let listen = format!("127.0.0.1:{}", port.unwrap_or("0"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_airlift-server"));
    command
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(listen)
        .arg("--trust")
        .arg(dir.path().join("release.pub"))
        .args([
            "--log-format",
            "json",
            "--poll-interval",
            "1",
            "--max-package-mib",
            "64",
        ])
        .args(extra)
        .env("AIRLIFT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("AIRLIFT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Backend::Postgres(schema) = backend {
        command.arg("--database-url").arg(schema.url());
    }
    command.spawn().expect("start airlift-server")
}

/// Reads the server's log until it says where it listens. No sleeping.
fn wait_ready(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                if entry["fields"]["message"] == "airlift-server ready" {
                    let scheme = if entry["fields"]["tls"] == true {
                        "https"
                    } else {
                        "http"
                    };
                    let addr = entry["fields"]["listen"].as_str().unwrap_or_default();
                    let _ = tx.send(Ok(format!("{scheme}://{addr}")));
                    continue;
                }
            }
            if std::env::var_os("AIRLIFT_TEST_SERVER_LOG").is_some() {
                eprintln!("server: {line}");
            }
            let _ = tx.send(Err(line));
        }
    });
    let mut log = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(url)) => return url,
            Ok(Err(line)) => log.push(line),
            Err(_) => panic!("server did not become ready:\n{}", log.join("\n")),
        }
    }
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

/// A package whose image is `image_bytes` long and stored uncompressed, so
/// the file is about that large.
pub fn build_package_sized(
    key: &SigningKey,
    name: &str,
    version: &str,
    device_type: &str,
    security_version: u64,
    image_bytes: u32,
) -> Vec<u8> {
    let image: Vec<u8> = (0..image_bytes)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let compression = if image_bytes > 1_000_000 {
        Compression::None
    } else {
        Compression::Zstd
    };
    let spec = PayloadSpec::new(PayloadType::Image, "rootfs", compression);
    let mut stored = Vec::new();
    let entry =
        encode_payload(&image[..], &spec, &EncodeOptions::default(), &mut stored).expect("encode");
    let manifest = Manifest::builder(name, version.parse().expect("semver"), [device_type])
        .security_version(security_version)
        .payload(entry)
        .build();
    let signed = SignedManifest::sign(&manifest, &[key], &Limits::default()).expect("sign");
    let mut file = Vec::new();
    let mut writer = PackageWriter::new(&mut file, &signed).expect("header");
    writer.write_payload(&stored[..]).expect("payload");
    writer.finish().expect("finish");
    file
}

/// A device: a key pair, an identity, and what it reports.
pub struct TestDevice {
    key: ed25519_dalek::SigningKey,
    pub serial: String,
    pub id: Option<airlift_protocol::DeviceId>,
    pub token: Option<String>,
    pub inventory: Inventory,
}

impl TestDevice {
    pub fn new(serial: &str, device_type: &str) -> Self {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).expect("random");
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
            serial: serial.into(),
            id: None,
            token: None,
            inventory: Inventory {
                device_type: device_type.into(),
                installed: [("os".to_owned(), "1.0.0".to_owned())].into(),
                ..Inventory::default()
            },
        }
    }

    pub fn public_key(&self) -> String {
        public_key_pem(&self.key.verifying_key())
    }

    pub fn auth_body(&self) -> Vec<u8> {
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce).expect("random");
        let request = AuthRequest {
            identity: [("serial".to_owned(), self.serial.clone())].into(),
            public_key: self.public_key(),
            timestamp: chrono::Utc::now().timestamp(),
            nonce: hex::encode(nonce),
        };
        serde_json::to_vec(&request).expect("json")
    }

    /// Sends a signed auth request; returns the HTTP status and the answer.
    pub async fn send_auth(
        &self,
        server: &TestServer,
        body: &[u8],
        signature: &str,
    ) -> (StatusCode, Value) {
        let response = server
            .client
            .post(format!("{}{AUTH_PATH}", server.url))
            .header(SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("auth request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn authenticate(&mut self, server: &TestServer) -> StatusCode {
        let body = self.auth_body();
        let signature = sign_body(&self.key, &body);
        let (status, answer) = self.send_auth(server, &body, &signature).await;
        if let Ok(parsed) = serde_json::from_value::<AuthResponse>(answer) {
            match parsed {
                AuthResponse::Accepted {
                    device_id, token, ..
                } => {
                    self.id = Some(device_id);
                    self.token = Some(token);
                }
                AuthResponse::Pending { device_id } | AuthResponse::Rejected { device_id } => {
                    self.id = Some(device_id);
                    self.token = None;
                }
            }
        }
        status
    }

    pub fn sign(&self, body: &[u8]) -> String {
        sign_body(&self.key, body)
    }

    fn token(&self) -> &str {
        self.token.as_deref().expect("device is authenticated")
    }

    pub async fn check_in(&self, server: &TestServer) -> CheckInResponse {
        let response = server
            .client
            .post(format!("{}{CHECK_IN_PATH}", server.url))
            .bearer_auth(self.token())
            .json(&self.inventory)
            .send()
            .await
            .expect("check-in");
        serde_json::from_value(json_ok(response).await).expect("check-in response")
    }

    pub async fn report(
        &self,
        server: &TestServer,
        deployment: DeploymentId,
        state: UpdateState,
        message: Option<&str>,
    ) -> Response {
        self.send_report(
            server,
            deployment,
            &StatusReport {
                state,
                progress: None,
                message: message.map(str::to_owned),
            },
        )
        .await
    }

    pub async fn send_report(
        &self,
        server: &TestServer,
        deployment: DeploymentId,
        report: &StatusReport,
    ) -> Response {
        server
            .client
            .post(format!(
                "{}{}",
                server.url,
                airlift_protocol::device::status_path(deployment)
            ))
            .bearer_auth(self.token())
            .json(report)
            .send()
            .await
            .expect("status report")
    }

    pub async fn download(
        &self,
        server: &TestServer,
        deployment: DeploymentId,
        headers: &[(&str, String)],
    ) -> Response {
        let mut request = server
            .client
            .get(format!(
                "{}{}",
                server.url,
                airlift_protocol::device::download_path(deployment)
            ))
            .bearer_auth(self.token());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.expect("download")
    }
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
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }
}
