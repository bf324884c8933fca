//! The audit log keeps within the page: details are JSON without spaces
//! and objects are long ids, which must wrap rather than push the table
//! past the window, at a laptop's width and at a phone's.

use crate::support::{open, Dashboard};
use airlift_testkit::browser::{Browser, Options};
use airlift_testkit::server::ADMIN_TOKEN;

/// How far the page and the audit table reach past the window, in CSS
/// pixels (0 when they fit).
async fn overflow(browser: &Browser) -> (i64, i64) {
    let found = browser
        .execute(
            r#"
            const root = document.documentElement;
            const table = document.querySelector("table.audit");
            const page = root.scrollWidth - root.clientWidth;
            const right = table ? Math.ceil(table.getBoundingClientRect().right) : 0;
            return [page, Math.max(0, right - root.clientWidth)];
            "#,
            Vec::new(),
        )
        .await
        .expect("script");
    let at = |i: usize| found[i].as_i64().unwrap_or(i64::MAX);
    (at(0), at(1))
}

#[tokio::test]
async fn long_audit_details_wrap_within_the_page() {
    let dashboard = Dashboard::start();
    // The longest name the API takes, without a space to break at, in
    // the entry's details.
    dashboard.token(&"x".repeat(128), "viewer").await;
    for (width, height) in [(1280, 800), (390, 844)] {
        let options = Options {
            window: (width, height),
            ..Options::default()
        };
        let browser = dashboard.browser_with(ADMIN_TOKEN, options).await;
        open(&browser, &dashboard.ui("/audit")).await;
        let text = crate::support::text_of(&browser, "table.audit")
            .await
            .unwrap_or_default();
        assert!(text.contains("token.create"), "{text}");
        let (page, table) = overflow(&browser).await;
        assert_eq!(
            (page, table),
            (0, 0),
            "at {width} px the audit log reaches past the window"
        );
        browser.close().await;
    }
}
