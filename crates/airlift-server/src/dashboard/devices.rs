//! The device list: the fleet page by page, sorted and filtered the way
//! `GET /api/v1/devices` sorts and filters it (the page calls that handler
//! with the filters from its URL), with each device's current update; and
//! bulk accept, reject and tagging of a selection ([`super::device_bulk`]),
//! each device through the API's own handler.
//!
//! The filters are a plain GET form, so a filtered list is a URL to keep
//! or share, and it reads without JavaScript. The list is not live: a
//! fleet changes all the time, and a table redrawn under an operator who
//! is ticking devices would lose the selection (and cost a count of the
//! whole fleet per viewer per change).

use super::layout::{self, csrf_field, Nav, PageError, PageInfo};
use super::pending::identity_text;
use super::session::Viewer;
use crate::api;
use crate::extract::ApiQuery;
use crate::state::AppState;
use airlift_protocol::management::{Device, Page};
use airlift_protocol::state::DeviceStatus;
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::CurrentUpdate;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use std::collections::{BTreeMap, BTreeSet};

/// Devices per page unless the URL says otherwise.
const PER_PAGE: u32 = 50;
/// Installed software shown per device before "+N more".
const INSTALLED_SHOWN: usize = 3;

/// The list's query, as the URL carries it: every value as typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    values: BTreeMap<&'static str, String>,
}

/// The filters, in the order the URL and the form give them.
const FILTERS: [&str; 11] = [
    "search",
    "status",
    "device_type",
    "tag",
    "attributes",
    "installed",
    "deployment",
    "update_state",
    "reason",
    "sort",
    "per_page",
];

impl ListQuery {
    /// Reads a query string; unknown names are ignored, blank values dropped.
    pub fn parse(query: &str) -> Self {
        let mut values = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let known = FILTERS
                .iter()
                .chain(&["page", "done", "count"])
                .find(|known| **known == name);
            if let Some(known) = known {
                let value = value.trim();
                if !value.is_empty() {
                    values.insert(*known, value.to_owned());
                }
            }
        }
        Self { values }
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The filters (and sort) as a query string, without `leave_out`.
    fn encode(&self, leave_out: &[&str]) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for name in FILTERS.iter().filter(|n| !leave_out.contains(n)) {
            if let Some(value) = self.get(name) {
                out.append_pair(name, value);
            }
        }
        out.finish()
    }

    /// The filters and the page number.
    pub(super) fn encode_with_page(&self) -> String {
        let mut query = self.encode(&[]);
        if self.get("page").is_some() {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&format!("page={}", self.page()));
        }
        query
    }

    fn page(&self) -> u32 {
        self.get("page")
            .and_then(|p| p.parse().ok())
            .filter(|p| *p > 0)
            .unwrap_or(1)
    }

    /// The API's query for this list, or the field that is wrong and why.
    fn to_api(&self) -> Result<api::DeviceQuery, (&'static str, String)> {
        let text = |name: &str| self.get(name).map(str::to_owned);
        let mut query = api::DeviceQuery {
            device_type: text("device_type"),
            tag: text("tag"),
            attributes: text("attributes"),
            installed: text("installed"),
            search: text("search"),
            update_state: text("update_state"),
            reason: text("reason"),
            sort: text("sort"),
            page: Some(self.page()),
            ..Default::default()
        };
        match self.get("status") {
            None => {}
            Some("offline") => query.connectivity = Some(api::Connectivity::Offline),
            Some("online") => query.connectivity = Some(api::Connectivity::Online),
            Some(word) => {
                query.status = Some(
                    word.parse::<DeviceStatus>()
                        .map_err(|_| ("status", format!("{word:?} is not a device status")))?,
                )
            }
        }
        if let Some(id) = self.get("deployment") {
            query.deployment = Some(
                id.parse::<DeploymentId>()
                    .map_err(|_| ("deployment", format!("{id:?} is not a deployment id")))?,
            );
        }
        query.per_page = Some(match self.get("per_page") {
            None => PER_PAGE,
            Some(n) => n
                .parse()
                .map_err(|_| ("per_page", "must be a number between 1 and 1000".to_owned()))?,
        });
        Ok(query)
    }
}

/// The outcome of a bulk action that is shown on the list again: what went
/// wrong (next to its field when the message names one), the selection and
/// the tag as they were sent.
#[derive(Debug, Default)]
pub(super) struct Sent {
    pub(super) error: Option<(Option<&'static str>, String)>,
    pub(super) selected: BTreeSet<DeviceId>,
    pub(super) tag: String,
}

/// The fields of the page an error can stand next to.
const SHOWN_FIELDS: [&str; 8] = [
    "search",
    "status",
    "device_type",
    "tag",
    "attributes",
    "installed",
    "bulk-tag",
    "device",
];

/// The form field an API message is about: `connectivity` is our status,
/// `tags` (of a device) the bulk form's tag; the others have no field.
fn form_field(api_field: &str) -> Option<&'static str> {
    let field = match api_field {
        "connectivity" => "status",
        "tags" => "bulk-tag",
        other => other,
    };
    SHOWN_FIELDS.iter().find(|f| **f == field).copied()
}

pub(super) fn placed(message: String) -> (Option<&'static str>, String) {
    match layout::field_of(&message) {
        Some((field, words)) => match form_field(field) {
            Some(field) => (Some(field), words.to_owned()),
            None => (None, message),
        },
        None => (None, message),
    }
}

/// `GET /ui/devices`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Response {
    let query = ListQuery::parse(query.as_deref().unwrap_or_default());
    render(&state, &viewer, &query, Sent::default()).await
}

pub(super) async fn render(
    state: &AppState,
    viewer: &Viewer,
    query: &ListQuery,
    sent: Sent,
) -> Response {
    let mut sent = sent;
    let mut status = StatusCode::OK;
    let listed = match query.to_api() {
        Err((field, words)) => {
            status = StatusCode::BAD_REQUEST;
            sent.error = Some((Some(field), words));
            None
        }
        Ok(api_query) => {
            let caller = viewer.caller.clone();
            match api::list_devices(State(state.clone()), caller, ApiQuery(api_query)).await {
                Ok(page) => Some(page.0),
                Err(error) if error.status().is_client_error() => {
                    status = error.status();
                    sent.error = Some(placed(layout::error_words(&error)));
                    None
                }
                Err(error) => return PageError(error).into_response(),
            }
        }
    };
    let current = match &listed {
        Some(page) => {
            let ids: Vec<DeviceId> = page.items.iter().map(|d| d.id).collect();
            match state.store().current_updates(&ids).await {
                Ok(found) => found.into_iter().map(|c| (c.update.device_id, c)).collect(),
                Err(error) => return PageError::from(error).into_response(),
            }
        }
        None => BTreeMap::new(),
    };
    let body = html! {
        (done_notice(query))
        (filters(query, &sent))
        (update_note(query))
        @if let Some((None, message)) = &sent.error {
            div.notice.bad role="alert" { (message) }
        }
        @if let Some(page) = &listed {
            (results(viewer, query, page, &current, &sent, api::offline_cutoff(state)))
        }
    };
    let markup = layout::page(
        viewer,
        PageInfo {
            title: "Devices",
            nav: Nav::Devices,
            live: None,
        },
        body,
    );
    (status, markup).into_response()
}

fn done_notice(query: &ListQuery) -> Markup {
    let verb = match query.get("done") {
        Some("accept") => "Accepted",
        Some("reject") => "Rejected",
        Some("add-tag") => "Tagged",
        Some("remove-tag") => "Untagged",
        _ => return html! {},
    };
    let count: u32 = query.get("count").and_then(|c| c.parse().ok()).unwrap_or(0);
    html! {
        div.notice role="status" { (verb) " " (count) " device" @if count != 1 { "s" } "." }
    }
}

/// A labelled text field of the filter form, with its error if it has one.
fn text_filter(query: &ListQuery, sent: &Sent, name: &str, label: &str, hint: &str) -> Markup {
    let error = match &sent.error {
        Some((Some(field), words)) if *field == name => Some(words.as_str()),
        _ => None,
    };
    let id = format!("filter-{name}");
    let help = format!("{id}-help");
    html! {
        div {
            label for=(id) { (label) }
            input id=(id) type=(if name == "search" { "search" } else { "text" }) name=(name)
                value=(query.get(name).unwrap_or_default()) placeholder=(hint)
                aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| help.as_str())];
            @if let Some(error) = error {
                p.field-error id=(help) role="alert" { (error) }
            }
        }
    }
}

fn filters(query: &ListQuery, sent: &Sent) -> Markup {
    const STATUSES: [(&str, &str); 8] = [
        ("", "any"),
        ("pending", "pending"),
        ("accepted", "accepted"),
        ("online", "accepted, online"),
        ("offline", "accepted, offline"),
        ("rejected", "rejected"),
        ("preauthorized", "pre-authorised"),
        ("decommissioned", "decommissioned"),
    ];
    let current = query.get("status").unwrap_or_default();
    let status_error = match &sent.error {
        Some((Some("status"), words)) => Some(words.as_str()),
        _ => None,
    };
    html! {
        form.card method="get" action="/ui/devices" role="search" aria-label="Filter devices" {
            div.filters {
                (text_filter(query, sent, "search", "Identity or id", "serial, MAC, …"))
                div {
                    label for="filter-status" { "Status" }
                    select #filter-status name="status" aria-invalid=[status_error.map(|_| "true")] {
                        @for (value, label) in STATUSES {
                            option value=(value) selected[value == current] { (label) }
                        }
                    }
                    @if let Some(error) = status_error {
                        p.field-error role="alert" { (error) }
                    }
                }
                (text_filter(query, sent, "device_type", "Device type", "rpi4"))
                (text_filter(query, sent, "tag", "Tag", "lab"))
                (text_filter(query, sent, "attributes", "Attributes", "region=eu, kernel=6.1"))
                (text_filter(query, sent, "installed", "Installed version", "rootfs=2.0.1"))
            }
            @for name in ["deployment", "update_state", "reason", "sort", "per_page"] {
                @if let Some(value) = query.get(name) {
                    input type="hidden" name=(name) value=(value);
                }
            }
            div.actions {
                button type="submit" { "Filter" }
                a.button.secondary href="/ui/devices" { "Clear" }
            }
        }
    }
}

/// What the update filters (set by links from failures and deployments)
/// ask for, in words, with a way out.
fn update_note(query: &ListQuery) -> Markup {
    let deployment = query.get("deployment");
    let states = query.get("update_state");
    let reason = query.get("reason");
    if deployment.is_none() && states.is_none() && reason.is_none() {
        return html! {};
    }
    html! {
        div.notice role="status" {
            "Devices with an update"
            @if let Some(id) = deployment {
                " in deployment "
                @match id.parse::<DeploymentId>() {
                    Ok(id) => a href=(format!("/ui/deployments/{id}")) { code { (id) } },
                    Err(_) => code { (id) },
                }
            }
            @if let Some(states) = states { " in state " strong { (states.replace(',', ", ")) } }
            @if let Some(reason) = reason { " that gave the reason" pre.reason { (reason) } }
            " "
            a href=(format!("/ui/devices?{}", query.encode(&["deployment", "update_state", "reason"]))) {
                "Show all devices"
            }
        }
    }
}

/// A column header that sorts by `key` (reversed when already sorted so).
fn sort_header(query: &ListQuery, key: &str, label: &str) -> Markup {
    let current = query.get("sort").unwrap_or("created_at");
    let (ascending, descending) = (current == key, current.strip_prefix('-') == Some(key));
    let next = if ascending {
        format!("-{key}")
    } else {
        key.to_owned()
    };
    let mut link = ListQuery {
        values: query.values.clone(),
    };
    link.values.insert("sort", next);
    let sort = if ascending {
        Some("ascending")
    } else if descending {
        Some("descending")
    } else {
        None
    };
    html! {
        th aria-sort=[sort] {
            a.sort href=(format!("/ui/devices?{}", link.encode(&[]))) {
                (label)
                @if ascending { " ▲" } @else if descending { " ▼" }
            }
        }
    }
}

fn results(
    viewer: &Viewer,
    query: &ListQuery,
    page: &Page<Device>,
    current: &BTreeMap<DeviceId, CurrentUpdate>,
    sent: &Sent,
    offline_before: DateTime<Utc>,
) -> Markup {
    let operate = viewer.can_operate();
    html! {
        div.card {
            @if page.items.is_empty() {
                (no_devices(query, page.total))
            } @else {
                @if operate {
                    form method="post" action="/ui/devices/bulk" {
                        (csrf_field(viewer))
                        input type="hidden" name="back" value=(query.encode_with_page());
                        (bulk_controls(sent))
                        (table(query, page, current, sent, offline_before, true))
                    }
                } @else {
                    // A viewer may not change devices: no form, no boxes.
                    (table(query, page, current, sent, offline_before, false))
                }
                (layout::pager("/ui/devices", &query.encode(&[]), page.page, page.per_page, page.total))
            }
        }
    }
}

fn table(
    query: &ListQuery,
    page: &Page<Device>,
    current: &BTreeMap<DeviceId, CurrentUpdate>,
    sent: &Sent,
    offline_before: DateTime<Utc>,
    operate: bool,
) -> Markup {
    html! {
        table {
            thead { tr {
                @if operate {
                    th { input type="checkbox" data-select-all="device" aria-label="Select all on this page"; }
                }
                (sort_header(query, "identity", "Identity"))
                (sort_header(query, "device_type", "Type"))
                (sort_header(query, "status", "Status"))
                th.wide-only { "Installed" }
                th.wide-only { "Tags" }
                (sort_header(query, "last_check_in", "Last check-in"))
                th { "Update" }
            } }
            tbody {
                @for device in &page.items {
                    (row(device, current.get(&device.id), operate, sent.selected.contains(&device.id), offline_before))
                }
            }
        }
    }
}

fn no_devices(query: &ListQuery, total: u64) -> Markup {
    let filtered = !query.encode(&["sort", "per_page"]).is_empty();
    if total > 0 {
        return layout::empty(
            "This page is past the last one.",
            html! { p { a href=(format!("/ui/devices?{}", query.encode(&[]))) { "Back to the first page" } } },
        );
    }
    if filtered {
        return layout::empty(
            "No device matches these filters.",
            html! { p { a href="/ui/devices" { "Show every device" } } },
        );
    }
    layout::empty(
        "No device has contacted this server yet.",
        html! {
            p { "Run an agent on a device with this server's URL in its " code { "agent.toml" }
                " (" code { "airlift-agent run" } "), then accept it on the " a href="/ui/pending" { "pending" }
                " page. Or see a simulated fleet at once with " code { "airlift demo --keep" } "." }
        },
    )
}

fn bulk_controls(sent: &Sent) -> Markup {
    let tag_error = match &sent.error {
        Some((Some("bulk-tag"), words)) => Some(words.as_str()),
        _ => None,
    };
    let device_error = match &sent.error {
        Some((Some("device"), words)) => Some(words.as_str()),
        _ => None,
    };
    // The tag buttons come first: Enter in the tag field presses the
    // form's first button, which must not be "Accept".
    html! {
        div.actions {
            label.check for="bulk-tag" { "Tag" }
            input #bulk-tag type="text" name="tag" value=(sent.tag) aria-invalid=[tag_error.map(|_| "true")]
                aria-describedby=[tag_error.map(|_| "bulk-tag-error")];
            button.secondary type="submit" name="action" value="add-tag" { "Add tag to selected" }
            button.secondary type="submit" name="action" value="remove-tag" { "Remove tag from selected" }
            button type="submit" name="action" value="accept" { "Accept selected" }
            button.danger type="submit" name="action" value="reject" { "Reject selected" }
        }
        @if let Some(error) = tag_error {
            p.field-error #bulk-tag-error role="alert" { (error) }
        }
        @if let Some(error) = device_error {
            p.field-error role="alert" { (error) }
        }
    }
}

fn row(
    device: &Device,
    update: Option<&CurrentUpdate>,
    operate: bool,
    selected: bool,
    offline_before: DateTime<Utc>,
) -> Markup {
    let identity = identity_text(device);
    let heard = device.last_check_in.unwrap_or(device.created_at);
    let offline = device.status == DeviceStatus::Accepted && heard < offline_before;
    html! {
        tr {
            @if operate {
                td { input type="checkbox" name="device" value=(device.id) checked[selected]
                    aria-label=(format!("Select {identity}")); }
            }
            td { a href=(format!("/ui/devices/{}", device.id)) { (identity) } }
            td { (device.device_type.as_deref().unwrap_or("—")) }
            td {
                (layout::status(device.status))
                @if offline { " " span.status.status-offline { "offline" } }
            }
            td.wide-only { (installed(device)) }
            td.wide-only { @for tag in &device.tags { span.tag { (tag) } } }
            td { (layout::time_or_never(device.last_check_in, "never")) }
            td { (update_cell(update)) }
        }
    }
}

fn installed(device: &Device) -> Markup {
    let more = device.installed.len().saturating_sub(INSTALLED_SHOWN);
    html! {
        @for (name, version) in device.installed.iter().take(INSTALLED_SHOWN) {
            div { (name) " " span.muted { (version) } }
        }
        @if more > 0 { div.muted { "+" (more) " more" } }
        @if device.installed.is_empty() { span.muted { "—" } }
    }
}

/// A download's share done, in whole percent.
pub fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    (u128::from(done.min(total)) * 100 / u128::from(total)) as u64
}

/// A device's current update: its state, where, and how far a download is.
pub fn update_cell(update: Option<&CurrentUpdate>) -> Markup {
    let Some(current) = update else {
        return html! { span.muted { "—" } };
    };
    let update = &current.update;
    html! {
        a href=(format!("/ui/deployments/{}", current.deployment)) { (layout::status(update.state)) }
        @if let Some(progress) = update.progress {
            @let share = percent(progress.done, progress.total);
            div.progress-cell {
                progress max="100" value=(share) aria-label=(format!("Downloaded {share} %")) {}
                " " span.muted { (share) " %" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_keeps_known_filters_in_order_and_drops_blanks() {
        let query = ListQuery::parse("tag=lab&evil=1&status=&search=%20SN%20&sort=-status&page=3");
        assert_eq!(query.encode(&[]), "search=SN&tag=lab&sort=-status");
        assert_eq!(query.page(), 3);
        assert_eq!(query.encode(&["sort"]), "search=SN&tag=lab");
        assert_eq!(ListQuery::parse("page=0").page(), 1);
        assert_eq!(ListQuery::parse("page=x").page(), 1);
    }

    #[test]
    fn offline_and_online_are_connectivity_and_bad_words_name_their_field() {
        let api = ListQuery::parse("status=offline").to_api().expect("valid");
        assert_eq!(api.connectivity, Some(api::Connectivity::Offline));
        assert_eq!(api.status, None);
        let api = ListQuery::parse("status=rejected").to_api().expect("valid");
        assert_eq!(api.status, Some(DeviceStatus::Rejected));
        assert_eq!(api.per_page, Some(PER_PAGE));
        let (field, _) = ListQuery::parse("status=<b>").to_api().expect_err("bad");
        assert_eq!(field, "status");
        let (field, _) = ListQuery::parse("deployment=nope")
            .to_api()
            .expect_err("bad");
        assert_eq!(field, "deployment");
    }

    #[test]
    fn api_errors_land_next_to_the_field_they_name() {
        assert_eq!(
            placed("tags: at most 64, each 1–64 characters".into()),
            (Some("bulk-tag"), "at most 64, each 1–64 characters".into())
        );
        assert_eq!(
            placed("tag: at most 64 bytes".into()),
            (Some("tag"), "at most 64 bytes".into())
        );
        assert_eq!(
            placed("sort: one of created_at, …".into()),
            (None, "sort: one of created_at, …".into())
        );
        assert_eq!(
            placed("connectivity: only accepted devices".into()),
            (Some("status"), "only accepted devices".into())
        );
        assert_eq!(
            placed("per_page must be between 1 and 1000".into()),
            (None, "per_page must be between 1 and 1000".into())
        );
        let sent = Sent {
            error: Some((Some("tag"), "<b>bad</b>".into())),
            ..Sent::default()
        };
        let markup = text_filter(&ListQuery::default(), &sent, "tag", "Tag", "").into_string();
        assert!(markup.contains("aria-invalid=\"true\""), "{markup}");
        assert!(markup.contains("&lt;b&gt;bad"), "{markup}");
    }

    #[test]
    fn sort_headers_reverse_the_current_order() {
        let query = ListQuery::parse("sort=identity&tag=a");
        let header = sort_header(&query, "identity", "Identity").into_string();
        assert!(header.contains("aria-sort=\"ascending\""), "{header}");
        assert!(header.contains("sort=-identity"), "{header}");
        assert!(header.contains("tag=a"), "{header}");
        let other = sort_header(&query, "status", "Status").into_string();
        assert!(!other.contains("aria-sort"), "{other}");
        assert!(other.contains("sort=status"), "{other}");
    }

    #[test]
    fn device_reported_text_is_escaped_in_a_row() {
        let mut device = Device {
            id: DeviceId::new(),
            status: DeviceStatus::Accepted,
            identity: [("serial".to_owned(), "<script>x</script>".to_owned())].into(),
            public_key: String::new(),
            tags: vec!["t".into()],
            device_type: Some("<img src=x>".into()),
            hardware_revision: None,
            installed: [("<i>os</i>".to_owned(), "<b>1</b>".to_owned())].into(),
            security_version: 0,
            attributes: BTreeMap::new(),
            created_at: Utc::now(),
            last_check_in: None,
        };
        let markup = row(&device, None, true, true, Utc::now()).into_string();
        for raw in ["<script>", "<img", "<i>", "<b>"] {
            assert!(!markup.contains(raw), "{raw} in {markup}");
        }
        assert!(markup.contains("checked"), "{markup}");
        device.last_check_in = Some(Utc::now());
        let markup = row(
            &device,
            None,
            false,
            false,
            Utc::now() - chrono::TimeDelta::hours(1),
        )
        .into_string();
        assert!(
            !markup.contains("offline") && !markup.contains("checkbox"),
            "{markup}"
        );
    }

    #[test]
    fn download_share_is_whole_percent_and_never_over_100() {
        assert_eq!(percent(0, 0), 0);
        assert_eq!(percent(50, 200), 25);
        assert_eq!(percent(199, 200), 99);
        assert_eq!(percent(500, 200), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }
}
