//! Uploading packages from the browser: a trusted one lands on its own
//! page; an untrusted or damaged one is refused in the server's words,
//! shown on the page, and nothing is kept.

use crate::support::{eventually, open, text_of, Dashboard};
use airlift_testkit::browser::{Browser, Locator};
use airlift_testkit::packages::Signer;
use airlift_testkit::server::ADMIN_TOKEN;
use std::path::Path;

/// Chooses `file` in the upload form and sends it.
async fn upload(browser: &Browser, file: &Path) {
    browser
        .find(Locator::Css("form[data-upload] input[type=file]"))
        .await
        .expect("the file input")
        .send_keys(&file.to_string_lossy())
        .await
        .expect("choose the file");
    browser
        .find(Locator::Css("form[data-upload] button[type=submit]"))
        .await
        .expect("the upload button")
        .click()
        .await
        .expect("upload");
}

/// Waits until the upload form shows the server's refusal; its words.
async fn refusal(browser: &Browser) -> String {
    eventually("the server's refusal on the page", || async {
        let said = text_of(browser, "[data-upload-result].error").await?;
        (!said.trim().is_empty()).then_some(said)
    })
    .await
}

#[tokio::test]
async fn packages_are_uploaded_from_the_browser_and_untrusted_ones_refused_in_words() {
    let dashboard = Dashboard::start();
    let files = tempfile::tempdir().expect("a directory for package files");
    let good = files.path().join("rootfs-2.0.0.airlift");
    std::fs::write(&good, dashboard.package("2.0.0")).expect("write the package");
    let stranger = Signer::new();
    let untrusted = files.path().join("untrusted.airlift");
    let file = airlift_sim::image::signed_package(
        stranger.key(),
        "6.6.6",
        4096,
        crate::support::DEVICE_TYPE,
    )
    .expect("package");
    std::fs::write(&untrusted, file).expect("write the package");
    let damaged = files.path().join("damaged.airlift");
    std::fs::write(&damaged, b"AIRLIFT but not really a package").expect("write");

    let browser = dashboard.browser(ADMIN_TOKEN).await;
    open(&browser, &dashboard.ui("/packages")).await;
    upload(&browser, &untrusted).await;
    let words = refusal(&browser).await;
    assert!(
        words.contains("trusted") || words.contains("signature"),
        "the refusal does not say why: {words}"
    );
    assert!(
        !words.contains('<'),
        "the refusal is markup, not words: {words}"
    );

    open(&browser, &dashboard.ui("/packages")).await;
    upload(&browser, &damaged).await;
    let words = refusal(&browser).await;
    assert!(!words.trim().is_empty());
    let listed = dashboard.api_get("/packages").await;
    let count = listed["items"]
        .as_array()
        .or(listed.as_array())
        .map_or(0, Vec::len);
    assert_eq!(count, 0, "a refused upload was kept");

    open(&browser, &dashboard.ui("/packages")).await;
    upload(&browser, &good).await;
    let id = eventually("the new package's page", || async {
        let url = browser.current_url().await.ok()?;
        let id = url.path().strip_prefix("/ui/packages/")?;
        (id.len() == 36).then(|| id.to_owned())
    })
    .await;
    let package = dashboard.api_get(&format!("/packages/{id}")).await;
    assert_eq!(package["version"], "2.0.0");
    let heading = text_of(&browser, "h1").await.unwrap_or_default();
    assert!(heading.contains("rootfs"), "{heading}");
    let page = browser.source().await.expect("source");
    assert!(
        page.contains("2.0.0"),
        "the package page does not show its version"
    );
    browser.close().await;
}
