//! The dashboard's deployments over HTTP: the create form (the API's own
//! field errors beside their fields, nothing stored), the list with its
//! status filter, a deployment's page with its phases, breaker, failures
//! grouped by reason and device table, and the controls.

use crate::dashboard_support::{between, token, Browser};
use crate::support::{accepted_device, tag_device, Backend, TestServer, ADMIN_TOKEN};
use airlift_protocol::state::UpdateState;
use reqwest::StatusCode;

/// The phased form's fields, with `threshold` as the failure threshold.
fn phased_form<'a>(package: &'a str, name: &'a str, threshold: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", name),
        ("package", package),
        ("target", "tag"),
        ("target-tag", "fleet"),
        ("strategy", "phased"),
        ("phase-0-name", "half"),
        ("phase-0-admits", "percent"),
        ("phase-0-value", "50"),
        ("phase-0-soak", "1h"),
        ("phase-1-admits", "percent"),
        ("phase-1-value", ""),
        ("phase-2-admits", "percent"),
        ("phase-2-value", "100"),
        ("threshold-kind", "percent"),
        ("threshold", threshold),
        ("on-failure", "pause"),
        ("advance", "manual"),
        ("device-timeout", "2h"),
        ("window-start", ""),
        ("window-end", ""),
    ]
}

#[tokio::test]
async fn deployments_are_created_watched_and_steered_in_the_browser() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("rootfs", "2.0.0", "pi4").await;
        let package_id = package.id.to_string();
        for serial in ["SN-A", "SN-B", "SN-C"] {
            let device = accepted_device(&server, serial, "pi4").await;
            tag_device(&server, &device, "fleet").await;
        }
        let browser = Browser::sign_in(&server, ADMIN_TOKEN).await;

        let new = browser
            .get(&format!("/ui/deployments/new?package={package_id}"))
            .await;
        assert_eq!(new.status, StatusCode::OK);
        assert!(
            new.body
                .contains(&format!(r#"<option value="{package_id}" selected>"#)),
            "{}",
            new.body
        );

        // A bad threshold: the API's words beside the threshold field, what
        // was typed kept, nothing stored.
        let refused = browser
            .post(
                "/ui/deployments/new",
                &phased_form(&package_id, "canary <b>", "150"),
                true,
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            refused.body
        );
        let field =
            between(&refused.body, r#"id="threshold""#, "</div>").expect("the threshold field");
        assert!(field.contains(r#"value="150""#), "{field}");
        assert!(field.contains(r#"aria-invalid="true""#), "{field}");
        assert!(field.contains("must be within 0–100"), "{field}");
        assert!(
            refused.body.contains(r#"value="canary &lt;b&gt;""#),
            "the name is kept, escaped"
        );
        assert!(
            refused.body.contains(r#"value="1h""#),
            "the phases are kept"
        );
        let nobody = browser
            .post(
                "/ui/deployments/new",
                &phased_form(&package_id, "x", "5")
                    .into_iter()
                    .map(|(k, v)| {
                        if k == "target-tag" {
                            (k, "nobody")
                        } else {
                            (k, v)
                        }
                    })
                    .collect::<Vec<_>>(),
                true,
            )
            .await;
        assert_eq!(nobody.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            nobody.body.contains(r#"id="target-error""#),
            "{}",
            nobody.body
        );
        let forged = browser
            .post(
                "/ui/deployments/new",
                &phased_form(&package_id, "x", "5"),
                false,
            )
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        assert_eq!(
            server.admin_get("/deployments").await["total"],
            0,
            "nothing stored"
        );

        let created = browser
            .post(
                "/ui/deployments/new",
                &phased_form(&package_id, "rollout one", "5"),
                true,
            )
            .await;
        assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
        let path = created.location.clone();
        let id = path
            .strip_prefix("/ui/deployments/")
            .expect("to the deployment")
            .to_owned();
        let stored = server.admin_get(&format!("/deployments/{id}")).await;
        assert_eq!(
            stored["strategy"]["phases"].as_array().map(Vec::len),
            Some(2),
            "blank row left out"
        );
        assert_eq!(stored["strategy"]["device_timeout_secs"], 7200);
        assert_eq!(stored["strategy"]["advance"], "manual");

        let detail = browser.get(&path).await;
        assert_eq!(detail.status, StatusCode::OK);
        for words in [
            "Rollout",
            "Circuit breaker",
            "closed",
            "half",
            "<progress",
            "more than 5 %",
            "Pause",
            "Advance to the next phase",
        ] {
            assert!(detail.body.contains(words), "{words}: {}", detail.body);
        }
        assert!(detail
            .body
            .contains(&format!(r#"data-live-on="deployment:{id} everything""#)));
        let fragment = browser.get(&format!("{path}/fragment")).await;
        assert_eq!(fragment.status, StatusCode::OK);
        assert!(!fragment.body.contains("<html"), "only the region");
        assert!(fragment.body.contains("Circuit breaker"));

        // The controls, each through the API.
        let control = |action: &'static str| {
            let browser = &browser;
            let path = format!("{path}/control");
            async move { browser.post(&path, &[("action", action)], true).await }
        };
        let paused = control("pause").await;
        assert_eq!(paused.status, StatusCode::SEE_OTHER);
        assert_eq!(paused.location, format!("{path}?done=pause"));
        let page = browser.get(&paused.location).await.body;
        assert!(page.contains("Paused:"), "{page}");
        assert!(
            page.contains(r#"value="resume""#) && !page.contains(r#"value="pause""#),
            "{page}"
        );
        assert_eq!(control("resume").await.status, StatusCode::SEE_OTHER);
        assert_eq!(control("advance").await.status, StatusCode::SEE_OTHER);
        assert_eq!(
            server.admin_get(&format!("/deployments/{id}")).await["rollout"]["phase"],
            1
        );
        let forged = browser
            .post(&format!("{path}/control"), &[("action", "cancel")], false)
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        assert_eq!(control("cancel").await.status, StatusCode::SEE_OTHER);
        let late = control("advance").await;
        assert_eq!(late.status, StatusCode::CONFLICT);
        assert!(late.body.contains("Refused:"), "{}", late.body);
        assert!(late.body.contains("cannot advance now"), "{}", late.body);

        let cancelled = browser.get("/ui/deployments?status=cancelled").await.body;
        assert!(cancelled.contains("rollout one"), "{cancelled}");
        let active = browser.get("/ui/deployments?status=active").await.body;
        assert!(!active.contains("rollout one"), "{active}");
        assert!(active.contains("No deployment has this status"), "{active}");
        assert_eq!(
            server
                .admin_get("/deployments?status=cancelled&per_page=1")
                .await["total"],
            1
        );
    }
}

#[tokio::test]
async fn failures_are_grouped_by_reason_escaped_and_lead_to_their_devices() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("rootfs", "2.0.0", "pi4").await;
        let broken = accepted_device(&server, "SN-F1", "pi4").await;
        let also = accepted_device(&server, "SN-F2", "pi4").await;
        let fine = accepted_device(&server, "SN-F3", "pi4").await;
        let deployment = server.deploy(&package, &[&broken, &also, &fine]).await;
        let reason = "<script>alert(1)</script> disk full";
        for device in [&broken, &also] {
            device.check_in(&server).await;
            let report = device
                .report(&server, deployment, UpdateState::Failure, Some(reason))
                .await;
            assert_eq!(report.status(), StatusCode::OK);
        }
        let browser = Browser::sign_in(&server, ADMIN_TOKEN).await;
        let path = format!("/ui/deployments/{deployment}");
        let page = browser.get(&path).await.body;
        assert!(!page.contains("<script>alert"), "escaped: {page}");
        let groups = between(&page, "Failures by reason", "</table>").expect("the groups");
        assert!(
            groups.contains("&lt;script&gt;alert(1)&lt;/script&gt; disk full"),
            "{groups}"
        );
        assert!(groups.contains("<td class=\"num\">2</td>"), "{groups}");
        assert!(groups.contains("/ui/devices?deployment="), "{groups}");

        // The group's link shows its two devices in the page's table.
        let link = between(groups, "href=\"", "\"")
            .expect("a link")
            .replace("&amp;", "&");
        let listed = browser.get(&link).await.body;
        let table = between(&listed, "id=\"devices\"", "</html>").expect("the table");
        for device in [&broken, &also] {
            assert!(
                table.contains(&device.id.expect("id").to_string()),
                "{table}"
            );
        }
        assert!(
            !table.contains(&fine.id.expect("id").to_string()),
            "{table}"
        );
        let pending = browser.get(&format!("{path}?state=pending")).await.body;
        assert!(pending.contains(&fine.id.expect("id").to_string()));
        let bad = browser.get(&format!("{path}?state=broken")).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let unknown = browser
            .get(&format!("/ui/deployments/{}", uuid::Uuid::new_v4()))
            .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_viewer_watches_deployments_but_gets_no_control() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (package, _) = server.upload("rootfs", "2.0.0", "pi4").await;
    let device = accepted_device(&server, "SN-V", "pi4").await;
    let deployment = server.deploy(&package, &[&device]).await;
    let secret = token(&server, "watcher", "viewer").await;
    let viewer = Browser::sign_in(&server, &secret).await;

    let list = viewer.get("/ui/deployments").await.body;
    assert!(list.contains(&deployment.to_string()), "{list}");
    assert!(!list.contains("New deployment"), "{list}");
    let detail = viewer
        .get(&format!("/ui/deployments/{deployment}"))
        .await
        .body;
    assert!(!detail.contains("/control"), "{detail}");
    let form = viewer.get("/ui/deployments/new").await;
    assert_eq!(form.status, StatusCode::FORBIDDEN);
    assert!(
        form.body.contains("an operator or admin token is needed"),
        "{}",
        form.body
    );
    let cancel = viewer
        .post(
            &format!("/ui/deployments/{deployment}/control"),
            &[("action", "cancel")],
            true,
        )
        .await;
    assert_eq!(cancel.status, StatusCode::FORBIDDEN);
    assert_eq!(
        server
            .admin_get(&format!("/deployments/{deployment}"))
            .await["status"],
        "active"
    );
}
