//! Roles and forgery: a viewer's pages offer no control that changes
//! anything, and a form posted without the session's CSRF token is
//! refused, whoever is signed in.

use crate::support::{eventually, open, text_of, texts_of, Dashboard};
use airlift_testkit::browser::{Browser, Locator};
use airlift_testkit::server::ADMIN_TOKEN;

/// The pages a viewer may read; what each needs is made by the test.
const PAGES: &[&str] = &["/", "/devices", "/pending", "/packages", "/deployments"];

/// Every control on the page that would change something: forms that
/// post (but signing out), buttons outside them, upload forms, selection
/// boxes.
async fn mutating_controls(browser: &Browser) -> Vec<String> {
    let script = r#"
        const found = [];
        for (const form of document.querySelectorAll("form")) {
            const method = (form.getAttribute("method") || "get").toLowerCase();
            const action = form.getAttribute("action") || "";
            if (action === "/ui/sign-out") continue;
            // Even an empty one: a form that may not be sent has no place
            // on a viewer's page.
            if (method === "post" || form.hasAttribute("data-upload")) {
                found.push("form " + method + " " + (action || form.getAttribute("data-upload"))
                    + ": " + form.outerHTML.slice(0, 80));
            }
        }
        for (const el of document.querySelectorAll("[hx-post],[hx-put],[hx-delete],[hx-patch]")) {
            found.push("htmx " + el.outerHTML.slice(0, 80));
        }
        for (const box of document.querySelectorAll("input[type=checkbox]")) {
            if (!box.closest("form[method=get], form:not([method])")) {
                found.push("checkbox " + (box.name || box.getAttribute("aria-label")));
            }
        }
        return found;
    "#;
    let found = browser.execute(script, Vec::new()).await.expect("script");
    found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_viewer_sees_no_control_it_may_not_use() {
    let dashboard = Dashboard::start();
    let fleet = dashboard.fleet("view", 2, true, |_| {});
    let queue = dashboard.fleet("wait", 1, false, |_| {});
    eventually("2 accepted and 1 pending device", || async {
        let accepted = dashboard.device_total("accepted").await;
        let pending = dashboard.device_total("pending").await;
        (accepted == 2 && pending == 1).then_some(())
    })
    .await;
    let package = dashboard.upload("2.0.0").await;
    let deployment = dashboard
        .api_post(
            "/deployments",
            serde_json::json!({
                "name": "viewer can look",
                "package_id": package["id"],
                "target": {"attributes": {"device_type": crate::support::DEVICE_TYPE}},
                "strategy": {"type": "all"},
            }),
        )
        .await;
    let devices = dashboard.api_get("/devices?status=accepted").await;
    let device = devices["items"][0]["id"].as_str().expect("a device");

    let viewer = dashboard.token("auditor", "viewer").await;
    let browser = dashboard.browser(&viewer).await;
    let mut pages: Vec<String> = PAGES.iter().map(|p| (*p).to_owned()).collect();
    pages.push(format!("/devices/{device}"));
    pages.push(format!("/packages/{}", package["id"].as_str().expect("id")));
    pages.push(format!(
        "/deployments/{}",
        deployment["id"].as_str().expect("id")
    ));
    for page in &pages {
        open(&browser, &dashboard.ui(page)).await;
        let controls = mutating_controls(&browser).await;
        assert!(
            controls.is_empty(),
            "a viewer sees controls on {page}: {controls:?}"
        );
    }
    // The admin pages are not even in the navigation; opened by address,
    // they say in words that they are for admins.
    let nav = texts_of(&browser, "nav[aria-label=Main] a").await;
    assert!(
        !nav.iter().any(|n| n == "Tokens" || n == "Audit log"),
        "{nav:?}"
    );
    for page in ["/tokens", "/audit"] {
        browser.goto(&dashboard.ui(page)).await.expect("open");
        let said = text_of(&browser, "[role=alert]").await.unwrap_or_default();
        assert!(said.contains("403"), "a viewer reached {page}: {said}");
        assert!(said.contains("Only an admin token may"), "{page}: {said}");
    }
    browser.close().await;
    drop((fleet, queue));
}

#[tokio::test]
async fn a_form_posted_without_the_csrf_token_is_refused() {
    let dashboard = Dashboard::start();
    let queue = dashboard.fleet("forged", 1, false, |_| {});
    let pending = eventually("a device in the queue", || async {
        let page = dashboard.api_get("/devices?status=pending").await;
        page["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await;

    let browser = dashboard.browser(ADMIN_TOKEN).await;
    open(&browser, &dashboard.ui("/pending")).await;
    // The same form the page has, from the same origin and with the
    // session's cookie, but without the token a forger cannot know.
    browser
        .execute(
            r#"
            const form = document.createElement("form");
            form.method = "post";
            form.action = "/ui/pending/decide";
            for (const [name, value] of [["decision", "accept"], ["device", arguments[0]]]) {
                const input = document.createElement("input");
                input.type = "hidden"; input.name = name; input.value = value;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            form.submit();
            "#,
            vec![serde_json::Value::String(pending.clone())],
        )
        .await
        .expect("submit the forged form");
    let refusal = eventually("the refusal", || text_of(&browser, "[role=alert]")).await;
    assert!(refusal.contains("403"), "{refusal}");
    assert!(refusal.contains("CSRF token"), "{refusal}");
    let device = dashboard.api_get(&format!("/devices/{pending}")).await;
    let status = device["device"]["status"]
        .as_str()
        .or(device["status"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(status, "pending", "the forged post changed the device");

    // The page's own form, with its token, does what the forged one
    // could not.
    open(&browser, &dashboard.ui("/pending")).await;
    browser
        .find(Locator::Css("input[type=checkbox][name=device]"))
        .await
        .expect("a device to select")
        .click()
        .await
        .expect("select");
    browser
        .find(Locator::Css("button[name=decision][value=accept]"))
        .await
        .expect("accept")
        .click()
        .await
        .expect("click");
    eventually("the real form to be accepted", || async {
        (dashboard.device_total("accepted").await == 1).then_some(())
    })
    .await;
    browser.close().await;
    drop(queue);
}
