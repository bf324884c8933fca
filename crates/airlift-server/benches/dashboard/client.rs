//! A signed-in dashboard viewer: an admin API token exchanged at the
//! sign-in form for a session cookie, which every request then carries;
//! and the admin's and devices' HTTP calls the benchmark needs.

use crate::ADMIN_TOKEN;
use anyhow::{bail, ensure, Context, Result};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The dashboard's session cookie.
const SESSION_COOKIE: &str = "airlift_session";

/// An HTTP client that follows no redirect (a page that sends the viewer
/// to the sign-in form must not be timed as a page).
pub fn client() -> Result<Client> {
    Ok(Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build()?)
}

/// One signed-in browser.
#[derive(Clone)]
pub struct Viewer {
    client: Client,
    base: String,
    cookie: String,
}

impl Viewer {
    /// Signs in at `base` with `token`, as the sign-in form posts it.
    pub async fn sign_in(client: &Client, base: &str, token: &str) -> Result<Self> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("next", "/ui/")
            .finish();
        let response = client
            .post(format!("{base}/ui/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .context("sign-in")?;
        ensure!(
            response.status() == StatusCode::SEE_OTHER || response.status().is_redirection(),
            "sign-in answered {}",
            response.status()
        );
        let cookie = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let pair = v.split(';').next()?.trim();
                pair.starts_with(SESSION_COOKIE).then(|| pair.to_owned())
            })
            .context("sign-in set no session cookie")?;
        Ok(Self {
            client: client.clone(),
            base: base.to_owned(),
            cookie,
        })
    }

    /// `GET path`: how long the whole answer took, and its size. Anything
    /// but 200 is an error (a redirect to sign-in or a refused filter
    /// would be fast and wrong).
    pub async fn time(&self, path: &str) -> Result<(Duration, usize)> {
        let started = Instant::now();
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await?;
        let elapsed = started.elapsed();
        if status != StatusCode::OK {
            bail!(
                "GET {path}: {status} {}{}",
                location.map(|l| format!("to {l} ")).unwrap_or_default(),
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok((elapsed, body.len()))
    }

    /// `GET path` as a stream (the live events), once its headers came.
    pub async fn open(&self, path: &str) -> Result<reqwest::Response> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        ensure!(
            response.status() == StatusCode::OK,
            "GET {path}: {}",
            response.status()
        );
        Ok(response)
    }
}

/// The management API as the admin token calls it.
pub struct Admin {
    client: Client,
    base: String,
}

impl Admin {
    pub fn new(client: &Client, base: &str) -> Self {
        Self {
            client: client.clone(),
            base: base.to_owned(),
        }
    }

    /// `POST /api/v1{path}` with a JSON or raw body; the answer when it is
    /// `expected`.
    pub async fn post(
        &self,
        path: &str,
        body: reqwest::Body,
        json: bool,
        expected: StatusCode,
    ) -> Result<Value> {
        let mut request = self
            .client
            .post(format!("{}/api/v1{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .body(body);
        if json {
            request = request.header("content-type", "application/json");
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status == expected, "POST {path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}
