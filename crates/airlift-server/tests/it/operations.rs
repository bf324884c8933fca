//! Probes, metrics and the OpenAPI document.

use crate::support::*;
use reqwest::StatusCode;

#[tokio::test]
async fn probes_metrics_and_openapi() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
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
        assert!(
            metrics.contains("airlift_store_change_feed_listening 1"),
            "{metrics}"
        );
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
}

#[tokio::test]
async fn serves_https_when_given_a_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("self-signed certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    let cert_arg = cert.to_string_lossy().into_owned();
    let key_arg = key.to_string_lossy().into_owned();
    let server = TestServer::start_with(
        Backend::Sqlite,
        &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
    )
    .await;
    assert!(server.url.starts_with("https://"), "{}", server.url);

    let trusted = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).expect("pem"),
        )
        .build()
        .expect("client");
    let url = format!("{}/healthz", server.url.replace("127.0.0.1", "localhost"));
    let answer = trusted.get(&url).send().await.expect("https request");
    assert_eq!(answer.status(), StatusCode::OK);
    // A client that does not trust the certificate is refused the connection.
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
}
