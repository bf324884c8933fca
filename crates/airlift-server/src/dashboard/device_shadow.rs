//! The device page's "Configuration" card: the device's effective desired
//! configuration key by key — where each value comes from, what the device
//! reported, whether it converged — and the last failure it reported.
//! Read-only: changes go through the API or `airlift device config`.

use super::layout;
use airlift_protocol::shadow::DeviceShadow;
use maud::{html, Markup};
use std::collections::BTreeSet;

/// The card's content.
pub(super) fn section(shadow: &DeviceShadow) -> Markup {
    let keys: BTreeSet<&String> = shadow
        .effective
        .keys()
        .chain(shadow.reported.document.keys())
        .collect();
    let show = |v: Option<&serde_json::Value>| v.map_or_else(|| "—".to_owned(), |v| v.to_string());
    html! {
        @if keys.is_empty() {
            p.muted { "No configuration is desired for this device. Set some with "
                code { "airlift device config set" } "." }
        } @else {
            p {
                @if shadow.delta.is_empty() {
                    span.status.status-success { "converged" }
                } @else {
                    span.status.status-pending { (shadow.delta.len()) " key(s) to apply" }
                }
                span.muted { " · reported version " (shadow.reported.version) }
                @if let Some(at) = shadow.reported.updated_at {
                    span.muted { ", " } (layout::time(at))
                }
            }
            table {
                thead { tr { th { "Key" } th { "Desired" } th { "From" } th { "Reported" } th { "Converged" } } }
                tbody {
                    @for key in keys {
                        tr {
                            td { code { (key) } }
                            td { code { (show(shadow.effective.get(key))) } }
                            td { (shadow.sources.get(key).map_or("—", String::as_str)) }
                            td { code { (show(shadow.reported.document.get(key))) } }
                            td {
                                @if shadow.delta.contains_key(key) {
                                    span.status.status-pending { "no" }
                                } @else {
                                    span.status.status-success { "yes" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(failure) = &shadow.failure {
            p.notice.bad role="alert" {
                "The device could not apply it (" (layout::time(failure.at)) "): " (failure.reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_protocol::shadow::{ShadowFailure, VersionedDocument};
    use serde_json::json;

    #[test]
    fn keys_show_their_source_and_convergence_and_a_failure_is_escaped() {
        let effective = json!({"level": "debug"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let shadow = DeviceShadow {
            device_id: airlift_protocol::DeviceId::new(),
            desired: VersionedDocument::default(),
            reported: VersionedDocument::default(),
            groups: vec![],
            effective: effective.clone(),
            sources: [("level".to_owned(), "tag:lab".to_owned())].into(),
            delta: effective,
            failure: Some(ShadowFailure {
                reason: "<b>reload</b> exited with 1".into(),
                at: chrono::Utc::now(),
            }),
        };
        let html = section(&shadow).into_string();
        assert!(html.contains("tag:lab"), "{html}");
        assert!(html.contains("1 key(s) to apply"), "{html}");
        assert!(
            html.contains("&lt;b&gt;reload&lt;/b&gt; exited with 1"),
            "{html}"
        );
    }
}
