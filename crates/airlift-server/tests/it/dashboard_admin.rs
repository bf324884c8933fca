//! The dashboard's admin pages over HTTP: API tokens (created with the
//! secret shown once, revoked, refused to anyone but an admin) and the
//! audit log (filtered by actor and action, paged with `before`).

use crate::dashboard_support::{between, token, Browser};
use crate::support::{Backend, TestServer, ADMIN_TOKEN};
use reqwest::header::LOCATION;
use reqwest::StatusCode;

async fn whoami(server: &TestServer, secret: &str) -> StatusCode {
    server
        .client
        .get(server.api("/whoami"))
        .bearer_auth(secret)
        .send()
        .await
        .expect("whoami")
        .status()
}

#[tokio::test]
async fn admins_create_and_revoke_tokens_in_the_browser() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let browser = Browser::sign_in(&server, ADMIN_TOKEN).await;
        let list = browser.get("/ui/tokens").await;
        assert_eq!(list.status, StatusCode::OK);
        assert!(
            list.body.contains("you are signed in with it"),
            "{}",
            list.body
        );

        // A refused name: beside the name field, what was typed kept.
        let blank = browser
            .post("/ui/tokens", &[("name", "   "), ("role", "operator")], true)
            .await;
        assert_eq!(blank.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            blank.body.contains(r#"id="token-name-error""#),
            "{}",
            blank.body
        );
        assert!(
            blank.body.contains("must be 1–128 characters"),
            "{}",
            blank.body
        );
        assert!(blank.body.contains(r#"<option value="operator" selected>"#));
        let forged = browser
            .post("/ui/tokens", &[("name", "ci"), ("role", "operator")], false)
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        assert_eq!(
            server.admin_get("/tokens").await["items"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "neither the refused nor the forged form stored a token"
        );

        // The secret is on the answer page, and works.
        let created = browser
            .post(
                "/ui/tokens",
                &[("name", "ci <release>"), ("role", "operator")],
                true,
            )
            .await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.body);
        assert!(created.body.contains("only time it is shown"));
        let secret = between(
            &created.body,
            r#"id="token-secret" type="text" readonly value=""#,
            "\"",
        )
        .expect("the secret")
        .to_owned();
        assert_eq!(whoami(&server, &secret).await, StatusCode::OK);
        let list = browser.get("/ui/tokens").await.body;
        assert!(list.contains("ci &lt;release&gt;"), "{list}");
        assert!(!list.contains(&secret), "never listed");

        // Revoked: the secret stops working.
        let tokens = server.admin_get("/tokens").await;
        let ci = tokens["items"]
            .as_array()
            .and_then(|all| all.iter().find(|t| t["name"] == "ci <release>"))
            .and_then(|t| t["id"].as_str())
            .expect("listed")
            .to_owned();
        let revoked = browser
            .post(&format!("/ui/tokens/{ci}/revoke"), &[], true)
            .await;
        assert_eq!(revoked.status, StatusCode::SEE_OTHER);
        assert!(browser
            .get(&revoked.location)
            .await
            .body
            .contains("Revoked ci &lt;release&gt;"));
        assert_eq!(whoami(&server, &secret).await, StatusCode::UNAUTHORIZED);

        // The last admin token: the API's refusal, on the page.
        let admin = server.admin_get("/whoami").await["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let last = browser
            .post(&format!("/ui/tokens/{admin}/revoke"), &[], true)
            .await;
        assert_eq!(last.status, StatusCode::CONFLICT);
        assert!(last.body.contains("last admin token"), "{}", last.body);
        assert_eq!(whoami(&server, ADMIN_TOKEN).await, StatusCode::OK);
    }
}

#[tokio::test]
async fn tokens_and_the_audit_log_are_for_admins_only() {
    let server = TestServer::start(Backend::Sqlite).await;
    let secret = token(&server, "ops", "operator").await;
    let operator = Browser::sign_in(&server, &secret).await;
    let admin = Browser::sign_in(&server, ADMIN_TOKEN).await;
    let page = admin.get("/ui/packages").await.body;
    for link in [r#"href="/ui/tokens""#, r#"href="/ui/audit""#] {
        assert!(page.contains(link), "an admin's navigation has {link}");
    }
    let page = operator.get("/ui/packages").await.body;
    for link in [r#"href="/ui/tokens""#, r#"href="/ui/audit""#] {
        assert!(!page.contains(link), "no {link} in the navigation: {page}");
    }
    // The page says in words why, as a page of the dashboard (its
    // navigation still there), not a bare error.
    for (path, what) in [
        ("/ui/tokens", "Only an admin token may manage API tokens."),
        ("/ui/audit", "Only an admin token may read the audit log."),
    ] {
        let refused = operator.get(path).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        assert!(refused.body.contains(what), "{path}: {}", refused.body);
        assert!(
            refused
                .body
                .contains("<strong>ops</strong>, whose role is operator"),
            "{path}: {}",
            refused.body
        );
        assert!(
            refused.body.contains(r#"nav aria-label="Main""#),
            "{path}: {}",
            refused.body
        );
    }
    let create = operator
        .post("/ui/tokens", &[("name", "mine"), ("role", "admin")], true)
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);
    assert_eq!(
        server.admin_get("/tokens").await["items"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn the_audit_log_filters_by_actor_and_action_and_pages_back() {
    for backend in Backend::all().await {
        let server = TestServer::start(backend).await;
        let browser = Browser::sign_in(&server, ADMIN_TOKEN).await;
        // 101 changes by one token, then one by another: more than a page.
        for n in 0..101 {
            token(&server, &format!("bot-{n}"), "viewer").await;
        }
        let ops = token(&server, "ops", "admin").await;
        let ops_browser = Browser::sign_in(&server, &ops).await;
        let created = ops_browser
            .post(
                "/ui/tokens",
                &[("name", "made-by-ops"), ("role", "viewer")],
                true,
            )
            .await;
        assert_eq!(created.status, StatusCode::OK);

        let newest = browser.get("/ui/audit").await;
        assert_eq!(newest.status, StatusCode::OK);
        assert!(newest.body.contains("token.create"), "{}", newest.body);
        let older = between(&newest.body, r#"<a href=""#, r#"" rel="next""#);
        let older = older
            .and_then(|text| text.rsplit(r#"href=""#).next())
            .expect("a link to older entries")
            .replace("&amp;", "&");
        assert!(older.starts_with("/ui/audit?before="), "{older}");
        let back = browser.get(&older).await.body;
        assert!(back.contains("← Newest"), "{back}");
        assert!(back.contains("bot-0"), "{back}");

        // By actor: the token's name is enough.
        let by_ops = browser.get("/ui/audit?actor=ops").await.body;
        assert_eq!(by_ops.matches("<tr>").count() - 1, 1, "one entry: {by_ops}");
        assert!(
            by_ops.contains(r#"value="ops""#),
            "the filter stays in the form"
        );
        let by_action = browser.get("/ui/audit?action=token.").await.body;
        assert!(
            by_action.contains(r#"rel="next""#),
            "a family has many: {by_action}"
        );
        let none = browser.get("/ui/audit?action=package.upload").await.body;
        assert!(none.contains("No entry matches"), "{none}");

        let api = server
            .admin_get("/audit?actor=ops&action=token.create")
            .await;
        assert_eq!(api["items"].as_array().map(Vec::len), Some(1), "{api}");
        assert_eq!(api["total"], 1, "{api}");
        let long = "x".repeat(300);
        let refused = server
            .client
            .get(server.api(&format!("/audit?actor={long}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn signing_in_returns_to_the_page_asked_for_and_nowhere_else() {
    let server = TestServer::start(Backend::Sqlite).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    // Signed out, a bookmarked list with its filters leads to the sign-in
    // page, which remembers the whole address, query included.
    let wanted = "/ui/devices?status=pending&sort=-identity";
    let response = client
        .get(format!("{}{wanted}", server.url))
        .send()
        .await
        .expect("page");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let encoded: String = form_urlencoded::byte_serialize(wanted.as_bytes()).collect();
    assert_eq!(location, format!("/ui/sign-in?next={encoded}"));
    let sign_in = client
        .get(format!("{}{location}", server.url))
        .send()
        .await
        .expect("sign-in page")
        .text()
        .await
        .expect("html");
    let kept = between(&sign_in, r#"name="next" value=""#, "\"").expect("the next field");
    assert_eq!(kept.replace("&amp;", "&"), wanted);
    assert_eq!(sign_in_to(&client, &server, Some(wanted)).await, wanted);

    // Only a path of the dashboard is a return address.
    for evil in [
        "//evil.example/ui/",
        "https://evil.example/ui/",
        "/\\evil.example",
        "/ui/\\evil.example",
        "/api/v1/tokens",
        "/ui/x\r\nSet-Cookie: a=b",
    ] {
        assert_eq!(
            sign_in_to(&client, &server, Some(evil)).await,
            "/ui/",
            "{evil:?}"
        );
    }
    assert_eq!(sign_in_to(&client, &server, None).await, "/ui/");
}

/// Signs in with `next`; where the answer leads.
async fn sign_in_to(client: &reqwest::Client, server: &TestServer, next: Option<&str>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", ADMIN_TOKEN);
    if let Some(next) = next {
        form.append_pair("next", next);
    }
    let response = client
        .post(format!("{}/ui/sign-in", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.finish())
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next:?}");
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_sign_in_page_says_where_tokens_come_from() {
    let server = TestServer::start(Backend::Sqlite).await;
    let page = reqwest::get(format!("{}/ui/sign-in", server.url))
        .await
        .expect("sign-in page")
        .text()
        .await
        .expect("html");
    assert!(!page.contains("DATA_DIR/admin-token"), "{page}");
    for said in [
        "printed the first admin token once, on its first start",
        "<code>AIRLIFT_ADMIN_TOKEN</code>",
        "<code>airlift token create --name NAME --role viewer</code>",
    ] {
        assert!(
            page.contains(said),
            "the sign-in page lacks {said:?}: {page}"
        );
    }
}
