//! The admission queue: an operator accepts a waiting device from the
//! pending page, and the real agent on it is let in.

use crate::support::{eventually, open, text_of, Dashboard};
use airlift_testkit::browser::Locator;
use airlift_testkit::server::ADMIN_TOKEN;

#[tokio::test]
async fn a_pending_device_is_accepted_from_the_pending_page() {
    let dashboard = Dashboard::start();
    let fleet = dashboard.fleet("queue", 2, false, |_| {});
    eventually("two devices in the admission queue", || async {
        (dashboard.device_total("pending").await == 2).then_some(())
    })
    .await;

    let browser = dashboard.browser(ADMIN_TOKEN).await;
    open(&browser, &dashboard.ui("/pending")).await;
    browser
        .find(Locator::Css(
            "input[type=checkbox][aria-label='Select serial=queue-00000']",
        ))
        .await
        .expect("a checkbox for queue-00000")
        .click()
        .await
        .expect("select it");
    browser
        .find(Locator::Css("button[name=decision][value=accept]"))
        .await
        .expect("the accept button")
        .click()
        .await
        .expect("accept");
    let notice = eventually("the page to say what it did", || {
        text_of(&browser, ".notice[role=status]")
    })
    .await;
    assert_eq!(notice.trim(), "Accepted 1 device.");

    let accepted = dashboard.api_get("/devices?status=accepted").await;
    let serials: Vec<&str> = accepted["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|d| d["identity"]["serial"].as_str())
        .collect();
    assert_eq!(serials, ["queue-00000"]);
    assert_eq!(dashboard.device_total("pending").await, 1);
    // The agent itself notices: it gets a token at its next contact and
    // settles to idle, while the other still waits.
    eventually("the accepted agent to check in", || async {
        let snapshot = fleet.snapshot();
        (snapshot.in_state("idle") == 1).then_some(())
    })
    .await;
    browser.close().await;
}
