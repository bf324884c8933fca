//! The deployment list, with a status filter and live counts, and the
//! small pieces the deployment pages share (how a target, a package or a
//! rollout reads). A deployment's own page is in [`super::deployment`], the
//! form that creates one in [`super::deployment_form`].

use super::layout::{self, Nav, PageError, PageInfo};
use super::session::Viewer;
use crate::api;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;
use airlift_protocol::management::{Deployment, Target};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::PackageId;
use axum::extract::{Query, State};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::str::FromStr;

/// Deployments per page of the list.
const PER_PAGE: u32 = 50;

/// The list's query: kept in the URL, so a filtered list can be shared.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    page: Option<u32>,
}

impl ListQuery {
    /// The status asked for; a blank one (the form's "any") is none.
    fn status(&self) -> Result<Option<DeploymentStatus>, PageError> {
        match self.status.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|e| PageError(ApiError::bad_request(format!("status: {e}")))),
        }
    }

    /// The query without its page, encoded, for the pager and the fragment.
    fn encoded(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(status) = self.status.as_deref().filter(|s| !s.trim().is_empty()) {
            query.append_pair("status", status);
        }
        query.finish()
    }
}

/// `GET /ui/deployments`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> Result<Markup, PageError> {
    let region = region(&state, &viewer, &query).await?;
    let status = query.status()?;
    let body = html! {
        div.actions {
            form.filters method="get" action="/ui/deployments" {
                div {
                    label for="status" { "Status" }
                    select #status name="status" {
                        option value="" { "any" }
                        @for each in DeploymentStatus::ALL {
                            option value=(each) selected[status == Some(*each)] { (each) }
                        }
                    }
                }
                div { button.secondary type="submit" { "Filter" } }
            }
            @if viewer.can_operate() {
                a.button href="/ui/deployments/new" { "New deployment" }
            }
        }
        (region)
    };
    Ok(layout::page(
        &viewer,
        PageInfo {
            title: "Deployments",
            nav: Nav::Deployments,
            live: Some("deployments".into()),
        },
        body,
    ))
}

/// `GET /ui/deployments/fragment`: the live list alone.
pub async fn fragment(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> Result<Markup, PageError> {
    region(&state, &viewer, &query).await
}

/// The list as a live region: one page of the API's own list (counted in
/// one query for the page), refreshed when any deployment changes.
async fn region(state: &AppState, viewer: &Viewer, query: &ListQuery) -> Result<Markup, PageError> {
    let page = query.page.unwrap_or(1).max(1);
    let listed = api::list_deployments(
        State(state.clone()),
        viewer.caller.clone(),
        ApiQuery(api::DeploymentQuery {
            status: query.status()?,
            page: Some(page),
            per_page: Some(PER_PAGE),
        }),
    )
    .await?
    .0;
    let names = package_names(state, listed.items.iter().map(|d| d.package_id)).await?;
    let encoded = query.encoded();
    let mut source = format!("/ui/deployments/fragment?page={page}");
    if !encoded.is_empty() {
        source = format!("{source}&{encoded}");
    }
    Ok(html! {
        div.card #deployments data-live-on="deployments everything" data-live-src=(source) {
            @if listed.items.is_empty() {
                @if query.status().ok().flatten().is_some() {
                    (layout::empty("No deployment has this status.", html! {
                        p { a href="/ui/deployments" { "Show every deployment" } }
                    }))
                } @else {
                    (layout::empty("No deployment yet.", html! {
                        p { "Upload a package on the " a href="/ui/packages" { "packages" } " page, then "
                            @if viewer.can_operate() { a href="/ui/deployments/new" { "create a deployment" } }
                            @else { "ask an operator to create a deployment" }
                            " of it to a tag, some devices, or devices with given attributes." }
                    }))
                }
            } @else {
                table {
                    thead { tr {
                        th { "Name" } th { "Status" } th { "Package" } th.wide-only { "Target" }
                        th { "Progress" } th.num { "Failed" } th.wide-only { "Created" }
                    } }
                    tbody {
                        @for deployment in &listed.items {
                            (row(deployment, &names))
                        }
                    }
                }
                (layout::pager("/ui/deployments", &encoded, page, PER_PAGE, listed.total))
            }
        }
    })
}

fn row(deployment: &Deployment, names: &BTreeMap<PackageId, String>) -> Markup {
    let tally = Tally::of(deployment);
    html! {
        tr {
            td { a href=(format!("/ui/deployments/{}", deployment.id)) { (deployment.name) } }
            td { (layout::status(deployment.status)) }
            td { (package_link(deployment.package_id, names)) }
            td.wide-only { (target_text(&deployment.target)) }
            td {
                progress max=(tally.counted.max(1)) value=(tally.succeeded)
                    aria-label=(format!("{} of {} devices updated", tally.succeeded, tally.counted)) {}
                " " span.muted { (tally.succeeded) " of " (tally.counted) }
                @if let Some(phase) = phase_text(deployment) { br; span.muted { (phase) } }
            }
            td.num { (tally.failed) }
            td.wide-only { (layout::time(deployment.created_at)) }
        }
    }
}

/// A deployment's devices as people count them: those the update is for
/// (not skipped), how many of those succeeded and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Devices the update is for: all but incompatible, already
    /// running it, or cancelled.
    pub counted: u64,
    /// Confirmed healthy on the new version.
    pub succeeded: u64,
    /// Failed, rolled back or timed out.
    pub failed: u64,
    /// Every device of the target.
    pub total: u64,
}

impl Tally {
    pub(super) fn of(deployment: &Deployment) -> Self {
        let mut tally = Tally::default();
        for (state, n) in &deployment.counts {
            tally.total += n;
            match state {
                UpdateState::Incompatible
                | UpdateState::AlreadyInstalled
                | UpdateState::Cancelled => {}
                UpdateState::Success => {
                    tally.counted += n;
                    tally.succeeded += n;
                }
                state if state.is_failure() => {
                    tally.counted += n;
                    tally.failed += n;
                }
                _ => tally.counted += n,
            }
        }
        tally
    }
}

/// "phase 2 of 3: 10 %", for a phased rollout.
pub(super) fn phase_text(deployment: &Deployment) -> Option<String> {
    let rollout = deployment.rollout.as_ref()?;
    let phase = rollout.phases.get(rollout.phase)?;
    Some(format!(
        "phase {} of {}: {}",
        rollout.phase + 1,
        rollout.phases.len(),
        phase.name
    ))
}

/// Which devices, in words.
pub(super) fn target_text(target: &Target) -> Markup {
    html! {
        @match target {
            Target::Devices(ids) => {
                (ids.len()) " device" @if ids.len() != 1 { "s" } " by id"
            }
            Target::Tag(tag) => { "tag " span.tag { (tag) } }
            Target::Attributes(attributes) => {
                "attributes "
                @for (name, value) in attributes { code { (name) "=" (value) } " " }
            }
            Target::Expression(expression) => { "devices where " code { (expression) } }
        }
    }
}

/// A link to a package by its name and version, or its id once deleted.
pub(super) fn package_link(id: PackageId, names: &BTreeMap<PackageId, String>) -> Markup {
    match names.get(&id) {
        Some(name) => html! { a href=(format!("/ui/packages/{id}")) { (name) } },
        None => html! { code title="deleted" { (id) } },
    }
}

/// The names of these packages ("rootfs 1.2.0"), from the cache of
/// packages (immutable, so read once per instance); deleted ones are
/// absent.
pub(super) async fn package_names(
    state: &AppState,
    ids: impl Iterator<Item = PackageId>,
) -> Result<BTreeMap<PackageId, String>, PageError> {
    let mut names = BTreeMap::new();
    for id in ids {
        if names.contains_key(&id) {
            continue;
        }
        if let Some(cached) = state.caches().package(state.store(), id).await? {
            let package = &cached.record.package;
            names.insert(id, format!("{} {}", package.name, package.version));
        }
    }
    Ok(names)
}

/// A duration as people write it: `90s`, `30m`, `6h`, `2d`, or plain
/// seconds; `None` when it is none of these.
pub(super) fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit.trim() {
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// Seconds as the shortest duration people write (`90s`, `30m`, `6h`,
/// `2d`), so a form shows back what [`parse_duration`] reads.
pub(super) fn duration_text(secs: u64) -> String {
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// An id from a path, or the 400 page naming it.
pub(super) fn path_id<T: FromStr>(text: &str, what: &str) -> Result<T, PageError> {
    text.parse().map_err(|_| {
        PageError(ApiError::bad_request(format!(
            "{text:?} is not a {what} id"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_protocol::strategy::Strategy;
    use airlift_protocol::DeploymentId;

    fn deployment(counts: &[(UpdateState, u64)]) -> Deployment {
        Deployment {
            id: DeploymentId::new(),
            name: "<b>rootfs</b>".into(),
            package_id: PackageId::new(),
            target: Target::Attributes([("site".into(), "<lab>".into())].into()),
            strategy: Strategy::All,
            install: Default::default(),
            status: DeploymentStatus::Active,
            rollout: None,
            counts: counts.iter().copied().collect(),
            created_at: chrono::Utc::now(),
            finished_at: None,
            dynamic: false,
            ends_at: None,
            joined_late: 0,
        }
    }

    #[test]
    fn skipped_devices_do_not_count_toward_progress() {
        let tally = Tally::of(&deployment(&[
            (UpdateState::Success, 3),
            (UpdateState::Failure, 1),
            (UpdateState::TimedOut, 1),
            (UpdateState::Incompatible, 2),
            (UpdateState::Downloading, 4),
        ]));
        assert_eq!(
            tally,
            Tally {
                counted: 9,
                succeeded: 3,
                failed: 2,
                total: 11
            }
        );
    }

    #[test]
    fn rows_escape_names_and_targets() {
        let text = row(&deployment(&[]), &BTreeMap::new()).into_string();
        assert!(!text.contains("<b>"), "{text}");
        assert!(!text.contains("<lab>"), "{text}");
        assert!(text.contains("&lt;lab&gt;"), "{text}");
    }

    #[test]
    fn durations_read_as_written_and_write_as_read() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration(" 30m "), Some(1800));
        assert_eq!(parse_duration("6h"), Some(6 * 3600));
        assert_eq!(parse_duration("2 d"), Some(2 * 86_400));
        assert_eq!(parse_duration("1.5h"), None);
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
        for secs in [0, 1, 59, 60, 90, 3600, 5400, 86_400, 172_800] {
            assert_eq!(parse_duration(&duration_text(secs)), Some(secs), "{secs}");
        }
        assert_eq!(duration_text(21_600), "6h");
    }

    #[test]
    fn the_status_filter_stays_in_the_url() {
        let query = ListQuery {
            status: Some("paused".into()),
            page: Some(3),
        };
        assert_eq!(query.encoded(), "status=paused");
        assert_eq!(
            query.status().ok().flatten(),
            Some(DeploymentStatus::Paused)
        );
        let blank = ListQuery {
            status: Some(String::new()),
            page: None,
        };
        assert_eq!(blank.encoded(), "");
        assert!(ListQuery {
            status: Some("done".into()),
            page: None
        }
        .status()
        .is_err());
    }
}
