//! Shadow deltas at check-in come from each instance's memory, and stay
//! true across instances: a change made through one instance reaches a
//! device checking in on another at once (the store's change feed), and a
//! steady check-in is served without reading the store.

use crate::support::*;
use airlift_protocol::shadow::REPORTED_PATH;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

use crate::instances::{two_instances, PATIENCE};

async fn admin(server: &TestServer, method: reqwest::Method, path: &str, body: Value) {
    let response = server
        .client
        .request(method, server.api(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    json_ok(response).await;
}

/// Checks in on `server` until the delta is `want` (`Value::Null`: none),
/// for at most [`PATIENCE`]; how long it took.
async fn delta_becomes(device: &TestDevice, server: &TestServer, want: Value) -> Duration {
    let started = Instant::now();
    loop {
        let answer = device.check_in(server).await;
        let delta = answer
            .shadow
            .map_or(Value::Null, |s| Value::Object(s.delta));
        if delta == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "delta still {delta} (want {want}) after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of a counter or gauge line of `/metrics` (0 if absent).
async fn metric(server: &TestServer, line_start: &str) -> f64 {
    let text = server
        .client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(line_start))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_desired_change_through_one_instance_reaches_a_device_checking_in_on_the_other() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let device = accepted_device(&a, "SN-SHADOW-MULTI", "pi4").await;
    tag_device(&a, &device, "lab").await;
    let id = device.id.expect("known");
    // B keeps the device's (empty) documents and the (empty) group list
    // once its change feed listens: then check-ins are hits.
    let hits = r#"airlift_cache_shadow_lookups_total{result="hit"} "#;
    let started = Instant::now();
    while metric(&b, hits).await < 1.0 {
        assert_eq!(device.check_in(&b).await.shadow, None);
        assert!(
            started.elapsed() < PATIENCE,
            "B never served a check-in from memory"
        );
    }
    let before = metric(&b, hits).await;
    for _ in 0..5 {
        assert_eq!(device.check_in(&b).await.shadow, None);
    }
    assert!(
        metric(&b, hits).await >= before + 5.0,
        "steady check-ins on B were not served from memory"
    );

    // A group's document, written through A.
    admin(
        &a,
        reqwest::Method::PUT,
        "/shadows/tags/lab",
        json!({"level": "debug"}),
    )
    .await;
    let took = delta_becomes(&device, &b, json!({"level": "debug"})).await;
    eprintln!("tag document seen on the other instance after {took:?}");

    // The device's own document, written through A, wins.
    admin(
        &a,
        reqwest::Method::PATCH,
        &format!("/devices/{id}/shadow/desired"),
        json!({"level": "warn", "fan": 2}),
    )
    .await;
    delta_becomes(&device, &b, json!({"level": "warn", "fan": 2})).await;

    // The device reports through A what it applied: B answers no delta.
    let reported = a
        .client
        .put(format!("{}{REPORTED_PATH}", a.url))
        .bearer_auth(device.token.as_deref().expect("token"))
        .json(&json!({"document": {"level": "warn", "fan": 2}}))
        .send()
        .await
        .expect("report");
    assert_eq!(reported.status(), StatusCode::OK);
    delta_becomes(&device, &b, Value::Null).await;

    // Deleting the group's document through B; A hears it.
    let deleted = b
        .client
        .delete(b.api("/shadows/tags/lab"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::OK);
    admin(
        &b,
        reqwest::Method::PATCH,
        &format!("/devices/{id}/shadow/desired"),
        json!({"level": null}),
    )
    .await;
    delta_becomes(&device, &a, json!({"level": null})).await;
}

#[tokio::test]
async fn a_change_is_in_the_next_check_in_on_the_instance_that_made_it() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let device = accepted_device(&server, "SN-SHADOW-LOCAL", "pi4").await;
        tag_device(&server, &device, "hall").await;
        let id = device.id.expect("known");
        assert_eq!(device.check_in(&server).await.shadow, None);
        assert_eq!(device.check_in(&server).await.shadow, None);
        // No wait: the writing instance forgets what it held at once.
        admin(
            &server,
            reqwest::Method::PUT,
            "/shadows/tags/hall",
            json!({"x": 1}),
        )
        .await;
        let delta = device
            .check_in(&server)
            .await
            .shadow
            .expect("a delta")
            .delta;
        assert_eq!(Value::Object(delta), json!({"x": 1}));
        admin(
            &server,
            reqwest::Method::PUT,
            &format!("/devices/{id}/shadow/desired"),
            json!({"y": 2}),
        )
        .await;
        let delta = device
            .check_in(&server)
            .await
            .shadow
            .expect("a delta")
            .delta;
        assert_eq!(Value::Object(delta), json!({"x": 1, "y": 2}));
    }
}
