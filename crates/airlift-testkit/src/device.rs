//! A device that speaks the device API by hand (feature `device`): its
//! own Ed25519 key, a signed auth request, check-ins with an inventory,
//! status reports and ranged downloads — so that a test can do exactly
//! what a device does, or one thing a device would not, and see the
//! server's answer. The real agent is `airlift-agent`; this is the
//! server's tests' view of one.
//!
//! Requests go to any [`DeviceApi`]: a test's server type implements it,
//! or an [`Endpoint`] names a URL and a client.
//!
//! ```no_run
//! use airlift_testkit::device::{Endpoint, TestDevice};
//!
//! # async fn example() {
//! let server = Endpoint::new("http://127.0.0.1:8080");
//! let mut device = TestDevice::new("SN-1", "pi4");
//! let status = device.authenticate(&server).await; // 202: pending
//! # }
//! ```

use airlift_protocol::auth::{public_key_pem, sign_body};
use airlift_protocol::device::{
    download_path, status_path, AuthRequest, AuthResponse, CheckInResponse, Inventory,
    StatusReport, AUTH_PATH, CHECK_IN_PATH, SIGNATURE_HEADER,
};
use airlift_protocol::state::UpdateState;
use airlift_protocol::{DeploymentId, DeviceId};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

/// Where a device's requests go.
pub trait DeviceApi {
    /// The server's base URL (`http://127.0.0.1:PORT`), without a path.
    fn base_url(&self) -> &str;
    /// The client to send them with.
    fn http(&self) -> &Client;
}

/// A base URL and a client that opens a connection per request (a killed
/// server or a refused request must not poison the next one through a
/// pooled socket).
#[derive(Debug, Clone)]
pub struct Endpoint {
    url: String,
    client: Client,
}

impl Endpoint {
    /// The server at `url`.
    ///
    /// # Panics
    /// When no HTTP client can be made: this is test support.
    #[allow(clippy::expect_used)]
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            client: fresh_client(),
        }
    }
}

impl DeviceApi for Endpoint {
    fn base_url(&self) -> &str {
        &self.url
    }

    fn http(&self) -> &Client {
        &self.client
    }
}

/// A client with no connection pool, for [`DeviceApi`] implementations.
///
/// # Panics
/// When none can be made: this is test support.
#[allow(clippy::expect_used)]
pub fn fresh_client() -> Client {
    Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client")
}

/// A device: a key pair, an identity (`serial`), what it reports, and what
/// the server told it.
#[derive(Debug)]
pub struct TestDevice {
    key: ed25519_dalek::SigningKey,
    /// Its identity's `serial`.
    pub serial: String,
    /// Its id, once the server has answered its auth request.
    pub id: Option<DeviceId>,
    /// Its token, while the server accepts it.
    pub token: Option<String>,
    /// What it reports at check-in (`os` 1.0.0 installed, to begin with).
    pub inventory: Inventory,
}

impl TestDevice {
    /// A device of `device_type` with a fresh key.
    ///
    /// # Panics
    /// When the system has no randomness: this is test support.
    pub fn new(serial: &str, device_type: &str) -> Self {
        Self::with_key(
            serial,
            device_type,
            ed25519_dalek::SigningKey::from_bytes(&random()),
        )
    }

    /// A device of `device_type` with the key given: a benchmark that
    /// seeded the device's public key into the database derives the same
    /// key again to authenticate as it.
    pub fn with_key(serial: &str, device_type: &str, key: ed25519_dalek::SigningKey) -> Self {
        Self {
            key,
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

    /// Its public key, in PEM.
    pub fn public_key(&self) -> String {
        public_key_pem(&self.key.verifying_key())
    }

    /// A fresh auth request (now, a new nonce), as JSON.
    ///
    /// # Panics
    /// When the system has no randomness: this is test support.
    #[allow(clippy::expect_used)]
    pub fn auth_body(&self) -> Vec<u8> {
        let nonce: [u8; 16] = random();
        let request = AuthRequest {
            identity: [("serial".to_owned(), self.serial.clone())].into(),
            public_key: self.public_key(),
            timestamp: chrono::Utc::now().timestamp(),
            nonce: hex::encode(nonce),
        };
        serde_json::to_vec(&request).expect("an auth request is JSON")
    }

    /// `body`'s signature by this device's key, for the signature header.
    pub fn sign(&self, body: &[u8]) -> String {
        sign_body(&self.key, body)
    }

    /// Sends `body` as an auth request with `signature`, whatever they
    /// are; returns the HTTP status and the answer (`null` if not JSON).
    ///
    /// # Panics
    /// When the server cannot be reached.
    #[allow(clippy::expect_used)]
    pub async fn send_auth(
        &self,
        api: &impl DeviceApi,
        body: &[u8],
        signature: &str,
    ) -> (StatusCode, Value) {
        let response = api
            .http()
            .post(format!("{}{AUTH_PATH}", api.base_url()))
            .header(SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("auth request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A signed auth request; remembers the id and token the server gave
    /// (no token unless accepted). Returns the HTTP status.
    pub async fn authenticate(&mut self, api: &impl DeviceApi) -> StatusCode {
        let body = self.auth_body();
        let signature = self.sign(&body);
        let (status, answer) = self.send_auth(api, &body, &signature).await;
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

    /// A check-in with its inventory, which must be answered 200.
    ///
    /// # Panics
    /// When it is not (with the answer's body), or the device has no token.
    #[allow(clippy::expect_used)]
    pub async fn check_in(&self, api: &impl DeviceApi) -> CheckInResponse {
        let response = api
            .http()
            .post(format!("{}{CHECK_IN_PATH}", api.base_url()))
            .bearer_auth(self.token())
            .json(&self.inventory)
            .send()
            .await
            .expect("check-in");
        let status = response.status();
        let text = response.text().await.expect("check-in body");
        assert_eq!(status, StatusCode::OK, "check-in answered: {text}");
        serde_json::from_str(&text).expect("a check-in response")
    }

    /// Reports `state` (with `message`) for `deployment`.
    pub async fn report(
        &self,
        api: &impl DeviceApi,
        deployment: DeploymentId,
        state: UpdateState,
        message: Option<&str>,
    ) -> Response {
        let report = StatusReport {
            state,
            progress: None,
            message: message.map(str::to_owned),
        };
        self.send_report(api, deployment, &report).await
    }

    /// Sends `report` for `deployment`.
    ///
    /// # Panics
    /// When the server cannot be reached, or the device has no token.
    #[allow(clippy::expect_used)]
    pub async fn send_report(
        &self,
        api: &impl DeviceApi,
        deployment: DeploymentId,
        report: &StatusReport,
    ) -> Response {
        api.http()
            .post(format!("{}{}", api.base_url(), status_path(deployment)))
            .bearer_auth(self.token())
            .json(report)
            .send()
            .await
            .expect("status report")
    }

    /// `GET` of `deployment`'s package, with more `headers` (`Range`,
    /// `If-Range`, …).
    ///
    /// # Panics
    /// When the server cannot be reached, or the device has no token.
    #[allow(clippy::expect_used)]
    pub async fn download(
        &self,
        api: &impl DeviceApi,
        deployment: DeploymentId,
        headers: &[(&str, String)],
    ) -> Response {
        let mut request = api
            .http()
            .get(format!("{}{}", api.base_url(), download_path(deployment)))
            .bearer_auth(self.token());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.expect("download")
    }

    #[allow(clippy::expect_used)]
    fn token(&self) -> &str {
        self.token.as_deref().expect("the device is authenticated")
    }
}

#[allow(clippy::expect_used)]
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).expect("system randomness");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_protocol::auth::{parse_public_key, verify_body};

    #[test]
    fn an_auth_request_is_signed_by_the_devices_own_key() {
        let device = TestDevice::new("SN-1", "pi4");
        let body = device.auth_body();
        let request: AuthRequest = serde_json::from_slice(&body).expect("json");
        assert_eq!(request.identity["serial"], "SN-1");
        let key = parse_public_key(&request.public_key).expect("pem");
        verify_body(&key, &body, &device.sign(&body)).expect("signed");
        assert_ne!(device.auth_body(), body, "a fresh nonce each time");
    }
}
