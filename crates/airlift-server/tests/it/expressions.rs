//! Target expressions through the API, on every backend: a deployment to
//! an expression reaches exactly the devices it matches, including one
//! that joins later (admitted in memory at its check-in), the device list
//! filters by the same expression (compiled to SQL), and a bad expression
//! is refused with the column and what was expected there.

use crate::support::*;
use airlift_protocol::DeploymentId;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const EXPRESSION: &str = "tag:lab and (installed.os < 1.5 or attr.region = eu-*)";

/// An accepted device tagged `tag` (if any) that checked in reporting `os`
/// at `os_version` and the attributes given.
async fn device(
    server: &TestServer,
    serial: &str,
    tag: Option<&str>,
    os_version: &str,
    attributes: &[(&str, &str)],
) -> TestDevice {
    let mut device = accepted_device(server, serial, "pi4").await;
    device
        .inventory
        .installed
        .insert("os".into(), os_version.into());
    for (key, value) in attributes {
        device
            .inventory
            .attributes
            .insert((*key).into(), (*value).into());
    }
    if let Some(tag) = tag {
        tag_device(server, &device, tag).await;
    }
    device
}

fn encoded(expression: &str) -> String {
    form_urlencoded::byte_serialize(expression.as_bytes()).collect()
}

/// The serials of the devices `GET /devices?where=` lists.
async fn listed(server: &TestServer, expression: &str) -> BTreeSet<String> {
    let page = server
        .admin_get(&format!("/devices?where={}", encoded(expression)))
        .await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(page["total"], items.len(), "{page}");
    items
        .iter()
        .map(|d| d["identity"]["serial"].as_str().expect("serial").to_owned())
        .collect()
}

fn serials(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn an_expression_deployment_reaches_exactly_the_matching_devices_and_later_ones() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        let old = device(&server, "SN-old", Some("lab"), "1.0.0", &[]).await;
        let current = device(&server, "SN-current", Some("lab"), "1.5.0", &[]).await;
        let european = device(
            &server,
            "SN-eu",
            Some("lab"),
            "1.9.0",
            &[("region", "eu-west")],
        )
        .await;
        let untagged = device(&server, "SN-untagged", None, "1.0.0", &[]).await;
        for d in [&old, &current, &european, &untagged] {
            assert!(d.check_in(&server).await.update.is_none());
        }
        assert_eq!(
            listed(&server, EXPRESSION).await,
            serials(&["SN-old", "SN-eu"])
        );
        assert_eq!(
            listed(&server, "NOT tag:lab OR installed.os >= 1.5.0").await,
            serials(&["SN-current", "SN-eu", "SN-untagged"])
        );

        let created = server
            .admin_post(
                "/deployments",
                json!({"name": "old lab", "package_id": package.id, "target": {"expression": EXPRESSION}}),
            )
            .await;
        let created = json_status(created, StatusCode::CREATED).await;
        // Stored in its canonical form, dynamic like a tag target.
        assert_eq!(
            created["target"]["expression"],
            "tag:lab AND (installed.os < 1.5 OR attr.region = eu-*)",
            "{created}"
        );
        assert_eq!(created["dynamic"], true, "{created}");
        let deployment: DeploymentId = created["id"].as_str().expect("id").parse().expect("id");
        let shown = server
            .admin_get(&format!("/deployments/{deployment}/devices"))
            .await;
        assert_eq!(shown["total"], 2, "{shown}");

        for (d, offered) in [
            (&old, true),
            (&european, true),
            (&current, false),
            (&untagged, false),
        ] {
            let offer = d.check_in(&server).await.update;
            assert_eq!(offer.is_some(), offered, "{}", d.serial);
            if let Some(offer) = offer {
                assert_eq!(offer.deployment_id, deployment);
            }
        }

        // Devices that join later: one that matches is taken in at its
        // check-in; one tagged alike but on a newer version is not.
        let late = device(&server, "SN-late", Some("lab"), "1.2.0", &[]).await;
        let late_new = device(
            &server,
            "SN-late-new",
            Some("lab"),
            "1.6.0",
            &[("region", "us-east")],
        )
        .await;
        let offer = late
            .check_in(&server)
            .await
            .update
            .expect("the late match is offered it");
        assert_eq!(offer.deployment_id, deployment);
        assert!(late_new.check_in(&server).await.update.is_none());
        let detail = server
            .admin_get(&format!("/deployments/{deployment}"))
            .await;
        assert_eq!(detail["joined_late"], 1, "{detail}");
        assert_eq!(
            listed(&server, EXPRESSION).await,
            serials(&["SN-old", "SN-eu", "SN-late"])
        );
    }
}

async fn refused(response: reqwest::Response, status: StatusCode) -> String {
    let body: Value = json_status(response, status).await;
    body["message"].as_str().expect("message").to_owned()
}

#[tokio::test]
async fn a_bad_expression_is_refused_with_its_column() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let (package, _) = server.upload("os", "2.0.0", "pi4").await;
        device(&server, "SN-1", Some("lab"), "1.0.0", &[]).await;

        let create = |expression: &str| json!({"name": "x", "package_id": package.id, "target": {"expression": expression}});
        let message = refused(
            server
                .admin_post("/deployments", create("tag:lab AND"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(message.contains("column 12: expected a term"), "{message}");
        let message = refused(
            server
                .admin_post("/deployments", create("installed.os < soon"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(message.contains("\"soon\" is not a version"), "{message}");
        let too_long = format!("tag:{}", "a".repeat(5000));
        let message = refused(
            server.admin_post("/deployments", create(&too_long)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(message.contains("at most 4096 bytes"), "{message}");
        // Parsed, but matching nothing: the target's usual refusal.
        let message = refused(
            server
                .admin_post("/deployments", create("tag:nowhere"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(message.contains("matches no accepted device"), "{message}");

        let response = server
            .client
            .get(server.api(&format!("/devices?where={}", encoded("attr.region eu"))))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        let message = refused(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(
            message.contains("where: target expression, column 13: expected = or !="),
            "{message}"
        );
    }
}
