//! The dashboard's devices, device detail and overview over HTTP: pages a
//! signed-in browser reads (with JavaScript off), forms it posts, and the
//! numbers checked against the API's.

use crate::dashboard_support::{between, Answer, Browser};
use crate::support::{
    accepted_device, json_ok, json_status, Backend, TestDevice, TestServer, ADMIN_TOKEN,
};
use airlift_protocol::device::{Progress, StatusReport};
use airlift_protocol::state::UpdateState;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

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

        let Answer {
            status, body: page, ..
        } = browser.get("/ui/devices").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("SN-accepted-1") && page.contains("SN-waiting-3"));
        assert!(!page.contains("<script>alert"), "device text is escaped");
        assert!(page.contains("&lt;script&gt;alert(2)"));
        assert!(page.contains("3 in all"), "{page}");

        let pending = browser.get("/ui/devices?status=pending").await.body;
        assert!(pending.contains("SN-waiting-3") && !pending.contains("SN-accepted-1"));
        let searched = browser.get("/ui/devices?search=accepted-1").await.body;
        assert!(searched.contains("SN-accepted-1") && !searched.contains("SN-waiting-3"));
        assert!(
            searched.contains("value=\"accepted-1\""),
            "the filter stays in the form"
        );
        let sorted = browser.get("/ui/devices?sort=-identity").await.body;
        let waiting_at = sorted.find("SN-waiting-3").expect("listed");
        assert!(waiting_at < sorted.find("SN-accepted-1").expect("listed"));
        assert!(sorted.contains("aria-sort=\"descending\""));
        let Answer {
            status, body: bad, ..
        } = browser.get("/ui/devices?sort=nonsense").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            bad.contains("field-error") || bad.contains("notice bad"),
            "{bad}"
        );

        // Tag two devices; a tag the API refuses is shown next to the field,
        // kept as typed, and stored nowhere.
        let a = accepted.id.expect("id").to_string();
        let w = waiting.id.expect("id").to_string();
        let Answer {
            status, location, ..
        } = browser
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
        let Answer {
            status, body: page, ..
        } = browser
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
        let Answer { status, .. } = browser
            .post(
                "/ui/devices/bulk",
                &[("action", "accept"), ("device", &w)],
                false,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(device_json(&server, &waiting).await["status"], "pending");
        let Answer { status, .. } = browser
            .post(
                "/ui/devices/bulk",
                &[("action", "accept"), ("device", &w)],
                true,
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(device_json(&server, &waiting).await["status"], "accepted");
        let tagged = browser
            .get("/ui/devices?tag=lab&status=accepted")
            .await
            .body;
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
        // Not even an empty form: a viewer's pages post nothing but
        // signing out.
        for path in ["/ui/devices", "/ui/pending", &format!("/ui/devices/{a}")] {
            let page = viewer.get(path).await.body;
            assert!(
                !page.contains("Accept selected") && !page.contains("type=\"checkbox\""),
                "{path}: {page}"
            );
            assert_eq!(
                page.matches("method=\"post\"").count(),
                1,
                "{path} has a form besides signing out: {page}"
            );
            assert!(page.contains(r#"action="/ui/sign-out""#), "{path}: {page}");
            // The hostile identity (pending) and attribute (accepted) are
            // text on every page that shows them.
            assert!(!page.contains("<script>alert"), "{path}: {page}");
            assert!(page.contains("&lt;script&gt;alert"), "{path}: {page}");
        }
        // Nor is a viewer sent to a form it may not use.
        let overview = viewer.get("/ui/").await.body;
        assert!(overview.contains("No deployment is active"), "{overview}");
        assert!(!overview.contains("/ui/deployments/new"), "{overview}");
        assert_eq!(overview.matches("method=\"post\"").count(), 1, "{overview}");
        let Answer { status, .. } = viewer
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

        let Answer {
            status, body: page, ..
        } = browser.get(&format!("/ui/devices/{id}")).await;
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
        let Answer {
            status,
            body: fragment,
            ..
        } = browser.get(&format!("/ui/devices/{id}/fragment")).await;
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
        let Answer {
            status, location, ..
        } = browser.post(&path, &[("tags", "lab, east")], true).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(location.ends_with("?done=tags"));
        assert_eq!(
            device_json(&server, &device).await["tags"],
            serde_json::json!(["east", "lab"])
        );
        let Answer {
            status, body: page, ..
        } = browser.post(&path, &[("tags", "ok bad/tag")], true).await;
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
        let Answer {
            status, location, ..
        } = browser.post(&action, &[("action", "check-in")], true).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        let Answer { status, .. } = browser.post(&action, &[("action", "reject")], true).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let Answer {
            status, body: page, ..
        } = browser.post(&action, &[("action", "check-in")], true).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(page.contains("only an accepted device checks in"), "{page}");
        let Answer { status, .. } = browser
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
        let Answer {
            status, body: page, ..
        } = browser.get("/ui/").await;
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
        let empty = browser.get("/ui/").await.body;
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
            let page = browser.get("/ui/").await.body;
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
        let Answer { body: failed, .. } = browser
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
            let page = browser.get("/ui/").await.body;
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
