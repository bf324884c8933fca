//! The management API client: one method per `/api/v1` endpoint, taking and
//! returning `airlift-protocol` types, so both ends agree by construction.
//!
//! Every answer outside 2xx becomes an [`ApiError`] carrying the server's
//! own message (its [`ErrorBody`]); a 401 also says how to log in again.
//! Nothing here prints, and the token never appears in an error.

use crate::server_url::ServerUrl;
use airlift_protocol::management::{
    ApiToken, AuditEntry, CreateDeploymentRequest, CreateTokenRequest, CreatedToken, Deployment,
    DeploymentDetail, Device, DeviceDetail, DeviceUpdate, Package, Page, PreauthorizeRequest,
    SetTagsRequest,
};
use airlift_protocol::state::{DeviceStatus, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId, ErrorBody, PackageId, TokenId};
use anyhow::{Context, Result};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, IF_RANGE, RANGE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How long to wait for a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a JSON request may take in all (uploads and downloads have no limit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most of an error body read to find its message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// A non-2xx answer from the server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no token, or one the server does not know (any more).
    #[error("the server refused the token ({message}); run `airlift server login {server} --token T` with a valid token")]
    Unauthorized {
        /// The server that refused.
        server: ServerUrl,
        /// What it said.
        message: String,
    },
    /// 403: the token's role may not do this; the message names the role needed.
    #[error("{message}")]
    Forbidden {
        /// What the server said.
        message: String,
    },
    /// Any other 4xx or 5xx.
    #[error("{message} (HTTP {status})")]
    Status {
        /// The status.
        status: StatusCode,
        /// The server's machine-readable code (`not_found`, `in_use`, …), or empty.
        code: String,
        /// What the server said.
        message: String,
    },
}

/// Filters and paging of `GET /api/v1/devices`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceQuery {
    /// Admission status.
    pub status: Option<DeviceStatus>,
    /// Reported device type.
    pub device_type: Option<String>,
    /// Carries this tag.
    pub tag: Option<String>,
    /// Inventory attributes that must all match.
    pub attributes: Vec<(String, String)>,
    /// Installed software that must all match.
    pub installed: Vec<(String, String)>,
    /// A target expression that must match (`where`).
    pub where_expression: Option<airlift_protocol::target_expr::TargetExpr>,
    /// 1-based page.
    pub page: Option<u32>,
    /// Items per page.
    pub per_page: Option<u32>,
    /// Only accepted devices the server has not heard of for
    /// [`OFFLINE_POLLS`] poll intervals (`connectivity=offline`).
    pub offline: bool,
}

/// How many poll intervals of silence make a device offline, as the
/// server counts (`connectivity=offline`).
pub const OFFLINE_POLLS: u32 = 3;

impl DeviceQuery {
    /// The query parameters, in the server's spelling: lists of pairs are
    /// one parameter each, `k=v` joined by commas.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let joined = |pairs: &[(String, String)]| {
            pairs
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut params = Vec::new();
        if let Some(status) = self.status {
            params.push(("status", status.to_string()));
        }
        if let Some(device_type) = &self.device_type {
            params.push(("device_type", device_type.clone()));
        }
        if let Some(tag) = &self.tag {
            params.push(("tag", tag.clone()));
        }
        if !self.attributes.is_empty() {
            params.push(("attributes", joined(&self.attributes)));
        }
        if !self.installed.is_empty() {
            params.push(("installed", joined(&self.installed)));
        }
        if let Some(expression) = &self.where_expression {
            params.push(("where", expression.to_string()));
        }
        if self.offline {
            params.push(("connectivity", "offline".to_owned()));
        }
        if let Some(page) = self.page {
            params.push(("page", page.to_string()));
        }
        if let Some(per_page) = self.per_page {
            params.push(("per_page", per_page.to_string()));
        }
        params
    }

    /// The full URL of the device list on `server`.
    pub fn url(&self, server: &ServerUrl) -> Result<Url> {
        let mut url = server.api("/devices")?;
        let params = self.params();
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        Ok(url)
    }
}

/// Filters and paging of `GET /api/v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Who: a token's name, or its whole `name (id)`.
    pub actor: Option<String>,
    /// What: an action, or a family ending with a dot (`deployment.`).
    pub action: Option<String>,
    /// Only entries with an id below this.
    pub before: Option<i64>,
    /// Which object: a deployment's, device's, package's or token's id.
    pub object: Option<String>,
    /// Only entries at or after this.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only entries before this.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// 1-based page.
    pub page: u32,
    /// Entries per page.
    pub per_page: u32,
}

/// What a device status change is called in the API's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAction {
    /// `POST …/accept`.
    Accept,
    /// `POST …/reject`.
    Reject,
    /// `POST …/decommission`.
    Decommission,
}

impl DeviceAction {
    /// The last path segment.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Decommission => "decommission",
        }
    }
}

/// Where to resume a download from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Bytes already there.
    pub offset: u64,
    /// The entity tag those bytes came from; the server sends the rest only
    /// if the package still has it, else the whole file.
    pub if_range: String,
}

/// A management API client for one server and token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    server: ServerUrl,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("token", &crate::config::mask(&self.token))
            .finish()
    }
}

impl Client {
    /// A client for `server` that authenticates with `token`.
    pub fn new(server: ServerUrl, token: String) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("airlift/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("setting up the HTTP client")?;
        Ok(Self {
            http,
            server,
            token,
        })
    }

    /// The server this client talks to.
    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    // Packages.

    /// `GET /packages`: every package, newest first (page after page).
    pub async fn list_packages(&self) -> Result<Vec<Package>> {
        self.every_page("/packages").await
    }

    /// `GET /packages?page=…&per_page=…`: one page of packages, newest first.
    pub async fn packages_page(&self, page: u32, per_page: u32) -> Result<Page<Package>> {
        let request = self
            .request(Method::GET, "/packages")?
            .query(&[("page", page), ("per_page", per_page)]);
        self.json(request).await
    }

    /// `GET /packages/{id}`.
    pub async fn package(&self, id: PackageId) -> Result<Package> {
        self.json(self.request(Method::GET, &format!("/packages/{id}"))?)
            .await
    }

    /// `POST /packages`: streams `body` (`len` bytes) as the package file.
    pub async fn upload_package(&self, body: reqwest::Body, len: u64) -> Result<Package> {
        let request = self
            .http
            .post(self.server.api("/packages")?)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len)
            .body(body);
        self.json(request).await
    }

    /// `DELETE /packages/{id}`.
    pub async fn delete_package(&self, id: PackageId) -> Result<()> {
        self.send(self.request(Method::DELETE, &format!("/packages/{id}"))?)
            .await?;
        Ok(())
    }

    /// `GET /packages/{id}/download`, from `resume.offset` if given: a 200
    /// (whole file) or 206 (the rest) response whose body the caller streams.
    pub async fn download_package(
        &self,
        id: PackageId,
        resume: Option<&Resume>,
    ) -> Result<Response> {
        let mut request = self
            .http
            .get(self.server.api(&format!("/packages/{id}/download"))?);
        if let Some(resume) = resume {
            request = request
                .header(RANGE, format!("bytes={}-", resume.offset))
                .header(IF_RANGE, &resume.if_range);
        }
        self.send(request).await
    }

    // Devices.

    /// `GET /devices?…`: one page of devices.
    pub async fn list_devices(&self, query: &DeviceQuery) -> Result<Page<Device>> {
        let request = self
            .http
            .get(query.url(&self.server)?)
            .timeout(REQUEST_TIMEOUT);
        self.json(request).await
    }

    /// `GET /devices/{id}`: the device and its update history.
    pub async fn device(&self, id: DeviceId) -> Result<DeviceDetail> {
        self.json(self.request(Method::GET, &format!("/devices/{id}"))?)
            .await
    }

    /// `POST /devices/{id}/accept|reject|decommission`.
    pub async fn set_device_status(&self, id: DeviceId, action: DeviceAction) -> Result<Device> {
        let path = format!("/devices/{id}/{}", action.as_str());
        self.json(self.request(Method::POST, &path)?).await
    }

    /// `POST /devices/{id}/check-in`: asks the device to check in now.
    pub async fn request_check_in(&self, id: DeviceId) -> Result<()> {
        let path = format!("/devices/{id}/check-in");
        self.send(self.request(Method::POST, &path)?).await?;
        Ok(())
    }

    /// `POST /devices/preauthorize`.
    pub async fn preauthorize_device(&self, request: &PreauthorizeRequest) -> Result<Device> {
        self.json(
            self.request(Method::POST, "/devices/preauthorize")?
                .json(request),
        )
        .await
    }

    /// `PUT /devices/{id}/tags`: replaces the device's tags.
    pub async fn set_device_tags(&self, id: DeviceId, request: &SetTagsRequest) -> Result<Device> {
        self.json(
            self.request(Method::PUT, &format!("/devices/{id}/tags"))?
                .json(request),
        )
        .await
    }

    // Deployments.

    /// `POST /deployments`.
    pub async fn create_deployment(&self, request: &CreateDeploymentRequest) -> Result<Deployment> {
        self.json(self.request(Method::POST, "/deployments")?.json(request))
            .await
    }

    /// `GET /deployments`: every deployment, newest first (page after page).
    pub async fn list_deployments(&self) -> Result<Vec<Deployment>> {
        self.every_page("/deployments").await
    }

    /// `GET /deployments?page=…&per_page=…`: one page of deployments,
    /// newest first, with their counts.
    pub async fn deployments_page(&self, page: u32, per_page: u32) -> Result<Page<Deployment>> {
        let request = self
            .request(Method::GET, "/deployments")?
            .query(&[("page", page), ("per_page", per_page)]);
        self.json(request).await
    }

    /// Every item of a paged list, read a full page at a time.
    async fn every_page<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>> {
        const PER_PAGE: u32 = 1000;
        let mut items = Vec::new();
        for page in 1u32.. {
            let request = self
                .request(Method::GET, path)?
                .query(&[("page", page), ("per_page", PER_PAGE)]);
            let answer: Page<T> = self.json(request).await?;
            let last = answer.items.len() < PER_PAGE as usize
                || u64::from(page) * u64::from(PER_PAGE) >= answer.total;
            items.extend(answer.items);
            if last {
                break;
            }
        }
        Ok(items)
    }

    /// `GET /deployments/{id}`: counts per state and phase, rollback links,
    /// deferrals — not its devices (`deployment_devices`, a page at a time).
    pub async fn deployment(&self, id: DeploymentId) -> Result<DeploymentDetail> {
        self.json(self.request(Method::GET, &format!("/deployments/{id}"))?)
            .await
    }

    /// `GET /deployments/{id}/devices?…`: one page of a deployment's
    /// devices, by device id.
    pub async fn deployment_devices(
        &self,
        id: DeploymentId,
        page: u32,
        per_page: u32,
        state: Option<UpdateState>,
    ) -> Result<Page<DeviceUpdate>> {
        let mut params = vec![
            ("page", page.to_string()),
            ("per_page", per_page.to_string()),
        ];
        if let Some(state) = state {
            params.push(("state", state.to_string()));
        }
        let path = format!("/deployments/{id}/devices");
        self.json(self.request(Method::GET, &path)?.query(&params))
            .await
    }

    /// `POST /deployments/{id}/{action}`: cancel, install, end, advance,
    /// pause, resume or abort.
    pub async fn control_deployment(&self, id: DeploymentId, action: &str) -> Result<Deployment> {
        self.json(self.request(Method::POST, &format!("/deployments/{id}/{action}"))?)
            .await
    }

    /// `POST {path}` with a JSON body, parsing the answer as `T` (the
    /// repair endpoints: retry, reset).
    pub async fn post_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.json(self.request(Method::POST, path)?.json(body))
            .await
    }

    // Tokens.

    /// `POST /tokens`: the answer holds the secret, this once.
    pub async fn create_token(&self, request: &CreateTokenRequest) -> Result<CreatedToken> {
        self.json(self.request(Method::POST, "/tokens")?.json(request))
            .await
    }

    /// `GET /tokens?page=…&per_page=…`: one page of tokens, oldest first.
    pub async fn list_tokens(&self, page: u32, per_page: u32) -> Result<Page<ApiToken>> {
        let request = self
            .request(Method::GET, "/tokens")?
            .query(&[("page", page), ("per_page", per_page)]);
        self.json(request).await
    }

    // Audit.

    /// `GET /audit?…`: one page of the audit log, newest first.
    pub async fn list_audit(&self, query: &AuditQuery) -> Result<Page<AuditEntry>> {
        let mut params = vec![
            ("page", query.page.to_string()),
            ("per_page", query.per_page.to_string()),
        ];
        if let Some(actor) = &query.actor {
            params.push(("actor", actor.clone()));
        }
        if let Some(action) = &query.action {
            params.push(("action", action.clone()));
        }
        if let Some(before) = query.before {
            params.push(("before", before.to_string()));
        }
        if let Some(object) = &query.object {
            params.push(("object", object.clone()));
        }
        for (name, at) in [("since", query.since), ("until", query.until)] {
            if let Some(at) = at {
                params.push((
                    name,
                    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ));
            }
        }
        self.json(self.request(Method::GET, "/audit")?.query(&params))
            .await
    }

    /// `DELETE /tokens/{id}`.
    pub async fn revoke_token(&self, id: TokenId) -> Result<()> {
        self.send(self.request(Method::DELETE, &format!("/tokens/{id}"))?)
            .await?;
        Ok(())
    }

    /// A management API call whose path and query the caller built
    /// (`/devices/{id}/shadow`, …), with an optional JSON body; the answer
    /// parsed as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        let mut request = self.request(method, path_and_query)?;
        if let Some(body) = body {
            request = request.json(body);
        }
        self.json(request).await
    }

    // Plumbing.

    /// A JSON request to a management API path, with the usual time limit.
    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        Ok(self
            .http
            .request(method, self.server.api(path)?)
            .timeout(REQUEST_TIMEOUT))
    }

    /// Sends `request` with the token and parses a 2xx answer as `T`.
    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = self.send(request).await?;
        let what = format!("{} {}", response.status(), response.url().path());
        let body = response
            .bytes()
            .await
            .with_context(|| format!("reading the server's answer ({what})"))?;
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "the server's answer ({what}) is not what this airlift expects; are the server and the CLI the same version?"
            )
        })
    }

    /// Sends `request` with the token; a non-2xx answer becomes an [`ApiError`].
    async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let request = request
            .bearer_auth(&self.token)
            .build()
            .context("building the request")?;
        let what = format!("{} {}", request.method(), request.url());
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|error| self.transport_error(error, &what))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(self.api_error(status, response).await.into())
    }

    fn transport_error(&self, error: reqwest::Error, what: &str) -> anyhow::Error {
        let hint = if error.is_connect() {
            format!(
                "cannot connect to the server at {}; check the URL and that airlift-server runs there",
                self.server
            )
        } else if error.is_timeout() {
            format!("the server at {} did not answer in time", self.server)
        } else {
            format!("talking to the server at {}", self.server)
        };
        anyhow::Error::new(error).context(format!("{hint} ({what})"))
    }

    async fn api_error(&self, status: StatusCode, mut response: Response) -> ApiError {
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= ERROR_BODY_LIMIT {
                break;
            }
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => (error.code, error.message),
            Err(_) => {
                // Not from airlift-server itself: a proxy, or the wrong URL.
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("the server answered {status} without a message")
                } else {
                    let short: String = text.chars().take(200).collect();
                    format!("the server answered {status}: {short}")
                };
                (String::new(), message)
            }
        };
        match status {
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized {
                server: self.server.clone(),
                message,
            },
            StatusCode::FORBIDDEN => ApiError::Forbidden { message },
            _ => ApiError::Status {
                status,
                code,
                message,
            },
        }
    }
}

/// The [`ApiError`] inside `error`, if the server answered with one.
pub fn api_error(error: &anyhow::Error) -> Option<&ApiError> {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<ApiError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerUrl {
        "https://updates.example.com".parse().expect("valid")
    }

    #[test]
    fn an_empty_device_query_has_no_parameters() {
        let url = DeviceQuery::default().url(&server()).expect("url");
        assert_eq!(url.as_str(), "https://updates.example.com/api/v1/devices");
    }

    #[test]
    fn device_filters_become_the_servers_parameters() {
        let query = DeviceQuery {
            status: Some(DeviceStatus::Accepted),
            device_type: Some("rpi4".into()),
            tag: Some("canary".into()),
            attributes: vec![
                ("region".into(), "eu-west".into()),
                ("rack".into(), "b 12".into()),
            ],
            installed: vec![("rootfs".into(), "1.2.0".into())],
            where_expression: None,
            page: Some(2),
            per_page: Some(50),
            offline: false,
        };
        assert_eq!(
            query.params(),
            [
                ("status", "accepted".to_owned()),
                ("device_type", "rpi4".to_owned()),
                ("tag", "canary".to_owned()),
                ("attributes", "region=eu-west,rack=b 12".to_owned()),
                ("installed", "rootfs=1.2.0".to_owned()),
                ("page", "2".to_owned()),
                ("per_page", "50".to_owned()),
            ]
        );
        let url = query.url(&server()).expect("url");
        assert_eq!(
            url.query(),
            Some(
                "status=accepted&device_type=rpi4&tag=canary\
                 &attributes=region%3Deu-west%2Crack%3Db+12&installed=rootfs%3D1.2.0\
                 &page=2&per_page=50"
            )
        );
        let decoded: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            decoded[3],
            ("attributes".into(), "region=eu-west,rack=b 12".into())
        );
    }

    #[test]
    fn values_that_look_like_syntax_are_encoded() {
        let query = DeviceQuery {
            tag: Some("a&b=c".into()),
            device_type: Some("x+y".into()),
            ..DeviceQuery::default()
        };
        let url = query.url(&server()).expect("url");
        let decoded: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            decoded,
            [
                ("device_type".into(), "x+y".into()),
                ("tag".into(), "a&b=c".into())
            ]
        );
    }
}
