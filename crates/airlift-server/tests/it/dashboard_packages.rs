//! The dashboard's packages over HTTP: the list, uploading as the browser
//! script does (the raw file with the CSRF header), a package's manifest
//! as a person reads it, and deleting (refused while in use, with the
//! API's reason on the page). Also the signed-in browser the other
//! `dashboard_*` tests of packages, deployments, tokens and the audit log
//! use.

use crate::support::{
    accepted_device, build_package, json_status, Backend, TestServer, ADMIN_TOKEN,
};
use airlift_package::SigningKey;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

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

#[tokio::test]
async fn packages_are_uploaded_read_and_deleted_in_the_browser() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let browser = Browser::sign_in(&server, ADMIN_TOKEN).await;

        let empty = browser.get("/ui/packages").await;
        assert_eq!(empty.status, StatusCode::OK);
        assert!(
            empty.body.contains("No package is stored yet"),
            "{}",
            empty.body
        );
        assert!(empty.body.contains(r#"data-upload="/ui/packages/upload""#));

        // Uploaded as the script sends it: answered with where to go.
        let file = build_package(&server.signer, "rootfs", "1.2.0", "pi4", 3);
        let uploaded = browser.upload(file.clone(), true).await;
        assert_eq!(uploaded.status, StatusCode::CREATED, "{}", uploaded.body);
        let id = uploaded
            .hx_redirect
            .strip_prefix("/ui/packages/")
            .expect("to the new package")
            .to_owned();

        // Refusals come back as the API's words, for the script to show.
        let stranger = SigningKey::generate().expect("key");
        let untrusted = browser
            .upload(build_package(&stranger, "rootfs", "6.6.6", "pi4", 0), true)
            .await;
        assert_eq!(untrusted.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            untrusted.body.starts_with("package refused"),
            "{}",
            untrusted.body
        );
        assert!(
            !untrusted.body.contains('<'),
            "plain text: {}",
            untrusted.body
        );
        let again = browser.upload(file.clone(), true).await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        assert!(again.body.contains("already exists"), "{}", again.body);
        let forged = browser.upload(file, false).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "no CSRF header");

        let list = browser.get("/ui/packages").await.body;
        assert!(list.contains(&format!("/ui/packages/{id}")), "{list}");
        assert!(list.contains("1.2.0"), "{list}");
        let api = server.admin_get("/packages?per_page=1").await;
        assert_eq!(api["total"], 1);
        assert_eq!(api["items"][0]["id"], id.as_str());

        let detail = browser.get(&format!("/ui/packages/{id}")).await;
        assert_eq!(detail.status, StatusCode::OK);
        let key_id = server.signer.public_key().key_id().to_string();
        assert!(detail.body.contains(&key_id), "{}", detail.body);
        for words in [
            "trusted",
            "image",
            "rootfs",
            "Security version",
            "Deploy this package",
        ] {
            assert!(detail.body.contains(words), "{words}: {}", detail.body);
        }
        assert!(!detail.body.contains("not trusted"), "{}", detail.body);

        // In use: refused, with the API's reason on the page.
        let device = accepted_device(&server, "SN-P1", "pi4").await;
        let deployment = json_status(
            server
                .admin_post(
                    "/deployments",
                    json!({"name": "t", "package_id": id, "target": {"devices": [device.id]}}),
                )
                .await,
            StatusCode::CREATED,
        )
        .await;
        let refused = browser
            .post(&format!("/ui/packages/{id}/delete"), &[], true)
            .await;
        assert_eq!(refused.status, StatusCode::CONFLICT);
        assert!(refused.body.contains("cancel it first"), "{}", refused.body);
        assert!(refused.body.contains("Not deleted"), "{}", refused.body);

        let cancel = server
            .admin_post(
                &format!(
                    "/deployments/{}/cancel",
                    deployment["id"].as_str().expect("id")
                ),
                Value::Null,
            )
            .await;
        assert_eq!(cancel.status(), StatusCode::OK);
        let forged = browser
            .post(&format!("/ui/packages/{id}/delete"), &[], false)
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        let deleted = browser
            .post(&format!("/ui/packages/{id}/delete"), &[], true)
            .await;
        assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
        assert!(
            deleted.location.starts_with("/ui/packages?deleted=rootfs"),
            "{}",
            deleted.location
        );
        let after = browser.get(&deleted.location).await.body;
        assert!(after.contains("Deleted rootfs 1.2.0"), "{after}");
        assert_eq!(server.admin_get("/packages").await["total"], 0);
        let gone = browser.get(&format!("/ui/packages/{id}")).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_viewer_reads_packages_but_gets_no_control() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (package, _) = server.upload("rootfs", "1.0.0", "pi4").await;
    let secret = token(&server, "watcher", "viewer").await;
    let viewer = Browser::sign_in(&server, &secret).await;

    let list = viewer.get("/ui/packages").await.body;
    assert!(list.contains("rootfs"), "{list}");
    assert!(
        !list.contains("data-upload"),
        "no upload for a viewer: {list}"
    );
    let detail = viewer
        .get(&format!("/ui/packages/{}", package.id))
        .await
        .body;
    assert!(!detail.contains("Delete package"), "{detail}");
    assert!(!detail.contains("Deploy this package"), "{detail}");

    // The server refuses whatever the page shows.
    let delete = viewer
        .post(&format!("/ui/packages/{}/delete", package.id), &[], true)
        .await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
    assert!(delete.body.contains("operator"), "{}", delete.body);
    let upload = viewer
        .upload(
            build_package(&server.signer, "rootfs", "2.0.0", "pi4", 0),
            true,
        )
        .await;
    assert_eq!(upload.status, StatusCode::FORBIDDEN);
    assert_eq!(server.admin_get("/packages").await["total"], 1);
}
