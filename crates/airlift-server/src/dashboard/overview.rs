//! The fleet overview: devices by status (with offline ones), installed
//! versions, the deployments in flight with their phase and circuit
//! breaker, the last day's failures by reason, the fleet's versions over
//! the last 30 days, and check-ins per minute over the last hour.
//!
//! Every number is one of the store's aggregates (one indexed query each,
//! run together), read with the same filters the API lists devices with,
//! so a count here is the total `GET /api/v1/devices` answers for the link
//! beside it. The page is live: open overviews refresh on every change, so
//! one instance reads the overview once for all its viewers and, while
//! someone looks, again in the background after each burst of changes
//! ([`Snapshots`]): never once per viewer, and not while a viewer waits.

use super::charts::{self, Series};
use super::layout::{self, Nav, PageError, PageInfo};
use super::session::Viewer;
use crate::api;
use crate::error::ApiError;
use crate::state::AppState;
use airlift_protocol::state::{DeploymentStatus, DeviceStatus, UpdateState};
use airlift_protocol::strategy::{FailureThreshold, Strategy};
use airlift_protocol::DeploymentId;
use airlift_store::{
    CheckInCount, DeploymentRecord, DeviceCounts, FailureGroup, InstallCount, UpdateCount,
    VersionCount,
};
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use maud::{html, Markup};
use snapshots::Snapshots;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Days the versions chart covers.
const CHART_DAYS: i64 = 30;
/// Minutes the check-ins chart covers.
const CHART_MINUTES: i64 = 60;
/// Installed software names shown, and versions of each.
const TOP_NAMES: u32 = 6;
const TOP_VERSIONS: u32 = 5;
/// Failure reasons shown.
const TOP_REASONS: u32 = 10;

mod snapshots;

/// Everything the overview shows, read at one moment.
#[derive(Debug)]
struct Overview {
    now: DateTime<Utc>,
    counts: DeviceCounts,
    versions: Vec<VersionCount>,
    deployments: Vec<DeploymentRecord>,
    deployment_counts: Vec<UpdateCount>,
    failures: Vec<FailureGroup>,
    installs: Vec<InstallCount>,
    check_ins: Vec<CheckInCount>,
}

fn day_start(at: DateTime<Utc>) -> DateTime<Utc> {
    let day = TimeDelta::days(1).num_milliseconds();
    DateTime::from_timestamp_millis(at.timestamp_millis().div_euclid(day) * day).unwrap_or(at)
}

fn minute_start(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis().div_euclid(60_000) * 60_000).unwrap_or(at)
}

/// Installs per day before today, as read on `today`: the history only
/// grows at its present end, so past days are read once a day.
type PastInstalls = Mutex<Option<(DateTime<Utc>, Arc<Vec<InstallCount>>)>>;

async fn installs(
    store: &dyn airlift_store::Store,
    first_day: DateTime<Utc>,
    today: DateTime<Utc>,
    past: &PastInstalls,
) -> airlift_store::StoreResult<Vec<InstallCount>> {
    let kept = past.lock().ok().and_then(|kept| {
        kept.as_ref()
            .filter(|(day, _)| *day == today)
            .map(|(_, rows)| rows.clone())
    });
    if let Some(before) = kept {
        let mut all = (*before).clone();
        all.extend(store.installs_per_day(today).await?);
        return Ok(all);
    }
    let all = store.installs_per_day(first_day).await?;
    let before: Vec<InstallCount> = all.iter().filter(|c| c.day < today).cloned().collect();
    if let Ok(mut kept) = past.lock() {
        *kept = Some((today, Arc::new(before)));
    }
    Ok(all)
}

async fn read(state: &AppState, past: &PastInstalls) -> Result<Overview, ApiError> {
    let store = state.store();
    let now = Utc::now();
    let first_day = day_start(now) - TimeDelta::days(CHART_DAYS - 1);
    let first_minute = minute_start(now) - TimeDelta::minutes(CHART_MINUTES - 1);
    let (counts, versions, deployments, deployment_counts, failures, installs, check_ins) = tokio::try_join!(
        store.device_counts(api::offline_cutoff(state)),
        store.installed_versions(TOP_NAMES, TOP_VERSIONS),
        store.open_deployments(),
        store.open_deployment_counts(),
        store.recent_failures(now - TimeDelta::hours(24), TOP_REASONS),
        installs(store, first_day, day_start(now), past),
        store.check_ins_per_minute(first_minute),
    )?;
    Ok(Overview {
        now,
        counts,
        versions,
        deployments,
        deployment_counts,
        failures,
        installs,
        check_ins,
    })
}

/// `GET /ui/`.
pub async fn page(State(state): State<AppState>, viewer: Viewer) -> Result<Markup, PageError> {
    let body = body(&state, viewer.can_operate()).await?;
    Ok(layout::page(
        &viewer,
        PageInfo {
            title: "Fleet overview",
            nav: Nav::Overview,
            live: Some("overview".into()),
        },
        body,
    ))
}

/// `GET /ui/overview/fragment`: the live region alone.
pub async fn fragment(State(state): State<AppState>, viewer: Viewer) -> Result<Markup, PageError> {
    body(&state, viewer.can_operate()).await
}

/// The live region; `operate` says whether to point at pages that change
/// things (a viewer is not sent to a form it may not use).
async fn body(state: &AppState, operate: bool) -> Result<Markup, PageError> {
    let overview = Snapshots::of(state.shared_store()).get(state).await?;
    let o = &*overview;
    let devices: u64 = o.counts.by_status.values().sum();
    Ok(html! {
        div #overview data-live-on="overview everything" data-live-src="/ui/overview/fragment" {
            (status_cards(&o.counts))
            @if devices == 0 {
                div.card { (no_devices()) }
            } @else {
                h2 { "Installed versions" }
                (versions(&o.versions))
            }
            h2 { "Deployments in flight" }
            (in_flight(&o.deployments, &o.deployment_counts, operate))
            h2 { "Failures in the last 24 hours" }
            (failures(&o.failures))
            div.grid.charts {
                section.card aria-labelledby="versions-chart" {
                    h2 #versions-chart { "Versions installed, last " (CHART_DAYS) " days" }
                    (versions_chart(&o.installs, o.now))
                }
                section.card aria-labelledby="check-ins-chart" {
                    h2 #check-ins-chart { "Check-ins per minute, last hour" }
                    (check_ins_chart(&o.check_ins, o.now))
                }
            }
            p.muted { "As of " (layout::time(o.now)) "." }
        }
    })
}

fn status_cards(counts: &DeviceCounts) -> Markup {
    let count = |status: DeviceStatus| counts.by_status.get(&status).copied().unwrap_or(0);
    let cards = [
        (
            "pending",
            count(DeviceStatus::Pending),
            "devices pending",
            "/ui/pending",
        ),
        (
            "accepted",
            count(DeviceStatus::Accepted),
            "devices accepted",
            "/ui/devices?status=accepted",
        ),
        (
            "offline",
            counts.offline,
            "of them offline",
            "/ui/devices?status=offline",
        ),
        (
            "rejected",
            count(DeviceStatus::Rejected),
            "devices rejected",
            "/ui/devices?status=rejected",
        ),
    ];
    html! {
        section.grid aria-label="Devices by status" {
            @for (word, n, label, href) in cards {
                a.card href=(href) {
                    div.stat data-count=(word) { (n) }
                    div.stat-label { (label) }
                }
            }
        }
        @let others = [DeviceStatus::Preauthorized, DeviceStatus::Decommissioned];
        p.muted {
            @for (i, status) in others.iter().enumerate() {
                @if i > 0 { " · " }
                a href=(format!("/ui/devices?status={status}")) {
                    span data-count=(status) { (count(*status)) } " " (status)
                }
            }
            " · offline: accepted, and not heard of for " (api::OFFLINE_POLLS) " poll intervals"
        }
    }
}

fn no_devices() -> Markup {
    layout::empty(
        "No device has contacted this server yet.",
        html! {
            p { "Run an agent on a device with this server's URL in its "
                code { "agent.toml" } " (" code { "airlift-agent run" } "), then accept it on the "
                a href="/ui/pending" { "pending" } " page. Or see a simulated fleet at once with "
                code { "airlift demo --keep" } "." }
        },
    )
}

fn installed_href(name: &str, version: &str) -> String {
    let pair = format!("{name}={version}");
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("installed", &pair);
    format!("/ui/devices?{}", query.finish())
}

fn versions(versions: &[VersionCount]) -> Markup {
    let mut names: Vec<(&str, u64, Vec<&VersionCount>)> = Vec::new();
    for v in versions {
        match names.last_mut() {
            Some((name, _, list)) if *name == v.name => list.push(v),
            _ => names.push((&v.name, v.name_devices, vec![v])),
        }
    }
    html! {
        @if names.is_empty() {
            div.card { (layout::empty("No device has reported installed software yet.", html! {
                p { "Devices report what they run at every check-in." }
            })) }
        } @else {
            div.grid {
                @for (name, total, list) in &names {
                    section.card aria-label=(format!("Versions of {name}")) {
                        h3 { (name) span.muted { " · " (total) " devices" } }
                        table {
                            thead { tr { th { "Version" } th.num { "Devices" } th { "Share" } } }
                            tbody {
                                @for v in list {
                                    tr {
                                        td { a href=(installed_href(name, &v.version)) { (v.version) } }
                                        td.num { (v.devices) }
                                        td { meter min="0" max=(total) value=(v.devices)
                                            aria-label=(format!("{} of {} devices", v.devices, total)) {} }
                                    }
                                }
                                @let shown: u64 = list.iter().map(|v| v.devices).sum();
                                @if shown < *total {
                                    tr { td.muted { "other versions" } td.num { (total - shown) } td {} }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A deployment's devices per state, and per state among those admitted
/// by a phase (the circuit breaker counts only those).
#[derive(Debug, Default)]
struct Tally {
    all: BTreeMap<UpdateState, u64>,
    admitted: BTreeMap<UpdateState, u64>,
}

impl Tally {
    fn of(counts: &[UpdateCount]) -> BTreeMap<DeploymentId, Tally> {
        let mut tallies: BTreeMap<DeploymentId, Tally> = BTreeMap::new();
        for count in counts {
            let tally = tallies.entry(count.deployment).or_default();
            *tally.all.entry(count.state).or_insert(0) += count.devices;
            if count.phase.is_some() {
                *tally.admitted.entry(count.state).or_insert(0) += count.devices;
            }
        }
        tallies
    }

    fn sum(map: &BTreeMap<UpdateState, u64>, wanted: impl Fn(UpdateState) -> bool) -> u64 {
        map.iter()
            .filter(|(s, _)| wanted(**s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// What the API counts as skipped in a phase (`PhaseProgress::skipped`):
/// final, yet neither a success nor a failure.
fn skipped(state: UpdateState) -> bool {
    state.is_final() && !state.is_failure() && state != UpdateState::Success
}

/// The circuit breaker's state, in words.
fn breaker(record: &DeploymentRecord, tally: &Tally) -> Markup {
    let Strategy::Phased(phased) = &record.strategy else {
        return html! { span.muted { "none (all at once)" } };
    };
    let threshold = match phased.failure_threshold {
        FailureThreshold::Percent(p) => format!("more than {p} %"),
        FailureThreshold::Count(c) => format!("more than {c}"),
    };
    let failed = Tally::sum(&tally.admitted, |s| s.is_failure());
    let counted = Tally::sum(&tally.admitted, |s| !skipped(s));
    let new = failed.saturating_sub(record.rollout.acknowledged_failures);
    let tripped = record.status != DeploymentStatus::Active
        && record
            .rollout
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("circuit breaker"));
    html! {
        @if tripped {
            span.status.status-open { "tripped" }
        } @else {
            span.status.status-closed { "closed" }
        }
        br;
        span.muted { (new) " of " (counted) " failed; trips at " (threshold) }
    }
}

fn phase_text(record: &DeploymentRecord) -> String {
    match &record.strategy {
        Strategy::All => "all at once".into(),
        Strategy::Phased(phased) => {
            let at = record.rollout.phase as usize;
            let name = phased
                .phases
                .get(at)
                .map(|p| p.display_name())
                .unwrap_or_default();
            format!("{name} ({} of {})", at + 1, phased.phases.len())
        }
    }
}

fn in_flight(deployments: &[DeploymentRecord], counts: &[UpdateCount], operate: bool) -> Markup {
    let tallies = Tally::of(counts);
    let none = Tally::default();
    html! {
        div.card {
            @if deployments.is_empty() {
                (layout::empty("No deployment is active or paused.", html! {
                    @if operate {
                        p { "Create one on the " a href="/ui/deployments/new" { "new deployment" } " page, or with "
                            code { "airlift deployment create" } "." }
                    } @else {
                        p { "An operator or admin starts one; past ones are on the "
                            a href="/ui/deployments" { "deployments" } " page." }
                    }
                }))
            } @else {
                table {
                    thead { tr {
                        th { "Name" } th { "Status" } th { "Phase" } th.num { "Succeeded" }
                        th.num { "Failed" } th.num { "Under way" } th.num { "Devices" } th { "Circuit breaker" }
                    } }
                    tbody {
                        @for record in deployments {
                            @let tally = tallies.get(&record.id).unwrap_or(&none);
                            tr {
                                td { a href=(format!("/ui/deployments/{}", record.id)) { (record.name) } }
                                td { (layout::status(record.status)) }
                                td { (phase_text(record)) }
                                td.num { (Tally::sum(&tally.all, |s| matches!(s, UpdateState::Success | UpdateState::AlreadyInstalled))) }
                                td.num { (Tally::sum(&tally.all, |s| s.is_failure())) }
                                td.num { (Tally::sum(&tally.all, |s| !s.is_final() && s != UpdateState::Pending)) }
                                td.num { (Tally::sum(&tally.all, |_| true)) }
                                td { (breaker(record, tally)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The device list of the devices that failed with `reason`.
pub fn failed_href(reason: Option<&str>) -> String {
    let states: Vec<&str> = UpdateState::ALL
        .iter()
        .filter(|s| s.is_failure())
        .map(|s| s.as_str())
        .collect();
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("update_state", &states.join(","));
    if let Some(reason) = reason {
        query.append_pair("reason", reason);
    }
    format!("/ui/devices?{}", query.finish())
}

fn failures(groups: &[FailureGroup]) -> Markup {
    html! {
        div.card {
            @if groups.is_empty() {
                (layout::empty("No update failed, rolled back or timed out in the last 24 hours.", html! {}))
            } @else {
                table {
                    thead { tr {
                        th { "Reason" } th.num { "Failures" } th.num { "Devices" } th.num { "Deployments" } th { "Latest" } th { "" }
                    } }
                    tbody {
                        @for group in groups {
                            tr {
                                td {
                                    @match group.reason.as_deref() {
                                        Some(reason) => pre.reason { (reason) },
                                        None => span.muted { "no reason given" },
                                    }
                                }
                                td.num { (group.failures) }
                                td.num { (group.devices) }
                                td.num { (group.deployments) }
                                td { (layout::time(group.last_at)) }
                                td { a href=(failed_href(group.reason.as_deref())) { "Devices" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One series per package version (the most installed ones; the rest as
/// "other"), cumulative over `days` days from `first_day`.
fn version_series(installs: &[InstallCount], first_day: DateTime<Utc>, days: usize) -> Vec<Series> {
    let label = |c: &InstallCount| match (&c.name, &c.version) {
        (Some(name), Some(version)) => format!("{name} {version}"),
        _ => "a deleted package".to_owned(),
    };
    let day_of = |c: &InstallCount| {
        usize::try_from((c.day - first_day).num_days())
            .ok()
            .filter(|day| *day < days)
    };
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for c in installs.iter().filter(|c| day_of(c).is_some()) {
        *totals.entry(label(c)).or_insert(0) += c.installs;
    }
    let mut ranked: Vec<(String, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let shown = if ranked.len() > charts::PALETTE.len() {
        charts::PALETTE.len() - 1
    } else {
        ranked.len()
    };
    let mut series: Vec<Series> = ranked[..shown]
        .iter()
        .zip(charts::PALETTE)
        .map(|((label, _), colour)| Series {
            label: label.clone(),
            values: vec![0; days],
            colour,
        })
        .collect();
    if ranked.len() > shown {
        series.push(Series {
            label: "other versions".into(),
            values: vec![0; days],
            colour: charts::OTHER,
        });
    }
    for c in installs {
        let Some(day) = day_of(c) else { continue };
        let name = label(c);
        let index = series[..shown]
            .iter()
            .position(|s| s.label == name)
            .unwrap_or(shown);
        if let Some(s) = series.get_mut(index) {
            s.values[day] += c.installs;
        }
    }
    for s in &mut series {
        let mut sum = 0;
        for value in &mut s.values {
            sum += *value;
            *value = sum;
        }
    }
    series
}

fn versions_chart(installs: &[InstallCount], now: DateTime<Utc>) -> Markup {
    let days = CHART_DAYS as usize;
    let first_day = day_start(now) - TimeDelta::days(CHART_DAYS - 1);
    let labels: Vec<String> = (0..CHART_DAYS)
        .map(|d| (first_day + TimeDelta::days(d)).format("%b %d").to_string())
        .collect();
    if installs.is_empty() {
        return layout::empty(
            "No device confirmed an update in the last 30 days.",
            html! { p { "Each successful install adds to its version's area, day by day." } },
        );
    }
    let series = version_series(installs, first_day, days);
    charts::stacked_area(
        "Successful installs per version, cumulative, day by day (UTC)",
        "Day (UTC)",
        &labels,
        &series,
    )
}

fn check_ins_chart(counts: &[CheckInCount], now: DateTime<Utc>) -> Markup {
    let first = minute_start(now) - TimeDelta::minutes(CHART_MINUTES - 1);
    let mut values = vec![0u64; CHART_MINUTES as usize];
    for count in counts {
        if let Ok(i) = usize::try_from((count.minute - first).num_minutes()) {
            if let Some(value) = values.get_mut(i) {
                *value += count.check_ins;
            }
        }
    }
    let labels: Vec<String> = (0..CHART_MINUTES)
        .map(|m| (first + TimeDelta::minutes(m)).format("%H:%M").to_string())
        .collect();
    let total: u64 = values.iter().sum();
    html! {
        (charts::bars("Check-ins per minute (UTC)", "Minute (UTC)", &labels, &values, charts::PALETTE[0]))
        p.muted { (total) " check-ins in the last hour, by every server instance." }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(day: i64, name: &str, version: &str, installs: u64) -> InstallCount {
        InstallCount {
            day: DateTime::from_timestamp(day * 86_400, 0).expect("day"),
            name: Some(name.into()),
            version: Some(version.into()),
            installs,
        }
    }

    #[test]
    fn version_series_are_cumulative_and_the_smallest_go_to_other() {
        let first = DateTime::from_timestamp(0, 0).expect("epoch");
        let mut installs = vec![
            install(0, "os", "1.0", 5),
            install(2, "os", "1.0", 1),
            install(1, "os", "2.0", 3),
            install(40, "os", "2.0", 9),
        ];
        let series = version_series(&installs, first, 3);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].label, "os 1.0");
        assert_eq!(series[0].values, vec![5, 5, 6]);
        // Day 40 is past the chart: neither shown nor ranked.
        assert_eq!(series[1].values, vec![0, 3, 3]);

        for v in 0..8 {
            installs.push(install(0, "app", &format!("0.{v}"), 1));
        }
        let series = version_series(&installs, first, 3);
        assert_eq!(series.len(), charts::PALETTE.len());
        let other = series.last().expect("other");
        assert_eq!(other.label, "other versions");
        assert_eq!(other.colour, charts::OTHER);
        let day_two: u64 = series.iter().map(|s| s.values[2]).sum();
        assert_eq!(day_two, 5 + 1 + 3 + 8);
    }

    #[test]
    fn a_failure_reason_links_to_the_devices_it_names_escaped() {
        let href = failed_href(Some("disk full & <bad>"));
        assert_eq!(
            href,
            "/ui/devices?update_state=failure%2Crolled_back%2Ctimed_out&reason=disk+full+%26+%3Cbad%3E"
        );
        assert!(!failed_href(None).contains("reason"));
    }

    #[test]
    fn the_breaker_counts_only_admitted_devices_past_those_acknowledged() {
        let skipped_states: Vec<_> = UpdateState::ALL.iter().filter(|s| skipped(**s)).collect();
        assert_eq!(
            skipped_states,
            [
                &UpdateState::Incompatible,
                &UpdateState::AlreadyInstalled,
                &UpdateState::Cancelled
            ]
        );
        let text = html! { (breaker(&phased_record(2), &tally())) }.into_string();
        assert!(text.contains("closed"), "{text}");
        assert!(
            text.contains("1 of 4 failed; trips at more than 10 %"),
            "{text}"
        );
    }

    fn tally() -> Tally {
        let deployment = DeploymentId::new();
        let count = |state, phase, devices| UpdateCount {
            deployment,
            state,
            phase,
            devices,
        };
        Tally::of(&[
            count(UpdateState::Failure, Some(0), 3),
            count(UpdateState::Failure, None, 5),
            count(UpdateState::Success, Some(1), 1),
            count(UpdateState::Incompatible, Some(1), 7),
        ])
        .into_values()
        .next()
        .expect("one")
    }

    fn phased_record(acknowledged: u64) -> DeploymentRecord {
        let strategy: Strategy = serde_json::from_value(serde_json::json!({
            "type": "phased",
            "phases": [{"devices": {"percent": 50}}, {"devices": {"percent": 100}}],
            "failure_threshold": {"percent": 10},
        }))
        .expect("strategy");
        DeploymentRecord {
            id: DeploymentId::new(),
            name: "d".into(),
            package_id: airlift_protocol::PackageId::new(),
            target: airlift_protocol::management::Target::Tag("t".into()),
            strategy,
            install: Default::default(),
            status: DeploymentStatus::Active,
            created_at: Utc::now(),
            finished_at: None,
            rollout: airlift_store::RolloutState {
                acknowledged_failures: acknowledged,
                ..Default::default()
            },
            dynamic: false,
            ends_at: None,
        }
    }
}
