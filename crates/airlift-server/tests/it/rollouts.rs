//! Phased deployments through the API of the real server: requests that
//! cannot be carried out are refused with the field named and nothing
//! stored; only admitted devices are offered the package; the operator's
//! controls work; and the engine, running in the server, advances phases.

use crate::support::{accepted_device, json_status, Backend, TestServer};
use airlift_protocol::install::InstallPermit;
use airlift_protocol::state::UpdateState;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn phased(phases: Value, threshold: Value) -> Value {
    json!({"type": "phased", "phases": phases, "failure_threshold": threshold})
}

#[tokio::test]
async fn impossible_rollouts_are_refused_naming_the_field_and_nothing_is_stored() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let device = accepted_device(&server, "SN-1", "pi4").await;
        let id = device.id.expect("known").to_string();
        let ok_phases = json!([{"devices": {"percent": 50}}, {"devices": {"percent": 100}}]);
        let cases = [
            (
                json!({"name": "x", "package_id": uuid::Uuid::new_v4(), "target": {"devices": [id]}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "package_id",
            ),
            (
                json!({"name": "x", "package_id": package.id, "target": {"devices": []}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "target.devices",
            ),
            (
                json!({"name": "x", "package_id": package.id, "target": {"devices": [id]},
                       "strategy": phased(json!([{"devices": {"percent": 50}}, {"devices": {"percent": 40}}]), json!({"percent": 10}))}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "strategy.phases[1].devices.percent",
            ),
            (
                json!({"name": "x", "package_id": package.id, "target": {"devices": [id]},
                       "strategy": phased(ok_phases.clone(), json!({"percent": 150}))}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "strategy.failure_threshold.percent",
            ),
            (
                json!({"name": "x", "package_id": package.id, "target": {"devices": [id]},
                       "strategy": phased(json!([{"devices": {"percent": 100}, "success_percent": 101}]), json!({"count": 1}))}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "strategy.phases[0].success_percent",
            ),
            (
                json!({"name": "x", "package_id": package.id, "target": {"devices": [id]},
                       "strategy": phased(json!([{"devices": {"tag": "nobody"}}, {"devices": {"percent": 100}}]), json!({"count": 1}))}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "strategy.phases[0].devices.tag",
            ),
            (
                json!({"name": "x", "package_id": package.id, "target": {"devices": [id]},
                       "install": {"window": {"start": "02:00", "end": "02:00"}}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "install.window",
            ),
        ];
        for (body, status, field) in cases {
            let response = server.admin_post("/deployments", body.clone()).await;
            let answer = json_status(response, status).await;
            let message = answer["message"].as_str().unwrap_or_default();
            assert!(message.contains(field), "{body}: {message}");
        }
        assert_eq!(
            server.admin_get("/deployments").await["items"],
            json!([]),
            "nothing stored"
        );

        // A second deployment racing for a device still updating: 409.
        server.deploy(&package, &[&device]).await;
        let (other, _) = server.upload("os", "2.1.0", "pi4").await;
        let response = server
            .admin_post(
                "/deployments",
                json!({"name": "race", "package_id": other.id, "target": {"devices": [id]}}),
            )
            .await;
        let answer = json_status(response, StatusCode::CONFLICT).await;
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains("target"),
            "{answer}"
        );
        assert_eq!(
            server.admin_get("/deployments").await["items"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }
}

#[tokio::test]
async fn only_admitted_devices_are_offered_and_the_operator_steers_the_rollout() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let mut devices = Vec::new();
        for n in 0..4 {
            devices.push(accepted_device(&server, &format!("SN-{n}"), "pi4").await);
        }
        let ids: Vec<String> = devices
            .iter()
            .map(|d| d.id.expect("known").to_string())
            .collect();
        // Phase 1: the first device as canary; phase 2: everyone; by hand.
        let strategy = json!({
            "type": "phased",
            "phases": [{"devices": {"devices": [ids[0]]}}, {"devices": {"percent": 100}}],
            "failure_threshold": {"count": 0},
            "advance": "manual"
        });
        let response = server
            .admin_post(
                "/deployments",
                json!({"name": "staged", "package_id": package.id, "target": {"devices": ids}, "strategy": strategy}),
            )
            .await;
        let created = json_status(response, StatusCode::CREATED).await;
        let deployment = created["id"].as_str().expect("id").to_owned();

        // The engine (every second) admits the canary; only it is offered.
        let mut offered = false;
        for _ in 0..50 {
            if devices[0].check_in(&server).await.update.is_some() {
                offered = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(offered, "the canary is offered the package");
        for device in &devices[1..] {
            assert!(
                device.check_in(&server).await.update.is_none(),
                "not admitted yet"
            );
        }
        let dep_id = deployment.parse().expect("uuid");
        json_status(
            devices[0]
                .report(&server, dep_id, UpdateState::Success, None)
                .await,
            StatusCode::OK,
        )
        .await;

        // Manual: it waits; pause and resume; advance admits the rest.
        let control = |action: &str| format!("/deployments/{deployment}/{action}");
        let paused = json_status(
            server.admin_post(&control("pause"), Value::Null).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(paused["status"], "paused");
        let refused = server.admin_post(&control("advance"), Value::Null).await;
        assert_eq!(
            refused.status(),
            StatusCode::CONFLICT,
            "a paused rollout does not advance"
        );
        let resumed = json_status(
            server.admin_post(&control("resume"), Value::Null).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(resumed["status"], "active");
        let advanced = json_status(
            server.admin_post(&control("advance"), Value::Null).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(advanced["rollout"]["phase"], 1);
        let mut all_offered = false;
        for _ in 0..50 {
            let mut offers = 0;
            for device in &devices[1..] {
                offers += usize::from(device.check_in(&server).await.update.is_some());
            }
            if offers == 3 {
                all_offered = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(all_offered, "phase 2 admits everyone");
        let detail = server
            .admin_get(&format!("/deployments/{deployment}"))
            .await;
        assert_eq!(detail["rollout"]["phases"][0]["succeeded"], 1, "{detail}");
        assert_eq!(detail["rollout"]["phases"][1]["admitted"], 3, "{detail}");

        // Abort: the devices not done are cancelled and stop.
        let aborted = json_status(
            server.admin_post(&control("abort"), Value::Null).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(aborted["status"], "aborted");
        assert_eq!(aborted["counts"]["cancelled"], 3, "{aborted}");
        let gone = devices[1].download(&server, dep_id, &[]).await;
        assert_eq!(gone.status(), StatusCode::GONE);
        let again = server.admin_post(&control("resume"), Value::Null).await;
        assert_eq!(again.status(), StatusCode::CONFLICT);
    }
}

/// The hour of the day now, UTC.
fn hour_now() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    secs % 86_400 / 3600
}

#[tokio::test]
async fn download_only_and_install_windows_hold_the_install_until_released() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let held = accepted_device(&server, "SN-held", "pi4").await;
        let held_id = held.id.expect("known");
        let created = json_status(
            server
                .admin_post(
                    "/deployments",
                    json!({"name": "held", "package_id": package.id,
                           "target": {"devices": [held_id]}, "install": {"download_only": true}}),
                )
                .await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(created["install"]["download_only"], true, "{created}");
        let deployment = created["id"].as_str().expect("id").to_owned();
        let dep_id = deployment.parse().expect("uuid");

        // Offered, to download; the install waits.
        let offer = held.check_in(&server).await.update.expect("offered");
        assert!(
            matches!(&offer.install, InstallPermit::Later { reason, until: None } if reason.contains("download-only")),
            "{:?}",
            offer.install
        );
        for state in [UpdateState::Downloading, UpdateState::Downloaded] {
            json_status(
                held.report(&server, dep_id, state, None).await,
                StatusCode::OK,
            )
            .await;
        }
        let offer = held
            .check_in(&server)
            .await
            .update
            .expect("still offered while waiting");
        assert_ne!(offer.install, InstallPermit::Now);

        // A viewer cannot release it; an operator can, once.
        let viewer = json_status(
            server
                .admin_post("/tokens", json!({"name": "dashboard", "role": "viewer"}))
                .await,
            StatusCode::CREATED,
        )
        .await;
        let release = server.api(&format!("/deployments/{deployment}/install"));
        let refused = server
            .client
            .post(&release)
            .bearer_auth(viewer["secret"].as_str().expect("secret"))
            .send()
            .await
            .expect("request");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let path = format!("/deployments/{deployment}/install");
        let released =
            json_status(server.admin_post(&path, Value::Null).await, StatusCode::OK).await;
        assert!(
            released["install"].get("download_only").is_none(),
            "{released}"
        );
        let offer = held.check_in(&server).await.update.expect("offered");
        assert_eq!(offer.install, InstallPermit::Now, "released: install now");
        let again = server.admin_post(&path, Value::Null).await;
        let answer = json_status(again, StatusCode::CONFLICT).await;
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains("not download-only"),
            "{answer}"
        );
        let audit = server.admin_get("/audit").await;
        assert!(audit.to_string().contains("deployment.install"), "{audit}");

        // A window open now (for an hour at least) → install now; one that
        // opens in 12 hours → later.
        let hour = hour_now();
        for (serial, start, now) in [
            ("SN-open", hour, true),
            ("SN-closed", (hour + 12) % 24, false),
        ] {
            let device = accepted_device(&server, serial, "pi4").await;
            let window = json!({"start": format!("{start:02}:00"), "end": format!("{:02}:00", (start + 2) % 24)});
            json_status(
                server
                    .admin_post(
                        "/deployments",
                        json!({"name": serial, "package_id": package.id,
                               "target": {"devices": [device.id.expect("known")]},
                               "install": {"window": window}}),
                    )
                    .await,
                StatusCode::CREATED,
            )
            .await;
            let offer = device.check_in(&server).await.update.expect("offered");
            if now {
                assert_eq!(offer.install, InstallPermit::Now, "{window}");
            } else {
                assert!(
                    matches!(&offer.install, InstallPermit::Later { reason, until: Some(until) } if reason.contains("install window") && *until > chrono::Utc::now()),
                    "{window}: {:?}",
                    offer.install
                );
            }
        }
    }
}
