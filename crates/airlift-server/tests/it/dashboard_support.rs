//! What the `dashboard_*` tests share: a signed-in browser with JavaScript
//! off (plain HTTP with the session cookie and the CSRF token carried by
//! hand), tokens of a role, and picking text out of pages.

use crate::support::{json_status, TestServer};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::json;

/// A signed-in browser with JavaScript off: the session cookie and the
/// CSRF token carried by hand, redirects not followed.
pub struct Browser {
    client: Client,
    base: String,
    cookie: String,
    pub csrf: String,
}

/// An answer: its status, where it leads, its body.
pub struct Answer {
    pub status: StatusCode,
    pub location: String,
    pub hx_redirect: String,
    pub body: String,
}

impl Browser {
    pub async fn sign_in(server: &TestServer, token: &str) -> Browser {
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let response = client
            .post(format!("{}/ui/sign-in", server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "token={}",
                form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
            ))
            .send()
            .await
            .expect("sign in");
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "signed in");
        let cookie = response
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("session cookie")
            .to_owned();
        let mut browser = Browser {
            client,
            base: server.url.clone(),
            cookie,
            csrf: String::new(),
        };
        let page = browser.get("/ui/packages").await.body;
        browser.csrf = between(&page, "data-csrf=\"", "\"")
            .expect("the page carries the CSRF token")
            .to_owned();
        browser
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (location, hx_redirect) = (header(LOCATION.as_str()), header("hx-redirect"));
        Answer {
            status: response.status(),
            location,
            hx_redirect,
            body: response.text().await.expect("body"),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .expect("page");
        Self::answer(response).await
    }

    /// Posts a form, with the page's CSRF token unless `csrf` is false.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)], csrf: bool) -> Answer {
        let mut body = form_urlencoded::Serializer::new(String::new());
        if csrf {
            body.append_pair("_csrf", &self.csrf);
        }
        for (name, value) in fields {
            body.append_pair(name, value);
        }
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.finish())
            .send()
            .await
            .expect("post");
        Self::answer(response).await
    }

    /// Posts a file as `dashboard.js` does: the raw bytes, the CSRF token
    /// in a header.
    pub async fn upload(&self, file: Vec<u8>, csrf: bool) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/ui/packages/upload", self.base))
            .header(COOKIE, &self.cookie)
            .header("content-type", "application/octet-stream")
            .header("hx-request", "true")
            .body(file);
        if csrf {
            request = request.header("x-csrf-token", &self.csrf);
        }
        Self::answer(request.send().await.expect("upload")).await
    }
}

pub fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

/// A token of `role` made through the API; its secret.
pub async fn token(server: &TestServer, name: &str, role: &str) -> String {
    let created = json_status(
        server
            .admin_post("/tokens", json!({"name": name, "role": role}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    created["secret"].as_str().expect("secret").to_owned()
}
