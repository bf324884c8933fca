//! Deployments made in the browser: the form's field errors are the
//! API's, the detail page follows a real rollout by itself (no reload)
//! while simulated devices update, and a broken package trips the circuit
//! breaker with its failure reasons grouped; a target expression typed in
//! the form takes the devices it matches, and one that does not parse is
//! answered beside its field.

use crate::overview::{mark_page, still_marked};
use crate::support::{
    eventually, open, screenshot, text_of, texts_of, within, Dashboard, DEVICE_TYPE,
};
use airlift_sim::Share;
use airlift_testkit::browser::{Browser, Locator};
use airlift_testkit::server::ADMIN_TOKEN;
use std::time::{Duration, Instant};

/// Devices in the fleet.
const DEVICES: usize = 8;
/// The version whose health check fails on every device.
const BROKEN: &str = "2.1.0";

/// What the form is filled with.
struct Plan<'a> {
    name: &'a str,
    package_id: &'a str,
    /// Each phase's percentage and soak.
    phases: &'a [(&'a str, &'a str)],
    /// `percent` or `count`.
    threshold_kind: &'a str,
    threshold: &'a str,
    on_failure: &'a str,
}

/// Types into a field, replacing what it held.
async fn type_into(browser: &Browser, css: &str, text: &str) {
    let field = browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no field {css}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

async fn click(browser: &Browser, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("nothing to click at {css}: {e}"))
        .click()
        .await
        .expect("click");
}

/// Fills the new-deployment form as a person would: attributes target
/// (static), phased, the given phases, threshold and breaker action.
async fn fill(browser: &Browser, plan: &Plan<'_>) {
    type_into(browser, "#name", plan.name).await;
    browser
        .find(Locator::Css("#package"))
        .await
        .expect("package select")
        .select_by_value(plan.package_id)
        .await
        .expect("choose the package");
    click(browser, "input[name=target][value=attributes]").await;
    type_into(
        browser,
        "textarea#target-attributes",
        &format!("device_type={DEVICE_TYPE}"),
    )
    .await;
    // Static, so that the deployment finishes once these devices are done
    // (a tag or attributes deployment otherwise stays open for late joiners).
    click(browser, "#static").await;
    click(browser, "input[name=strategy][value=phased]").await;
    for row in 0..3 {
        let (percent, soak) = plan.phases.get(row).copied().unwrap_or(("", ""));
        type_into(browser, &format!("#phase-{row}-value"), percent).await;
        type_into(browser, &format!("#phase-{row}-soak"), soak).await;
    }
    browser
        .find(Locator::Css("#threshold-kind"))
        .await
        .expect("threshold kind")
        .select_by_value(plan.threshold_kind)
        .await
        .expect("choose the threshold kind");
    type_into(browser, "#threshold", plan.threshold).await;
    browser
        .find(Locator::Css("#on-failure"))
        .await
        .expect("breaker action")
        .select_by_value(plan.on_failure)
        .await
        .expect("choose the breaker action");
}

async fn submit(browser: &Browser) {
    click(
        browser,
        "form[action='/ui/deployments/new'] .actions button[type=submit]",
    )
    .await;
}

/// Waits until the browser shows a deployment's own page; its id.
async fn landed_on_deployment(browser: &Browser) -> String {
    eventually("the new deployment's page", || async {
        let url = browser.current_url().await.ok()?;
        let id = url.path().strip_prefix("/ui/deployments/")?;
        (id.len() == 36).then(|| id.to_owned())
    })
    .await
}

/// The deployment's status as the page shows it.
async fn shown_status(browser: &Browser) -> Option<String> {
    text_of(browser, "section[aria-label=Progress] .status").await
}

/// "N of M devices updated" from the page's overall bar.
async fn shown_updated(browser: &Browser) -> Option<(u64, u64)> {
    let bar = browser
        .find(Locator::Css(
            "section[aria-label=Progress] + .card progress",
        ))
        .await
        .ok()?;
    let label = bar.attr("aria-label").await.ok()??;
    let (done, rest) = label.split_once(" of ")?;
    let total = rest.split_whitespace().next()?;
    Some((done.parse().ok()?, total.parse().ok()?))
}

#[tokio::test]
async fn a_phased_deployment_from_the_form_advances_live_and_a_broken_one_trips_the_breaker() {
    let dashboard = Dashboard::start();
    let fleet = dashboard.fleet("fleet", DEVICES, true, |config| {
        config.faults.fail_health_on = Some(BROKEN.into());
        config.faults.fail_health_share = Share::percent(100.0).expect("share");
    });
    let good = dashboard.upload("2.0.0").await;
    let broken = dashboard.upload(BROKEN).await;
    eventually("every device to check in", || async {
        (fleet.snapshot().checked_in == DEVICES).then_some(())
    })
    .await;
    let browser = dashboard.browser(ADMIN_TOKEN).await;

    let id = refused_then_created(&dashboard, &browser, good["id"].as_str().expect("id")).await;
    follow_to_the_end(&browser).await;
    let api = dashboard.api_get(&format!("/deployments/{id}")).await;
    assert_eq!(api["status"], "finished");
    screenshot(&browser, "deployment-detail").await;

    breaker_trips(&dashboard, &browser, broken["id"].as_str().expect("id")).await;
    let running = fleet.snapshot();
    assert_eq!(
        running.running(BROKEN),
        0,
        "a broken release stayed: {running:?}"
    );
    assert_eq!(running.running("2.0.0"), DEVICES, "{running:?}");
    screenshot(&browser, "deployment-breaker").await;
    browser.close().await;
}

/// Submits a phased deployment of `package_id` with a failure threshold
/// the API refuses, checks the refusal, then corrects it; the id of the
/// deployment made.
async fn refused_then_created(
    dashboard: &Dashboard,
    browser: &Browser,
    package_id: &str,
) -> String {
    open(browser, &dashboard.ui("/deployments/new")).await;
    let plan = Plan {
        name: "rootfs 2.0.0",
        package_id,
        phases: &[("25", "1s"), ("100", "")],
        threshold_kind: "percent",
        threshold: "150",
        on_failure: "pause",
    };
    fill(browser, &plan).await;
    submit(browser).await;

    // Refused with the API's words beside the threshold field, what was
    // typed kept, nothing stored.
    let error = eventually("the threshold's error", || {
        text_of(browser, "#threshold-error")
    })
    .await;
    // The protocol's own rule, in its words (not a copy in the form).
    assert!(error.contains("must be within 0–100"), "{error}");
    let beside = browser
        .find(Locator::Css("#threshold"))
        .await
        .expect("threshold field");
    assert_eq!(
        beside.attr("aria-invalid").await.ok().flatten().as_deref(),
        Some("true")
    );
    assert_eq!(
        beside.prop("value").await.ok().flatten().as_deref(),
        Some("150")
    );
    let name = browser.find(Locator::Css("#name")).await.expect("name");
    assert_eq!(
        name.prop("value").await.ok().flatten().as_deref(),
        Some("rootfs 2.0.0")
    );
    let stored = dashboard.api_get("/deployments").await;
    assert_eq!(
        count_items(&stored),
        0,
        "a refused form stored a deployment"
    );
    screenshot(browser, "new-deployment").await;

    type_into(browser, "#threshold", "50").await;
    submit(browser).await;
    landed_on_deployment(browser).await
}

/// A deployment made in the form with a target expression: an expression
/// that does not parse is answered beside its field with the parser's
/// column, nothing stored; the corrected one lands on the deployment's
/// page, which names the expression and lists exactly the devices it
/// matched (the lab's, not the field's).
#[tokio::test]
async fn a_deployment_by_target_expression_from_the_form_takes_the_devices_it_matches() {
    let dashboard = Dashboard::start();
    let lab = dashboard.fleet("lab", 2, true, |config| {
        config.tags = vec!["lab".into()];
    });
    let field = dashboard.fleet("field", 2, true, |_| {});
    let package = dashboard.upload("2.0.0").await;
    eventually("every device to check in", || async {
        (lab.snapshot().checked_in == 2 && field.snapshot().checked_in == 2).then_some(())
    })
    .await;
    let browser = dashboard.browser(ADMIN_TOKEN).await;
    open(&browser, &dashboard.ui("/deployments/new")).await;
    type_into(&browser, "#name", "lab rootfs 2.0.0").await;
    browser
        .find(Locator::Css("#package"))
        .await
        .expect("package select")
        .select_by_value(package["id"].as_str().expect("id"))
        .await
        .expect("choose the package");
    click(&browser, "input[name=target][value=expression]").await;
    let unclosed = "tag:lab AND (installed.rootfs < 2.0.0";
    type_into(&browser, "#target-expr", unclosed).await;
    submit(&browser).await;

    let error = eventually("the expression's error", || {
        text_of(&browser, "#target-expr-error")
    })
    .await;
    // The parser's own words, with the column.
    assert!(error.starts_with("target expression, column "), "{error}");
    assert!(error.contains("')'"), "{error}");
    let beside = browser
        .find(Locator::Css("#target-expr"))
        .await
        .expect("expression field");
    assert_eq!(
        beside.attr("aria-invalid").await.ok().flatten().as_deref(),
        Some("true")
    );
    assert_eq!(
        beside.prop("value").await.ok().flatten().as_deref(),
        Some(unclosed),
        "what was typed is kept"
    );
    assert_eq!(
        count_items(&dashboard.api_get("/deployments").await),
        0,
        "a refused form stored a deployment"
    );

    type_into(
        &browser,
        "#target-expr",
        "tag:lab AND installed.rootfs < 2.0.0",
    )
    .await;
    submit(&browser).await;
    let id = landed_on_deployment(&browser).await;
    let target = eventually("the target among the facts", || async {
        let facts = texts_of(&browser, "dl.facts dd").await;
        facts.into_iter().find(|f| f.starts_with("devices where"))
    })
    .await;
    assert!(target.contains("tag:lab"), "{target}");
    assert!(target.contains("installed.rootfs < 2.0.0"), "{target}");

    let mut expected: Vec<String> = dashboard.api_get("/devices?tag=lab").await["items"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|device| device["id"].as_str().map(str::to_owned))
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 2, "the lab's devices");
    let shown = eventually("the devices the expression took", || async {
        let mut shown = texts_of(&browser, "#devices + .card tbody tr td:first-child code").await;
        shown.sort();
        (shown == expected).then_some(shown)
    })
    .await;
    assert_eq!(shown.len(), 2, "{shown:?}");
    let api = dashboard.api_get(&format!("/deployments/{id}")).await;
    assert_eq!(
        api["target"]["expression"],
        "tag:lab AND installed.rootfs < 2.0.0"
    );

    // The hint's link: the grammar, served by the dashboard itself.
    open(&browser, &dashboard.ui("/deployments/new")).await;
    let grammar = browser
        .find(Locator::Css("#target-expr-help a"))
        .await
        .expect("the grammar link")
        .attr("href")
        .await
        .ok()
        .flatten()
        .expect("href");
    open(&browser, &format!("{}{grammar}", dashboard.server.url())).await;
    let text = text_of(&browser, "main pre").await.unwrap_or_default();
    assert!(text.contains("installed.rootfs < 2.4.0"), "{text}");
    browser.close().await;
}

/// What the deployment's page shows at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    /// The current phase's name cell.
    phase: Option<String>,
    /// Devices updated, of those counted.
    updated: Option<(u64, u64)>,
}

async fn seen(browser: &Browser) -> Seen {
    Seen {
        phase: text_of(browser, "tr[aria-current=step] td:first-child").await,
        updated: shown_updated(browser).await,
    }
}

/// Watches the open deployment page until it says `finished`, and checks
/// that it got there in place: through both phases, with the count
/// rising, and without a reload.
async fn follow_to_the_end(browser: &Browser) {
    mark_page(browser).await;
    let mut history: Vec<Seen> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = seen(browser).await;
        if history.last() != Some(&now) {
            history.push(now);
        }
        if shown_status(browser).await.as_deref() == Some("finished") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not finish on the page: {history:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = seen(browser).await;
    if history.last() != Some(&last) {
        history.push(last);
    }
    assert!(still_marked(browser).await, "the page was reloaded");
    let phases: Vec<&str> = history.iter().filter_map(|s| s.phase.as_deref()).collect();
    assert!(
        phases.first().is_some_and(|p| p.starts_with("25 %"))
            && phases.last().is_some_and(|p| p.starts_with("100 %")),
        "the page did not show the rollout move from phase to phase: {history:?}"
    );
    let counts: Vec<(u64, u64)> = history.iter().filter_map(|s| s.updated).collect();
    assert_eq!(
        counts.last(),
        Some(&(DEVICES as u64, DEVICES as u64)),
        "{history:?}"
    );
    assert!(
        counts.first() != counts.last(),
        "the page never showed the count move: {history:?}"
    );
}

/// Deploys the broken release through the form with a breaker that
/// aborts, and watches its page show the breaker trip and every admitted
/// device's failure in one group.
async fn breaker_trips(dashboard: &Dashboard, browser: &Browser, package_id: &str) {
    open(browser, &dashboard.ui("/deployments/new")).await;
    let plan = Plan {
        name: "rootfs 2.1.0 (broken)",
        package_id,
        phases: &[("25", "1s"), ("100", "")],
        // Trips at the second failure, so that a group holds several.
        threshold_kind: "count",
        threshold: "1",
        on_failure: "abort",
    };
    fill(browser, &plan).await;
    submit(browser).await;
    let id = landed_on_deployment(browser).await;
    mark_page(browser).await;
    within(
        "the breaker to abort the rollout",
        Duration::from_secs(90),
        || async { (shown_status(browser).await? == "aborted").then_some(()) },
    )
    .await;
    let breaker = eventually("the breaker's state", || async {
        let facts = texts_of(browser, "dl.facts dd").await;
        facts.into_iter().find(|f| f.contains("tripped"))
    })
    .await;
    assert!(breaker.contains("open"), "{breaker}");
    // Every device that failed did so for the same reason: one group, as
    // large as the API's count of failed devices (at least the two that
    // tripped the breaker).
    let deadline = Instant::now() + Duration::from_secs(60);
    let group = loop {
        let groups = failure_groups(browser).await;
        let api = dashboard.api_get(&format!("/deployments/{id}")).await;
        let failed: u64 = ["failure", "rolled_back", "timed_out"]
            .iter()
            .filter_map(|state| api["counts"][state].as_u64())
            .sum();
        if let [(reason, devices)] = groups.as_slice() {
            if *devices == failed && failed >= 2 {
                break reason.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the failures were not grouped by reason, {failed} devices in one group: {groups:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(group.contains("health check"), "{group}");
    assert!(still_marked(browser).await, "the page was reloaded");
}

/// The "Failures by reason" table: each reason with its device count.
async fn failure_groups(browser: &Browser) -> Vec<(String, u64)> {
    let script = r#"
        const heading = Array.from(document.querySelectorAll("h2"))
            .find(h => h.textContent.trim() === "Failures by reason");
        const card = heading && heading.nextElementSibling;
        if (!card) return [];
        return Array.from(card.querySelectorAll("tbody tr")).map(row => [
            row.cells[0].textContent.trim(),
            row.cells[1].textContent.trim(),
        ]);
    "#;
    let rows = browser
        .execute(script, Vec::new())
        .await
        .unwrap_or_default();
    rows.as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| {
            let reason = row[0].as_str()?.to_owned();
            let devices = row[1].as_str()?.parse().ok()?;
            Some((reason, devices))
        })
        .collect()
}

fn count_items(list: &serde_json::Value) -> usize {
    list["items"]
        .as_array()
        .or(list.as_array())
        .map_or(0, Vec::len)
}
