//! Repairing a rollout from its deployment's page: Retry for its failed
//! devices (explaining the per-device limit), and
//! Reset, with a reason, on a device stuck past the device timeout; an
//! operator sees both, a viewer neither. Each goes through the API's own
//! handler, so the audit log has it as the CLI's call would.

use crate::support::{eventually, open, text_of, within, Dashboard, DEVICE_TYPE};
use airlift_sim::select::Share;
use airlift_testkit::browser::{Browser, Locator};
use serde_json::{json, Value};
use sqlx::Connection;
use std::time::Duration;

async fn click(browser: &Browser, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("nothing to click at {css}: {e}"))
        .click()
        .await
        .expect("click");
}

async fn type_into(browser: &Browser, css: &str, text: &str) {
    let field = browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no field {css}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

/// Devices of the deployment in a failed state, by the API.
async fn failed(dashboard: &Dashboard, id: &str) -> u64 {
    let detail = dashboard.api_get(&format!("/deployments/{id}")).await;
    ["failure", "rolled_back", "timed_out"]
        .iter()
        .filter_map(|state| detail["counts"][state].as_u64())
        .sum()
}

async fn notice(browser: &Browser) -> String {
    eventually("a notice", || async { text_of(browser, ".notice").await }).await
}

#[tokio::test]
async fn failed_devices_are_retried_up_to_the_limit_and_a_stuck_one_is_reset_with_a_reason() {
    let dashboard = Dashboard::start();
    let fleet = dashboard.fleet("repair", 3, true, |config| {
        config.faults.fail_health_on = Some("2.1.0".into());
        config.faults.fail_health_share = Share::percent(100.0).expect("share");
    });
    let package = dashboard.upload("2.1.0").await;
    eventually("every device to check in", || async {
        (fleet.snapshot().checked_in == 3).then_some(())
    })
    .await;
    let created = dashboard
        .api_post(
            "/deployments",
            json!({
                "name": "rootfs 2.1.0",
                "package_id": package["id"],
                "target": {"attributes": {"device_type": DEVICE_TYPE}},
            }),
        )
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    within("every device to fail", Duration::from_secs(120), || async {
        (failed(&dashboard, &id).await == 3).then_some(())
    })
    .await;

    let operator = dashboard.token("operator", "operator").await;
    let browser = dashboard.browser(&operator).await;
    let page = dashboard.ui(&format!("/deployments/{id}"));
    open(&browser, &page).await;
    let form = text_of(&browser, "form#retry").await.unwrap_or_default();
    assert!(form.contains("3 failed"), "{form}");
    assert!(form.contains("already retried"), "{form}");
    type_into(&browser, "#retry-limit", "1").await;
    click(&browser, "form#retry button[type=submit]").await;
    let done = notice(&browser).await;
    assert!(
        done.contains("3 devices are offered the update again"),
        "{done}"
    );
    // The API did it, as the signed-in operator, and audited it.
    let audit = dashboard.api_get("/audit?action=deployment.retry").await;
    assert_eq!(audit["total"], 1, "{audit}");
    let entry = audit["items"][0].to_string();
    assert!(entry.contains("\"devices\":3"), "{entry}");
    assert!(entry.contains("\"limit\":1"), "{entry}");
    assert!(entry.contains("operator"), "{entry}");

    // A device that died mid-install seven hours ago (its row set as the
    // server would have left it): stuck past the 6-hour device timeout.
    fleet.stop();
    let device = dashboard
        .api_get(&format!("/deployments/{id}/devices?per_page=1"))
        .await["items"][0]["device_id"]
        .as_str()
        .expect("a device")
        .to_owned();
    let db = dashboard.data_dir().join("airlift.db");
    let mut sqlite = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("the server's database");
    let long_ago = chrono::Utc::now().timestamp_millis() - 7 * 3600 * 1000;
    sqlx::query(
        "UPDATE deployment_devices SET state = 'installing', updated_at = $1 \
         WHERE deployment_id = $2 AND device_id = $3",
    )
    .bind(long_ago)
    .bind(id.as_str())
    .bind(device.as_str())
    .execute(&mut sqlite)
    .await
    .expect("a stuck device");
    sqlite.close().await.expect("close");
    open(&browser, &format!("{page}?state=installing")).await;
    let reset_form = format!("form.reset[action$='/devices/{device}/reset']");
    let label = text_of(&browser, &format!("{reset_form} label"))
        .await
        .unwrap_or_default();
    assert!(label.contains("past its timeout"), "{label}");
    type_into(
        &browser,
        &format!("{reset_form} input[name=reason]"),
        "re-imaged by hand",
    )
    .await;
    click(&browser, &format!("{reset_form} button[type=submit]")).await;
    let done = notice(&browser).await;
    assert!(done.contains("reset to pending"), "{done}");
    let devices = dashboard
        .api_get(&format!("/deployments/{id}/devices?per_page=1000"))
        .await;
    let state = devices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["device_id"] == device.as_str())
        .map(|d| d["state"].clone());
    assert_eq!(state, Some(Value::from("pending")));
    let audit = dashboard.api_get("/audit?per_page=50").await.to_string();
    assert!(audit.contains("re-imaged by hand"), "{audit}");
    browser.close().await;

    // A viewer sees the deployment, and neither form.
    let viewer = dashboard.token("viewer", "viewer").await;
    let browser = dashboard.browser(&viewer).await;
    open(&browser, &page).await;
    assert!(text_of(&browser, "section[aria-label=Progress]")
        .await
        .is_some());
    assert_eq!(text_of(&browser, "form#retry").await, None);
    assert_eq!(text_of(&browser, "form.reset").await, None);
    browser.close().await;
}
