//! What a hostile or careless client sends, on both databases: filters that
//! would keep the database busy, NUL characters, odd `Range` headers,
//! floods of new devices, tokens that outlive their device's admission.
//! Each gets a clear answer and changes nothing.

use crate::support::*;
use airlift_protocol::state::UpdateState;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn viewer_token(server: &TestServer) -> String {
    let created = json_status(
        server
            .admin_post("/tokens", json!({"name": "reader", "role": "viewer"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    created["secret"].as_str().expect("secret").to_owned()
}

fn pairs(count: usize) -> String {
    (0..count)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn filters_are_bounded_so_a_viewer_cannot_tie_up_the_database() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let viewer = viewer_token(&server).await;
        let list = |query: String| {
            server
                .client
                .get(server.api(&format!("/devices?{query}")))
                .bearer_auth(&viewer)
                .send()
        };
        let most = list(format!("attributes={}&installed={}", pairs(16), pairs(16)))
            .await
            .expect("list");
        assert_eq!(most.status(), StatusCode::OK);
        for query in [
            format!("attributes={}", pairs(17)),
            format!("installed={}", pairs(1000)),
            format!("attributes=k={}", "v".repeat(1025)),
            format!("tag={}", "t".repeat(65)),
            format!("device_type={}", "d".repeat(129)),
        ] {
            let refused = list(query.clone()).await.expect("list");
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{query:.60}");
            let body: Value = refused.json().await.expect("json body");
            assert_eq!(body["code"], "bad_request");
        }
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let attributes: serde_json::Map<String, Value> =
            (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        let refused = server
            .admin_post(
                "/deployments",
                json!({"name": "wide", "package_id": package.id, "target": {"attributes": attributes}}),
            )
            .await;
        let body = json_status(refused, StatusCode::BAD_REQUEST).await;
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("target.attributes")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_nul_character_is_refused_by_name_on_both_databases() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let refused = server
            .admin_post("/tokens", json!({"name": "a\u{0}b", "role": "viewer"}))
            .await;
        let body = json_status(refused, StatusCode::BAD_REQUEST).await;
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("name: ")),
            "{body}"
        );

        let filtered = server
            .client
            .get(server.api("/devices?tag=a%00b"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("list");
        let body = json_status(filtered, StatusCode::BAD_REQUEST).await;
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains("tag")),
            "{body}"
        );

        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let refused = server
            .admin_post(
                "/deployments",
                json!({"name": "n", "package_id": package.id, "target": {"tag": "x\u{0}"}}),
            )
            .await;
        let body = json_status(refused, StatusCode::BAD_REQUEST).await;
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("target.tag: ")),
            "{body}"
        );

        let mut device = accepted_device(&server, "SN-NUL", "pi4").await;
        for (field, edit) in [
            ("device_type", 0),
            ("attributes.site", 1),
            ("installed.os", 2),
        ] {
            let good = device.inventory.clone();
            match edit {
                0 => device.inventory.device_type = "pi\u{0}4".into(),
                1 => {
                    device
                        .inventory
                        .attributes
                        .insert("site".into(), "lab\u{0}".into());
                }
                _ => {
                    device
                        .inventory
                        .installed
                        .insert("os".into(), "1.0\u{0}".into());
                }
            }
            let response = server
                .client
                .post(format!(
                    "{}{}",
                    server.url,
                    airlift_protocol::device::CHECK_IN_PATH
                ))
                .bearer_auth(device.token.as_deref().expect("token"))
                .json(&device.inventory)
                .send()
                .await
                .expect("check-in");
            let body = json_status(response, StatusCode::BAD_REQUEST).await;
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&format!("{field}: "))),
                "{field}: {body}"
            );
            device.inventory = good;
        }
        // Nothing was stored, and the server is well.
        device.check_in(&server).await;
        let shown = server
            .admin_get(&format!("/devices/{}", device.id.expect("id")))
            .await;
        assert_eq!(shown["device_type"], "pi4");
    }
}

#[tokio::test]
async fn a_refused_device_can_neither_download_nor_report_with_the_token_it_still_holds() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let device = accepted_device(&server, "SN-GONE", "pi4").await;
        let other = accepted_device(&server, "SN-STAYS", "pi4").await;
        let deployment = server.deploy(&package, &[&device, &other]).await;
        assert_eq!(
            device.download(&server, deployment, &[]).await.status(),
            StatusCode::OK
        );
        let id = device.id.expect("id");
        for action in ["reject", "decommission"] {
            let response = server
                .admin_post(&format!("/devices/{id}/{action}"), Value::Null)
                .await;
            assert!(
                response.status() == StatusCode::OK || response.status() == StatusCode::CONFLICT,
                "{action}: {}",
                response.status()
            );
            let download = device.download(&server, deployment, &[]).await;
            assert_eq!(download.status(), StatusCode::UNAUTHORIZED, "{action}");
            let report = device
                .report(&server, deployment, UpdateState::Failure, Some("forged"))
                .await;
            assert_eq!(report.status(), StatusCode::UNAUTHORIZED, "{action}");
        }
        // Its failure was never counted: the deployment goes on for the other.
        let detail = server
            .admin_get(&format!("/deployments/{deployment}"))
            .await;
        assert_eq!(detail["status"], "active", "{detail}");
        assert_eq!(
            other.download(&server, deployment, &[]).await.status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn range_headers_follow_rfc_9110() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (package, file) = server.upload("os", "2.0.0", "pi4").await;
    let device = accepted_device(&server, "SN-R", "pi4").await;
    let deployment = server.deploy(&package, &[&device]).await;
    let size = file.len();
    for ignored in ["bytes=abc", "items=0-5", "bytes=0-1,5-9", "bytes"] {
        let response = device
            .download(&server, deployment, &[("range", ignored.to_owned())])
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{ignored}");
        let body = response.bytes().await.expect("body");
        assert_eq!(body.len(), size, "{ignored}: the whole package");
    }
    let partial = device
        .download(&server, deployment, &[("range", "bytes=10-19".into())])
        .await;
    assert_eq!(partial.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&partial.bytes().await.expect("body")[..], &file[10..20]);
    let beyond = device
        .download(&server, deployment, &[("range", format!("bytes={size}-"))])
        .await;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let body: Value = beyond.json().await.expect("json error body");
    assert_eq!(body["code"], "range_not_satisfiable");
}

#[tokio::test]
async fn new_devices_are_rate_limited_per_address_and_the_queue_is_capped() {
    let fresh = Backend::all().await;
    for (backend, another) in Backend::all().await.into_iter().zip(fresh) {
        let server = TestServer::start_with(backend, &["--first-contact-per-minute", "3"]).await;
        let mut known = TestDevice::new("SN-0", "pi4");
        assert_eq!(known.authenticate(&server).await, StatusCode::ACCEPTED);
        for serial in ["SN-1", "SN-2"] {
            let mut device = TestDevice::new(serial, "pi4");
            assert_eq!(device.authenticate(&server).await, StatusCode::ACCEPTED);
        }
        let flood = TestDevice::new("SN-3", "pi4");
        let body = flood.auth_body();
        let response = server
            .client
            .post(format!(
                "{}{}",
                server.url,
                airlift_protocol::device::AUTH_PATH
            ))
            .header(
                airlift_protocol::device::SIGNATURE_HEADER,
                flood.sign(&body),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("auth");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=21).contains(&wait), "{wait}");
        let pending = server.admin_get("/devices?status=pending").await;
        assert_eq!(pending["total"], 3, "the refused one was not queued");
        // A device the server knows is never held back.
        assert_eq!(known.authenticate(&server).await, StatusCode::ACCEPTED);
        drop(server);

        let server = TestServer::start_with(another, &["--max-pending-devices", "2"]).await;
        for serial in ["SN-A", "SN-B"] {
            let mut device = TestDevice::new(serial, "pi4");
            assert_eq!(device.authenticate(&server).await, StatusCode::ACCEPTED);
        }
        let mut third = TestDevice::new("SN-C", "pi4");
        assert_eq!(
            third.authenticate(&server).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}

#[tokio::test]
async fn an_admin_token_from_the_environment_stays_revoked_across_restarts() {
    for backend in Backend::all().await {
        let mut server = TestServer::start(backend).await;
        let created = json_status(
            server
                .admin_post("/tokens", json!({"name": "second", "role": "admin"}))
                .await,
            StatusCode::CREATED,
        )
        .await;
        let second = created["secret"].as_str().expect("secret").to_owned();
        let me = server.admin_get("/whoami").await;
        let env_token_id = me["id"].as_str().expect("id").to_owned();
        let revoked = server
            .client
            .delete(server.api(&format!("/tokens/{env_token_id}")))
            .bearer_auth(&second)
            .send()
            .await
            .expect("revoke");
        assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
        server.crash_and_restart();
        let refused = server
            .client
            .get(server.api("/whoami"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("whoami");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let still = server
            .client
            .get(server.api("/whoami"))
            .bearer_auth(&second)
            .send()
            .await
            .expect("whoami");
        assert_eq!(still.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn every_error_has_the_json_body_the_framework_ones_too() {
    let server = TestServer::start(Backend::Sqlite).await;
    let huge = vec![b'x'; 100 * 1024];
    let cases = [
        server
            .client
            .post(format!(
                "{}{}",
                server.url,
                airlift_protocol::device::AUTH_PATH
            ))
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .await
            .expect("auth"),
        server
            .client
            .get(format!("{}/api/v1/no-such-thing", server.url))
            .send()
            .await
            .expect("unknown route"),
        server
            .client
            .delete(server.api("/whoami"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("wrong method"),
    ];
    let expected = [
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        (StatusCode::NOT_FOUND, "not_found"),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (response, (status, code)) in cases.into_iter().zip(expected) {
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.expect("a JSON error body");
        assert_eq!(body["code"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test]
async fn readiness_names_each_dependency_and_answers_fast() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let started = std::time::Instant::now();
        let response = server
            .client
            .get(format!("{}/readyz", server.url))
            .send()
            .await
            .expect("readyz");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "ready");
        for check in ["database", "blobs", "change_feed"] {
            assert_eq!(body[check]["status"], "ok", "{check}: {body}");
        }
    }
}

/// A stored setting, read from the server's database directly.
async fn stored_setting(server: &TestServer, key: &str) -> String {
    use sqlx::Connection;
    let query = "SELECT value FROM settings WHERE key = $1";
    match &server.backend {
        Backend::Sqlite => {
            let path = data_dir(server).join("airlift.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("open SQLite");
            sqlx::query_scalar(query)
                .bind(key)
                .fetch_one(&mut conn)
                .await
                .expect("setting")
        }
        Backend::Postgres(schema) => {
            let mut conn = sqlx::PgConnection::connect(schema.url())
                .await
                .expect("connect");
            sqlx::query_scalar(query)
                .bind(key)
                .fetch_one(&mut conn)
                .await
                .expect("setting")
        }
    }
}

#[tokio::test]
async fn a_device_token_claiming_a_longer_life_than_the_server_gives_is_refused() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let device = accepted_device(&server, "SN-LONG", "pi4").await;
        let secret = stored_setting(&server, "device_token_secret").await;
        let now = chrono::Utc::now().timestamp();
        let forge = |iat: i64, exp: i64| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &json!({"sub": device.id.expect("id").to_string(), "aud": "airlift-device", "iat": iat, "exp": exp}),
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )
            .expect("token")
        };
        let check_in = |token: String| {
            server
                .client
                .post(format!(
                    "{}{}",
                    server.url,
                    airlift_protocol::device::CHECK_IN_PATH
                ))
                .bearer_auth(token)
                .json(&device.inventory)
                .send()
        };
        let fair = check_in(forge(now, now + 3600)).await.expect("check-in");
        assert_eq!(
            fair.status(),
            StatusCode::OK,
            "a token as the server issues them"
        );
        for (iat, exp) in [(now, now + 30 * 86_400), (now - 86_400 * 365, now + 60)] {
            let refused = check_in(forge(iat, exp)).await.expect("check-in");
            assert_eq!(
                refused.status(),
                StatusCode::UNAUTHORIZED,
                "iat {iat} exp {exp}"
            );
        }
    }
}

#[tokio::test]
async fn what_an_upload_killed_mid_way_left_is_swept_at_the_next_start() {
    for backend in Backend::all().await {
        let mut server = TestServer::start(backend).await;
        let data = data_dir(&server);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
        let leftovers = [
            data.join("spool/upload-a1b2.spool"),
            data.join("blobs/packages/0b0e0000-0000-4000-8000-000000000000.airlift#1"),
        ];
        let fresh = data.join("spool/upload-c3d4.spool");
        for (path, when) in leftovers
            .iter()
            .map(|p| (p, old))
            .chain([(&fresh, std::time::SystemTime::now())])
        {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, vec![0u8; 4096]).expect("partial file");
            std::fs::File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_modified(when))
                .expect("age it");
        }
        let (package, file) = server.upload("os", "2.0.0", "pi4").await;
        server.crash_and_restart();
        for path in &leftovers {
            assert!(!path.exists(), "{} was swept", path.display());
        }
        assert!(
            fresh.exists(),
            "an upload that may still be running is left"
        );
        // The packages themselves are untouched.
        let device = accepted_device(&server, "SN-SW", "pi4").await;
        let deployment = server.deploy(&package, &[&device]).await;
        let body = device
            .download(&server, deployment, &[])
            .await
            .bytes()
            .await
            .expect("download");
        assert_eq!(&body[..], &file[..]);
    }
}

/// A TCP relay to PostgreSQL that can go silent, as a database does whose
/// host hangs: connections stay open and nothing comes back.
struct FreezableRelay {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezableRelay {
    async fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = std::sync::Arc::clone(&frozen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let gate = std::sync::Arc::clone(&gate);
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let pump = |mut from: tokio::net::tcp::OwnedReadHalf,
                                mut to: tokio::net::tcp::OwnedWriteHalf,
                                gate: std::sync::Arc<std::sync::atomic::AtomicBool>| async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buffer = vec![0u8; 16 * 1024];
                        loop {
                            while gate.load(Ordering::SeqCst) {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            }
                            match from.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    while gate.load(Ordering::SeqCst) {
                                        tokio::time::sleep(std::time::Duration::from_millis(20))
                                            .await;
                                    }
                                    if to.write_all(&buffer[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    };
                    let up = pump(client_read, server_write, std::sync::Arc::clone(&gate));
                    let down = pump(server_read, client_write, gate);
                    tokio::join!(up, down);
                });
            }
        });
        Self { port, frozen }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen
            .store(frozen, std::sync::atomic::Ordering::SeqCst);
    }
}

// Multi-threaded: starting the server blocks a thread while the relay's
// tasks must run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_says_within_a_second_that_a_hanging_database_is_unavailable() {
    let Some(schema) = airlift_testkit::postgres::FreshSchema::create("srv") else {
        eprintln!("PostgreSQL not tested");
        return;
    };
    let relay = FreezableRelay::start("127.0.0.1:5432".parse().expect("address")).await;
    let url = schema
        .url()
        .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", relay.port), 1);
    assert_ne!(url, schema.url(), "the test database is on 127.0.0.1:5432");
    let server = TestServer::start_with(Backend::Sqlite, &["--database-url", &url]).await;
    let ready = |server: &TestServer| {
        let request = server.client.get(format!("{}/readyz", server.url)).send();
        async move {
            let started = std::time::Instant::now();
            let response = request.await.expect("readyz answers");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            (status, body, started.elapsed())
        }
    };
    let (status, _, _) = ready(&server).await;
    assert_eq!(status, StatusCode::OK);
    relay.freeze(true);
    let (status, body, took) = ready(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    assert_eq!(body["database"]["status"], "failed", "{body}");
    assert_eq!(body["blobs"]["status"], "ok", "{body}");
    relay.freeze(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body, _) = ready(&server).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still unavailable after the database came back: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
