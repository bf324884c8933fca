//! Who may do what, and what bad input does (nothing, with a clear 4xx).

use crate::support::*;
use airlift_protocol::state::UpdateState;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn management_api_requires_the_right_token() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let no_token = server
            .client
            .get(server.api("/packages"))
            .send()
            .await
            .expect("request");
        assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
        let body: Value = no_token.json().await.expect("json");
        assert_eq!(body["code"], "unauthorized");
        let wrong = server
            .client
            .get(server.api("/packages"))
            .bearer_auth("alt_wrong")
            .send()
            .await
            .expect("request");
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

        let created = json_status(
            server
                .admin_post("/tokens", json!({"name": "dashboard", "role": "viewer"}))
                .await,
            StatusCode::CREATED,
        )
        .await;
        let viewer = created["secret"].as_str().expect("secret").to_owned();
        let read = server
            .client
            .get(server.api("/devices"))
            .bearer_auth(&viewer)
            .send()
            .await
            .expect("request");
        assert_eq!(read.status(), StatusCode::OK);
        let file = build_package(server.signer.key(), "os", "1.0.0", "pi4", 0);
        let upload = server
            .client
            .post(server.api("/packages"))
            .bearer_auth(&viewer)
            .body(file)
            .send()
            .await
            .expect("request");
        assert_eq!(upload.status(), StatusCode::FORBIDDEN);
        let message = upload.json::<Value>().await.expect("json")["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains("viewer"), "{message}");
        let token = server
            .client
            .post(server.api("/tokens"))
            .bearer_auth(&viewer)
            .json(&json!({"name": "x", "role": "admin"}))
            .send()
            .await
            .expect("request");
        assert_eq!(token.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            server.admin_get("/packages").await["items"],
            json!([]),
            "nothing stored"
        );

        // Operators change things but do not mint tokens; revoked tokens stop working.
        let operator = json_status(
            server
                .admin_post("/tokens", json!({"name": "ci", "role": "operator"}))
                .await,
            StatusCode::CREATED,
        )
        .await;
        let secret = operator["secret"].as_str().expect("secret");
        let mint = server
            .client
            .post(server.api("/tokens"))
            .bearer_auth(secret)
            .json(&json!({"name": "x", "role": "viewer"}))
            .send()
            .await
            .expect("request");
        assert_eq!(mint.status(), StatusCode::FORBIDDEN);
        let revoke = server
            .client
            .delete(server.api(&format!("/tokens/{}", operator["id"].as_str().expect("id"))))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
        let after = server
            .client
            .get(server.api("/packages"))
            .bearer_auth(secret)
            .send()
            .await
            .expect("request");
        assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

        // Any token may ask who it is; the last admin token cannot be revoked.
        let me = server
            .client
            .get(server.api("/whoami"))
            .bearer_auth(&viewer)
            .send()
            .await
            .expect("request");
        let me: Value = me.json().await.expect("json");
        assert_eq!(
            (me["name"].as_str(), me["role"].as_str()),
            (Some("dashboard"), Some("viewer"))
        );
        let admin = server.admin_get("/whoami").await;
        let last = server
            .client
            .delete(server.api(&format!("/tokens/{}", admin["id"].as_str().expect("id"))))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(last.status(), StatusCode::CONFLICT);

        let audit = server.admin_get("/audit").await;
        let actions: Vec<&str> = audit["items"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        assert_eq!(actions, ["token.delete", "token.create", "token.create"]);
    }
}

#[tokio::test]
async fn devices_cannot_touch_each_other() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let a = accepted_device(&server, "A", "pi4").await;
        let b = accepted_device(&server, "B", "pi4").await;
        let for_b = server.deploy(&package, &[&b]).await;
        assert!(
            a.check_in(&server).await.update.is_none(),
            "A sees no offer meant for B"
        );
        assert_eq!(
            a.download(&server, for_b, &[]).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            a.report(&server, for_b, UpdateState::Success, None)
                .await
                .status(),
            StatusCode::NOT_FOUND
        );
        let detail = server.admin_get(&format!("/deployments/{for_b}")).await;
        assert_eq!(detail["counts"]["pending"], 1, "B untouched: {detail}");
        // A device token is not a management token, and vice versa.
        let sneaky = server
            .client
            .get(server.api("/devices"))
            .bearer_auth(a.token.clone().expect("token"))
            .send()
            .await
            .expect("request");
        assert_eq!(sneaky.status(), StatusCode::UNAUTHORIZED);
        let admin_as_device = server
            .client
            .post(format!("{}/api/device/v1/check-in", server.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&a.inventory)
            .send()
            .await
            .expect("request");
        assert_eq!(admin_as_device.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn device_auth_refuses_forgeries_and_replays() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let device = TestDevice::new("SN-X", "pi4");
        let body = device.auth_body();
        let signature = device.sign(&body);
        let (status, _) = device.send_auth(&server, &body, &signature).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (replayed, answer) = device.send_auth(&server, &body, &signature).await;
        assert_eq!(replayed, StatusCode::UNAUTHORIZED);
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains("replayed"),
            "{answer}"
        );

        let other = TestDevice::new("SN-Y", "pi4");
        let body = other.auth_body();
        let (forged, _) = other.send_auth(&server, &body, &device.sign(&body)).await;
        assert_eq!(forged, StatusCode::UNAUTHORIZED);
        let (unsigned, _) = other.send_auth(&server, &other.auth_body(), "").await;
        assert_eq!(unsigned, StatusCode::UNAUTHORIZED);
        let listed = server.admin_get("/devices").await;
        assert_eq!(listed["total"], 1, "forgeries stored nothing: {listed}");

        // Rejected devices stay out; their old tokens stop working at check-in.
        let mut accepted = accepted_device(&server, "SN-Z", "pi4").await;
        let id = accepted.id.expect("id");
        json_ok(
            server
                .admin_post(&format!("/devices/{id}/reject"), Value::Null)
                .await,
        )
        .await;
        let check_in = server
            .client
            .post(format!("{}/api/device/v1/check-in", server.url))
            .bearer_auth(accepted.token.clone().expect("token"))
            .json(&accepted.inventory)
            .send()
            .await
            .expect("request");
        assert_eq!(check_in.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(accepted.authenticate(&server).await, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn preauthorised_devices_are_accepted_on_first_contact() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let mut device = TestDevice::new("SN-PRE", "pi4");
        let created = server
        .admin_post("/devices/preauthorize", json!({"identity": {"serial": "SN-PRE"}, "public_key": device.public_key(), "tags": ["lab"]}))
        .await;
        let created = json_status(created, StatusCode::CREATED).await;
        assert_eq!(created["status"], "preauthorized");
        assert_eq!(device.authenticate(&server).await, StatusCode::OK);
        assert_eq!(
            device.id.expect("id").to_string(),
            created["id"].as_str().expect("id")
        );
        let again = server
            .admin_post(
                "/devices/preauthorize",
                json!({"identity": {"serial": "SN-PRE"}, "public_key": device.public_key()}),
            )
            .await;
        assert_eq!(again.status(), StatusCode::CONFLICT);
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_stores_nothing() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let post_raw = |path: &str, body: &'static str| {
            server
                .client
                .post(server.api(path))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        let malformed = post_raw("/deployments", "{not json")
            .await
            .expect("request");
        assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
        let body: Value = malformed.json().await.expect("json error body");
        assert_eq!(body["code"], "bad_request");
        let unknown = post_raw(
            "/tokens",
            r#"{"name":"x","role":"viewer","superuser":true}"#,
        )
        .await
        .expect("request");
        assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
        let message = unknown.json::<Value>().await.expect("json")["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains("superuser"), "{message}");
        let tokens = server.admin_get("/tokens").await;
        assert_eq!(
            tokens["items"].as_array().map(Vec::len),
            Some(1),
            "only the admin token: {tokens}"
        );

        let huge = "x".repeat(2 * 1024 * 1024);
        let oversized = server
            .client
            .post(server.api("/tokens"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .await
            .expect("request");
        assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);

        let bad_id = server
            .client
            .get(server.api("/devices/not-a-uuid"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);

        // Packages: garbage, a stranger's signature, a damaged file, a duplicate.
        let upload = |bytes: Vec<u8>| {
            server
                .client
                .post(server.api("/packages"))
                .bearer_auth(ADMIN_TOKEN)
                .body(bytes)
                .send()
        };
        let garbage = upload(b"definitely not a package".to_vec())
            .await
            .expect("request");
        assert_eq!(garbage.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let stranger = airlift_package::SigningKey::generate().expect("key");
        let untrusted = upload(build_package(&stranger, "os", "1.0.0", "pi4", 0))
            .await
            .expect("request");
        assert_eq!(untrusted.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let message = untrusted.json::<Value>().await.expect("json")["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains("not signed by enough trusted keys"),
            "{message}"
        );
        let mut damaged = build_package(server.signer.key(), "os", "1.0.0", "pi4", 0);
        let last = damaged.len() - 10;
        damaged[last] ^= 0xff;
        let damaged = upload(damaged).await.expect("request");
        assert_eq!(damaged.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            server.admin_get("/packages").await["items"],
            json!([]),
            "nothing stored"
        );
        let blobs = std::fs::read_dir(data_dir(&server).join("blobs/packages"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0, "no blob or staging file left behind");

        server.upload("os", "1.0.0", "pi4").await;
        let duplicate = upload(build_package(server.signer.key(), "os", "1.0.0", "pi4", 0))
            .await
            .expect("request");
        assert_eq!(duplicate.status(), StatusCode::CONFLICT);

        // Deployments that cannot be carried out.
        let packages = &server.admin_get("/packages").await["items"];
        let package_id = packages[0]["id"].as_str().expect("id").to_owned();
        let empty = server
            .admin_post(
                "/deployments",
                json!({"name": "x", "package_id": package_id, "target": {"devices": []}}),
            )
            .await;
        assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let nobody = server
            .admin_post(
                "/deployments",
                json!({"name": "x", "package_id": package_id, "target": {"tag": "nobody"}}),
            )
            .await;
        assert_eq!(nobody.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let unknown_package = server
            .admin_post(
                "/deployments",
                json!({"name": "x", "package_id": uuid::Uuid::new_v4(), "target": {"tag": "x"}}),
            )
            .await;
        let message = json_status(unknown_package, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(
            message["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("package_id"),
            "{message}"
        );
        assert_eq!(server.admin_get("/deployments").await["items"], json!([]));
    }
}

#[tokio::test]
async fn packages_in_use_cannot_be_deleted() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let device = accepted_device(&server, "SN-D", "pi4").await;
        let deployment = server.deploy(&package, &[&device]).await;
        let delete = || {
            server
                .client
                .delete(server.api(&format!("/packages/{}", package.id)))
                .bearer_auth(ADMIN_TOKEN)
                .send()
        };
        assert_eq!(
            delete().await.expect("request").status(),
            StatusCode::CONFLICT
        );
        json_ok(
            server
                .admin_post(&format!("/deployments/{deployment}/cancel"), Value::Null)
                .await,
        )
        .await;
        assert_eq!(
            delete().await.expect("request").status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(server.admin_get("/packages").await["items"], json!([]));
    }
}
