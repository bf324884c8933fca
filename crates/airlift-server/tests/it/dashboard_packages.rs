//! The dashboard's packages over HTTP: the list, uploading as the browser
//! script does (the raw file with the CSRF header), a package's manifest
//! as a person reads it, and deleting (refused while in use, with the
//! API's reason on the page).

use crate::dashboard_support::{token, Browser};
use crate::support::{
    accepted_device, build_package, json_status, Backend, TestServer, ADMIN_TOKEN,
};
use airlift_package::SigningKey;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn packages_are_uploaded_read_and_deleted_in_the_browser() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let browser = Browser::sign_in(&server, ADMIN_TOKEN).await;

        let empty = browser.get("/ui/packages").await;
        assert_eq!(empty.status, StatusCode::OK);
        assert!(
            empty.body.contains("No package is stored yet"),
            "{}",
            empty.body
        );
        assert!(empty.body.contains(r#"data-upload="/ui/packages/upload""#));

        // Uploaded as the script sends it: answered with where to go.
        let file = build_package(server.signer.key(), "rootfs", "1.2.0", "pi4", 3);
        let uploaded = browser.upload(file.clone(), true).await;
        assert_eq!(uploaded.status, StatusCode::CREATED, "{}", uploaded.body);
        let id = uploaded
            .hx_redirect
            .strip_prefix("/ui/packages/")
            .expect("to the new package")
            .to_owned();

        // Refusals come back as the API's words, for the script to show.
        let stranger = SigningKey::generate().expect("key");
        let untrusted = browser
            .upload(build_package(&stranger, "rootfs", "6.6.6", "pi4", 0), true)
            .await;
        assert_eq!(untrusted.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            untrusted.body.starts_with("package refused"),
            "{}",
            untrusted.body
        );
        assert!(
            !untrusted.body.contains('<'),
            "plain text: {}",
            untrusted.body
        );
        let again = browser.upload(file.clone(), true).await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        assert!(again.body.contains("already exists"), "{}", again.body);
        let forged = browser.upload(file, false).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "no CSRF header");

        let list = browser.get("/ui/packages").await.body;
        assert!(list.contains(&format!("/ui/packages/{id}")), "{list}");
        assert!(list.contains("1.2.0"), "{list}");
        let api = server.admin_get("/packages?per_page=1").await;
        assert_eq!(api["total"], 1);
        assert_eq!(api["items"][0]["id"], id.as_str());

        let detail = browser.get(&format!("/ui/packages/{id}")).await;
        assert_eq!(detail.status, StatusCode::OK);
        let key_id = server.signer.key().public_key().key_id().to_string();
        assert!(detail.body.contains(&key_id), "{}", detail.body);
        for words in [
            "trusted",
            "image",
            "rootfs",
            "Security version",
            "Deploy this package",
        ] {
            assert!(detail.body.contains(words), "{words}: {}", detail.body);
        }
        assert!(!detail.body.contains("not trusted"), "{}", detail.body);

        // In use: refused, with the API's reason on the page.
        let device = accepted_device(&server, "SN-P1", "pi4").await;
        let deployment = json_status(
            server
                .admin_post(
                    "/deployments",
                    json!({"name": "t", "package_id": id, "target": {"devices": [device.id]}}),
                )
                .await,
            StatusCode::CREATED,
        )
        .await;
        let refused = browser
            .post(&format!("/ui/packages/{id}/delete"), &[], true)
            .await;
        assert_eq!(refused.status, StatusCode::CONFLICT);
        assert!(refused.body.contains("cancel it first"), "{}", refused.body);
        assert!(refused.body.contains("Not deleted"), "{}", refused.body);

        let cancel = server
            .admin_post(
                &format!(
                    "/deployments/{}/cancel",
                    deployment["id"].as_str().expect("id")
                ),
                Value::Null,
            )
            .await;
        assert_eq!(cancel.status(), StatusCode::OK);
        let forged = browser
            .post(&format!("/ui/packages/{id}/delete"), &[], false)
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        let deleted = browser
            .post(&format!("/ui/packages/{id}/delete"), &[], true)
            .await;
        assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
        assert!(
            deleted.location.starts_with("/ui/packages?deleted=rootfs"),
            "{}",
            deleted.location
        );
        let after = browser.get(&deleted.location).await.body;
        assert!(after.contains("Deleted rootfs 1.2.0"), "{after}");
        assert_eq!(server.admin_get("/packages").await["total"], 0);
        let gone = browser.get(&format!("/ui/packages/{id}")).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_viewer_reads_packages_but_gets_no_control() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (package, _) = server.upload("rootfs", "1.0.0", "pi4").await;
    let secret = token(&server, "watcher", "viewer").await;
    let viewer = Browser::sign_in(&server, &secret).await;

    let list = viewer.get("/ui/packages").await.body;
    assert!(list.contains("rootfs"), "{list}");
    assert!(
        !list.contains("data-upload"),
        "no upload for a viewer: {list}"
    );
    let detail = viewer
        .get(&format!("/ui/packages/{}", package.id))
        .await
        .body;
    assert!(!detail.contains("Delete package"), "{detail}");
    assert!(!detail.contains("Deploy this package"), "{detail}");

    // The server refuses whatever the page shows.
    let delete = viewer
        .post(&format!("/ui/packages/{}/delete", package.id), &[], true)
        .await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
    assert!(delete.body.contains("operator"), "{}", delete.body);
    let upload = viewer
        .upload(
            build_package(server.signer.key(), "rootfs", "2.0.0", "pi4", 0),
            true,
        )
        .await;
    assert_eq!(upload.status, StatusCode::FORBIDDEN);
    assert_eq!(server.admin_get("/packages").await["total"], 1);
}
