//! Talking to the server's device API: authentication with the device key,
//! check-in, status reports, and opening (ranged) downloads.
//!
//! Over `ureq`: a blocking HTTP/1.1 client with rustls and no async runtime,
//! which keeps the agent small and idle, and whose per-read timeout notices
//! a stalled download (a connection that stays open and silent).

use airlift_protocol::auth::{public_key_pem, sign_body};
use airlift_protocol::device::{
    download_path, status_path, AuthRequest, AuthResponse, CheckInResponse, Inventory, StatusAck,
    StatusReport, AUTH_PATH, CHECK_IN_PATH, SIGNATURE_HEADER,
};
use airlift_protocol::push::PUSH_PATH;
use airlift_protocol::{DeploymentId, DeviceId, ErrorBody};
use ed25519_dalek::SigningKey;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;
use ureq::{Agent, Request, Response};

/// What went wrong talking to the server, sorted by what the agent should do.
#[derive(Debug, Clone, thiserror::Error)]
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
    http: Agent,
    timeout: Duration,
    base: String,
    key: SigningKey,
    identity: BTreeMap<String, String>,
    token: Option<String>,
    device_id: Option<DeviceId>,
}

impl ServerClient {
    /// A client for `base` (e.g. `https://updates.example.com`) that gives
    /// up on a connection silent for `timeout` (connecting, or between two
    /// reads).
    pub fn new(
        base: &str,
        key: SigningKey,
        identity: BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            http: http_agent(timeout),
            timeout,
            base: base.trim_end_matches('/').to_owned(),
            key,
            identity,
            token: None,
            device_id: None,
        })
    }

    /// A second session for the same device, with its own token and
    /// connections and a silence `timeout` of its own (the push stream
    /// waits longer between reads than a download may).
    pub fn fork(&self, timeout: Duration) -> Result<Self, ClientError> {
        let mut fork = Self::new(&self.base, self.key.clone(), self.identity.clone(), timeout)?;
        fork.device_id = self.device_id;
        Ok(fork)
    }

    /// Closes the connections kept open for reuse. Between two polls a
    /// minute apart an open connection only costs: the server holds it,
    /// and a NAT on the way forgets it anyway.
    pub fn close_idle_connections(&mut self) {
        self.http = http_agent(self.timeout);
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
        let result = self
            .http
            .post(&format!("{}{AUTH_PATH}", self.base))
            .timeout(Duration::from_secs(30))
            .set(SIGNATURE_HEADER, &sign_body(&self.key, &body))
            .set("content-type", "application/json")
            .send_bytes(&body);
        // 403 carries the `rejected` answer.
        let response = match result {
            Err(ureq::Error::Status(403, response)) => response,
            other => answered(other)?,
        };
        let answer: AuthResponse = json(response)?;
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

    /// Sends a request built by `build` (with `body`, if any), authenticating
    /// first if needed and once more if the token was refused (expired, or
    /// the device was re-accepted). Error answers come back as errors.
    fn send_authorized(
        &mut self,
        build: impl Fn(&Agent, &str) -> Request,
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        for attempt in 0..2 {
            if self.token.is_none() {
                self.authenticate()?;
            }
            let token = self.token.clone().unwrap_or_default();
            let request =
                build(&self.http, &self.base).set("authorization", &format!("Bearer {token}"));
            let result = match body {
                Some(body) => request
                    .set("content-type", "application/json")
                    .send_bytes(body),
                None => request.call(),
            };
            if let (Err(ureq::Error::Status(401, _)), 0) = (&result, attempt) {
                self.token = None;
                continue;
            }
            return answered(result);
        }
        Err(ClientError::Transient("authentication loop".into()))
    }

    /// Reports inventory; returns the poll interval and maybe an offer.
    pub fn check_in(&mut self, inventory: &Inventory) -> Result<CheckInResponse, ClientError> {
        let body = encode(inventory)?;
        let response = self.send_authorized(
            |http, base| {
                http.post(&format!("{base}{CHECK_IN_PATH}"))
                    .timeout(Duration::from_secs(30))
            },
            Some(&body),
        )?;
        json(response)
    }

    /// Reports one step of an update.
    pub fn report(
        &mut self,
        deployment: DeploymentId,
        report: &StatusReport,
    ) -> Result<StatusAck, ClientError> {
        let body = encode(report)?;
        let response = self.send_authorized(
            |http, base| {
                http.post(&format!("{base}{}", status_path(deployment)))
                    .timeout(Duration::from_secs(30))
            },
            Some(&body),
        )?;
        json(response)
    }

    /// Opens the stream of push nudges (server-sent events).
    pub fn open_push(&mut self) -> Result<Box<dyn Read + Send + Sync>, ClientError> {
        let response = self.send_authorized(
            |http, base| {
                http.get(&format!("{base}{PUSH_PATH}"))
                    .set("accept", "text/event-stream")
            },
            None,
        )?;
        Ok(response.into_reader())
    }

    /// Opens the package download at `offset`, valid only while the file's
    /// ETag is still `etag` (else the server answers with the whole file,
    /// which is taken as a changed package); returns the body.
    pub fn open_download(
        &mut self,
        deployment: DeploymentId,
        offset: u64,
        etag: &str,
    ) -> Result<Box<dyn Read + Send + Sync>, ClientError> {
        let response = self.send_authorized(
            |http, base| {
                let request = http.get(&format!("{base}{}", download_path(deployment)));
                if offset == 0 {
                    request
                } else {
                    request
                        .set("range", &format!("bytes={offset}-"))
                        .set("if-range", &format!("\"{etag}\""))
                }
            },
            None,
        )?;
        let expected = if offset == 0 { 200 } else { 206 };
        if response.status() != expected {
            return Err(ClientError::Permanent {
                status: response.status(),
                code: "package_changed".into(),
                message: "the server sent the whole file to a resume request: the package changed"
                    .into(),
            });
        }
        Ok(response.into_reader())
    }
}

/// A connection pool that gives up on a connection silent for `timeout`.
fn http_agent(timeout: Duration) -> Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(timeout)
        .timeout_read(timeout)
        .timeout_write(timeout)
        .user_agent(concat!("airlift-agent/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn encode(value: &impl serde::Serialize) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::Transient(e.to_string()))
}

/// A JSON answer; one that does not parse is taken as transient (a proxy's
/// error page, a cut connection).
fn json<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_ANSWER)
        .read_to_end(&mut body)
        .map_err(|e| ClientError::Transient(format!("reading the answer: {e}")))?;
    serde_json::from_slice(&body)
        .map_err(|e| ClientError::Transient(format!("the server's answer does not parse: {e}")))
}

/// Largest JSON answer read (offers carry a signed manifest, up to 1 MiB,
/// in base64).
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// A successful answer, or the error sorted into transient or permanent.
fn answered(result: Result<Response, ureq::Error>) -> Result<Response, ClientError> {
    match result {
        Ok(response) => Ok(response),
        Err(ureq::Error::Status(status, response)) => Err(refusal(status, response)),
        Err(ureq::Error::Transport(transport)) => {
            Err(ClientError::Transient(transport.to_string()))
        }
    }
}

/// Sorts an error answer into transient or permanent.
fn refusal(status: u16, response: Response) -> ClientError {
    let body: Option<ErrorBody> = json(response).ok();
    let (code, message) = body
        .map(|b| (b.code, b.message))
        .unwrap_or_else(|| ("unknown".into(), format!("HTTP {status}")));
    if status >= 500 || status == 429 || status == 408 {
        ClientError::Transient(format!("{status}: {message}"))
    } else {
        ClientError::Permanent {
            status,
            code,
            message,
        }
    }
}
