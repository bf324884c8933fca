//! What devices report is text, never markup: a real agent reporting
//! `<script>` and an `onerror` image in its inventory attributes shows
//! them as words on every page that lists them, and nothing runs.

use crate::support::{eventually, open, text_of, Dashboard};
use airlift_sim::Mix;
use airlift_testkit::browser::Browser;
use airlift_testkit::server::ADMIN_TOKEN;

const SCRIPT: &str = "<script>window.__airliftInjected = 1</script>";
const IMAGE: &str = "\"><img src=x onerror=\"window.__airliftInjected = 2\">";

/// Whether any injected code ran, and whether an injected element is in
/// the page.
async fn injected(browser: &Browser) -> (bool, bool) {
    let ran = browser
        .execute("return window.__airliftInjected !== undefined;", Vec::new())
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let element = browser
        .execute(
            "return document.querySelector('main script, main img[src=x]') !== null;",
            Vec::new(),
        )
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    (ran, element)
}

#[tokio::test]
async fn device_reported_markup_shows_as_text() {
    let dashboard = Dashboard::start();
    let fleet = dashboard.fleet("hostile", 1, true, |config| {
        config.attributes = vec![
            Mix::single(("note".to_owned(), SCRIPT.to_owned())),
            Mix::single(("label".to_owned(), IMAGE.to_owned())),
        ];
    });
    let id = eventually("the device's attributes to arrive", || async {
        let page = dashboard.api_get("/devices?status=accepted").await;
        let device = &page["items"][0];
        (device["attributes"]["note"] == SCRIPT)
            .then(|| device["id"].as_str().map(str::to_owned))?
    })
    .await;

    let browser = dashboard.browser(ADMIN_TOKEN).await;
    for path in [
        format!("/devices/{id}"),
        "/devices".to_owned(),
        "/".to_owned(),
    ] {
        open(&browser, &dashboard.ui(&path)).await;
        let (ran, element) = injected(&browser).await;
        assert!(!ran, "{path}: device-reported script ran");
        assert!(!element, "{path}: device-reported markup became elements");
    }
    open(&browser, &dashboard.ui(&format!("/devices/{id}"))).await;
    let main = text_of(&browser, "main").await.unwrap_or_default();
    assert!(
        main.contains(SCRIPT),
        "the attribute is not shown as text:\n{main}"
    );
    assert!(
        main.contains(IMAGE),
        "the attribute is not shown as text:\n{main}"
    );
    browser.close().await;
    drop(fleet);
}
