//! The sign-in link `airlift demo --keep` prints: the token rides in the
//! URL's fragment (which never reaches the server or its log), the page's
//! script signs in with it and wipes it from the address bar; without
//! JavaScript the same link shows the ordinary form.

use crate::support::{eventually, text_of, Dashboard};
use airlift_testkit::browser::{Browser, Locator, Options};
use airlift_testkit::server::ADMIN_TOKEN;

fn link(dashboard: &Dashboard, token: &str) -> String {
    let fragment: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    dashboard.ui(&format!("/sign-in#token={fragment}"))
}

#[tokio::test]
async fn a_sign_in_link_lands_signed_in_on_the_overview() {
    let dashboard = Dashboard::start();
    let browser = Browser::start(Options::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    browser
        .goto(&link(&dashboard, ADMIN_TOKEN))
        .await
        .expect("open the link");
    let url = eventually("the overview", || async {
        let url = browser.current_url().await.ok()?;
        (url.path() == "/ui/").then_some(url)
    })
    .await;
    assert_eq!(
        url.fragment(),
        None,
        "the token stays in the address: {url}"
    );
    let who = text_of(&browser, "header.bar .who")
        .await
        .unwrap_or_default();
    assert!(who.contains("admin"), "not signed in as the admin: {who}");
    // Nor in the history: going back shows no address that holds it.
    browser.back().await.expect("back");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let back = browser.current_url().await.expect("url");
    assert!(
        !back.as_str().contains(ADMIN_TOKEN),
        "the token is in the history: {back}"
    );
    browser.close().await;
}

#[tokio::test]
async fn without_javascript_the_link_shows_the_form() {
    let dashboard = Dashboard::start();
    let viewer = dashboard.token("reader", "viewer").await;
    let browser = Browser::start(Options::without_javascript())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    browser
        .goto(&link(&dashboard, &viewer))
        .await
        .expect("open the link");
    let field = browser
        .find(Locator::Css("form[action='/ui/sign-in'] #token"))
        .await
        .expect("the token field");
    assert_eq!(
        field.prop("value").await.expect("value").as_deref(),
        Some("")
    );
    let url = browser.current_url().await.expect("url");
    assert_eq!(url.path(), "/ui/sign-in");
    // Pasting the token, as the page says, signs in.
    crate::support::sign_in(&browser, &dashboard.ui("/sign-in"), &viewer).await;
    browser.close().await;
}
