//! Mutual TLS (`docs/mtls.md`): devices that authenticate with a client
//! certificate from the fleet CA, against the real server on SQLite and
//! PostgreSQL. Certificates are made for each test with `rcgen`.

use crate::support::{Backend, TestServer, ADMIN_TOKEN};
use airlift_testkit::device::{DeviceApi, TestDevice};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;

/// A certificate authority made for the test.
struct Authority {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Authority {
    fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { cert, key }
    }

    /// A server certificate for 127.0.0.1: PEM certificate and key.
    fn server(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// A device certificate named `common_name` for a fresh key, valid now
    /// or (`expired`) only in 2020: PEM certificate and key, for reqwest.
    fn device(&self, common_name: &str, expired: bool) -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("leaf");
        format!("{}{}", cert.pem(), key.serialize_pem())
    }
}

/// A server with HTTPS from `server_ca` and device certificates from
/// `fleet`, with more flags.
struct Fleet {
    server: TestServer,
    server_ca: Authority,
    fleet: Authority,
    _files: tempfile::TempDir,
}

impl Fleet {
    async fn start(backend: Backend, flags: &[&str]) -> Self {
        let files = tempfile::tempdir().expect("tempdir");
        let (server_ca, fleet) = (Authority::new("Server CA"), Authority::new("Fleet CA"));
        let (cert, key) = server_ca.server();
        let write = |name: &str, text: &str| -> String {
            let path: PathBuf = files.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path.to_string_lossy().into_owned()
        };
        let (cert, key, ca) = (
            write("server.pem", &cert),
            write("server.key", &key),
            write("fleet-ca.pem", &fleet.cert.pem()),
        );
        let mut args = vec!["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &ca];
        args.extend_from_slice(flags);
        let server = TestServer::start_with(backend, &args).await;
        assert!(server.url.starts_with("https://"), "{}", server.url);
        Self {
            server,
            server_ca,
            fleet,
            _files: files,
        }
    }

    /// A client trusting the server, presenting `identity` (PEM
    /// certificate and key) if given.
    fn client(&self, identity: Option<&str>) -> Device {
        let root = reqwest::Certificate::from_pem(self.server_ca.cert.pem().as_bytes())
            .expect("server CA");
        let mut builder = Client::builder()
            .add_root_certificate(root)
            .pool_max_idle_per_host(0);
        if let Some(identity) = identity {
            builder = builder
                .identity(reqwest::Identity::from_pem(identity.as_bytes()).expect("identity"));
        }
        Device {
            url: self.server.url.clone(),
            http: builder.build().expect("client"),
        }
    }

    /// A device with a certificate from the fleet CA.
    fn device(&self, common_name: &str) -> Device {
        self.client(Some(&self.fleet.device(common_name, false)))
    }

    async fn admin(&self, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
        let operator = self.client(None);
        let response = operator
            .http
            .request(method, format!("{}/api/v1{path}", self.server.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&Value::Null)
            .send()
            .await
            .expect("management request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The operator accepts (or rejects) `device`.
    async fn decide(&self, device: &str, decision: &str) {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                &format!("/devices/{device}/{decision}"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{decision}: {body}");
    }
}

/// One TLS client: a device's connection (with its certificate) or an
/// operator's.
struct Device {
    url: String,
    http: Client,
}

impl DeviceApi for Device {
    fn base_url(&self) -> &str {
        &self.url
    }

    fn http(&self) -> &Client {
        &self.http
    }
}

impl Device {
    /// `POST /auth/certificate`: the status and the answer.
    async fn authenticate(&self, serial: &str) -> Result<(StatusCode, Value), reqwest::Error> {
        let response = self
            .http
            .post(format!("{}/api/device/v1/auth/certificate", self.url))
            .json(&json!({"identity": {"serial": serial}}))
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Authenticates, expecting `status`; the device id and the token.
    async fn expect_auth(&self, serial: &str, status: StatusCode) -> (String, Option<String>) {
        let (got, body) = self.authenticate(serial).await.expect("handshake");
        assert_eq!(got, status, "{body}");
        let id = body["device_id"].as_str().expect("device id").to_owned();
        (id, body["token"].as_str().map(str::to_owned))
    }

    /// A check-in with `token`: its status.
    async fn check_in(&self, token: &str) -> StatusCode {
        let device = TestDevice::new("probe", "gateway");
        self.http
            .post(format!("{}/api/device/v1/check-in", self.url))
            .bearer_auth(token)
            .json(&device.inventory)
            .send()
            .await
            .expect("check-in")
            .status()
    }
}

#[tokio::test]
async fn a_certificate_device_is_registered_accepted_and_checks_in_without_a_key() {
    for backend in Backend::all().await {
        let fleet = Fleet::start(backend, &[]).await;
        let device = fleet.device("device-0001");
        let (id, token) = device.expect_auth("SN-1", StatusCode::ACCEPTED).await;
        assert_eq!(token, None, "pending: no token");
        let (again, _) = device.expect_auth("SN-1", StatusCode::ACCEPTED).await;
        assert_eq!(again, id, "the same certificate is the same device");

        // The operator, with a token and no client certificate.
        let (status, pending) = fleet
            .admin(reqwest::Method::GET, "/devices?status=pending")
            .await;
        assert_eq!(status, StatusCode::OK, "{pending}");
        let listed = &pending["items"][0];
        assert_eq!(listed["id"], id.as_str());
        assert_eq!(listed["identity"]["certificate_cn"], "device-0001");
        assert_eq!(listed["identity"]["serial"], "SN-1");
        fleet.decide(&id, "accept").await;

        let (accepted, token) = device.expect_auth("SN-1", StatusCode::OK).await;
        assert_eq!(accepted, id);
        let token = token.expect("a token");
        assert_eq!(device.check_in(&token).await, StatusCode::OK);
        // The token alone, without the certificate, is not enough.
        let stolen = fleet.client(None);
        assert_eq!(stolen.check_in(&token).await, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_or_an_expired_one_is_refused_in_the_handshake() {
    for backend in Backend::all().await {
        let fleet = Fleet::start(backend, &[]).await;
        let stranger = Authority::new("Stranger CA");
        let forged = fleet.client(Some(&stranger.device("device-0001", false)));
        let error = forged.authenticate("SN-1").await.expect_err("another CA");
        assert!(error.is_connect() || error.is_request(), "{error:?}");
        let expired = fleet.client(Some(&fleet.fleet.device("device-0002", true)));
        expired.authenticate("SN-2").await.expect_err("expired");

        // No certificate at all: the TLS connection is served, the device
        // API's certificate route says what is missing.
        let anonymous = fleet.client(None);
        let (status, body) = anonymous.authenticate("SN-3").await.expect("served");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("no client certificate"),
            "{body}"
        );
        let (status, devices) = fleet.admin(reqwest::Method::GET, "/devices").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(devices["total"], 0, "nothing registered: {devices}");
    }
}

#[tokio::test]
async fn a_rejected_device_certificate_gets_403() {
    for backend in Backend::all().await {
        let fleet = Fleet::start(backend, &[]).await;
        let device = fleet.device("device-0001");
        let (id, _) = device.expect_auth("SN-1", StatusCode::ACCEPTED).await;
        fleet.decide(&id, "accept").await;
        let (_, token) = device.expect_auth("SN-1", StatusCode::OK).await;
        let token = token.expect("token");
        fleet.decide(&id, "reject").await;
        let (rejected, _) = device.expect_auth("SN-1", StatusCode::FORBIDDEN).await;
        assert_eq!(rejected, id);
        assert_eq!(device.check_in(&token).await, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn one_device_certificate_cannot_report_for_another() {
    for backend in Backend::all().await {
        let fleet = Fleet::start(backend, &[]).await;
        let (a, b) = (fleet.device("device-a"), fleet.device("device-b"));
        let mut tokens = Vec::new();
        for (device, serial) in [(&a, "SN-A"), (&b, "SN-B")] {
            let (id, _) = device.expect_auth(serial, StatusCode::ACCEPTED).await;
            fleet.decide(&id, "accept").await;
            let (_, token) = device.expect_auth(serial, StatusCode::OK).await;
            tokens.push(token.expect("token"));
        }
        assert_eq!(a.check_in(&tokens[0]).await, StatusCode::OK);
        assert_eq!(b.check_in(&tokens[1]).await, StatusCode::OK);
        assert_eq!(a.check_in(&tokens[1]).await, StatusCode::UNAUTHORIZED);
        assert_eq!(b.check_in(&tokens[0]).await, StatusCode::UNAUTHORIZED);

        // A key device's token on a connection with a certificate bound to
        // another device is refused too.
        let mut keyed = TestDevice::new("SN-K", "gateway");
        let operator = fleet.client(None);
        assert_eq!(keyed.authenticate(&operator).await, StatusCode::ACCEPTED);
        let id = keyed.id.expect("id").to_string();
        fleet.decide(&id, "accept").await;
        assert_eq!(keyed.authenticate(&operator).await, StatusCode::OK);
        let key_token = keyed.token.clone().expect("token");
        assert_eq!(operator.check_in(&key_token).await, StatusCode::OK);
        assert_eq!(a.check_in(&key_token).await, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn with_device_auth_certificate_a_device_key_is_not_enough() {
    for backend in Backend::all().await {
        let fleet = Fleet::start(backend, &["--device-auth", "certificate"]).await;
        let mut keyed = TestDevice::new("SN-K", "gateway");
        let operator = fleet.client(None);
        assert_eq!(
            keyed.authenticate(&operator).await,
            StatusCode::UNAUTHORIZED
        );
        let device = fleet.device("device-0001");
        device.expect_auth("SN-1", StatusCode::ACCEPTED).await;
        let (status, health) = fleet.admin(reqwest::Method::GET, "/devices").await;
        assert_eq!(status, StatusCode::OK, "{health}");
        assert_eq!(health["total"], 1, "only the certificate device: {health}");
    }
}
