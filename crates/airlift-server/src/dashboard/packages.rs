//! Packages in the dashboard: the list, uploading from the browser (the
//! script in `dashboard.js` sends the file as the API's raw body, with a
//! progress bar), and deleting. A package's own page is in
//! [`super::package`].

use super::layout::{self, error_words, Nav, PageError, PageInfo};
use super::session::{ActionBody, ActionForm, Viewer};
use crate::api;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use airlift_protocol::management::Package;
use airlift_protocol::PackageId;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use maud::{html, Markup};
use serde::Deserialize;

/// Packages per page of the list.
const PER_PAGE: u32 = 50;

/// The list's query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    page: Option<u32>,
    /// The name and version of a package just deleted, said once.
    deleted: Option<String>,
}

/// `GET /ui/packages`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> Result<Markup, PageError> {
    let page = query.page.unwrap_or(1).max(1);
    let listed = api::list_packages(
        State(state.clone()),
        viewer.caller.clone(),
        ApiQuery(api::PackageQuery {
            page: Some(page),
            per_page: Some(PER_PAGE),
        }),
    )
    .await?
    .0;
    let trusting = api::upload_trust_if_any(&state).await?.is_some();
    let body = html! {
        @if let Some(deleted) = &query.deleted {
            div.notice role="status" { "Deleted " (deleted) "." }
        }
        @if !trusting {
            div.notice.bad role="status" { (no_trust()) }
        }
        @if trusting && viewer.can_operate() {
            (upload_form())
        }
        div.card {
            @if listed.items.is_empty() {
                (layout::empty("No package is stored yet.", html! {
                    @if trusting {
                        p { "Build one with " code { "airlift package build" } ", sign it with a key this server trusts, and upload it "
                            @if viewer.can_operate() { "above, or " }
                            "with " code { "airlift package upload FILE.airlift" } "." }
                    } @else {
                        p { "Once the server trusts a signing key, uploaded packages are listed here." }
                    }
                }))
            } @else {
                (table(&listed.items))
                (layout::pager("/ui/packages", "", page, PER_PAGE, listed.total))
            }
        }
    };
    Ok(layout::page(
        &viewer,
        PageInfo {
            title: "Packages",
            nav: Nav::Packages,
            live: None,
        },
        body,
    ))
}

/// What to do when the server trusts no signing key: it then accepts no
/// package at all.
pub(super) fn no_trust() -> Markup {
    html! {
        p { strong { "This server trusts no package signing key, so it accepts no package." } }
        p { "Make a key pair with " code { "airlift key generate --out keys/" }
            ", then restart the server with the public key: "
            code { "airlift-server --trust keys/airlift-signing.pub" }
            " (or " code { "AIRLIFT_TRUST=keys/airlift-signing.pub" } "). "
            "Sign packages with the private key when you build them." }
    }
}

fn upload_form() -> Markup {
    html! {
        div.card {
            h2 { "Upload a package" }
            form data-upload="/ui/packages/upload" {
                label for="package-file" { "Package file (.airlift)" }
                input #package-file type="file" name="file" accept=".airlift" required
                    aria-describedby="package-file-help";
                p #package-file-help .muted {
                    "The server verifies its signatures and every payload before it keeps it."
                }
                div.actions {
                    button type="submit" { "Upload" }
                    progress hidden max="1" value="0" aria-label="Upload progress" {}
                }
                p data-upload-result role="status" aria-live="polite" {}
                noscript {
                    p.muted { "Uploading from the browser needs JavaScript. Without it, use "
                        code { "airlift package upload FILE.airlift" } "." }
                }
            }
        }
    }
}

fn table(packages: &[Package]) -> Markup {
    html! {
        table {
            thead { tr {
                th { "Name" } th { "Version" } th { "Device types" } th.num { "Size" }
                th.wide-only { "Signed by" } th { "Uploaded" }
            } }
            tbody {
                @for package in packages {
                    tr {
                        td { a href=(format!("/ui/packages/{}", package.id)) { (package.name) } }
                        td { (package.version) }
                        td { @for device_type in &package.device_types { span.tag { (device_type) } } }
                        td.num { (layout::bytes(package.size)) }
                        td.wide-only { @for key in &package.signed_by { code { (key) } " " } }
                        td { (layout::time(package.created_at)) }
                    }
                }
            }
        }
    }
}

/// `POST /ui/packages/upload`: the raw package file, through the API's own
/// upload. Answers `dashboard.js`: an `HX-Redirect` to the new package on
/// success, the API's words as plain text on refusal.
pub async fn upload(State(state): State<AppState>, action: ActionBody) -> Response {
    let caller = action.viewer.caller.clone();
    match api::upload_package(State(state), caller, action.body).await {
        Ok((status, Json(package))) => {
            let mut response = status.into_response();
            if let Ok(target) = HeaderValue::from_str(&format!("/ui/packages/{}", package.id)) {
                response.headers_mut().insert("hx-redirect", target);
            }
            response
        }
        Err(error) => (
            error.status(),
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            error_words(&error),
        )
            .into_response(),
    }
}

/// `POST /ui/packages/{id}/delete`: through the API's own delete, which
/// refuses while an active deployment uses the package; the refusal is
/// shown on the package's page.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: ActionForm,
) -> Response {
    let id: PackageId = match super::deployments::path_id(&id, "package") {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let caller = form.viewer.caller.clone();
    let found = api::get_package(State(state.clone()), caller.clone(), ApiPath(id)).await;
    let name = found
        .map(|Json(package)| format!("{} {}", package.name, package.version))
        .unwrap_or_else(|_| id.to_string());
    match api::delete_package(State(state.clone()), caller, ApiPath(id)).await {
        Ok(_) => {
            let name: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
            Redirect::to(&format!("/ui/packages?deleted={name}")).into_response()
        }
        Err(error) => {
            let status = error.status();
            let refused = error_words(&error);
            match super::package::render(&state, &form.viewer, id, Some(&refused)).await {
                Ok(page) => (status, page).into_response(),
                Err(error) => error.into_response(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn the_no_trust_state_says_how_to_start_the_server() {
        let text = no_trust().into_string();
        assert!(text.contains("--trust"), "{text}");
        assert!(text.contains("airlift key generate"), "{text}");
    }

    #[test]
    fn package_names_are_escaped_in_the_list() {
        let package = Package {
            id: PackageId::new(),
            name: "<script>alert(1)</script>".into(),
            version: "1.0.0".into(),
            description: None,
            device_types: vec!["<b>pi</b>".into()],
            security_version: 0,
            size: 10,
            sha256: "00".repeat(32),
            signed_by: vec!["0011223344556677".into()],
            manifest: serde_json::json!({}),
            created_at: chrono::Utc::now(),
        };
        let markup = table(&[package]).into_string();
        assert!(!markup.contains("<script>"), "{markup}");
        assert!(!markup.contains("<b>pi"), "{markup}");
        assert!(markup.contains("&lt;script&gt;"), "{markup}");
    }

    #[test]
    fn the_upload_form_posts_nowhere_but_the_upload_route() {
        let markup = upload_form().into_string();
        assert!(
            markup.contains(r#"data-upload="/ui/packages/upload""#),
            "{markup}"
        );
        assert!(markup.contains("<progress"), "{markup}");
        assert!(!markup.contains("style="), "{markup}");
    }

    #[test]
    fn status_codes_of_refusals_reach_the_script() {
        // The script shows the body of any answer that is not a redirect.
        let error = crate::error::ApiError::invalid("package refused: not signed by a trusted key");
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            error_words(&error),
            "package refused: not signed by a trusted key"
        );
    }
}
