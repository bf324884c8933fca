//! Probes, metrics and the OpenAPI document.

use crate::support::*;
use reqwest::StatusCode;

#[tokio::test]
async fn probes_metrics_and_openapi() {
    let server = TestServer::start(Backend::Sqlite).await;
    let get = |path: &str| server.client.get(format!("{}{path}", server.url)).send();
    assert_eq!(
        get("/healthz").await.expect("healthz").status(),
        StatusCode::OK
    );
    assert_eq!(
        get("/readyz").await.expect("readyz").status(),
        StatusCode::OK
    );

    let device = accepted_device(&server, "SN-M", "pi4").await;
    device.check_in(&server).await;
    let metrics = get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("airlift_check_ins_total 1"), "{metrics}");
    assert!(metrics.contains("airlift_http_requests_total"), "{metrics}");
    assert!(
        metrics.contains("route=\"/api/device/v1/check-in\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("airlift_deployments{status=\"active\"}"),
        "{metrics}"
    );

    let openapi: serde_json::Value = get("/api/openapi.json")
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    for path in [
        "/api/v1/packages",
        "/api/v1/deployments/{deployment_id}",
        "/api/device/v1/check-in",
        "/api/device/v1/deployments/{deployment_id}/download",
    ] {
        assert!(
            openapi["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(openapi["components"]["schemas"]["Inventory"].is_object());
}
