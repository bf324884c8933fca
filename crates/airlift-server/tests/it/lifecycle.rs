//! The path a release takes: upload → device admitted → deployment → offer →
//! resumable download → reports → success, and what must survive a crash.

use crate::support::*;
use airlift_package::{Limits, PackageReader, TrustSet};
use airlift_protocol::state::UpdateState;
use base64::Engine;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn upload_to_success_on_every_backend() {
    for backend in Backend::all().await {
        upload_to_success(backend).await;
    }
}

async fn upload_to_success(backend: Backend) {
    let server = TestServer::start(backend.clone()).await;
    let (package, file) = server.upload("os", "2.0.0", "pi4").await;
    assert_eq!(package.sha256, hex::encode(Sha256::digest(&file)));
    assert_eq!(
        package.signed_by,
        vec![server.signer.key().public_key().key_id().to_string()]
    );

    let mut device = TestDevice::new("SN-1", "pi4");
    assert_eq!(
        device.authenticate(&server).await,
        StatusCode::ACCEPTED,
        "{backend:?}: new devices wait"
    );
    server.accept(&device).await;
    assert_eq!(device.authenticate(&server).await, StatusCode::OK);
    assert!(
        device.check_in(&server).await.update.is_none(),
        "nothing deployed yet"
    );

    let deployment = server.deploy(&package, &[&device]).await;
    let answer = device.check_in(&server).await;
    assert_eq!(answer.poll_interval_secs, 1);
    let offer = answer.update.expect("an offer");
    assert_eq!(offer.deployment_id, deployment);
    assert_eq!(offer.size, file.len() as u64);

    // The offer's head verifies against the signer before any download.
    let head = base64::engine::general_purpose::STANDARD
        .decode(&offer.signed_manifest)
        .expect("base64");
    let trust = TrustSet::new([server.signer.key().public_key()], 1).expect("trust");
    let verified = PackageReader::open(&head[..], Limits::default())
        .expect("head parses")
        .verify(&trust)
        .expect("head verifies");
    assert_eq!(verified.manifest().version.to_string(), "2.0.0");

    // An interrupted download resumes with Range + If-Range.
    let half = file.len() / 2;
    let first = device
        .download(
            &server,
            deployment,
            &[("range", format!("bytes=0-{}", half - 1))],
        )
        .await;
    assert_eq!(first.status(), StatusCode::PARTIAL_CONTENT);
    let etag = first.headers()["etag"].to_str().expect("etag").to_owned();
    assert_eq!(etag, format!("\"{}\"", package.sha256));
    let mut got = first.bytes().await.expect("bytes").to_vec();
    assert_eq!(got.len(), half);
    let rest = device
        .download(
            &server,
            deployment,
            &[
                ("range", format!("bytes={half}-")),
                ("if-range", etag.clone()),
            ],
        )
        .await;
    assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        rest.headers()["content-range"].to_str().expect("text"),
        format!("bytes {half}-{}/{}", file.len() - 1, file.len())
    );
    got.extend_from_slice(&rest.bytes().await.expect("bytes"));
    assert_eq!(got, file);
    // A stale validator gets the whole file again, not a mismatched range.
    let stale = device
        .download(
            &server,
            deployment,
            &[
                ("range", "bytes=10-".into()),
                ("if-range", "\"other\"".into()),
            ],
        )
        .await;
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.bytes().await.expect("bytes").len(), file.len());
    let beyond = device
        .download(
            &server,
            deployment,
            &[("range", format!("bytes={}-", file.len() + 5))],
        )
        .await;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    for state in [
        UpdateState::Downloading,
        UpdateState::Downloaded,
        UpdateState::Installing,
        UpdateState::Installed,
        UpdateState::Rebooting,
    ] {
        let ack = json_ok(device.report(&server, deployment, state, None).await).await;
        assert_eq!(ack["state"], state.as_str());
        if state == UpdateState::Downloading {
            download_progress_is_shown(&server, &device, deployment).await;
        }
    }
    // Installed is not success: the deployment is still running.
    let detail = server
        .admin_get(&format!("/deployments/{deployment}"))
        .await;
    assert_eq!(detail["status"], "active");
    device
        .inventory
        .installed
        .insert("os".into(), "2.0.0".into());
    device.check_in(&server).await;
    let ack = json_ok(
        device
            .report(&server, deployment, UpdateState::Success, None)
            .await,
    )
    .await;
    assert_eq!(
        ack,
        serde_json::json!({"state": "success", "applied": true})
    );
    // A late report cannot undo success.
    let late = json_ok(
        device
            .report(&server, deployment, UpdateState::Downloading, None)
            .await,
    )
    .await;
    assert_eq!(
        late,
        serde_json::json!({"state": "success", "applied": false})
    );

    let detail = server
        .admin_get(&format!("/deployments/{deployment}"))
        .await;
    assert_eq!(detail["status"], "finished", "{detail}");
    assert_eq!(detail["counts"]["success"], 1);
    let id = device.id.expect("id");
    let shown = server.admin_get(&format!("/devices/{id}")).await;
    assert_eq!(shown["installed"]["os"], "2.0.0");
    let history: Vec<&str> = shown["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| e["state"].as_str().unwrap_or_default())
        .collect();
    assert!(
        history.contains(&"success") && history.contains(&"downloading"),
        "{history:?}"
    );
    assert!(
        device.check_in(&server).await.update.is_none(),
        "done devices get no offer"
    );
}

#[tokio::test]
async fn a_deployment_survives_kill_9() {
    for backend in Backend::all().await {
        let mut server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let device = accepted_device(&server, "SN-2", "pi4").await;
        let deployment = server.deploy(&package, &[&device]).await;
        assert!(device.check_in(&server).await.update.is_some());
        json_ok(
            device
                .report(&server, deployment, UpdateState::Downloading, None)
                .await,
        )
        .await;

        server.crash_and_restart();

        // The device's token and its deployment are still good.
        let offer = device
            .check_in(&server)
            .await
            .update
            .expect("still offered");
        assert_eq!(offer.deployment_id, deployment);
        let full = device.download(&server, deployment, &[]).await;
        assert_eq!(full.status(), StatusCode::OK);
        for state in [
            UpdateState::Installing,
            UpdateState::Rebooting,
            UpdateState::Success,
        ] {
            json_ok(device.report(&server, deployment, state, None).await).await;
        }
        let detail = server
            .admin_get(&format!("/deployments/{deployment}"))
            .await;
        assert_eq!(detail["counts"]["success"], 1, "{detail}");
    }
}

#[tokio::test]
async fn cancelled_deployments_stop_devices_for_good() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let device = accepted_device(&server, "SN-3", "pi4").await;
        let deployment = server.deploy(&package, &[&device]).await;
        json_ok(
            device
                .report(&server, deployment, UpdateState::Downloading, None)
                .await,
        )
        .await;
        json_ok(
            server
                .admin_post(
                    &format!("/deployments/{deployment}/cancel"),
                    serde_json::Value::Null,
                )
                .await,
        )
        .await;

        let download = device
            .download(&server, deployment, &[("range", "bytes=100-".into())])
            .await;
        assert_eq!(download.status(), StatusCode::GONE);
        let body: serde_json::Value = download.json().await.expect("json");
        assert_eq!(body["code"], "deployment_cancelled");
        assert!(device.check_in(&server).await.update.is_none());
        let detail = server
            .admin_get(&format!("/deployments/{deployment}"))
            .await;
        assert_eq!(detail["status"], "cancelled");
        assert_eq!(detail["counts"]["cancelled"], 1);
        // Cancelling twice is a conflict, not a silent success.
        let again = server
            .admin_post(
                &format!("/deployments/{deployment}/cancel"),
                serde_json::Value::Null,
            )
            .await;
        assert_eq!(again.status(), StatusCode::CONFLICT);
    }
}

#[tokio::test]
async fn incompatible_and_already_installed_devices_are_not_offered() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let pi4 = accepted_device(&server, "SN-4", "pi4").await;
        let mut pi5 = accepted_device(&server, "SN-5", "pi5").await;
        pi5.inventory.device_type = "pi5".into();
        pi4.check_in(&server).await;
        pi5.check_in(&server).await;
        let mut current = accepted_device(&server, "SN-6", "pi4").await;
        current
            .inventory
            .installed
            .insert("os".into(), "2.0.0".into());
        current.check_in(&server).await;

        let deployment = server.deploy(&package, &[&pi4, &pi5, &current]).await;
        assert!(
            pi5.check_in(&server).await.update.is_none(),
            "incompatible device offered"
        );
        assert!(
            current.check_in(&server).await.update.is_none(),
            "device already runs it"
        );
        assert!(pi4.check_in(&server).await.update.is_some());
        let detail = server
            .admin_get(&format!("/deployments/{deployment}"))
            .await;
        assert_eq!(detail["counts"]["incompatible"], 1, "{detail}");
        assert_eq!(detail["counts"]["already_installed"], 1, "{detail}");
        // The detail carries counts, not devices: those are paged.
        assert!(detail.get("devices").is_none(), "{detail}");
        let incompatible = server
            .admin_get(&format!(
                "/deployments/{deployment}/devices?state=incompatible"
            ))
            .await;
        assert_eq!(incompatible["total"], 1, "{incompatible}");
        let pi5_state = incompatible["items"][0].clone();
        assert_eq!(pi5_state["device_id"], pi5.id.expect("id").to_string());
        assert!(
            pi5_state["message"]
                .as_str()
                .unwrap_or_default()
                .contains("pi5"),
            "{pi5_state}"
        );
    }
}

#[tokio::test]
async fn the_device_report_is_the_truth() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let mut device = accepted_device(&server, "SN-7", "pi4").await;
        device
            .inventory
            .installed
            .insert("os".into(), "3.0.0".into());
        device.check_in(&server).await;
        // A factory re-flash or bootloader fallback: the device now runs an older version.
        device
            .inventory
            .installed
            .insert("os".into(), "1.0.0".into());
        device
            .inventory
            .attributes
            .insert("region".into(), "eu".into());
        device.check_in(&server).await;
        let shown = server
            .admin_get(&format!("/devices/{}", device.id.expect("id")))
            .await;
        assert_eq!(shown["installed"]["os"], "1.0.0");
        let listed = server
            .admin_get("/devices?attributes=region=eu&installed=os=1.0.0")
            .await;
        assert_eq!(listed["total"], 1, "{listed}");
        let none = server.admin_get("/devices?installed=os=3.0.0").await;
        assert_eq!(none["total"], 0);

        // An unchanged inventory's check-in time is written behind, within seconds.
        let before = shown["last_check_in"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        device.check_in(&server).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = server
                .admin_get(&format!("/devices/{}", device.id.expect("id")))
                .await;
            if now["last_check_in"].as_str().unwrap_or_default() > before.as_str() {
                assert_eq!(now["installed"]["os"], "1.0.0");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "check-in time never written: {now}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn devices_joining_a_tag_later_are_included() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let first = accepted_device(&server, "SN-8", "pi4").await;
        first.check_in(&server).await;
        let tag = |id| {
            server
                .client
                .put(server.api(&format!("/devices/{id}/tags")))
                .bearer_auth(ADMIN_TOKEN)
                .json(&serde_json::json!({"tags": ["field"]}))
                .send()
        };
        assert_eq!(
            tag(first.id.expect("id")).await.expect("tag").status(),
            StatusCode::OK
        );
        let created = server
            .admin_post("/deployments", serde_json::json!({"name": "field", "package_id": package.id, "target": {"tag": "field"}}))
            .await;
        json_status(created, StatusCode::CREATED).await;

        let late = accepted_device(&server, "SN-9", "pi4").await;
        assert!(
            late.check_in(&server).await.update.is_none(),
            "not tagged yet"
        );
        assert_eq!(
            tag(late.id.expect("id")).await.expect("tag").status(),
            StatusCode::OK
        );
        assert!(
            late.check_in(&server).await.update.is_some(),
            "joined the tag, joins the deployment"
        );
    }
}

/// While downloading, the device's progress reports show in the
/// deployment's detail, the latest one only; a report that cannot be true
/// is refused.
async fn download_progress_is_shown(
    server: &TestServer,
    device: &TestDevice,
    deployment: airlift_protocol::DeploymentId,
) {
    use airlift_protocol::device::{Progress, StatusReport};
    for done in [100, 700] {
        let report = StatusReport {
            state: UpdateState::Downloading,
            progress: Some(Progress { done, total: 1000 }),
            message: None,
        };
        let ack = json_ok(device.send_report(server, deployment, &report).await).await;
        assert_eq!(
            ack,
            serde_json::json!({"state": "downloading", "applied": false})
        );
    }
    let devices = server
        .admin_get(&format!("/deployments/{deployment}/devices"))
        .await;
    assert_eq!(
        devices["items"][0]["progress"],
        serde_json::json!({"done": 700, "total": 1000}),
        "{devices}"
    );
    assert!(devices["items"][0]["progress_at"].is_string(), "{devices}");
    let impossible = StatusReport {
        state: UpdateState::Downloading,
        progress: Some(Progress { done: 2, total: 1 }),
        message: None,
    };
    let refused = device.send_report(server, deployment, &impossible).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}
