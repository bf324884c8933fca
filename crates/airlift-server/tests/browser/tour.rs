//! Every page of a fleet in use: each reads fully with JavaScript switched
//! off (lists and details are rendered by the server), and, with
//! `AIRLIFT_SCREENSHOTS=1`, each is photographed for README.md.

use crate::support::{eventually, open, screenshot, text_of, texts_of, Dashboard, DEVICE_TYPE};
use airlift_sim::{Fleet, Mix, Share};
use airlift_testkit::browser::{Browser, Options};
use airlift_testkit::server::ADMIN_TOKEN;
use serde_json::{json, Value};

/// Devices running the good releases.
const DEVICES: usize = 6;
/// The release whose health check fails everywhere.
const BROKEN: &str = "2.1.0";

/// A fleet with history: devices accepted and waiting, a finished
/// rollout, a broken one holding in its first phase with failures, and a
/// few tokens.
struct World {
    dashboard: Dashboard,
    fleet: Fleet,
    _queue: Fleet,
    device: String,
    package: String,
    finished: String,
    holding: String,
}

async fn world() -> World {
    let dashboard = Dashboard::start();
    let fleet = dashboard.fleet("edge", DEVICES, true, |config| {
        config.attributes = vec![Mix::single(("site".to_owned(), "berlin-2".to_owned()))];
        config.faults.fail_health_on = Some(BROKEN.into());
        config.faults.fail_health_share = Share::percent(100.0).expect("share");
    });
    let queue = dashboard.fleet("new", 2, false, |_| {});
    let good = dashboard.upload("2.0.0").await;
    let broken = dashboard.upload(BROKEN).await;
    eventually("the fleet to check in", || async {
        let pending = dashboard.device_total("pending").await;
        (fleet.snapshot().checked_in == DEVICES && pending == 2).then_some(())
    })
    .await;
    let target = json!({"attributes": {"device_type": DEVICE_TYPE}});
    let finished = dashboard
        .api_post(
            "/deployments",
            json!({"name": "rootfs 2.0.0", "package_id": good["id"], "target": target, "dynamic": false}),
        )
        .await;
    let finished = finished["id"].as_str().expect("id").to_owned();
    eventually("the first rollout to finish", || async {
        let detail = dashboard.api_get(&format!("/deployments/{finished}")).await;
        (status_of(&detail) == "finished").then_some(())
    })
    .await;
    let holding = dashboard
        .api_post(
            "/deployments",
            json!({
                "name": "rootfs 2.1.0",
                "package_id": broken["id"],
                "target": target,
                "strategy": {
                    "type": "phased",
                    "phases": [
                        {"name": "canary", "devices": {"percent": 50}, "soak_secs": 3600},
                        {"devices": {"percent": 100}},
                    ],
                    "failure_threshold": {"count": 10},
                },
            }),
        )
        .await;
    let holding = holding["id"].as_str().expect("id").to_owned();
    eventually("the broken release's canaries to fail", || async {
        let detail = dashboard.api_get(&format!("/deployments/{holding}")).await;
        let failed = detail["rollout"]["phases"][0]["failed"].as_u64()?;
        (failed == DEVICES as u64 / 2).then_some(())
    })
    .await;
    dashboard.token("ci-pipeline", "operator").await;
    dashboard.token("wallboard", "viewer").await;
    // A device with a rollback in its history, for its page.
    let rolled_back = dashboard
        .api_get(&format!(
            "/deployments/{holding}/devices?state=rolled_back&per_page=1"
        ))
        .await;
    let device = rolled_back["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["state"] == "rolled_back")
        .and_then(|d| d["device_id"].as_str())
        .expect("a device that rolled back")
        .to_owned();
    World {
        package: good["id"].as_str().expect("id").to_owned(),
        dashboard,
        fleet,
        _queue: queue,
        device,
        finished,
        holding,
    }
}

fn status_of(detail: &Value) -> &str {
    detail["deployment"]["status"]
        .as_str()
        .or(detail["status"].as_str())
        .unwrap_or_default()
}

/// A page of the tour: where, what it is called in `docs/screenshots`,
/// and text that proves its content is there.
struct Stop {
    path: String,
    shot: &'static str,
    shows: Vec<String>,
}

fn stops(world: &World) -> Vec<Stop> {
    let stop = |path: String, shot, shows: &[&str]| Stop {
        path,
        shot,
        shows: shows.iter().map(|s| (*s).to_owned()).collect(),
    };
    vec![
        stop("/".into(), "overview", &["rootfs 2.1.0", "canary"]),
        stop(
            "/devices".into(),
            "devices",
            &["edge-00000", "edge-00005", "2.0.0"],
        ),
        stop(
            format!("/devices/{}", world.device),
            "device-detail",
            &["berlin-2", "rolled_back", "health check"],
        ),
        stop("/pending".into(), "pending", &["new-00000", "new-00001"]),
        stop("/packages".into(), "packages", &["2.0.0", BROKEN]),
        stop(
            format!("/packages/{}", world.package),
            "package-detail",
            &["rootfs", "2.0.0"],
        ),
        stop(
            "/deployments".into(),
            "deployments",
            &["rootfs 2.0.0", "rootfs 2.1.0"],
        ),
        stop(
            format!("/deployments/{}", world.finished),
            "",
            &["finished"],
        ),
        stop(
            format!("/deployments/{}", world.holding),
            "",
            &["canary", "Failures by reason"],
        ),
        stop("/tokens".into(), "tokens", &["ci-pipeline", "wallboard"]),
        stop("/audit".into(), "audit", &["deployment", "token"]),
    ]
}

async fn visit(browser: &Browser, world: &World, stop: &Stop) {
    open(browser, &world.dashboard.ui(&stop.path)).await;
    let main = text_of(browser, "main").await.unwrap_or_default();
    for shown in &stop.shows {
        assert!(
            main.contains(shown.as_str()),
            "{} does not show {shown:?}:\n{main}",
            stop.path
        );
    }
}

#[tokio::test]
async fn every_page_reads_with_javascript_off() {
    let world = world().await;
    let reader = world
        .dashboard
        .browser_with(ADMIN_TOKEN, Options::without_javascript())
        .await;
    for stop in stops(&world) {
        visit(&reader, &world, &stop).await;
        // No script ran: timestamps are still the server's UTC text,
        // which dashboard.js would have turned into local time.
        let times = texts_of(&reader, "main time[datetime]").await;
        assert!(
            times.iter().all(|t| t.ends_with("UTC")),
            "{}: a script ran with JavaScript off: {times:?}",
            stop.path
        );
    }
    reader.close().await;

    // The same pages with JavaScript on, for the screenshots (and to see
    // that the script does change the times).
    let browser = world.dashboard.browser(ADMIN_TOKEN).await;
    for stop in stops(&world) {
        visit(&browser, &world, &stop).await;
        if !stop.shot.is_empty() {
            screenshot(&browser, stop.shot).await;
        }
    }
    let times = texts_of(&browser, "main time[datetime]").await;
    assert!(
        times.iter().any(|t| !t.ends_with("UTC")),
        "dashboard.js did not run: {times:?}"
    );
    browser.close().await;
    drop(world.fleet);
}
