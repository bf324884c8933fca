//! Device shadows through the API, on each database: desired documents for
//! a device, a tag, an attribute filter and a target expression; the delta
//! in the check-in answer; the device's report; the merge rule; limits
//! refused with a 4xx naming them; every change in the audit log.

use crate::support::*;
use airlift_protocol::shadow::{ReportedAck, REPORTED_PATH};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> reqwest::Response {
    let mut request = server
        .client
        .request(method, server.api(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    request.send().await.expect("request")
}

async fn report(server: &TestServer, device: &TestDevice, body: Value) -> reqwest::Response {
    server
        .client
        .put(format!("{}{REPORTED_PATH}", server.url))
        .bearer_auth(device.token.as_deref().expect("token"))
        .json(&body)
        .send()
        .await
        .expect("report")
}

#[tokio::test]
async fn a_tag_document_reaches_its_devices_the_device_wins_and_reports_converge() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let lab = accepted_device(&server, "SN-lab", "pi4").await;
        let other = accepted_device(&server, "SN-other", "pi4").await;
        tag_device(&server, &lab, "lab").await;
        let lab_id = lab.id.expect("id");

        // Nothing desired: no shadow in the answer.
        assert_eq!(lab.check_in(&server).await.shadow, None);

        let put = send(
            &server,
            Method::PUT,
            "/shadows/tags/lab",
            Some(r#"{"level":"debug","mode":"a"}"#),
        )
        .await;
        let group = json_ok(put).await;
        assert_eq!(group["desired"]["version"], 1);
        let own = send(
            &server,
            Method::PATCH,
            &format!("/devices/{lab_id}/shadow/desired"),
            Some(r#"{"level":"warn"}"#),
        )
        .await;
        json_ok(own).await;

        let delta = lab.check_in(&server).await.shadow.expect("a delta").delta;
        assert_eq!(Value::Object(delta), json!({"level": "warn", "mode": "a"}));
        assert_eq!(other.check_in(&server).await.shadow, None);

        let shadow = server.admin_get(&format!("/devices/{lab_id}/shadow")).await;
        assert_eq!(
            shadow["sources"],
            json!({"level": "device", "mode": "tag:lab"})
        );

        // A failure is kept until the device reports success.
        let failed = report(
            &server,
            &lab,
            json!({"document": {}, "error": "reload exited with 1"}),
        )
        .await;
        let ack: ReportedAck = serde_json::from_value(json_ok(failed).await).expect("ack");
        assert_eq!(ack.delta.len(), 2);
        let shadow = server.admin_get(&format!("/devices/{lab_id}/shadow")).await;
        assert_eq!(shadow["failure"]["reason"], "reload exited with 1");

        let applied = report(
            &server,
            &lab,
            json!({"document": {"level": "warn", "mode": "a"}}),
        )
        .await;
        let ack: ReportedAck = serde_json::from_value(json_ok(applied).await).expect("ack");
        assert!(ack.delta.is_empty());
        assert_eq!(lab.check_in(&server).await.shadow, None);
        let shadow = server.admin_get(&format!("/devices/{lab_id}/shadow")).await;
        assert_eq!(shadow["failure"], Value::Null);
        assert_eq!(shadow["delta"], json!({}));

        // Unsetting the tag's key asks the device to remove it.
        json_ok(
            send(
                &server,
                Method::PATCH,
                "/shadows/tags/lab",
                Some(r#"{"mode":null}"#),
            )
            .await,
        )
        .await;
        let delta = lab.check_in(&server).await.shadow.expect("a delta").delta;
        assert_eq!(Value::Object(delta), json!({"mode": null}));

        let audit = server.admin_get("/audit?action=shadow.desired").await;
        assert_eq!(audit["total"], 3, "{audit}");
        assert_eq!(audit["items"][0]["object"], "tag:lab");
    }
}

#[tokio::test]
async fn an_attribute_filter_document_reaches_the_devices_reporting_those_attributes() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let mut north = accepted_device(&server, "SN-north", "pi4").await;
        north.inventory.attributes = [("site".to_owned(), "north".to_owned())].into();
        let south = accepted_device(&server, "SN-south", "pi4").await;
        north.check_in(&server).await;
        let path = "/shadows/attributes?attributes=site%3Dnorth";
        json_ok(send(&server, Method::PUT, path, Some(r#"{"ntp":"n.example"}"#)).await).await;
        let delta = north.check_in(&server).await.shadow.expect("a delta").delta;
        assert_eq!(Value::Object(delta), json!({"ntp": "n.example"}));
        assert_eq!(south.check_in(&server).await.shadow, None);
        let group = server.admin_get(path).await;
        assert_eq!(group["group"], json!({"attributes": {"site": "north"}}));
        let deleted = send(&server, Method::DELETE, path, None).await;
        json_ok(deleted).await;
        assert_eq!(north.check_in(&server).await.shadow, None);
        assert_eq!(
            send(&server, Method::DELETE, path, None).await.status(),
            StatusCode::NOT_FOUND
        );
        let empty = send(
            &server,
            Method::PUT,
            "/shadows/attributes?attributes=",
            Some("{}"),
        )
        .await;
        assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn an_attribute_filter_too_long_to_name_a_group_is_refused_naming_the_limit() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        // Four pairs of 900-byte values, each within the device limits, and
        // not compressible: 3.6 KB of id, more than a B-tree entry holds.
        let value = |n: u64| -> String {
            let mut x = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut text = String::new();
            while text.len() < 900 {
                // splitmix64: hex that compresses no better than random.
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                text.push_str(&format!("{:016x}", z ^ (z >> 31)));
            }
            text.truncate(900);
            text
        };
        let pairs: Vec<String> = (0..4).map(|n| format!("k{n}%3D{}", value(n))).collect();
        let path = format!("/shadows/attributes?attributes={}", pairs.join(","));
        let refused = json_status(
            send(&server, Method::PUT, &path, Some(r#"{"ntp":"n.example"}"#)).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("2048 bytes")),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn oversized_or_non_json_documents_are_refused_naming_the_limit() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let device = accepted_device(&server, "SN-big", "pi4").await;
        let id = device.id.expect("id");
        let path = format!("/devices/{id}/shadow/desired");
        let big = json!({"blob": "x".repeat(70 * 1024)}).to_string();
        let refused = json_status(
            send(&server, Method::PUT, &path, Some(&big)).await,
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("65536 bytes")),
            "{refused}"
        );
        let many: serde_json::Map<String, Value> =
            (0..300).map(|n| (format!("k{n}"), json!(n))).collect();
        let refused = json_status(
            send(
                &server,
                Method::PUT,
                &path,
                Some(&Value::Object(many).to_string()),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("limit is 256")),
            "{refused}"
        );
        let refused = json_status(
            send(&server, Method::PUT, &path, Some("not json")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(refused["code"], "not_json");
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("65536 bytes")),
            "{refused}"
        );
        let refused = json_status(
            send(&server, Method::PUT, &path, Some("[1,2]")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(refused["code"], "not_a_json_object");
        // The device's report is held to the same limit.
        let refused = report(
            &server,
            &device,
            json!({"document": {"blob": "x".repeat(70 * 1024)}}),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Nothing was written.
        let shadow = server.admin_get(&format!("/devices/{id}/shadow")).await;
        assert_eq!(shadow["desired"]["version"], 0);
        let missing = send(
            &server,
            Method::PUT,
            &format!(
                "/devices/{}/shadow/desired",
                airlift_protocol::DeviceId::new()
            ),
            Some("{}"),
        )
        .await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_viewer_reads_shadows_but_cannot_change_them() {
    let server = TestServer::start(Backend::Sqlite).await;
    let device = accepted_device(&server, "SN-view", "pi4").await;
    let id = device.id.expect("id");
    let created = server
        .admin_post("/tokens", json!({"name": "viewer", "role": "viewer"}))
        .await;
    let token = json_status(created, StatusCode::CREATED).await["secret"]
        .as_str()
        .expect("token")
        .to_owned();
    let as_viewer = |method: Method, path: String| {
        server
            .client
            .request(method, server.api(&path))
            .bearer_auth(token.clone())
            .header("content-type", "application/json")
            .body("{\"a\":1}")
            .send()
    };
    let read = as_viewer(Method::GET, format!("/devices/{id}/shadow"))
        .await
        .expect("get");
    assert_eq!(read.status(), StatusCode::OK);
    let write = as_viewer(Method::PUT, format!("/devices/{id}/shadow/desired"))
        .await
        .expect("put");
    assert_eq!(write.status(), StatusCode::FORBIDDEN);
    let write = as_viewer(Method::PUT, "/shadows/tags/lab".into())
        .await
        .expect("put");
    assert_eq!(write.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_expression_document_follows_what_devices_report_and_a_bad_one_names_its_column() {
    const CANONICAL: &str = "tag:lab AND installed.rootfs < 2.4.0";
    let path = |expression: &str| {
        let encoded: String = form_urlencoded::byte_serialize(expression.as_bytes()).collect();
        format!("/shadows/expression?where={encoded}")
    };
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let mut old = accepted_device(&server, "SN-old", "pi4").await;
        let mut current = accepted_device(&server, "SN-current", "pi4").await;
        for (device, version) in [(&mut old, "2.3.0"), (&mut current, "2.4.0")] {
            device
                .inventory
                .installed
                .insert("rootfs".into(), version.into());
            tag_device(&server, device, "lab").await;
            device.check_in(&server).await;
        }

        let put = send(
            &server,
            Method::PUT,
            &path("tag:lab and installed.rootfs<2.4.0"),
            Some(r#"{"banner":"update due"}"#),
        )
        .await;
        let group = json_ok(put).await;
        assert_eq!(group["group"], json!({"expression": CANONICAL}), "{group}");
        let delta = old.check_in(&server).await.shadow.expect("a delta").delta;
        assert_eq!(Value::Object(delta), json!({"banner": "update due"}));
        assert_eq!(current.check_in(&server).await.shadow, None);
        // Another spelling is the same group.
        let read = server
            .admin_get(&path("tag:lab  AND  installed.rootfs < 2.4.0"))
            .await;
        assert_eq!(read["desired"]["document"], json!({"banner": "update due"}));
        let old_id = old.id.expect("id");
        let shadow = server.admin_get(&format!("/devices/{old_id}/shadow")).await;
        assert_eq!(shadow["sources"]["banner"], format!("expr:{CANONICAL}"));

        // Applied, then updated past the bound: the check-in that reports
        // the new version asks the device to remove the key; the other
        // device, rolled back below it, starts receiving it.
        json_ok(report(&server, &old, json!({"document": {"banner": "update due"}})).await).await;
        assert_eq!(old.check_in(&server).await.shadow, None);
        old.inventory
            .installed
            .insert("rootfs".into(), "2.4.1".into());
        let delta = old.check_in(&server).await.shadow.expect("a delta").delta;
        assert_eq!(Value::Object(delta), json!({"banner": null}));
        current
            .inventory
            .installed
            .insert("rootfs".into(), "2.3.5".into());
        let delta = current
            .check_in(&server)
            .await
            .shadow
            .expect("a delta")
            .delta;
        assert_eq!(Value::Object(delta), json!({"banner": "update due"}));

        // A `where` that does not parse: as the device list answers it.
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let refused = json_status(
                send(&server, method, &path("attr.region eu"), Some("{}")).await,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
            assert_eq!(refused["code"], "invalid_target_expression");
            assert!(
                refused["message"].as_str().is_some_and(
                    |m| m.contains("where: target expression, column 13: expected = or !=")
                ),
                "{refused}"
            );
        }

        // One that parses but is too long to name a group by.
        let long = ["a", "b", "c"]
            .map(|c| format!("tag:{}", c.repeat(1000)))
            .join(" OR ");
        let refused = json_status(
            send(&server, Method::PUT, &path(&long), Some("{}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("at most 2048 bytes written canonically")),
            "{refused}"
        );

        json_ok(send(&server, Method::DELETE, &path(CANONICAL), None).await).await;
        assert_eq!(current.check_in(&server).await.shadow, None);
        assert_eq!(
            send(&server, Method::DELETE, &path(CANONICAL), None)
                .await
                .status(),
            StatusCode::NOT_FOUND
        );
        let audit = server.admin_get("/audit?action=shadow.desired").await;
        assert_eq!(audit["items"][0]["object"], format!("expr:{CANONICAL}"));
    }
}
