//! Dynamic deployments — a tag or attributes target takes in devices that
//! join it later and stays active until it ends — and the lists that come
//! in pages: tokens, audit entries, a deployment's devices.

use crate::support::*;
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A device that checks in, is offered `deployment` and reports success.
async fn updates(server: &TestServer, device: &TestDevice, deployment: DeploymentId) {
    let offer = device.check_in(server).await.update.expect("an offer");
    assert_eq!(offer.deployment_id, deployment);
    let response = device
        .report(server, deployment, UpdateState::Success, None)
        .await;
    assert!(response.status().is_success(), "{}", response.status());
}

async fn detail(server: &TestServer, deployment: DeploymentId) -> Value {
    server
        .admin_get(&format!("/deployments/{deployment}"))
        .await
}

/// Polls the deployment until its status is `status` (the rollout engine
/// ticks every second), or fails after 20 s.
async fn wait_for_status(server: &TestServer, deployment: DeploymentId, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = detail(server, deployment).await;
        if shown["status"] == status {
            return shown;
        }
        assert!(Instant::now() < deadline, "never {status}: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_tag_deployment_takes_in_late_devices_until_an_operator_ends_it() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let first = accepted_device(&server, "SN-first", "pi4").await;
        first.check_in(&server).await;
        tag_device(&server, &first, "field").await;
        let created = server
            .admin_post(
                "/deployments",
                json!({"name": "field", "package_id": package.id, "target": {"tag": "field"}}),
            )
            .await;
        let created = json_status(created, StatusCode::CREATED).await;
        assert_eq!(created["dynamic"], true, "{created}");
        assert!(created.get("ends_at").is_none(), "{created}");
        let deployment: DeploymentId = created["id"].as_str().expect("id").parse().expect("id");

        // Every device it has succeeds: it stays active for the next ones,
        // past a few ticks of the rollout engine.
        updates(&server, &first, deployment).await;
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let shown = detail(&server, deployment).await;
        assert_eq!(shown["status"], "active", "{shown}");
        assert_eq!(shown["joined_late"], 0);

        // A device tagged afterwards is offered it at its next check-in,
        // and counted as having joined late.
        let late = accepted_device(&server, "SN-late", "pi4").await;
        assert!(
            late.check_in(&server).await.update.is_none(),
            "not tagged yet"
        );
        tag_device(&server, &late, "field").await;
        updates(&server, &late, deployment).await;
        let shown = detail(&server, deployment).await;
        assert_eq!(shown["status"], "active", "{shown}");
        assert_eq!(shown["joined_late"], 1, "{shown}");
        assert_eq!(shown["counts"]["success"], 2, "{shown}");
        let devices = server
            .admin_get(&format!(
                "/deployments/{deployment}/devices?per_page=1&page=2"
            ))
            .await;
        assert_eq!(
            (devices["total"].as_u64(), devices["page"].as_u64()),
            (Some(2), Some(2))
        );
        let all = server
            .admin_get(&format!("/deployments/{deployment}/devices"))
            .await;
        let late_id = late.id.expect("id").to_string();
        for item in all["items"].as_array().expect("items") {
            let joined = item["joined_late"].as_bool().unwrap_or(false);
            assert_eq!(joined, item["device_id"] == late_id.as_str(), "{item}");
        }

        // The operator ends it: everything is done, so it finishes at once;
        // a device tagged now is not taken in.
        let ended = server
            .admin_post(&format!("/deployments/{deployment}/end"), Value::Null)
            .await;
        let ended = json_status(ended, StatusCode::OK).await;
        assert_eq!(ended["status"], "finished", "{ended}");
        assert!(ended["ends_at"].is_string(), "{ended}");
        let after = accepted_device(&server, "SN-after", "pi4").await;
        tag_device(&server, &after, "field").await;
        assert!(
            after.check_in(&server).await.update.is_none(),
            "ended: not taken in"
        );
        let again = server
            .admin_post(&format!("/deployments/{deployment}/end"), Value::Null)
            .await;
        json_status(again, StatusCode::CONFLICT).await;
        let audit = server.admin_get("/audit?action=deployment.end").await;
        assert_eq!(audit["total"], 1, "{audit}");
        assert_eq!(audit["items"][0]["object"], deployment.to_string());
    }
}

#[tokio::test]
async fn an_end_date_ends_a_dynamic_deployment_by_itself() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let device = accepted_device(&server, "SN-1", "pi4").await;
        device.check_in(&server).await;
        tag_device(&server, &device, "field").await;
        let ends_at = chrono::Utc::now() + chrono::Duration::seconds(3);
        let created = server
            .admin_post(
                "/deployments",
                json!({"name": "field", "package_id": package.id, "target": {"tag": "field"},
                       "ends_at": ends_at}),
            )
            .await;
        let created = json_status(created, StatusCode::CREATED).await;
        let deployment: DeploymentId = created["id"].as_str().expect("id").parse().expect("id");
        updates(&server, &device, deployment).await;
        assert_eq!(detail(&server, deployment).await["status"], "active");
        let finished = wait_for_status(&server, deployment, "finished").await;
        let finished_at: chrono::DateTime<chrono::Utc> = finished["finished_at"]
            .as_str()
            .expect("finished_at")
            .parse()
            .expect("time");
        assert!(finished_at >= ends_at, "{finished}");
    }
}

#[tokio::test]
async fn device_lists_stay_static_and_bad_end_dates_are_refused() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (package, _) = server.upload("os", "2.0.0", "pi4").await;
    let device = accepted_device(&server, "SN-1", "pi4").await;
    device.check_in(&server).await;
    tag_device(&server, &device, "lab").await;
    let id = device.id.expect("id").to_string();
    let refused = [
        (
            json!({"devices": [id]}),
            json!({"dynamic": true}),
            "dynamic",
        ),
        (
            json!({"devices": [id]}),
            json!({"ends_at": "2999-01-01T00:00:00Z"}),
            "ends_at",
        ),
        (
            json!({"tag": "lab"}),
            json!({"dynamic": false, "ends_at": "2999-01-01T00:00:00Z"}),
            "ends_at",
        ),
        (
            json!({"tag": "lab"}),
            json!({"ends_at": "2001-01-01T00:00:00Z"}),
            "ends_at",
        ),
    ];
    for (target, extra, field) in refused {
        let mut body = json!({"name": "x", "package_id": package.id, "target": target});
        for (key, value) in extra.as_object().expect("object") {
            body[key] = value.clone();
        }
        let answer = server.admin_post("/deployments", body.clone()).await;
        let answer = json_status(answer, StatusCode::UNPROCESSABLE_ENTITY).await;
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{body}: {answer}");
    }

    // A static tag deployment finishes once its devices are done, and
    // cannot be ended.
    let created = server
        .admin_post(
            "/deployments",
            json!({"name": "lab", "package_id": package.id, "target": {"tag": "lab"}, "dynamic": false}),
        )
        .await;
    let created = json_status(created, StatusCode::CREATED).await;
    assert_eq!(created["dynamic"], false);
    let deployment: DeploymentId = created["id"].as_str().expect("id").parse().expect("id");
    let end = server
        .admin_post(&format!("/deployments/{deployment}/end"), Value::Null)
        .await;
    let end = json_status(end, StatusCode::CONFLICT).await;
    assert!(
        end["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not dynamic"),
        "{end}"
    );
    updates(&server, &device, deployment).await;
    assert_eq!(detail(&server, deployment).await["status"], "finished");
}

#[tokio::test]
async fn tokens_audit_and_a_deployments_devices_come_in_pages() {
    let server = TestServer::start(Backend::Sqlite).await;
    for name in ["ci", "grafana", "wallboard"] {
        let created = server
            .admin_post("/tokens", json!({"name": name, "role": "viewer"}))
            .await;
        json_status(created, StatusCode::CREATED).await;
        // Tokens are ordered by creation time, in milliseconds (then by
        // their random id): two made within one would come in either order.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    // The admin token from the start, and three more.
    let page = server.admin_get("/tokens?page=2&per_page=3").await;
    assert_eq!(page["total"], 4, "{page}");
    assert_eq!(
        (page["page"].as_u64(), page["per_page"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["items"][0]["name"], "wallboard", "oldest first");
    let first = server.admin_get("/tokens").await;
    assert_eq!(first["per_page"], 100, "{first}");

    let audit = server.admin_get("/audit?action=token.&per_page=2").await;
    assert_eq!(audit["total"], 3, "{audit}");
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(2));
    let newest = audit["items"][0]["id"].as_i64().expect("id");
    let below = server
        .admin_get(&format!(
            "/audit?action=token.&before={newest}&page=1&per_page=10"
        ))
        .await;
    assert_eq!(below["total"], 2, "{below}");

    let (package, _) = server.upload("os", "2.0.0", "pi4").await;
    let mut devices = Vec::new();
    for n in 0..3 {
        let device = accepted_device(&server, &format!("SN-{n}"), "pi4").await;
        device.check_in(&server).await;
        devices.push(device);
    }
    let deployment = server
        .deploy(&package, &devices.iter().collect::<Vec<_>>())
        .await;
    let page = server
        .admin_get(&format!(
            "/deployments/{deployment}/devices?per_page=2&page=2"
        ))
        .await;
    assert_eq!(page["total"], 3, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let pending = server
        .admin_get(&format!("/deployments/{deployment}/devices?state=success"))
        .await;
    assert_eq!(pending["total"], 0, "{pending}");

    for bad in [
        "/tokens?page=0".to_owned(),
        "/tokens?per_page=1001".to_owned(),
        "/audit?limit=5".to_owned(),
        format!("/deployments/{deployment}/devices?per_page=0"),
        format!("/deployments/{deployment}/devices?state=sleeping"),
    ] {
        let response = server
            .client
            .get(server.api(&bad))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let unknown = server
        .client
        .get(server.api(&format!("/deployments/{}/devices", DeploymentId::new())))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}
