//! `airlift root show`, and the verdict `sign` prints: what a root says
//! and whether a device would take it.

use super::{read_root, ShowArgs};
use airlift_trust::{RoleName, Root};
use anyhow::{Context, Result};
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Serialize)]
struct RoleView {
    threshold: usize,
    key_ids: Vec<String>,
}

#[derive(Serialize)]
struct RootView<'a> {
    version: u64,
    expires: u64,
    expires_at: String,
    root: RoleView,
    release: RoleView,
    timestamp: RoleView,
    security_version_reset: Option<u64>,
    signed_by: Vec<&'a str>,
    /// Whether the root carries a threshold of its own root keys.
    self_signed: Result<(), String>,
    /// Whether it follows `--previous` (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    follows_previous: Option<Result<(), String>>,
    expired: bool,
}

pub(super) fn show(args: &ShowArgs) -> Result<()> {
    let root = read_root(&args.file)?;
    let previous = args.previous.as_deref().map(read_root).transpose()?;
    let view = view(&root, previous.as_ref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    println!("root version {}", view.version);
    println!(
        "expires      {} ({}){}",
        view.expires_at,
        view.expires,
        if view.expired { " — EXPIRED" } else { "" }
    );
    for (name, role) in [
        ("root", &view.root),
        ("release", &view.release),
        ("timestamp", &view.timestamp),
    ] {
        println!(
            "{name:<12} {} of {}: {}",
            role.threshold,
            role.key_ids.len(),
            role.key_ids.join(", ")
        );
    }
    if let Some(reset) = view.security_version_reset {
        println!("security version reset to {reset}");
    }
    println!(
        "signed by    {}",
        if view.signed_by.is_empty() {
            "nobody (a draft)".into()
        } else {
            view.signed_by.join(", ")
        }
    );
    for line in verdict(&root, previous.as_ref()) {
        println!("{line}");
    }
    Ok(())
}

/// One line per check a device makes, saying what is still missing.
pub(super) fn verdict(root: &Root, previous: Option<&Root>) -> Vec<String> {
    let mut lines = vec![match self_check(root) {
        Ok(()) => "own root keys: threshold met".to_owned(),
        Err(e) => format!("own root keys: NOT MET — {e}"),
    }];
    if let Some(previous) = previous {
        lines.push(match chain_check(root, previous) {
            Ok(()) => format!("follows root version {}: yes", previous.version()),
            Err(e) => format!("follows root version {}: NO — {e}", previous.version()),
        });
    } else if root.version() > 1 {
        lines.push(format!(
            "pass --previous with root version {} to check the chain",
            root.version() - 1
        ));
    }
    lines
}

fn self_check(root: &Root) -> Result<(), String> {
    Root::trust_first(&root.envelope().to_bytes())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn chain_check(root: &Root, previous: &Root) -> Result<(), String> {
    previous
        .next_from(&root.envelope().to_bytes())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn view<'a>(root: &'a Root, previous: Option<&Root>) -> Result<RootView<'a>> {
    let document = root.document();
    let role = |name: RoleName| RoleView {
        threshold: document.role(name).threshold,
        key_ids: document.role(name).key_ids.clone(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let expires_at = i64::try_from(document.expires)
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .map_or_else(
            || "never (beyond the calendar)".to_owned(),
            |t| t.to_rfc3339(),
        );
    Ok(RootView {
        version: document.version,
        expires: document.expires,
        expires_at,
        root: role(RoleName::Root),
        release: role(RoleName::Release),
        timestamp: role(RoleName::Timestamp),
        security_version_reset: document.security_version_reset,
        signed_by: root
            .envelope()
            .signatures()
            .iter()
            .map(|s| s.key_id.as_str())
            .collect(),
        self_signed: self_check(root),
        follows_previous: previous.map(|p| chain_check(root, p)),
        expired: root.check_not_expired(now).is_err(),
    })
}
