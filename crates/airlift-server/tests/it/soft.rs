//! Forced and soft deployments through the real server on both databases:
//! the offer's deferral allowance, deferral reports counted once, the offer
//! turning forced after N deferrals and after the deadline, the detail's
//! totals, and the bounds refused at creation.

use crate::support::{accepted_device, json_status, Backend, TestServer};
use airlift_protocol::soft::{deferral_path, DeferralReport};
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use airlift_testkit::device::{DeviceApi, TestDevice};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

/// Posts deferral number `deferral` for `deployment`.
async fn defer(
    server: &TestServer,
    device: &TestDevice,
    deployment: DeploymentId,
    deferral: u32,
    message: Option<&str>,
) -> Response {
    let report = DeferralReport {
        deferral,
        message: message.map(str::to_owned),
    };
    server
        .http()
        .post(format!(
            "{}{}",
            server.base_url(),
            deferral_path(deployment)
        ))
        .bearer_auth(device.token.as_deref().expect("accepted"))
        .json(&report)
        .send()
        .await
        .expect("deferral report")
}

/// Creates a deployment of a fresh package to `device` with `install`.
async fn deploy(server: &TestServer, device: &TestDevice, version: &str, install: Value) -> Value {
    let (package, _) = server.upload("os", version, "pi4").await;
    json_status(
        server
            .admin_post(
                "/deployments",
                json!({"name": format!("os {version}"), "package_id": package.id,
                       "target": {"devices": [device.id.expect("known")]}, "install": install}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await
}

async fn download(server: &TestServer, device: &TestDevice, deployment: DeploymentId) {
    for state in [UpdateState::Downloading, UpdateState::Downloaded] {
        json_status(
            device.report(server, deployment, state, None).await,
            StatusCode::OK,
        )
        .await;
    }
}

fn id_of(created: &Value) -> DeploymentId {
    created["id"].as_str().expect("id").parse().expect("uuid")
}

#[tokio::test]
async fn a_soft_offer_turns_forced_once_its_deferrals_are_used() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let device = accepted_device(&server, "SN-soft", "pi4").await;
        let created = deploy(
            &server,
            &device,
            "2.0.0",
            json!({"soft": {"max_deferrals": 2}}),
        )
        .await;
        assert_eq!(created["install"]["soft"], json!({"max_deferrals": 2}));
        let id = id_of(&created);

        let offer = device.check_in(&server).await.update.expect("offered");
        let allowance = offer.deferral.expect("soft: may defer");
        assert_eq!((allowance.deferred, allowance.remaining), (0, Some(2)));
        // Nothing to defer before the download is done.
        let early = json_status(
            defer(&server, &device, id, 1, None).await,
            StatusCode::CONFLICT,
        )
        .await;
        assert_eq!(early["code"], "nothing_to_defer", "{early}");
        download(&server, &device, id).await;

        let ack = json_status(
            defer(&server, &device, id, 1, Some("in a call")).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(ack, json!({"deferred": 1, "counted": true}));
        let again = json_status(defer(&server, &device, id, 1, None).await, StatusCode::OK).await;
        assert_eq!(
            again,
            json!({"deferred": 1, "counted": false}),
            "a repeat counts once"
        );
        let skipped = json_status(
            defer(&server, &device, id, 3, None).await,
            StatusCode::CONFLICT,
        )
        .await;
        assert_eq!(skipped["code"], "deferral_out_of_order", "{skipped}");

        let offer = device
            .check_in(&server)
            .await
            .update
            .expect("still offered");
        let allowance = offer.deferral.expect("one left");
        assert_eq!((allowance.deferred, allowance.remaining), (1, Some(1)));
        json_status(defer(&server, &device, id, 2, None).await, StatusCode::OK).await;

        let offer = device
            .check_in(&server)
            .await
            .update
            .expect("still offered");
        assert_eq!(offer.deferral, None, "both deferrals used: forced");
        let refused = json_status(
            defer(&server, &device, id, 3, None).await,
            StatusCode::CONFLICT,
        )
        .await;
        assert_eq!(refused["code"], "install_now", "{refused}");

        let detail = server.admin_get(&format!("/deployments/{id}")).await;
        assert_eq!(
            detail["deferrals"],
            json!({"deferrals": 2, "devices": 1, "most": 2}),
            "{detail}"
        );
        let device_id = device.id.expect("known");
        let history = server.admin_get(&format!("/devices/{device_id}")).await;
        assert!(
            history.to_string().contains("deferred (1 of 2): in a call"),
            "{history}"
        );
        assert!(
            history.to_string().contains("deferred (2 of 2)"),
            "{history}"
        );
    }
}

#[tokio::test]
async fn a_soft_offer_turns_forced_at_its_deadline() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let device = accepted_device(&server, "SN-deadline", "pi4").await;
        let deadline = chrono::Utc::now() + chrono::Duration::seconds(3);
        let created = deploy(
            &server,
            &device,
            "2.0.0",
            json!({"soft": {"deadline": deadline}}),
        )
        .await;
        let id = id_of(&created);
        let offer = device.check_in(&server).await.update.expect("offered");
        let allowance = offer.deferral.expect("before the deadline: may defer");
        assert_eq!(allowance.remaining, None, "unlimited until the deadline");
        assert_eq!(
            allowance.until.map(|u| u.timestamp_millis()),
            Some(deadline.timestamp_millis())
        );
        download(&server, &device, id).await;
        json_status(defer(&server, &device, id, 1, None).await, StatusCode::OK).await;

        let wait = (deadline - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait + std::time::Duration::from_millis(200)).await;
        let offer = device
            .check_in(&server)
            .await
            .update
            .expect("still offered");
        assert_eq!(offer.deferral, None, "past the deadline: forced");
        let refused = json_status(
            defer(&server, &device, id, 2, None).await,
            StatusCode::CONFLICT,
        )
        .await;
        assert_eq!(refused["code"], "install_now", "{refused}");
    }
}

#[tokio::test]
async fn forced_and_held_offers_allow_no_deferral_and_bad_bounds_are_refused() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let device = accepted_device(&server, "SN-forced", "pi4").await;
        let target = json!({"devices": [device.id.expect("known")]});
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let past = chrono::Utc::now() - chrono::Duration::hours(1);
        for (soft, status, field) in [
            (json!({}), StatusCode::UNPROCESSABLE_ENTITY, "install.soft"),
            (
                json!({"max_deferrals": 0}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "max_deferrals",
            ),
            (
                json!({"max_deferrals": 101}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "max_deferrals",
            ),
            (
                json!({"deadline": past}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "deadline",
            ),
            (
                json!({"max_deferrals": 2, "forever": true}),
                StatusCode::BAD_REQUEST,
                "forever",
            ),
        ] {
            let body = json!({"name": "bad", "package_id": package.id, "target": target,
                              "install": {"soft": soft}});
            let answer = json_status(server.admin_post("/deployments", body).await, status).await;
            let message = answer["message"].as_str().unwrap_or_default();
            assert!(message.contains(field), "{soft}: {answer}");
        }

        // Forced (no `soft`): no allowance, no deferral.
        let created = deploy(&server, &device, "2.1.0", json!({})).await;
        assert!(created["install"].get("soft").is_none(), "{created}");
        let id = id_of(&created);
        let offer = device.check_in(&server).await.update.expect("offered");
        assert_eq!(offer.deferral, None);
        download(&server, &device, id).await;
        let refused = json_status(
            defer(&server, &device, id, 1, None).await,
            StatusCode::CONFLICT,
        )
        .await;
        assert_eq!(refused["code"], "install_now", "{refused}");
        let detail = server.admin_get(&format!("/deployments/{id}")).await;
        assert!(detail.get("deferrals").is_none(), "{detail}");
    }
}

#[tokio::test]
async fn a_soft_download_only_deployment_asks_nothing_until_released() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let device = accepted_device(&server, "SN-held", "pi4").await;
        let created = deploy(
            &server,
            &device,
            "2.0.0",
            json!({"download_only": true, "soft": {"max_deferrals": 1}}),
        )
        .await;
        let id = id_of(&created);
        download(&server, &device, id).await;
        let offer = device.check_in(&server).await.update.expect("offered");
        assert_eq!(offer.deferral, None, "held: nothing to ask yet");
        let refused = json_status(
            defer(&server, &device, id, 1, None).await,
            StatusCode::CONFLICT,
        )
        .await;
        assert_eq!(refused["code"], "nothing_to_defer", "{refused}");
        json_status(
            server
                .admin_post(&format!("/deployments/{id}/install"), Value::Null)
                .await,
            StatusCode::OK,
        )
        .await;
        let offer = device.check_in(&server).await.update.expect("offered");
        assert_eq!(
            offer.deferral.and_then(|a| a.remaining),
            Some(1),
            "released: soft"
        );
    }
}
