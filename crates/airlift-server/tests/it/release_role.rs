//! Uploads checked against the trust root's release role (`docs/trust.md`):
//! once the server holds a root, `POST /api/v1/packages` takes exactly
//! what the newest root's release keys and threshold sign — a key that
//! root revoked is refused at upload too, a key it rotated in is taken
//! without a restart, and the `--trust` keys no longer count. Without a
//! root, `--trust` decides as before; with a root, no `--trust` is needed.
//! A package uploaded before a root that revoked its key is not deployed
//! (`422 package_not_trusted`) until it is signed again.

use crate::support::{
    accepted_device, build_package, json_status, Backend, TestServer, ADMIN_TOKEN,
};
use airlift_package::SigningKey;
use airlift_testkit::packages::{image, PackageBuilder, Signer};
use airlift_testkit::server::ServerProcess;
use airlift_trust::{RoleName, RootDocument};
use reqwest::{Client, StatusCode};
use serde_json::Value;

/// Far enough ahead for any test run.
const EXPIRES: u64 = 4_000_000_000;

/// The offline root key and the online key a root names.
struct RootKeys {
    root: SigningKey,
    online: SigningKey,
}

impl RootKeys {
    fn new() -> Self {
        Self {
            root: SigningKey::generate().expect("root key"),
            online: SigningKey::generate().expect("online key"),
        }
    }

    /// The first root, trusting `release` (threshold 1) to sign packages.
    fn first(&self, release: &Signer) -> RootDocument {
        RootDocument::first(
            self.root.public_key(),
            release.key().public_key(),
            self.online.public_key(),
            EXPIRES,
        )
    }

    /// `document`, signed by the root key, as the bytes an admin uploads.
    fn signed(&self, document: &RootDocument) -> Vec<u8> {
        let mut envelope = document.to_envelope().expect("envelope");
        envelope.sign(&self.root);
        envelope.to_bytes()
    }
}

/// Uploads a root as an admin; asserts it is stored.
async fn publish(client: &Client, base: &str, root: Vec<u8>) {
    let response = client
        .post(format!("{base}/api/v1/trust/roots"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(root)
        .send()
        .await
        .expect("upload the root");
    json_status(response, StatusCode::CREATED).await;
}

/// Uploads a package; returns the status and the error code, if any.
async fn upload(client: &Client, base: &str, package: Vec<u8>) -> (StatusCode, Value) {
    let response = client
        .post(format!("{base}/api/v1/packages"))
        .bearer_auth(ADMIN_TOKEN)
        .body(package)
        .send()
        .await
        .expect("upload the package");
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// A small package signed by `signer` alone.
fn package(signer: &Signer, version: &str) -> Vec<u8> {
    build_package(signer.key(), "rootfs", version, "pi4", 1)
}

#[tokio::test]
async fn uploads_follow_the_newest_roots_release_keys_and_threshold() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (client, base) = (&server.client, server.url.as_str());
        let keys = RootKeys::new();
        let (first_key, rotated_in, second_signer) = (Signer::new(), Signer::new(), Signer::new());

        // No root: the --trust key decides, as before.
        assert_eq!(
            upload(client, base, package(&server.signer, "1.0.0"))
                .await
                .0,
            StatusCode::CREATED
        );
        let (status, body) = upload(client, base, package(&first_key, "1.0.1")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

        // Root 1 names `first_key`: from now on the --trust key no longer counts.
        let first = keys.first(&first_key);
        publish(client, base, keys.signed(&first)).await;
        assert_eq!(
            upload(client, base, package(&first_key, "1.1.0")).await.0,
            StatusCode::CREATED
        );
        let (status, body) = upload(client, base, package(&server.signer, "1.2.0")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

        // Root 2 rotates `first_key` out and `rotated_in` in, no restart.
        let mut second = first.next(EXPIRES);
        second.add_key(RoleName::Release, &rotated_in.key().public_key());
        second.revoke_key(RoleName::Release, &first_key.key().public_key().key_id());
        publish(client, base, keys.signed(&second)).await;
        let (status, body) = upload(client, base, package(&first_key, "2.0.0")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "revoked: {body}");
        assert_eq!(
            upload(client, base, package(&rotated_in, "2.0.1")).await.0,
            StatusCode::CREATED,
            "rotated in"
        );

        // Root 3 asks for two release signatures: one is not enough.
        let mut third = second.next(EXPIRES);
        third.add_key(RoleName::Release, &second_signer.key().public_key());
        third.set_threshold(RoleName::Release, 2);
        publish(client, base, keys.signed(&third)).await;
        let (status, body) = upload(client, base, package(&rotated_in, "3.0.0")).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "one of two: {body}"
        );
        let both = PackageBuilder::new("rootfs", "3.0.1")
            .signed_by(rotated_in.key())
            .signed_by(second_signer.key())
            .device_type("pi4")
            .image(&image("3.0.1", 50_000), airlift_package::Compression::Zstd)
            .build();
        let (status, body) = upload(client, base, both).await;
        assert_eq!(status, StatusCode::CREATED, "two of two: {body}");
        let signed_by = body["signed_by"].as_array().map_or(0, Vec::len);
        assert_eq!(signed_by, 2, "{body}");
    }
}

/// Creates a deployment of `package` (an upload's answer) to `device`;
/// returns the status and the body.
async fn deploy(server: &TestServer, package: &Value, device: &str) -> (StatusCode, Value) {
    let response = server
        .admin_post(
            "/deployments",
            serde_json::json!({
                "name": "release",
                "package_id": package["id"],
                "target": {"devices": [device]},
            }),
        )
        .await;
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn a_package_whose_key_a_newer_root_revoked_is_not_deployed_until_signed_again() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (client, base) = (&server.client, server.url.as_str());
        let keys = RootKeys::new();
        let (first_key, rotated_in) = (Signer::new(), Signer::new());
        let device = accepted_device(&server, "SN-TRUST-1", "pi4").await;
        let device = device.id.expect("known").to_string();

        // Uploaded while root 1 names its key.
        let first = keys.first(&first_key);
        publish(client, base, keys.signed(&first)).await;
        let (status, old) = upload(client, base, package(&first_key, "1.0.0")).await;
        assert_eq!(status, StatusCode::CREATED, "{old}");

        // Root 2 revokes that key: every device that takes it would refuse
        // the package, so it is not deployed.
        let mut second = first.next(EXPIRES);
        second.add_key(RoleName::Release, &rotated_in.key().public_key());
        second.revoke_key(RoleName::Release, &first_key.key().public_key().key_id());
        publish(client, base, keys.signed(&second)).await;
        let (status, body) = deploy(&server, &old, &device).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "package_not_trusted", "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("package_id: "), "{message}");
        assert!(message.contains("trust root version 2"), "{message}");
        let (wanted, carried) = (
            rotated_in.key().public_key().key_id().to_string(),
            first_key.key().public_key().key_id().to_string(),
        );
        assert!(
            message.contains(&format!("wants 1 signature(s) of [{wanted}]")),
            "the keys the root wants: {message}"
        );
        assert!(
            message.contains(&format!("carries signatures of [{carried}]")),
            "what the package carries: {message}"
        );
        assert!(message.contains("upload it"), "what to do: {message}");
        let deployments = server.admin_get("/deployments").await;
        assert_eq!(deployments["total"], 0, "nothing created: {deployments}");

        // Signed again with the key root 2 names, it deploys.
        let (status, resigned) = upload(client, base, package(&rotated_in, "1.0.1")).await;
        assert_eq!(status, StatusCode::CREATED, "{resigned}");
        let (status, body) = deploy(&server, &resigned, &device).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

#[tokio::test]
async fn a_server_without_trust_keys_takes_packages_once_it_holds_a_root() {
    for backend in Backend::all().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut builder = ServerProcess::builder(
            env!("CARGO_BIN_EXE_airlift-server"),
            dir.path().join("data"),
        )
        .admin_token(ADMIN_TOKEN)
        .env("AIRLIFT_LOG", "info")
        .args(["--poll-interval", "1"]);
        if let Backend::Postgres(schema) = &backend {
            builder = builder.arg("--database-url").arg(schema.url());
        }
        let mut process = builder.start().unwrap_or_else(|e| panic!("{e}"));
        let client = airlift_testkit::device::fresh_client();
        let base = process.url().to_owned();
        let release = Signer::new();

        let (status, body) = upload(&client, &base, package(&release, "1.0.0")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "no_trusted_keys", "{body}");

        let keys = RootKeys::new();
        publish(&client, &base, keys.signed(&keys.first(&release))).await;
        let (status, body) = upload(&client, &base, package(&release, "1.0.0")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let stranger = Signer::new();
        let (status, body) = upload(&client, &base, package(&stranger, "1.0.1")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        process.kill();
    }
}
