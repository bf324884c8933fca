//! Talking to the server's device API: authentication with the device key
//! (or, with `[tls] auth = "certificate"`, with the TLS client certificate
//! alone), check-in, status reports, and opening (ranged) downloads — from the
//! server, or from the object store its `307` sends the device to
//! ([`PresignedUrl`]).
//!
//! Over `ureq`: a blocking HTTP/1.1 client with rustls and no async runtime,
//! which keeps the agent small and idle, and whose per-read timeout notices
//! a stalled download (a connection that stays open and silent).
//!
//! Downloads go through an agent of their own that follows no redirect:
//! ureq would carry the request's `Range` and `If-Range` (the server's
//! ETag, which the store does not know) to the store, and the agent must
//! keep the presigned URL to resume from and renew it. The device token is
//! never sent to the store: requests to it carry no `Authorization`.

use airlift_protocol::auth::{public_key_pem, sign_body};
use airlift_protocol::device::{
    download_path, status_path, AuthRequest, AuthResponse, CertificateAuthRequest, CheckInResponse,
    Inventory, StatusAck, StatusReport, AUTH_PATH, CERTIFICATE_AUTH_PATH, CHECK_IN_PATH,
    SIGNATURE_HEADER,
};
use airlift_protocol::push::PUSH_PATH;
use airlift_protocol::{DeploymentId, DeviceId, ErrorBody};
use ed25519_dalek::SigningKey;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};
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
    /// A download broke its bounds for good (its deadline passed): the
    /// update fails rather than wait on the network for ever.
    #[error("{0}")]
    Retrieval(String),
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
    /// For downloads, from the server and the store: follows no redirect.
    downloads: Agent,
    timeout: Duration,
    base: String,
    key: SigningKey,
    identity: BTreeMap<String, String>,
    token: Option<String>,
    device_id: Option<DeviceId>,
    /// `[tls]`'s configuration; `None`: ureq's default (public roots).
    tls: Option<Tls>,
}

type Tls = crate::tls::AgentTls;

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
            http: http_agent(timeout, None),
            downloads: download_agent(timeout, None),
            timeout,
            base: base.trim_end_matches('/').to_owned(),
            key,
            identity,
            token: None,
            device_id: None,
            tls: None,
        })
    }

    /// Uses `tls` (see [`crate::tls`]) for every connection from now on.
    pub fn with_tls(mut self, tls: Option<Tls>) -> Self {
        self.tls = tls;
        self.close_idle_connections();
        self
    }

    /// A second session for the same device, with its own token and
    /// connections and a silence `timeout` of its own (the push stream
    /// waits longer between reads than a download may).
    pub fn fork(&self, timeout: Duration) -> Result<Self, ClientError> {
        let mut fork = Self::new(&self.base, self.key.clone(), self.identity.clone(), timeout)?
            .with_tls(self.tls.clone());
        fork.device_id = self.device_id;
        Ok(fork)
    }

    /// Closes the connections kept open for reuse. Between two polls a
    /// minute apart an open connection only costs: the server holds it,
    /// and a NAT on the way forgets it anyway.
    pub fn close_idle_connections(&mut self) {
        self.http = http_agent(self.timeout, self.tls.clone());
        self.downloads = download_agent(self.timeout, self.tls.clone());
    }

    /// `[tls]`'s configuration, if it is not the default (for an
    /// `mqtts://` broker).
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The id the server gave this device, once known.
    pub fn device_id(&self) -> Option<DeviceId> {
        self.device_id
    }

    /// Authenticates with a freshly signed request, or by the client
    /// certificate (`[tls] auth = "certificate"`); keeps the token.
    pub fn authenticate(&mut self) -> Result<DeviceId, ClientError> {
        let by_certificate = self
            .tls
            .as_ref()
            .is_some_and(|tls| tls.auth == crate::tls::DeviceAuth::Certificate);
        let result = if by_certificate {
            self.certificate_auth_request()?
        } else {
            self.signed_auth_request()?
        };
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

    /// `POST /auth/certificate`: the connection's client certificate is
    /// the credential; the body only says who the device is to people.
    fn certificate_auth_request(&self) -> Result<Result<Response, ureq::Error>, ClientError> {
        let body = encode(&CertificateAuthRequest {
            identity: self.identity.clone(),
        })?;
        Ok(self
            .http
            .post(&format!("{}{CERTIFICATE_AUTH_PATH}", self.base))
            .timeout(Duration::from_secs(30))
            .set("content-type", "application/json")
            .send_bytes(&body))
    }

    /// `POST /auth`, signed with the device key.
    fn signed_auth_request(&self) -> Result<Result<Response, ureq::Error>, ClientError> {
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
        let body = encode(&request)?;
        Ok(self
            .http
            .post(&format!("{}{AUTH_PATH}", self.base))
            .timeout(Duration::from_secs(30))
            .set(SIGNATURE_HEADER, &sign_body(&self.key, &body))
            .set("content-type", "application/json")
            .send_bytes(&body))
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

    /// Reports that the device put a soft update off ("not now").
    pub fn report_deferral(
        &mut self,
        deployment: DeploymentId,
        report: &airlift_protocol::soft::DeferralReport,
    ) -> Result<airlift_protocol::soft::DeferralAck, ClientError> {
        let body = encode(report)?;
        let path = airlift_protocol::soft::deferral_path(deployment);
        let response = self.send_authorized(
            |http, base| {
                http.post(&format!("{base}{path}"))
                    .timeout(Duration::from_secs(30))
            },
            Some(&body),
        )?;
        json(response)
    }

    /// Reports the configuration document the device applied; answers
    /// what still differs.
    pub fn report_shadow(
        &mut self,
        report: &airlift_protocol::shadow::ReportedShadow,
    ) -> Result<airlift_protocol::shadow::ReportedAck, ClientError> {
        let body = encode(report)?;
        let response = self.send_authorized(
            |http, base| {
                http.put(&format!(
                    "{base}{}",
                    airlift_protocol::shadow::REPORTED_PATH
                ))
                .timeout(Duration::from_secs(30))
            },
            Some(&body),
        )?;
        json(response)
    }

    /// The trust roots after version `after` (`docs/trust.md`).
    pub fn trust_roots(
        &mut self,
        after: u64,
    ) -> Result<airlift_protocol::trust::TrustRoots, ClientError> {
        let path = airlift_protocol::trust::TRUST_ROOTS_PATH;
        let response = self.send_authorized(
            |http, base| {
                http.get(&format!("{base}{path}?after={after}"))
                    .timeout(Duration::from_secs(30))
            },
            None,
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
    /// which is taken as a changed package): the body, or the object
    /// store's URL the server sends the device to.
    pub fn open_download(
        &mut self,
        deployment: DeploymentId,
        offset: u64,
        etag: &str,
    ) -> Result<DownloadAnswer, ClientError> {
        let downloads = self.downloads.clone();
        let response = self.send_authorized(
            |_, base| {
                let request = downloads.get(&format!("{base}{}", download_path(deployment)));
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
        if response.status() == 307 {
            let location = response.header("location").unwrap_or_default();
            return PresignedUrl::new(location, Instant::now()).map(DownloadAnswer::Redirect);
        }
        if (300..400).contains(&response.status()) {
            return Err(ClientError::Transient(format!(
                "the server answered the download with {} (only 307 to the object store is followed)",
                response.status()
            )));
        }
        let expected = if offset == 0 { 200 } else { 206 };
        if response.status() != expected {
            return Err(ClientError::Permanent {
                status: response.status(),
                code: "package_changed".into(),
                message: "the server sent the whole file to a resume request: the package changed"
                    .into(),
            });
        }
        Ok(DownloadAnswer::Body(response.into_reader()))
    }

    /// Opens the package at `url` (the object store's) from `offset`, with
    /// `Range` past 0 — the object never changes, so no `If-Range` — and
    /// without the device's token. A refusal (4xx: expired, a bad
    /// signature, no such object) is [`ClientError::Permanent`] with the
    /// store's error code: the URL is spent, the server gives a new one.
    pub fn open_store(
        &mut self,
        url: &PresignedUrl,
        offset: u64,
    ) -> Result<Box<dyn Read + Send + Sync>, ClientError> {
        let mut request = self.downloads.get(&url.url);
        if offset > 0 {
            request = request.set("range", &format!("bytes={offset}-"));
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response))
                if (400..500).contains(&status) && !matches!(status, 408 | 429) =>
            {
                return Err(store_refusal(status, response));
            }
            // 5xx, 408, 429: the store is busy; the same URL may do.
            Err(ureq::Error::Status(status, _)) => {
                return Err(ClientError::Transient(format!(
                    "the object store at {} answered {status}",
                    url.redacted()
                )));
            }
            Err(ureq::Error::Transport(transport)) => {
                return Err(ClientError::Transient(format!(
                    "the object store at {}: {}",
                    url.redacted(),
                    transport_reason(&transport)
                )));
            }
        };
        let resumed = offset > 0 && response.status() == 206 && starts_at(&response, offset);
        let whole = offset == 0 && response.status() == 200;
        if !(resumed || whole) {
            // A redirect, or a range the store did not honour: this URL
            // will not serve the package; the server may give another.
            return Err(ClientError::Permanent {
                status: response.status(),
                code: "store_answer_unusable".into(),
                message: format!(
                    "the object store answered {} to a request from byte {offset}",
                    response.status()
                ),
            });
        }
        Ok(response.into_reader())
    }
}

/// What the server answered a download request with.
pub enum DownloadAnswer {
    /// The package (from the offset asked for), streamed by the server.
    Body(Box<dyn Read + Send + Sync>),
    /// `307`: fetch it from the object store at this URL.
    Redirect(PresignedUrl),
}

impl std::fmt::Debug for DownloadAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Body(_) => f.write_str("Body(..)"),
            Self::Redirect(url) => f.debug_tuple("Redirect").field(url).finish(),
        }
    }
}

/// A presigned URL of a package's object, from the server's `307`. Its
/// query is a credential for the object until it expires: `Debug` and
/// [`PresignedUrl::redacted`] show the URL without it, and nothing logs
/// the rest.
#[derive(Clone, PartialEq, Eq)]
pub struct PresignedUrl {
    url: String,
    /// When the store stops taking it (S3's `X-Amz-Expires`, counted from
    /// its arrival, less a margin); `None`: unknown, the store will say.
    expires_at: Option<Instant>,
}

impl PresignedUrl {
    /// The `Location` of a `307` received at `received`; an absolute
    /// http(s) URL.
    pub fn new(location: &str, received: Instant) -> Result<Self, ClientError> {
        let absolute = location.starts_with("https://") || location.starts_with("http://");
        if !absolute {
            return Err(ClientError::Transient(
                "the server's redirect has no absolute http(s) URL".into(),
            ));
        }
        let expires_at = query_value(location, "X-Amz-Expires")
            .and_then(|v| v.parse::<u64>().ok())
            .map(|secs| {
                // The store counts from the signing time, which its
                // X-Amz-Date rounds down to the second: stop a little
                // early rather than send a request bound to be refused.
                let lifetime = Duration::from_secs(secs);
                let margin = (lifetime / 10).min(Duration::from_secs(30));
                received + lifetime.saturating_sub(margin)
            });
        Ok(Self {
            url: location.to_owned(),
            expires_at,
        })
    }

    /// Whether the store no longer takes it at `now` (as far as the device
    /// can tell: the store's refusal is the last word).
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The URL without its query (the signature): what may be logged.
    pub fn redacted(&self) -> &str {
        self.url.split(['?', '#']).next().unwrap_or_default()
    }
}

impl std::fmt::Debug for PresignedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresignedUrl")
            .field("url", &self.redacted())
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The value of `name` in `url`'s query, as it is written.
fn query_value<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    let (_, query) = url.split_once('?')?;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then_some(value)
    })
}

/// Whether a `206`'s `Content-Range` starts at `offset` (one that says
/// nothing is taken at its word: the store was asked for `offset`).
fn starts_at(response: &Response, offset: u64) -> bool {
    let Some(range) = response.header("content-range") else {
        return true;
    };
    range
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('-'))
        .and_then(|(first, _)| first.trim().parse::<u64>().ok())
        == Some(offset)
}

/// What went wrong on the way, without the URL (ureq's `Display` starts
/// with it, query and all).
fn transport_reason(transport: &ureq::Transport) -> String {
    let mut reason = transport.kind().to_string();
    if let Some(message) = transport.message() {
        reason = format!("{reason}: {message}");
    }
    if let Some(source) = std::error::Error::source(transport) {
        reason = format!("{reason}: {source}");
    }
    reason
}

/// A store's 4xx as a permanent refusal with its S3 error code. Only the
/// code is kept: the rest of an S3 error body may quote the signed request.
fn store_refusal(status: u16, response: Response) -> ClientError {
    let mut body = Vec::new();
    let _ = response
        .into_reader()
        .take(MAX_STORE_ERROR)
        .read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body);
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code)
        .filter(|code| code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("unknown");
    ClientError::Permanent {
        status,
        code: code.to_owned(),
        message: format!("the object store refused the download URL ({status} {code})"),
    }
}

/// How much of a store's error answer is read for its code.
const MAX_STORE_ERROR: u64 = 16 * 1024;

fn with_tls(builder: ureq::AgentBuilder, tls: Option<Tls>) -> ureq::AgentBuilder {
    match tls {
        Some(tls) => builder.tls_config(tls.rustls),
        None => builder,
    }
}

/// For downloads: like [`http_agent`], and follows no redirect.
fn download_agent(timeout: Duration, tls: Option<Tls>) -> Agent {
    with_tls(ureq::AgentBuilder::new(), tls)
        .timeout_connect(timeout)
        .timeout_read(timeout)
        .timeout_write(timeout)
        .redirects(0)
        .user_agent(concat!("airlift-agent/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A connection pool that gives up on a connection silent for `timeout`.
fn http_agent(timeout: Duration, tls: Option<Tls>) -> Agent {
    with_tls(ureq::AgentBuilder::new(), tls)
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

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &str = "https://bucket.s3.example.com/fleet/packages/p.airlift?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=0123abcd";

    #[test]
    fn a_presigned_url_shows_no_query_and_knows_when_it_expires() {
        let received = Instant::now();
        let url = PresignedUrl::new(SIGNED, received).expect("absolute");
        assert_eq!(
            url.redacted(),
            "https://bucket.s3.example.com/fleet/packages/p.airlift"
        );
        let shown = format!("{url:?} {:?}", DownloadAnswer::Redirect(url.clone()));
        assert!(
            !shown.contains("Signature") && !shown.contains("AKID"),
            "{shown}"
        );
        // 900 s, less a margin of 30 s for the store's rounding.
        assert!(!url.is_expired(received + Duration::from_secs(869)));
        assert!(url.is_expired(received + Duration::from_secs(870)));

        let short = SIGNED.replace("X-Amz-Expires=900", "X-Amz-Expires=2");
        let short = PresignedUrl::new(&short, received).expect("absolute");
        assert!(!short.is_expired(received + Duration::from_millis(1700)));
        assert!(short.is_expired(received + Duration::from_millis(1800)));

        let unknown =
            PresignedUrl::new("http://cdn.example.com/p.airlift", received).expect("absolute");
        assert!(!unknown.is_expired(received + Duration::from_secs(86_400 * 365)));
        for relative in ["/p.airlift?X-Amz-Expires=9", "ftp://host/p", ""] {
            assert!(PresignedUrl::new(relative, received).is_err(), "{relative}");
        }
    }

    #[test]
    fn query_values_are_found_by_their_exact_name() {
        assert_eq!(query_value(SIGNED, "X-Amz-Expires"), Some("900"));
        assert_eq!(query_value(SIGNED, "X-Amz-Date"), Some("20260101T000000Z"));
        assert_eq!(query_value(SIGNED, "Expires"), None);
        assert_eq!(query_value("https://h/p", "X-Amz-Expires"), None);
        assert_eq!(
            query_value("https://h/p?a=1#X-Amz-Expires=5", "X-Amz-Expires"),
            None
        );
    }
}
