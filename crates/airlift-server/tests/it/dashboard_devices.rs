//! The dashboard's devices, device detail and overview over HTTP: pages a
//! signed-in browser reads (with JavaScript off), forms it posts, and the
//! numbers checked against the API's.

use crate::support::{
    accepted_device, json_ok, json_status, Backend, TestDevice, TestServer, ADMIN_TOKEN,
};
use airlift_protocol::device::{Progress, StatusReport};
use airlift_protocol::state::UpdateState;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A signed-in browser without cookie jar or JavaScript: the session
/// cookie and the CSRF token, carried by hand.
struct Browser {
    client: Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Browser {
    async fn sign_in(server: &TestServer, token: &str) -> Browser {
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let response = client
            .post(format!("{}/ui/sign-in", server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("token", token)
                    .append_pair("next", "/ui/")
                    .finish(),
            )
            .send()
            .await
            .expect("sign in");
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
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
        let (_, page) = browser.get("/ui/devices").await;
        browser.csrf = between(&page, "data-csrf=\"", "\"")
            .expect("csrf")
            .to_owned();
        browser
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .expect("page");
        let status = response.status();
        (status, response.text().await.expect("html"))
    }

    /// Posts a form (with the CSRF token unless `csrf` is false); the
    /// status, where it leads, and the body.
    async fn post(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        csrf: bool,
    ) -> (StatusCode, String, String) {
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
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, location, response.text().await.expect("body"))
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

/// The number an overview card shows for `word` (`data-count="word"`).
fn shown_count(page: &str, word: &str) -> u64 {
    let marker = format!("data-count=\"{word}\">");
    between(page, &marker, "<")
        .unwrap_or_else(|| panic!("no count for {word} in {page}"))
        .trim()
        .parse()
        .expect("a number")
}

async fn api_total(server: &TestServer, query: &str) -> u64 {
    server
        .admin_get(&format!("/devices?{query}&per_page=1"))
        .await["total"]
        .as_u64()
        .expect("total")
}

async fn device_json(server: &TestServer, device: &TestDevice) -> Value {
    server
        .admin_get(&format!("/devices/{}", device.id.expect("known")))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_list_filters_sorts_and_acts_on_a_selection() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let mut accepted = accepted_device(&server, "SN-accepted-1", "rpi4").await;
        accepted
            .inventory
            .attributes
            .insert("note".into(), "<script>alert(1)</script>".into());
        accepted.check_in(&server).await;
        let mut hostile = TestDevice::new("<script>alert(2)</script>", "rpi4");
        assert_eq!(hostile.authenticate(&server).await, StatusCode::ACCEPTED);
        let mut waiting = TestDevice::new("SN-waiting-3", "rpi4");
        assert_eq!(waiting.authenticate(&server).await, StatusCode::ACCEPTED);
        let browser = Browser::sign_in(&server, ADMIN_TOKEN).await;

        let (status, page) = browser.get("/ui/devices").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("SN-accepted-1") && page.contains("SN-waiting-3"));
        assert!(!page.contains("<script>alert"), "device text is escaped");
        assert!(page.contains("&lt;script&gt;alert(2)"));
        assert!(page.contains("3 in all"), "{page}");

        let (_, pending) = browser.get("/ui/devices?status=pending").await;
        assert!(pending.contains("SN-waiting-3") && !pending.contains("SN-accepted-1"));
        let (_, searched) = browser.get("/ui/devices?search=accepted-1").await;
        assert!(searched.contains("SN-accepted-1") && !searched.contains("SN-waiting-3"));
        assert!(
            searched.contains("value=\"accepted-1\""),
            "the filter stays in the form"
        );
        let (_, sorted) = browser.get("/ui/devices?sort=-identity").await;
        let waiting_at = sorted.find("SN-waiting-3").expect("listed");
        assert!(waiting_at < sorted.find("SN-accepted-1").expect("listed"));
        assert!(sorted.contains("aria-sort=\"descending\""));
        let (status, bad) = browser.get("/ui/devices?sort=nonsense").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            bad.contains("field-error") || bad.contains("notice bad"),
            "{bad}"
        );

        // Tag two devices; a tag the API refuses is shown next to the field,
        // kept as typed, and stored nowhere.
        let a = accepted.id.expect("id").to_string();
        let w = waiting.id.expect("id").to_string();
        let (status, location, _) = browser
            .post(
                "/ui/devices/bulk",
                &[
                    ("back", "status=pending"),
                    ("action", "add-tag"),
                    ("tag", "lab"),
                    ("device", &a),
                    ("device", &w),
                ],
                true,
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(
            location.contains("status=pending") && location.contains("done=add-tag&count=2"),
            "{location}"
        );
        assert_eq!(
            device_json(&server, &accepted).await["tags"],
            serde_json::json!(["lab"])
        );
        let (status, _, page) = browser
            .post(
                "/ui/devices/bulk",
                &[("action", "add-tag"), ("tag", "no spaces!"), ("device", &a)],
                true,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("id=\"bulk-tag-error\""), "{page}");
        assert!(page.contains("value=\"no spaces!\""), "{page}");
        assert_eq!(
            device_json(&server, &accepted).await["tags"],
            serde_json::json!(["lab"])
        );

        // Accept through the bulk form; a forged post without the token is refused.
        let (status, _, _) = browser
            .post(
                "/ui/devices/bulk",
                &[("action", "accept"), ("device", &w)],
                false,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(device_json(&server, &waiting).await["status"], "pending");
        let (status, _, _) = browser
            .post(
                "/ui/devices/bulk",
                &[("action", "accept"), ("device", &w)],
                true,
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(device_json(&server, &waiting).await["status"], "accepted");
        let (_, tagged) = browser.get("/ui/devices?tag=lab&status=accepted").await;
        assert!(tagged.contains("2 in all"), "{tagged}");

        // A viewer sees no control, and the server refuses its posts anyway.
        let created = json_status(
            server
                .admin_post(
                    "/tokens",
                    serde_json::json!({"name": "watcher", "role": "viewer"}),
                )
                .await,
            StatusCode::CREATED,
        )
        .await;
        let token = created["secret"].as_str().expect("secret");
        let viewer = Browser::sign_in(&server, token).await;
        let (_, page) = viewer.get("/ui/devices").await;
        assert!(
            !page.contains("Accept selected") && !page.contains("type=\"checkbox\""),
            "{page}"
        );
        let (status, _, _) = viewer
            .post(
                "/ui/devices/bulk",
                &[("action", "reject"), ("device", &a)],
                true,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(device_json(&server, &accepted).await["status"], "accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_detail_shows_inventory_progress_history_and_controls() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let mut device = accepted_device(&server, "SN-detail", "rpi4").await;
        device
            .inventory
            .attributes
            .insert("<b>name</b>".into(), "<script>alert(3)</script>".into());
        device.check_in(&server).await;
        let (package, _) = server.upload("rootfs", "2.0.0", "rpi4").await;
        let deployment = server.deploy(&package, &[&device]).await;
        json_ok(
            device
                .report(&server, deployment, UpdateState::Downloading, None)
                .await,
        )
        .await;
        let downloading = StatusReport {
            state: UpdateState::Downloading,
            progress: Some(Progress {
                done: 250,
                total: 1000,
            }),
            message: None,
        };
        json_ok(device.send_report(&server, deployment, &downloading).await).await;
        let browser = Browser::sign_in(&server, ADMIN_TOKEN).await;
        let id = device.id.expect("id");

        let (status, page) = browser.get(&format!("/ui/devices/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        let key_id = airlift_package::PublicKey::from_pem(device.public_key().trim())
            .expect("key")
            .key_id()
            .to_string();
        assert!(page.contains(&key_id), "key id shown");
        assert!(page.contains("SN-detail") && page.contains("os") && page.contains("1.0.0"));
        assert!(
            !page.contains("<script>alert") && !page.contains("<b>name"),
            "escaped"
        );
        assert!(page.contains("&lt;script&gt;alert(3)"));
        assert!(
            page.contains("value=\"25\"") && page.contains("25 %"),
            "download progress"
        );
        assert!(page.contains(&format!("data-live-on=\"device:{id} everything\"")));
        assert!(page.contains("Check in now"));

        let reason = "health check failed:\n<b>exit 3</b>\nsee journal";
        json_ok(
            device
                .report(&server, deployment, UpdateState::Failure, Some(reason))
                .await,
        )
        .await;
        let (status, fragment) = browser.get(&format!("/ui/devices/{id}/fragment")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(fragment.starts_with("<div id=\"device\""), "{fragment}");
        assert!(
            fragment.contains("health check failed:\n&lt;b&gt;exit 3&lt;/b&gt;\nsee journal"),
            "the whole reason, escaped: {fragment}"
        );
        assert!(
            fragment.contains("status-downloading"),
            "history keeps the download"
        );

        // Tags: saved through the API; refused ones shown by the field, kept, not stored.
        let path = format!("/ui/devices/{id}/tags");
        let (status, location, _) = browser.post(&path, &[("tags", "lab, east")], true).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(location.ends_with("?done=tags"));
        assert_eq!(
            device_json(&server, &device).await["tags"],
            serde_json::json!(["east", "lab"])
        );
        let (status, _, page) = browser.post(&path, &[("tags", "ok bad/tag")], true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            page.contains("id=\"tags-error\"") && page.contains("value=\"ok bad/tag\""),
            "{page}"
        );
        assert_eq!(
            device_json(&server, &device).await["tags"],
            serde_json::json!(["east", "lab"])
        );

        // Controls call the API; its refusals are shown in its words.
        let action = format!("/ui/devices/{id}/action");
        let (status, location, _) = browser.post(&action, &[("action", "check-in")], true).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        let (status, _, _) = browser.post(&action, &[("action", "reject")], true).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, _, page) = browser.post(&action, &[("action", "check-in")], true).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(page.contains("only an accepted device checks in"), "{page}");
        let (status, _) = browser
            .get(&format!(
                "/ui/devices/{}",
                airlift_protocol::DeviceId::new()
            ))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

/// Reads the overview until its counts for `words` equal `expected`
/// (the overview is computed at most once per change for all viewers, so
/// a count that moves with time alone may lag a few seconds).
async fn overview_shows(browser: &Browser, expected: &[(&str, u64)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, page) = browser.get("/ui/").await;
        assert_eq!(status, StatusCode::OK);
        let shown: Vec<(&str, u64)> = expected
            .iter()
            .map(|(w, _)| (*w, shown_count(&page, w)))
            .collect();
        if shown == expected {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "overview shows {shown:?}, the API {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_numbers_equal_the_api() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let browser = Browser::sign_in(&server, ADMIN_TOKEN).await;
        let (_, empty) = browser.get("/ui/").await;
        assert!(
            empty.contains("airlift demo --keep"),
            "the empty fleet says what to do"
        );

        let first = accepted_device(&server, "SN-1", "rpi4").await;
        let second = accepted_device(&server, "SN-2", "rpi4").await;
        let mut third = accepted_device(&server, "SN-3", "rpi4").await;
        third
            .inventory
            .installed
            .insert("os".into(), "2.0.0".into());
        for device in [&first, &second, &third] {
            device.check_in(&server).await;
        }
        let mut pending = TestDevice::new("SN-4", "rpi4");
        assert_eq!(pending.authenticate(&server).await, StatusCode::ACCEPTED);
        let mut rejected = TestDevice::new("SN-5", "rpi4");
        assert_eq!(rejected.authenticate(&server).await, StatusCode::ACCEPTED);
        let id = rejected.id.expect("id");
        server
            .admin_post(&format!("/devices/{id}/reject"), Value::Null)
            .await;

        let (package, _) = server.upload("os", "2.0.0", "rpi4").await;
        let deployment = server.deploy(&package, &[&first, &second]).await;
        json_ok(
            first
                .report(
                    &server,
                    deployment,
                    UpdateState::Failure,
                    Some("disk <full>"),
                )
                .await,
        )
        .await;

        // The test server polls every second: after three silent seconds
        // every accepted device is offline, and stays so.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let mut expected = Vec::new();
        for (word, query) in [
            ("pending", "status=pending"),
            ("accepted", "status=accepted"),
            ("rejected", "status=rejected"),
            ("offline", "connectivity=offline"),
        ] {
            expected.push((word, api_total(&server, query).await));
        }
        assert_eq!(
            expected,
            [
                ("pending", 1),
                ("accepted", 3),
                ("rejected", 1),
                ("offline", 3)
            ]
        );
        overview_shows(&browser, &expected).await;

        // Check-ins bring a device back online, in both (it keeps checking
        // in while the overview catches up, or it would fall silent again).
        let deadline = Instant::now() + Duration::from_secs(20);
        let page = loop {
            second.check_in(&server).await;
            // Its time is written behind, within a second.
            let offline = api_total(&server, "connectivity=offline").await;
            let online = api_total(&server, "connectivity=online").await;
            let (_, page) = browser.get("/ui/").await;
            if (offline, online, shown_count(&page, "offline")) == (2, 1, 2) {
                break page;
            }
            assert!(
                Instant::now() < deadline,
                "API: {offline} offline, {online} online; the overview still shows {}",
                shown_count(&page, "offline")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };

        // Versions, the deployment in flight, and the failure by reason,
        // each linking to a device list with the same number.
        assert!(page.contains("/ui/devices?installed=os%3D1.0.0"), "{page}");
        assert_eq!(api_total(&server, "installed=os%3D1.0.0").await, 2);
        assert!(
            page.contains(&format!("/ui/deployments/{deployment}")),
            "in flight"
        );
        assert!(
            page.contains("disk &lt;full&gt;") && !page.contains("disk <full>"),
            "{page}"
        );
        let link = between(&page, "href=\"/ui/devices?update_state=", "\"").expect("failure link");
        let link = link.replace("&amp;", "&");
        let (_, failed) = browser
            .get(&format!("/ui/devices?update_state={link}"))
            .await;
        assert!(
            failed.contains("1 in all") && failed.contains("SN-1"),
            "{failed}"
        );
        assert_eq!(api_total(&server, &format!("update_state={link}")).await, 1);
        // Every check-in so far is in the last hour's chart once written behind.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, page) = browser.get("/ui/").await;
            let counted: u64 = between(&page, "<p class=\"muted\">", " check-ins in the last hour")
                .and_then(|n| n.rsplit('>').next()?.trim().parse().ok())
                .unwrap_or(0);
            if counted >= 4 {
                break;
            }
            assert!(Instant::now() < deadline, "check-ins not counted: {page}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
