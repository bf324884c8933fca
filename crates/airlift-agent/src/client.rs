//! Talking to the server's device API: authentication with the device key,
//! check-in, status reports, and opening (ranged) downloads.

use airlift_protocol::auth::{public_key_pem, sign_body};
use airlift_protocol::device::{
    download_path, status_path, AuthRequest, AuthResponse, CheckInResponse, Inventory, StatusAck,
    StatusReport, AUTH_PATH, CHECK_IN_PATH, SIGNATURE_HEADER,
};
use airlift_protocol::{DeploymentId, DeviceId, ErrorBody};
use ed25519_dalek::SigningKey;
use reqwest::blocking::{Client, Response};
use reqwest::header::{IF_RANGE, RANGE};
use reqwest::StatusCode;
use std::collections::BTreeMap;
use std::time::Duration;

/// What went wrong talking to the server, sorted by what the agent should do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Worth retrying later: the network, a timeout, a 5xx, a 429.
    #[error("server unreachable or busy: {0}")]
    Transient(String),
    /// Retrying will not help: the server said no for good (404, 410, 4xx).
    #[error("server refused ({status}, {code}): {message}")]
    Permanent {
        /// HTTP status.
        status: u16,
        /// The server's error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The device is not (yet) allowed in.
    #[error("device is {0} on the server; an operator must accept it")]
    NotAccepted(&'static str),
}

impl ClientError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// A device's session with the server.
#[derive(Debug)]
pub struct ServerClient {
    http: Client,
    base: String,
    key: SigningKey,
    identity: BTreeMap<String, String>,
    token: Option<String>,
    device_id: Option<DeviceId>,
}

impl ServerClient {
    /// A client for `base` (e.g. `https://updates.example.com`).
    pub fn new(
        base: &str,
        key: SigningKey,
        identity: BTreeMap<String, String>,
    ) -> Result<Self, ClientError> {
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(None)
            .user_agent(concat!("airlift-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transient(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            identity,
            token: None,
            device_id: None,
        })
    }

    /// The id the server gave this device, once known.
    pub fn device_id(&self) -> Option<DeviceId> {
        self.device_id
    }

    /// Authenticates with a freshly signed request; keeps the token.
    pub fn authenticate(&mut self) -> Result<DeviceId, ClientError> {
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce).map_err(|e| ClientError::Transient(e.to_string()))?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let request = AuthRequest {
            identity: self.identity.clone(),
            public_key: public_key_pem(&self.key.verifying_key()),
            timestamp,
            nonce: hex::encode(nonce),
        };
        let body =
            serde_json::to_vec(&request).map_err(|e| ClientError::Transient(e.to_string()))?;
        let response = self
            .http
            .post(format!("{}{AUTH_PATH}", self.base))
            .timeout(Duration::from_secs(30))
            .header(SIGNATURE_HEADER, sign_body(&self.key, &body))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .map_err(transport)?;
        let status = response.status();
        if !(status.is_success() || status == StatusCode::FORBIDDEN) {
            return Err(refusal(response));
        }
        let answer: AuthResponse = response
            .json()
            .map_err(|e| ClientError::Transient(e.to_string()))?;
        match answer {
            AuthResponse::Accepted {
                device_id, token, ..
            } => {
                self.device_id = Some(device_id);
                self.token = Some(token);
                Ok(device_id)
            }
            AuthResponse::Pending { device_id } => {
                self.device_id = Some(device_id);
                Err(ClientError::NotAccepted("pending"))
            }
            AuthResponse::Rejected { device_id } => {
                self.device_id = Some(device_id);
                Err(ClientError::NotAccepted("rejected"))
            }
        }
    }

    /// Sends `request`, authenticating first if needed and once more if the
    /// token was refused (expired, or the device was re-accepted).
    fn send_authorized(
        &mut self,
        build: impl Fn(&Client, &str) -> reqwest::blocking::RequestBuilder,
    ) -> Result<Response, ClientError> {
        for attempt in 0..2 {
            if self.token.is_none() {
                self.authenticate()?;
            }
            let token = self.token.clone().unwrap_or_default();
            let response = build(&self.http, &self.base)
                .bearer_auth(token)
                .send()
                .map_err(transport)?;
            if response.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                self.token = None;
                continue;
            }
            return Ok(response);
        }
        Err(ClientError::Transient("authentication loop".into()))
    }

    /// Reports inventory; returns the poll interval and maybe an offer.
    pub fn check_in(&mut self, inventory: &Inventory) -> Result<CheckInResponse, ClientError> {
        let response = self.send_authorized(|http, base| {
            http.post(format!("{base}{CHECK_IN_PATH}"))
                .timeout(Duration::from_secs(30))
                .json(inventory)
        })?;
        if !response.status().is_success() {
            return Err(refusal(response));
        }
        response
            .json()
            .map_err(|e| ClientError::Transient(e.to_string()))
    }

    /// Reports one step of an update.
    pub fn report(
        &mut self,
        deployment: DeploymentId,
        report: &StatusReport,
    ) -> Result<StatusAck, ClientError> {
        let response = self.send_authorized(|http, base| {
            http.post(format!("{base}{}", status_path(deployment)))
                .timeout(Duration::from_secs(30))
                .json(report)
        })?;
        if !response.status().is_success() {
            return Err(refusal(response));
        }
        response
            .json()
            .map_err(|e| ClientError::Transient(e.to_string()))
    }

    /// Opens the package download at `offset`, valid only while the file's
    /// ETag is still `etag` (else the server answers with the whole file,
    /// which the caller must treat as a changed package).
    pub fn open_download(
        &mut self,
        deployment: DeploymentId,
        offset: u64,
        etag: &str,
    ) -> Result<Response, ClientError> {
        let response = self.send_authorized(|http, base| {
            let request = http.get(format!("{base}{}", download_path(deployment)));
            if offset == 0 {
                request
            } else {
                request
                    .header(RANGE, format!("bytes={offset}-"))
                    .header(IF_RANGE, format!("\"{etag}\""))
            }
        })?;
        let expected = if offset == 0 {
            StatusCode::OK
        } else {
            StatusCode::PARTIAL_CONTENT
        };
        if response.status() == expected {
            return Ok(response);
        }
        if response.status().is_success() {
            return Err(ClientError::Permanent {
                status: response.status().as_u16(),
                code: "package_changed".into(),
                message: "the server sent the whole file to a resume request: the package changed"
                    .into(),
            });
        }
        Err(refusal(response))
    }
}

fn transport(error: reqwest::Error) -> ClientError {
    ClientError::Transient(error.to_string())
}

/// Sorts an error answer into transient or permanent.
fn refusal(response: Response) -> ClientError {
    let status = response.status();
    let body: Option<ErrorBody> = response.json().ok();
    let (code, message) = body
        .map(|b| (b.code, b.message))
        .unwrap_or_else(|| ("unknown".into(), status.to_string()));
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        ClientError::Transient(format!("{status}: {message}"))
    } else {
        ClientError::Permanent {
            status: status.as_u16(),
            code,
            message,
        }
    }
}
