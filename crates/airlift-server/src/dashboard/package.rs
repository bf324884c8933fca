//! One package's page: its manifest as a person reads it — payloads,
//! compatibility rules, security version, what it provides, who signed it
//! and whether this server still trusts those keys, encryption — and the
//! controls to deploy or delete it.

use super::layout::{self, csrf_field, Nav, PageError, PageInfo};
use super::session::Viewer;
use crate::api;
use crate::extract::ApiPath;
use crate::state::AppState;
use airlift_package::{Encryption, KeyId, Manifest, PayloadEntry};
use airlift_protocol::management::Package;
use airlift_protocol::PackageId;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup};

/// `GET /ui/packages/{id}`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let id: PackageId = match super::deployments::path_id(&id, "package") {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    match render(&state, &viewer, id, None).await {
        Ok(page) => page.into_response(),
        Err(error) => error.into_response(),
    }
}

/// The page, with the API's words when a delete was refused.
pub(super) async fn render(
    state: &AppState,
    viewer: &Viewer,
    id: PackageId,
    refused: Option<&str>,
) -> Result<Markup, PageError> {
    let Json(package) =
        api::get_package(State(state.clone()), viewer.caller.clone(), ApiPath(id)).await?;
    let trusted: Vec<KeyId> = api::upload_trust_if_any(state)
        .await?
        .map(|trust| trust.key_ids().collect())
        .unwrap_or_default();
    let title = format!("{} {}", package.name, package.version);
    let body = html! {
        @if viewer.can_operate() {
            (controls(viewer, &package, refused.is_some()))
        }
        @if let Some(refused) = refused {
            div.notice.bad #delete-refused role="alert" {
                p { strong { "Not deleted: " } (refused) }
            }
        }
        (details(&package, &trusted))
    };
    Ok(layout::page(
        viewer,
        PageInfo {
            title: &title,
            nav: Nav::Packages,
            live: None,
        },
        body,
    ))
}

fn controls(viewer: &Viewer, package: &Package, refused: bool) -> Markup {
    html! {
        div.actions {
            a.button href=(format!("/ui/deployments/new?package={}", package.id)) { "Deploy this package" }
            form.inline method="post" action=(format!("/ui/packages/{}/delete", package.id)) {
                (csrf_field(viewer))
                button.danger type="submit" aria-describedby=[refused.then_some("delete-refused")] {
                    "Delete package"
                }
            }
        }
    }
}

/// Everything the manifest says; its raw JSON if this version cannot read
/// it as a manifest.
fn details(package: &Package, trusted: &[KeyId]) -> Markup {
    let manifest: Option<Manifest> = serde_json::from_value(package.manifest.clone()).ok();
    html! {
        div.card {
            dl.facts {
                dt { "Name" } dd { (package.name) }
                dt { "Version" } dd { (package.version) }
                @if let Some(description) = &package.description {
                    dt { "Description" } dd { (description) }
                }
                dt { "Size" } dd { (layout::bytes(package.size)) " (" (package.size) " bytes)" }
                dt { "SHA-256" } dd { code { (package.sha256) } }
                dt { "Security version" } dd {
                    (package.security_version)
                    span.muted { " — devices running a higher one refuse it" }
                }
                dt { "Uploaded" } dd { (layout::time(package.created_at)) }
                dt { "Id" } dd { code { (package.id) } }
            }
        }
        h2 { "Signed by" }
        div.card { (signers(&package.signed_by, trusted)) }
        @match &manifest {
            Some(manifest) => {
                h2 { "Fits" }
                div.card { (compatibility(manifest)) }
                h2 { "Payloads" }
                div.card { (payloads(&manifest.payloads)) }
            }
            None => {
                h2 { "Manifest" }
                div.card {
                    p.muted { "This server cannot read this manifest as a person would; here it is as stored." }
                    pre { (serde_json::to_string_pretty(&package.manifest).unwrap_or_default()) }
                }
            }
        }
    }
}

fn signers(signed_by: &[String], trusted: &[KeyId]) -> Markup {
    html! {
        @if signed_by.is_empty() {
            p.muted { "No signer is recorded." }
        } @else {
            table {
                thead { tr { th { "Key id" } th { "Trusted by this server now" } } }
                tbody {
                    @for key in signed_by {
                        @let still = key.parse::<KeyId>().is_ok_and(|id| trusted.contains(&id));
                        tr {
                            td { code { (key) } }
                            td {
                                @if still {
                                    (layout::status("trusted"))
                                } @else {
                                    span.status.status-failed { "not trusted" }
                                    span.muted { " — the server was restarted without this key; it would refuse this package today" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn compatibility(manifest: &Manifest) -> Markup {
    let compatible = &manifest.compatible;
    html! {
        dl.facts {
            dt { "Device types" }
            dd { @for device_type in &compatible.device_types { span.tag { (device_type) } } }
            dt { "Hardware revisions" }
            dd {
                @if compatible.hardware_revisions.is_empty() { span.muted { "any" } }
                @for revision in &compatible.hardware_revisions { span.tag { (revision) } }
            }
            dt { "Requires" }
            dd {
                @if compatible.requires.is_empty() { span.muted { "nothing installed beforehand" } }
                @for (name, versions) in &compatible.requires { code { (name) " " (versions) } " " }
            }
            dt { "Provides" }
            dd {
                @if manifest.provides.is_empty() { span.muted { "nothing named" } }
                @for (name, version) in &manifest.provides { code { (name) " " (version) } " " }
            }
            dt { "Encrypted" }
            dd {
                @if manifest.payloads.iter().any(|p| p.encryption != Encryption::None) {
                    "yes (age): devices need the matching age identity to install it"
                } @else {
                    "no"
                }
            }
        }
    }
}

fn payloads(payloads: &[PayloadEntry]) -> Markup {
    html! {
        table {
            thead { tr {
                th { "Kind" } th { "Target" } th.num { "Stored" } th.num { "Installed" }
                th { "Compression" } th { "Encryption" } th.wide-only { "Installed SHA-256" }
            } }
            tbody {
                @for payload in payloads {
                    @let digest = payload.installed.sha256.to_string();
                    tr {
                        td { (payload.kind) }
                        td { code { (payload.target) } }
                        td.num { (layout::bytes(payload.stored.size)) }
                        td.num { (layout::bytes(payload.installed.size)) }
                        td { (format!("{:?}", payload.compression).to_lowercase()) }
                        td { (format!("{:?}", payload.encryption).to_lowercase()) }
                        td.wide-only { code title=(digest) { (digest.get(..16).unwrap_or(&digest)) "…" } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(manifest: serde_json::Value) -> Package {
        Package {
            id: PackageId::new(),
            name: "rootfs".into(),
            version: "1.2.0".into(),
            description: Some("<img src=x onerror=alert(1)>".into()),
            device_types: vec!["pi4".into()],
            security_version: 2,
            size: 2048,
            sha256: "ab".repeat(32),
            signed_by: vec!["0011223344556677".into(), "8899aabbccddeeff".into()],
            manifest,
            created_at: chrono::Utc::now(),
        }
    }

    fn manifest() -> serde_json::Value {
        serde_json::json!({
            "format_version": 1,
            "name": "rootfs",
            "version": "1.2.0",
            "compatible": {"device_types": ["pi4"], "requires": {"bootloader": ">=2.0"}},
            "provides": {"rootfs": "1.2.0"},
            "security_version": 2,
            "payloads": [{
                "type": "image",
                "target": "<rootfs>",
                "stored": {"size": 1000, "sha256": "11".repeat(32)},
                "installed": {"size": 4096, "sha256": "22".repeat(32)},
                "compression": "zstd",
                "encryption": "age"
            }]
        })
    }

    #[test]
    fn the_manifest_reads_as_a_person_reads_it() {
        let trusted = vec!["0011223344556677".parse::<KeyId>().expect("key id")];
        let text = details(&package(manifest()), &trusted).into_string();
        for expected in [
            "image",
            "4.0 KiB",
            "zstd",
            "bootloader &gt;=2.0",
            "rootfs 1.2.0",
            "yes (age)",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        assert!(
            text.contains("&lt;rootfs&gt;"),
            "targets are escaped: {text}"
        );
        assert!(!text.contains("<img"), "descriptions are escaped: {text}");
        assert_eq!(text.matches("not trusted").count(), 1, "{text}");
    }

    #[test]
    fn an_unreadable_manifest_is_shown_as_stored_and_escaped() {
        let text = details(&package(serde_json::json!({"odd": "<script>"})), &[]).into_string();
        assert!(text.contains("cannot read this manifest"), "{text}");
        assert!(!text.contains("<script>"), "{text}");
    }
}
