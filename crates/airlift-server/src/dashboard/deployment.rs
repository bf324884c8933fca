//! One deployment's page, live on `deployment:ID`: where its rollout
//! stands per phase, the circuit breaker, its devices by state, its
//! failures grouped by reason, a page of its devices, and the operator's
//! controls — each a call to the API's own handler.
//!
//! Everything is read with aggregate queries and one page of devices, so
//! the page costs the same for ten devices as for a hundred thousand.

use super::deployments::{duration_text, package_link, package_names, path_id, target_text, Tally};
use super::layout::{self, csrf_field, error_words, Nav, PageError, PageInfo};
use super::session::{ActionForm, Viewer};
use crate::api;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;
use airlift_protocol::management::{Deployment, DeviceUpdate};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::strategy::{BreakerAction, FailureThreshold, PhaseDevices, Phased, Strategy};
use airlift_protocol::DeploymentId;
use airlift_store::{
    DeploymentDevicesFilter, DeploymentRecord, FailureGroup, PageRequest, ReasonMatch,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Devices per page of the deployment's device table.
const PER_PAGE: u32 = 50;
/// Failure groups shown (the largest).
const MAX_GROUPS: u32 = 20;
/// How much of a reason a link carries to filter by (reasons may be 16 KiB
/// log tails); the table matches reasons that start with it.
const REASON_IN_LINK: usize = 200;
/// Longest reason the device list's exact filter is linked with.
const REASON_TO_DEVICE_LIST: usize = 2000;
/// The `state` filter that means any failed state.
const FAILED: &str = "failed";

/// The page's query: the device table's filter and page, and the outcome
/// of a control just used.
#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    /// An update state, or `failed` for any failed one.
    state: Option<String>,
    /// Devices whose last message starts with this.
    reason: Option<String>,
    /// Devices with no message (`1`).
    no_reason: Option<String>,
    page: Option<u32>,
    /// The control that was just used.
    done: Option<String>,
    /// Devices a retry just offered the update again.
    pub(super) retried: Option<usize>,
    /// Failed devices the retry left: at their retry limit.
    pub(super) at_limit: Option<u64>,
    /// The device a reset just sent back to pending.
    pub(super) reset: Option<airlift_protocol::DeviceId>,
}

impl DetailQuery {
    fn filter(&self) -> Result<DeploymentDevicesFilter, PageError> {
        let states = match self.state.as_deref().map(str::trim) {
            None | Some("") => Vec::new(),
            Some(FAILED) => failed_states(),
            Some(text) => vec![text
                .parse()
                .map_err(|e| PageError(ApiError::bad_request(format!("state: {e}"))))?],
        };
        let reason = if self.no_reason.is_some() {
            Some(ReasonMatch::Missing)
        } else {
            self.reason.clone().map(ReasonMatch::StartsWith)
        };
        Ok(DeploymentDevicesFilter { states, reason })
    }

    /// The device table's filter, encoded (for the pager and the fragment).
    fn encoded(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("state", &self.state),
            ("reason", &self.reason),
            ("no_reason", &self.no_reason),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                query.append_pair(name, value);
            }
        }
        query.finish()
    }
}

fn failed_states() -> Vec<UpdateState> {
    UpdateState::ALL
        .iter()
        .copied()
        .filter(UpdateState::is_failure)
        .collect()
}

/// `GET /ui/deployments/{id}`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Response {
    let id = match path_id(&id, "deployment") {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let notice = query
        .done
        .as_deref()
        .and_then(done_words)
        .map(|w| Ok(w.to_owned()))
        .or_else(|| super::deployment_repair::done_words(&query).map(Ok));
    render(&state, &viewer, id, &query, notice, StatusCode::OK).await
}

/// `GET /ui/deployments/{id}/fragment`: the live region alone.
pub async fn fragment(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Result<Markup, PageError> {
    let id = path_id(&id, "deployment")?;
    let (_, region) = region(&state, &viewer, id, &query).await?;
    Ok(region)
}

fn done_words(control: &str) -> Option<&'static str> {
    Some(match control {
        "pause" => "Paused: no more devices are admitted; those updating finish.",
        "resume" => "Resumed: the failures so far no longer count for the circuit breaker.",
        "advance" => "Advanced to the next phase.",
        "abort" => "Aborted: devices not yet updating will never be offered it.",
        "cancel" => "Cancelled: devices not yet done will not be offered it any more.",
        "install" => "Install released: waiting devices install at their next check-in.",
        _ => return None,
    })
}

pub(super) async fn render(
    state: &AppState,
    viewer: &Viewer,
    id: DeploymentId,
    query: &DetailQuery,
    notice: Option<Result<String, String>>,
    status: StatusCode,
) -> Response {
    let (name, region) = match region(state, viewer, id, query).await {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let body = html! {
        p { a href="/ui/deployments" { "← All deployments" } }
        @match &notice {
            Some(Ok(words)) => div.notice role="status" { (words) },
            Some(Err(words)) => div.notice.bad #control-refused role="alert" {
                p { strong { "Refused: " } (words) }
            },
            None => {}
        }
        (region)
    };
    let page = layout::page(
        viewer,
        PageInfo {
            title: &name,
            nav: Nav::Deployments,
            live: Some(format!("deployment:{id}")),
        },
        body,
    );
    (status, page).into_response()
}

/// The live region and the deployment's name.
async fn region(
    state: &AppState,
    viewer: &Viewer,
    id: DeploymentId,
    query: &DetailQuery,
) -> Result<(String, Markup), PageError> {
    let store = state.store();
    let record = store
        .deployment(id)
        .await?
        .ok_or_else(|| PageError(ApiError::NotFound(format!("no deployment {id}"))))?;
    let deployment = api::with_counts(state, record.clone()).await?;
    let names = package_names(state, std::iter::once(record.package_id)).await?;
    let failures = store.deployment_failures(id, MAX_GROUPS).await?;
    let filter = query.filter()?;
    let page = query.page.unwrap_or(1).max(1);
    let devices = store
        .deployment_devices_page(
            id,
            &filter,
            PageRequest {
                page,
                per_page: PER_PAGE,
            },
        )
        .await?;
    // The counts by state are in hand already; only a reason needs a count
    // of its own (a scan of the deployment's rows).
    let total = match filter.reason {
        None if filter.states.is_empty() => deployment.counts.values().sum(),
        None => filter
            .states
            .iter()
            .filter_map(|state| deployment.counts.get(state))
            .sum(),
        Some(_) => store.count_deployment_devices(id, &filter).await?,
    };
    let links = super::deployment_repair::rollback_links(state, id).await?;
    let encoded = query.encoded();
    let mut source = format!("/ui/deployments/{id}/fragment?page={page}");
    if !encoded.is_empty() {
        source = format!("{source}&{encoded}");
    }
    let region = html! {
        div #deployment data-live-on=(format!("deployment:{id} everything")) data-live-src=(source) {
            @if viewer.can_operate() { (controls(viewer, &deployment)) }
            (links)
            @if let Some(reason) = deployment.rollout.as_ref().and_then(|r| r.reason.as_ref()) {
                @if matches!(deployment.status, DeploymentStatus::Paused | DeploymentStatus::Aborted) {
                    div.notice.bad role="status" { (reason) }
                }
            }
            (summary(&deployment, &names))
            @if let Strategy::Phased(phased) = &deployment.strategy {
                (rollout(&deployment, &record, phased))
            }
            h2 { "Devices by state" }
            div.card { (states(&deployment)) }
            h2 { "Failures by reason" }
            div.card {
                (failure_groups(id, &failures))
                (super::deployment_repair::retry_form(viewer, &deployment))
            }
            h2 #devices { "Devices" }
            div.card { (device_table((viewer, &record), query, &devices, page, total)) }
        }
    };
    Ok((record.name, region))
}

/// The controls that apply now (the API refuses the others anyway).
fn controls(viewer: &Viewer, deployment: &Deployment) -> Markup {
    let phased = deployment.rollout.as_ref();
    let open = matches!(
        deployment.status,
        DeploymentStatus::Active | DeploymentStatus::Paused
    );
    let active = deployment.status == DeploymentStatus::Active;
    let more_phases = phased.is_some_and(|r| r.phase + 1 < r.phases.len());
    let offered: Vec<(&str, &str, bool)> = [
        ("pause", "Pause", phased.is_some() && active, false),
        (
            "resume",
            "Resume",
            phased.is_some() && deployment.status == DeploymentStatus::Paused,
            false,
        ),
        (
            "advance",
            "Advance to the next phase",
            active && more_phases,
            false,
        ),
        (
            "install",
            "Release install",
            open && deployment.install.download_only,
            false,
        ),
        ("abort", "Abort", phased.is_some() && open, true),
        ("cancel", "Cancel", open, true),
    ]
    .into_iter()
    .filter(|(_, _, applies, _)| *applies)
    .map(|(action, label, _, danger)| (action, label, danger))
    .collect();
    html! {
        @if !offered.is_empty() {
            form.actions method="post" action=(format!("/ui/deployments/{}/control", deployment.id)) {
                (csrf_field(viewer))
                @for (action, label, danger) in offered {
                    button.danger[danger] type="submit" name="action" value=(action) { (label) }
                }
            }
        }
    }
}

fn summary(
    deployment: &Deployment,
    names: &BTreeMap<airlift_protocol::PackageId, String>,
) -> Markup {
    let tally = Tally::of(deployment);
    html! {
        section.grid aria-label="Progress" {
            div.card { div.stat { (layout::status(deployment.status)) } div.stat-label { "status" } }
            div.card { div.stat { (tally.succeeded) " / " (tally.counted) } div.stat-label { "devices updated" } }
            div.card { div.stat { (tally.failed) } div.stat-label { "failed, rolled back or timed out" } }
            div.card { div.stat { (tally.total - tally.counted) } div.stat-label { "skipped (incompatible, already running it, cancelled)" } }
        }
        div.card {
            progress max=(tally.counted.max(1)) value=(tally.succeeded)
                aria-label=(format!("{} of {} devices updated", tally.succeeded, tally.counted)) {}
            dl.facts {
                dt { "Package" } dd { (package_link(deployment.package_id, names)) }
                dt { "Target" } dd { (target_text(&deployment.target)) }
                dt { "Rollout" } dd {
                    @match &deployment.strategy {
                        Strategy::All => "all devices at once",
                        Strategy::Phased(phased) => {
                            (phased.phases.len()) " phases, advancing "
                            (format!("{:?}", phased.advance).to_lowercase())
                            "; a device stuck for " (duration_text(phased.device_timeout_secs)) " times out"
                        }
                    }
                }
                dt { "Install" } dd {
                    @match &deployment.install.window {
                        Some(window) => { "daily between " (window.start.format("%H:%M")) " and " (window.end.format("%H:%M")) " UTC" }
                        None => "at any time",
                    }
                    @if deployment.install.download_only { "; download only, until an operator releases the install" }
                    @match &deployment.install.soft {
                        Some(soft) => { "; " (soft) " (docs/operations.md)" }
                        None => "; forced",
                    }
                }
                @if deployment.dynamic {
                    dt { "Joins" } dd {
                        (deployment.joined_late) " devices joined the target later; "
                        @match deployment.ends_at {
                            Some(ends) => { "takes in devices until " (layout::time(ends)) }
                            None => { "takes in devices until an operator ends it" }
                        }
                    }
                }
                dt { "Created" } dd { (layout::time(deployment.created_at)) }
                @if let Some(finished) = deployment.finished_at {
                    dt { "Finished" } dd { (layout::time(finished)) }
                }
                dt { "Id" } dd { code { (deployment.id) } }
            }
        }
    }
}

/// Each phase with its bar, and the circuit breaker.
fn rollout(deployment: &Deployment, record: &DeploymentRecord, phased: &Phased) -> Markup {
    let Some(progress) = &deployment.rollout else {
        return html! {};
    };
    html! {
        h2 { "Rollout" }
        div.card {
            table {
                thead { tr {
                    th { "Phase" } th { "Admits" } th { "Progress" } th.num { "Admitted" }
                    th.num { "Succeeded" } th.num { "Failed" } th.num { "Skipped" } th.wide-only { "Soak" }
                } }
                tbody {
                    @for (i, (phase, spec)) in progress.phases.iter().zip(&phased.phases).enumerate() {
                        @let counted = phase.admitted.saturating_sub(phase.skipped);
                        tr aria-current=[(i == progress.phase).then_some("step")] {
                            td {
                                (phase.name)
                                @if i < progress.phase { " " span.muted { "(done)" } }
                                @if i == progress.phase { " " (layout::status("current")) }
                            }
                            td { (admits(&spec.devices)) }
                            td {
                                progress max=(counted.max(1)) value=(phase.succeeded)
                                    aria-label=(format!("{}: {} of {} updated", phase.name, phase.succeeded, counted)) {}
                            }
                            td.num { (phase.admitted) }
                            td.num { (phase.succeeded) }
                            td.num { (phase.failed) }
                            td.num { (phase.skipped) }
                            td.wide-only {
                                (duration_text(spec.soak_secs))
                                @if i == progress.phase {
                                    @if let Some(met) = progress.phase_met_at {
                                        br; span.muted { "threshold met " (layout::time(met)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.muted { "Phase " (progress.phase + 1) " started " (layout::time(progress.phase_started_at)) "." }
        }
        h2 { "Circuit breaker" }
        div.card { (breaker(deployment, record, phased)) }
    }
}

fn admits(devices: &PhaseDevices) -> Markup {
    html! {
        @match devices {
            PhaseDevices::Percent(p) => { (p) " % of the target" }
            PhaseDevices::Tag(tag) => { "tag " span.tag { (tag) } }
            PhaseDevices::Devices(ids) => { (ids.len()) " canary device" @if ids.len() != 1 { "s" } }
        }
    }
}

/// The breaker counts the failures among admitted devices beyond those an
/// operator resumed past, against the threshold — the rollout engine's
/// own rule ([`FailureThreshold::crossed`]).
fn breaker(deployment: &Deployment, record: &DeploymentRecord, phased: &Phased) -> Markup {
    let phases = deployment
        .rollout
        .as_ref()
        .map(|r| r.phases.as_slice())
        .unwrap_or_default();
    let counted: u64 = phases
        .iter()
        .map(|p| p.admitted.saturating_sub(p.skipped))
        .sum();
    let failed: u64 = phases.iter().map(|p| p.failed).sum();
    let new = failed.saturating_sub(record.rollout.acknowledged_failures);
    let tripped = matches!(
        deployment.status,
        DeploymentStatus::Paused | DeploymentStatus::Aborted
    ) && record
        .rollout
        .reason
        .as_deref()
        .is_some_and(|r| r.starts_with("circuit breaker"));
    let crossed = phased.failure_threshold.crossed(new, counted);
    let action = match phased.on_failure {
        BreakerAction::Pause => "pauses the rollout",
        BreakerAction::Abort => "aborts the deployment",
        BreakerAction::Rollback => "stops the deployment and rolls its devices back",
    };
    html! {
        dl.facts {
            dt { "State" }
            dd {
                @if tripped {
                    (layout::status("open")) " — tripped"
                } @else if crossed {
                    (layout::status("open")) " — past the threshold; the rollout engine acts within seconds"
                } @else {
                    (layout::status("closed")) " — devices keep being admitted"
                }
            }
            dt { "Threshold" }
            dd {
                @match phased.failure_threshold {
                    FailureThreshold::Percent(p) => {
                        "more than " (p) " % of the admitted devices failing " (action)
                        br;
                        meter min="0" max="100" high=(p) value=(share(new, counted))
                            aria-label="Share of admitted devices failed" {}
                    }
                    FailureThreshold::Count(c) => {
                        "more than " (c) " admitted devices failing " (action)
                        br;
                        meter min="0" max=(c + 1) high=(c) value=(new.min(c + 1))
                            aria-label="Admitted devices failed" {}
                    }
                }
            }
            dt { "Counted" }
            dd {
                (new) " failed of " (counted) " admitted"
                @if record.rollout.acknowledged_failures > 0 {
                    span.muted { " (" (record.rollout.acknowledged_failures) " earlier failures were resumed past)" }
                }
            }
        }
    }
}

/// `part` of `whole` in percent.
fn share(part: u64, whole: u64) -> u64 {
    part.saturating_mul(100).checked_div(whole).unwrap_or(0)
}

fn states(deployment: &Deployment) -> Markup {
    html! {
        @if deployment.counts.is_empty() {
            p.muted { "No device is in this deployment." }
        } @else {
            table {
                thead { tr { th { "State" } th.num { "Devices" } th { "Show" } } }
                tbody {
                    @for (state, n) in &deployment.counts {
                        tr {
                            td { (layout::status(state)) }
                            td.num { (n) }
                            td {
                                a href=(format!("/ui/deployments/{}?state={state}#devices", deployment.id)) { "here" }
                                " · "
                                a href=(format!("/ui/devices?deployment={}&update_state={state}", deployment.id)) { "in the device list" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn failure_groups(id: DeploymentId, groups: &[FailureGroup]) -> Markup {
    html! {
        @if groups.is_empty() {
            p.muted { "No device failed." }
        } @else {
            table {
                thead { tr { th { "Reason" } th.num { "Devices" } th.wide-only { "Latest" } th { "Show" } } }
                tbody {
                    @for group in groups {
                        tr {
                            td { (reason(group.reason.as_deref())) }
                            td.num { (group.devices) }
                            td.wide-only { (layout::time(group.last_at)) }
                            td { (group_links(id, group.reason.as_deref())) }
                        }
                    }
                }
            }
        }
    }
}

/// A reason, whole when short, else its start with the rest unfolding.
fn reason(text: Option<&str>) -> Markup {
    html! {
        @match text {
            None => span.muted { "no reason given" },
            Some(text) if text.chars().count() <= 300 => code.reason { (text) },
            Some(text) => details {
                summary { code { (text.chars().take(160).collect::<String>()) "…" } }
                pre { (text) }
            },
        }
    }
}

fn group_links(id: DeploymentId, reason: Option<&str>) -> Markup {
    let failed = failed_states()
        .iter()
        .map(UpdateState::as_str)
        .collect::<Vec<_>>()
        .join(",");
    let mut here = form_urlencoded::Serializer::new(String::new());
    here.append_pair("state", FAILED);
    match reason {
        Some(text) => here.append_pair(
            "reason",
            &text.chars().take(REASON_IN_LINK).collect::<String>(),
        ),
        None => here.append_pair("no_reason", "1"),
    };
    let elsewhere = reason
        .filter(|text| text.len() <= REASON_TO_DEVICE_LIST)
        .map(|text| {
            form_urlencoded::Serializer::new(String::new())
                .append_pair("deployment", &id.to_string())
                .append_pair("update_state", &failed)
                .append_pair("reason", text)
                .finish()
        });
    html! {
        a href=(format!("/ui/deployments/{id}?{}#devices", here.finish())) { "here" }
        @if let Some(query) = elsewhere {
            " · " a href=(format!("/ui/devices?{query}")) { "in the device list" }
        }
    }
}

fn device_table(
    (viewer, record): (&Viewer, &DeploymentRecord),
    query: &DetailQuery,
    devices: &[DeviceUpdate],
    page: u32,
    total: u64,
) -> Markup {
    let id = record.id;
    let now = chrono::Utc::now();
    let chosen = query.state.as_deref().unwrap_or("");
    let path = format!("/ui/deployments/{id}");
    html! {
        form.filters method="get" action=(path) {
            div {
                label for="device-state" { "State" }
                select #device-state name="state" {
                    option value="" { "any" }
                    option value=(FAILED) selected[chosen == FAILED] { "failed (any way)" }
                    @for state in UpdateState::ALL {
                        option value=(state) selected[chosen == state.as_str()] { (state) }
                    }
                }
            }
            div { button.secondary type="submit" { "Show" } }
        }
        @if query.reason.is_some() || query.no_reason.is_some() {
            p {
                "Only devices "
                @match &query.reason {
                    Some(start) => { "whose reason starts with " code { (start) } }
                    None => "that gave no reason",
                }
                ". " a href=(format!("{path}#devices")) { "Show all" }
            }
        }
        @if devices.is_empty() {
            p.muted { "No device here matches." }
        } @else {
            table {
                thead { tr {
                    th { "Device" } th { "State" } th.wide-only { "Phase" } th { "Download" }
                    th.wide-only { "Since" } th { "Last message" }
                } }
                tbody {
                    @for update in devices {
                        tr {
                            td { a href=(format!("/ui/devices/{}", update.device_id)) { code { (update.device_id) } } }
                            td { (layout::status(update.state)) }
                            td.wide-only { @match update.phase { Some(p) => (p + 1), None => span.muted { "—" } } }
                            td {
                                @if let (UpdateState::Downloading, Some(progress)) = (update.state, update.progress) {
                                    progress max=(progress.total.max(1)) value=(progress.done)
                                        aria-label="Downloaded" {}
                                    " " (share(progress.done, progress.total)) " %"
                                }
                            }
                            td.wide-only { (layout::time(update.updated_at)) }
                            td {
                                (reason(update.message.as_deref()))
                                (super::deployment_repair::reset_cell(viewer, record, update, now))
                            }
                        }
                    }
                }
            }
            (layout::pager(&path, &query.encoded(), page, PER_PAGE, total))
        }
    }
}

/// `POST /ui/deployments/{id}/control`: pause, resume, advance, abort,
/// cancel or release install, each through the API's own handler.
pub async fn control(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: ActionForm,
) -> Response {
    let id: DeploymentId = match path_id(&id, "deployment") {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    let caller = form.viewer.caller.clone();
    let s = || State(state.clone());
    let action = form.value("action").unwrap_or_default().to_owned();
    let done = match action.as_str() {
        "pause" => api::pause_deployment(s(), caller, ApiPath(id))
            .await
            .map(drop),
        "resume" => api::resume_deployment(s(), caller, ApiPath(id))
            .await
            .map(drop),
        "advance" => api::advance_deployment(s(), caller, ApiPath(id))
            .await
            .map(drop),
        "abort" => api::abort_deployment(s(), caller, ApiPath(id))
            .await
            .map(drop),
        "cancel" => api::cancel_deployment(s(), caller, ApiPath(id))
            .await
            .map(drop),
        "install" => api::release_install(s(), caller, ApiPath(id))
            .await
            .map(drop),
        _ => Err(ApiError::bad_request(
            "action: must be pause, resume, advance, abort, cancel or install",
        )),
    };
    match done {
        Ok(()) => Redirect::to(&format!("/ui/deployments/{id}?done={action}")).into_response(),
        Err(error) => {
            let status = error.status();
            let words = error_words(&error);
            let query = DetailQuery::default();
            render(&state, &form.viewer, id, &query, Some(Err(words)), status).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_fold_and_every_reason_is_escaped() {
        let short = reason(Some("<script>x</script>")).into_string();
        assert!(!short.contains("<script>"), "{short}");
        let long = "<b>".repeat(200);
        let folded = reason(Some(&long)).into_string();
        assert!(folded.contains("<details>"), "{folded}");
        assert!(!folded.contains("<b>"), "{folded}");
        assert!(reason(None).into_string().contains("no reason given"));
    }

    #[test]
    fn a_group_links_to_its_devices_here_and_in_the_device_list() {
        let id = DeploymentId::new();
        let links = group_links(id, Some("disk full & more")).into_string();
        assert!(
            links.contains("state=failed&amp;reason=disk+full+%26+more#devices"),
            "{links}"
        );
        assert!(links.contains(&format!("/ui/devices?deployment={id}&amp;update_state=failure%2Crolled_back%2Ctimed_out&amp;reason=disk+full+%26+more")), "{links}");
        let silent = group_links(id, None).into_string();
        assert!(silent.contains("no_reason=1"), "{silent}");
        assert!(!silent.contains("/ui/devices?"), "{silent}");
        let huge = "x".repeat(REASON_TO_DEVICE_LIST + 1);
        let cut = group_links(id, Some(&huge)).into_string();
        assert!(
            !cut.contains("/ui/devices?"),
            "too long to carry whole: {cut}"
        );
        assert!(
            cut.contains(&format!("reason={}#", "x".repeat(REASON_IN_LINK))),
            "{cut}"
        );
    }

    #[test]
    fn the_table_filter_reads_failed_as_every_failed_state() {
        let query = DetailQuery {
            state: Some("failed".into()),
            reason: Some("disk".into()),
            ..DetailQuery::default()
        };
        let filter = query.filter().expect("valid");
        assert_eq!(filter.states, failed_states());
        assert_eq!(filter.reason, Some(ReasonMatch::StartsWith("disk".into())));
        assert_eq!(query.encoded(), "state=failed&reason=disk");
        let bad = DetailQuery {
            state: Some("broken".into()),
            ..DetailQuery::default()
        };
        assert!(bad.filter().is_err());
    }

    #[test]
    fn shares_never_divide_by_zero() {
        assert_eq!(share(1, 0), 0);
        assert_eq!(share(1, 3), 33);
        assert_eq!(share(5, 5), 100);
    }
}
