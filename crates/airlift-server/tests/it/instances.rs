//! Several server instances on one PostgreSQL database: what one instance
//! changes, the others act on at once (through the store's change feed),
//! although each keeps device records and active deployments in memory.

use crate::support::*;
use airlift_protocol::device::CHECK_IN_PATH;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Far longer than a notification takes on one machine; the caches have no
/// expiry, so without the feed the tests below would wait it out and fail.
pub(crate) const PATIENCE: Duration = Duration::from_secs(5);

/// Two instances on one fresh schema, or `None` without PostgreSQL.
pub(crate) async fn two_instances() -> Option<(TestServer, TestServer)> {
    let backend = Backend::all()
        .await
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres(_)));
    let Some(backend) = backend else {
        eprintln!(
            "{} is not set: several instances not tested",
            airlift_testkit::postgres::URL_VAR
        );
        return None;
    };
    let a = TestServer::start(backend.clone()).await;
    let b = TestServer::start(backend).await;
    Some((a, b))
}

/// The HTTP status and body of a check-in.
async fn check_in_status(device: &TestDevice, server: &TestServer) -> (StatusCode, Value) {
    let response = server
        .client
        .post(format!("{}{CHECK_IN_PATH}", server.url))
        .bearer_auth(device.token.as_deref().expect("authenticated"))
        .json(&device.inventory)
        .send()
        .await
        .expect("check-in");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Checks in on `server` until `done` says so or [`PATIENCE`] runs out;
/// returns how long it took.
async fn check_in_until(
    device: &TestDevice,
    server: &TestServer,
    done: impl Fn(StatusCode, &Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = check_in_status(device, server).await;
        if done(status, &body) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "still {status} {body} after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_device_rejected_on_one_instance_is_refused_by_the_other() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let device = accepted_device(&a, "SN-MULTI-1", "pi4").await;
    // A now holds the device's record in memory.
    for _ in 0..3 {
        assert_eq!(check_in_status(&device, &a).await.0, StatusCode::OK);
    }
    assert_eq!(check_in_status(&device, &b).await.0, StatusCode::OK);

    let id = device.id.expect("known");
    let rejected = b
        .admin_post(&format!("/devices/{id}/reject"), Value::Null)
        .await;
    assert_eq!(rejected.status(), StatusCode::OK);
    let took = check_in_until(&device, &a, |status, _| status == StatusCode::UNAUTHORIZED).await;
    eprintln!("refused by the other instance after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // And it stays refused on both.
    assert_eq!(
        check_in_status(&device, &a).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        check_in_status(&device, &b).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_deployment_created_on_one_instance_is_offered_by_the_other() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let device = accepted_device(&a, "SN-MULTI-2", "pi4").await;
    // A now holds the device's record and the (empty) list of active deployments.
    for _ in 0..3 {
        let (status, body) = check_in_status(&device, &a).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.get("update").is_none(), "{body}");
    }
    let (package, _) = b.upload("os", "2.0.0", "pi4").await;
    let deployment = b.deploy(&package, &[&device]).await;
    let took = check_in_until(&device, &a, |status, body| {
        status == StatusCode::OK
            && body["update"]["deployment_id"] == deployment.to_string().as_str()
    })
    .await;
    eprintln!("offered by the other instance after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[tokio::test]
async fn a_device_rejected_or_decommissioned_here_is_refused_at_its_next_check_in() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        for (serial, verb) in [("SN-HERE-1", "reject"), ("SN-HERE-2", "decommission")] {
            let device = accepted_device(&server, serial, "pi4").await;
            // Held in memory from here on.
            for _ in 0..3 {
                assert_eq!(check_in_status(&device, &server).await.0, StatusCode::OK);
            }
            let id = device.id.expect("known");
            let changed = server
                .admin_post(&format!("/devices/{id}/{verb}"), Value::Null)
                .await;
            assert_eq!(changed.status(), StatusCode::OK);
            assert_eq!(
                check_in_status(&device, &server).await.0,
                StatusCode::UNAUTHORIZED,
                "the very next check-in after {verb}"
            );
        }
    }
}
