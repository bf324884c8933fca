//! The overview: its device counts are the API's, on every backend, and
//! they follow a change by themselves, without a reload.

use crate::support::{eventually, text_of, Dashboard};
use airlift_testkit::browser::Browser;
use airlift_testkit::server::ADMIN_TOKEN;

/// The number the overview shows for devices with `status`.
async fn shown(browser: &Browser, status: &str) -> Option<u64> {
    text_of(browser, &format!("[data-count={status}]"))
        .await?
        .trim()
        .parse()
        .ok()
}

/// Sets a marker on `window` that a reload would wipe out.
pub async fn mark_page(browser: &Browser) {
    browser
        .execute("window.__airliftNotReloaded = 42;", Vec::new())
        .await
        .expect("set a marker");
}

/// Whether the marker set by [`mark_page`] is still there.
pub async fn still_marked(browser: &Browser) -> bool {
    browser
        .execute("return window.__airliftNotReloaded === 42;", Vec::new())
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

async fn counts_equal_the_apis(dashboard: Dashboard) {
    let fleet = dashboard.fleet("ok", 3, true, |_| {});
    let queue = dashboard.fleet("new", 2, false, |_| {});
    eventually("3 accepted and 2 pending devices", || async {
        let accepted = dashboard.device_total("accepted").await;
        let pending = dashboard.device_total("pending").await;
        (accepted == 3 && pending == 2).then_some(())
    })
    .await;

    let browser = dashboard.browser(ADMIN_TOKEN).await;
    for status in ["pending", "accepted", "rejected"] {
        let api = dashboard.device_total(status).await;
        let page = eventually(&format!("the overview's {status} count"), || {
            shown(&browser, status)
        })
        .await;
        assert_eq!(
            page, api,
            "devices {status}: the overview says {page}, the API {api}"
        );
    }

    // A change made elsewhere (here: the API) reaches the open page by
    // itself.
    mark_page(&browser).await;
    let pending = dashboard.api_get("/devices?status=pending").await;
    let id = pending["items"][0]["id"]
        .as_str()
        .expect("a pending device");
    dashboard
        .api_post(&format!("/devices/{id}/reject"), serde_json::Value::Null)
        .await;
    eventually("the overview to count the rejected device", || async {
        let rejected = shown(&browser, "rejected").await?;
        let pending = shown(&browser, "pending").await?;
        (rejected == 1 && pending == 1).then_some(())
    })
    .await;
    assert!(
        still_marked(&browser).await,
        "the overview reloaded instead of updating in place"
    );
    browser.close().await;
    drop((fleet, queue));
}

#[tokio::test]
async fn the_overview_counts_equal_the_apis_and_follow_changes_live() {
    counts_equal_the_apis(Dashboard::start()).await;
    if let Some(dashboard) = Dashboard::start_on_postgres() {
        counts_equal_the_apis(dashboard).await;
    }
}
