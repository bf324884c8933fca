//! The form that creates a deployment: everything
//! `CreateDeploymentRequest` takes — package, target by devices, tag,
//! attributes or a target expression, all at once or in phases, the circuit breaker, the device
//! timeout, the install window and download-only.
//!
//! The form only turns what was typed into a request; the API's own
//! handler judges it. When it refuses, the form comes back with what the
//! user typed and the API's words next to the field they name (the API's
//! messages start with the field's JSON path, `strategy.phases[1].soak_secs:
//! …`), and nothing is stored. Numbers and times that are not numbers or
//! times are refused here in the same shape, before the API sees them.

use super::deployments::parse_duration;
use super::layout::{self, error_words, field_of, Nav, PageError, PageInfo};
use super::session::{ActionForm, Viewer};
use crate::api;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use airlift_protocol::management::CreateDeploymentRequest;
use airlift_protocol::strategy::MAX_PHASES;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use maud::html;
use serde::Deserialize;
use serde_json::{json, Map, Value};

mod expression;
mod fields;
mod soft;

pub use expression::grammar;

/// Phase rows a new form starts with, and how many "more phases" adds.
const NEW_ROWS: usize = 3;

/// What a phase row says, as typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PhaseValues {
    name: String,
    /// `percent`, `tag` or `devices`.
    admits: String,
    /// The percentage, the tag, or the device ids.
    value: String,
    soak: String,
    success: String,
    deadline: String,
}

impl PhaseValues {
    fn is_blank(&self) -> bool {
        [
            &self.name,
            &self.value,
            &self.soak,
            &self.success,
            &self.deadline,
        ]
        .iter()
        .all(|v| v.trim().is_empty())
    }
}

/// The whole form as typed, so it can be shown again unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FormValues {
    name: String,
    package: String,
    /// `devices`, `tag`, `attributes` or `expression`.
    target: String,
    target_devices: String,
    target_tag: String,
    target_attributes: String,
    /// A target expression (`expression.rs`).
    target_expression: String,
    /// `all` or `phased`.
    strategy: String,
    phases: Vec<PhaseValues>,
    /// `percent` or `count`.
    threshold_kind: String,
    threshold: String,
    /// `pause` or `abort`.
    on_failure: String,
    /// `automatic` or `manual`.
    advance: String,
    device_timeout: String,
    window_start: String,
    window_end: String,
    download_only: bool,
    /// Soft deployment, with its bounds (`soft.rs`).
    soft: bool,
    max_deferrals: String,
    soft_deadline: String,
    /// A tag or attributes target that takes in no devices joining later.
    fixed: bool,
}

impl FormValues {
    /// A new form: all at once, with a sensible phased plan ready.
    fn new(package: Option<String>) -> Self {
        let phase = |admits: &str, value: &str, soak: &str| PhaseValues {
            admits: admits.into(),
            value: value.into(),
            soak: soak.into(),
            ..PhaseValues::default()
        };
        Self {
            package: package.unwrap_or_default(),
            target: "tag".into(),
            strategy: "all".into(),
            phases: vec![
                phase("percent", "10", "1h"),
                phase("percent", "100", ""),
                phase("percent", "", ""),
            ],
            threshold_kind: "percent".into(),
            threshold: "5".into(),
            on_failure: "pause".into(),
            advance: "automatic".into(),
            ..Self::default()
        }
    }

    fn from_form(form: &ActionForm) -> Self {
        let raw = |name: &str| {
            form.fields
                .iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value.clone())
                .unwrap_or_default()
        };
        let rows = (0..MAX_PHASES)
            .take_while(|i| {
                form.fields
                    .iter()
                    .any(|(f, _)| f == &format!("phase-{i}-admits"))
            })
            .count();
        let phases = (0..rows)
            .map(|i| {
                let field = |part: &str| raw(&format!("phase-{i}-{part}"));
                PhaseValues {
                    name: field("name"),
                    admits: field("admits"),
                    value: field("value"),
                    soak: field("soak"),
                    success: field("success"),
                    deadline: field("deadline"),
                }
            })
            .collect();
        Self {
            name: raw("name"),
            package: raw("package"),
            target: raw("target"),
            target_devices: raw("target-devices"),
            target_tag: raw("target-tag"),
            target_attributes: raw("target-attributes"),
            target_expression: raw(expression::FIELD),
            strategy: raw("strategy"),
            phases,
            threshold_kind: raw("threshold-kind"),
            threshold: raw("threshold"),
            on_failure: raw("on-failure"),
            advance: raw("advance"),
            device_timeout: raw("device-timeout"),
            window_start: raw("window-start"),
            window_end: raw("window-end"),
            download_only: form.value("download-only").is_some(),
            soft: form.value("soft").is_some(),
            max_deferrals: raw("max-deferrals"),
            soft_deadline: raw("soft-deadline"),
            fixed: form.value("static").is_some(),
        }
    }

    /// The rows that say something, with their row numbers: the API counts
    /// phases without the blank rows between them.
    fn used_phases(&self) -> Vec<(usize, &PhaseValues)> {
        self.phases
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_blank())
            .collect()
    }

    /// The request this form asks for, or a message in the API's shape
    /// (`field: words`) for what is not even a number or a time.
    fn request(&self) -> Result<CreateDeploymentRequest, String> {
        let package_id: airlift_protocol::PackageId = match self.package.trim() {
            "" => return Err("package_id: choose a package".into()),
            text => text
                .parse()
                .map_err(|_| format!("package_id: {text:?} is not a package id"))?,
        };
        let mut request = json!({
            "name": self.name,
            "package_id": package_id,
            "target": self.target()?,
            "install": self.install()?,
        });
        if self.strategy == "phased" {
            request["strategy"] = self.phased()?;
        }
        if self.fixed && self.target != "devices" {
            request["dynamic"] = false.into();
        }
        serde_json::from_value(request).map_err(|e| format!("the form could not be read: {e}"))
    }

    fn target(&self) -> Result<Value, String> {
        Ok(match self.target.as_str() {
            "devices" => json!({"devices": ids("target.devices", &self.target_devices)?}),
            "attributes" => {
                let mut pairs = Map::new();
                for line in self
                    .target_attributes
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                {
                    let (name, value) = line
                        .split_once('=')
                        .ok_or_else(|| format!("target.attributes: {line:?} is not name=value"))?;
                    pairs.insert(name.trim().to_owned(), Value::from(value.trim()));
                }
                json!({"attributes": pairs})
            }
            "expression" => expression::target(&self.target_expression)?,
            _ => json!({"tag": self.target_tag.trim()}),
        })
    }

    fn phased(&self) -> Result<Value, String> {
        let mut phases = Vec::new();
        for (i, (_, row)) in self.used_phases().into_iter().enumerate() {
            let at = |part: &str| format!("strategy.phases[{i}].{part}");
            let value = row.value.trim();
            let devices = match row.admits.as_str() {
                "tag" => json!({"tag": value}),
                "devices" => json!({"devices": ids(&at("devices.devices"), value)?}),
                _ => {
                    json!({"percent": number::<u8>(&at("devices.percent"), value, "a whole number from 1 to 100")?})
                }
            };
            let mut phase = json!({"devices": devices});
            if !row.name.trim().is_empty() {
                phase["name"] = row.name.trim().into();
            }
            if let Some(soak) = duration(&at("soak_secs"), &row.soak)? {
                phase["soak_secs"] = soak.into();
            }
            if !row.success.trim().is_empty() {
                phase["success_percent"] = number::<u8>(
                    &at("success_percent"),
                    &row.success,
                    "a whole number from 0 to 100",
                )?
                .into();
            }
            if let Some(deadline) = duration(&at("deadline_secs"), &row.deadline)? {
                phase["deadline_secs"] = deadline.into();
            }
            phases.push(phase);
        }
        let threshold = if self.threshold_kind == "count" {
            json!({"count": number::<u64>("strategy.failure_threshold.count", &self.threshold, "a whole number of devices")?})
        } else {
            json!({"percent": number::<u8>("strategy.failure_threshold.percent", &self.threshold, "a whole number from 0 to 100")?})
        };
        let mut phased = json!({
            "type": "phased",
            "phases": phases,
            "failure_threshold": threshold,
            "on_failure": if self.on_failure == "abort" { "abort" } else { "pause" },
            "advance": if self.advance == "manual" { "manual" } else { "automatic" },
        });
        if let Some(timeout) = duration("strategy.device_timeout_secs", &self.device_timeout)? {
            phased["device_timeout_secs"] = timeout.into();
        }
        Ok(phased)
    }

    fn install(&self) -> Result<Value, String> {
        let mut install = json!({"download_only": self.download_only});
        let time = |field: &str, text: &str| -> Result<String, String> {
            chrono::NaiveTime::parse_from_str(text.trim(), "%H:%M")
                .map(|t| t.format("%H:%M").to_string())
                .map_err(|_| format!("{field}: write a time as HH:MM (UTC)"))
        };
        match (self.window_start.trim(), self.window_end.trim()) {
            ("", "") => {}
            ("", _) | (_, "") => {
                return Err(
                    "install.window: give both the opening and the closing time, or neither".into(),
                )
            }
            (start, end) => {
                install["window"] = json!({
                    "start": time("install.window.start", start)?,
                    "end": time("install.window.end", end)?,
                });
            }
        }
        if let Some(soft) = soft::install(self.soft, &self.max_deferrals, &self.soft_deadline)? {
            install["soft"] = soft;
        }
        Ok(install)
    }

    /// The form's field that an API field path names, if it has one.
    fn field_for(&self, path: &str) -> Option<String> {
        if let Some(rest) = path.strip_prefix("strategy.phases[") {
            let (index, part) = rest.split_once(']')?;
            let row = self.used_phases().get(index.parse::<usize>().ok()?)?.0;
            let part = match part.trim_start_matches('.') {
                "name" => "name",
                "soak_secs" => "soak",
                "success_percent" => "success",
                "deadline_secs" => "deadline",
                _ => "value",
            };
            return Some(format!("phase-{row}-{part}"));
        }
        let field = match path {
            "name" => "name",
            "package_id" => "package",
            "target.devices" => "target-devices",
            "target.tag" => "target-tag",
            "target.attributes" => "target-attributes",
            "target.expression" => expression::FIELD,
            p if p.starts_with("target") => "target",
            "strategy.phases" => "phases",
            p if p.starts_with("strategy.failure_threshold") => "threshold",
            "strategy.device_timeout_secs" => "device-timeout",
            "strategy.on_failure" => "on-failure",
            "install.window.end" => "window-end",
            p if p.starts_with("install.window") => "window-start",
            "install.download_only" => "download-only",
            "install.soft.max_deferrals" => "max-deferrals",
            "install.soft.deadline" => "soft-deadline",
            p if p.starts_with("install.soft") => "soft",
            "dynamic" | "ends_at" => "static",
            p if p.starts_with("strategy") => "strategy",
            _ => return None,
        };
        Some(field.to_owned())
    }
}

fn ids(field: &str, text: &str) -> Result<Vec<String>, String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|id| !id.is_empty())
        .map(|id| {
            id.parse::<airlift_protocol::DeviceId>()
                .map(|id| id.to_string())
                .map_err(|_| format!("{field}: {id:?} is not a device id"))
        })
        .collect()
}

fn number<T: std::str::FromStr>(field: &str, text: &str, wanted: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{field}: write {wanted}"))
}

fn duration(field: &str, text: &str) -> Result<Option<u64>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_duration(text)
        .map(Some)
        .ok_or_else(|| format!("{field}: write a duration such as 90s, 30m, 6h or 2d"))
}

/// A refusal placed: the form field it belongs to (none: shown at the top)
/// and the words.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    field: Option<String>,
    words: String,
}

impl Refusal {
    fn of(values: &FormValues, message: String) -> Self {
        match field_of(&message).and_then(|(path, words)| Some((values.field_for(path)?, words))) {
            Some((field, words)) => Refusal {
                field: Some(field),
                words: words.to_owned(),
            },
            None => Refusal {
                field: None,
                words: message,
            },
        }
    }

    fn at(&self, field: &str) -> Option<&str> {
        (self.field.as_deref() == Some(field)).then_some(self.words.as_str())
    }
}

/// `GET /ui/deployments/new`'s query: a package chosen beforehand.
#[derive(Debug, Deserialize)]
pub struct NewQuery {
    package: Option<String>,
}

/// `GET /ui/deployments/new`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<NewQuery>,
) -> Response {
    // The API's own rule, in its own words, for who may create.
    if let Err(error) = viewer.caller.require_operator() {
        return PageError(error).into_response();
    }
    render(
        &state,
        &viewer,
        &FormValues::new(query.package),
        None,
        StatusCode::OK,
    )
    .await
}

/// `POST /ui/deployments/new`: through the API's own create.
pub async fn create(State(state): State<AppState>, form: ActionForm) -> Response {
    let mut values = FormValues::from_form(&form);
    if form.value("more-phases").is_some() {
        let rows = (values.phases.len() + NEW_ROWS).min(MAX_PHASES);
        values.phases.resize(
            rows,
            PhaseValues {
                admits: "percent".into(),
                ..PhaseValues::default()
            },
        );
        return render(&state, &form.viewer, &values, None, StatusCode::OK).await;
    }
    let request = match values.request() {
        Ok(request) => request,
        Err(message) => {
            let refusal = Refusal::of(&values, message);
            return render(
                &state,
                &form.viewer,
                &values,
                Some(refusal),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let caller = form.viewer.caller.clone();
    match api::create_deployment(State(state.clone()), caller, ApiJson(request)).await {
        Ok((_, Json(deployment))) => {
            Redirect::to(&format!("/ui/deployments/{}", deployment.id)).into_response()
        }
        Err(error) => {
            let status = error.status();
            let refusal = Refusal::of(&values, error_words(&error));
            render(&state, &form.viewer, &values, Some(refusal), status).await
        }
    }
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    values: &FormValues,
    refusal: Option<Refusal>,
    status: StatusCode,
) -> Response {
    let packages = match api::list_packages(
        State(state.clone()),
        viewer.caller.clone(),
        ApiQuery(api::PackageQuery {
            page: Some(1),
            per_page: Some(1000),
        }),
    )
    .await
    {
        Ok(Json(page)) => page.items,
        Err(error) => return PageError(error).into_response(),
    };
    let body = html! {
        p { a href="/ui/deployments" { "← All deployments" } }
        @if let Some(refusal) = &refusal {
            div.notice.bad role="alert" {
                p { strong { "Not created. " }
                    @if refusal.field.is_some() { "See the marked field: " }
                    (refusal.words) }
            }
        }
        @if packages.is_empty() {
            div.notice role="status" {
                "There is no package to deploy yet: upload one on the " a href="/ui/packages" { "packages" } " page first."
            }
        }
        (fields::form(viewer, values, &packages, refusal.as_ref()))
    };
    let page = layout::page(
        viewer,
        PageInfo {
            title: "New deployment",
            nav: Nav::Deployments,
            live: None,
        },
        body,
    );
    (status, page).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_protocol::management::Target;
    use airlift_protocol::strategy::{BreakerAction, FailureThreshold, PhaseDevices, Strategy};

    fn filled() -> FormValues {
        let mut values = FormValues::new(Some(airlift_protocol::PackageId::new().to_string()));
        values.name = "rootfs 1.2".into();
        values.target_tag = "fleet".into();
        values
    }

    #[test]
    fn a_new_form_builds_an_all_at_once_request() {
        let request = filled().request().expect("valid");
        assert_eq!(request.name, "rootfs 1.2");
        assert_eq!(request.target, Target::Tag("fleet".into()));
        assert_eq!(request.strategy, Strategy::All);
        assert!(!request.install.download_only);
        assert_eq!(request.dynamic, None, "a tag target is dynamic by default");
        let mut fixed = filled();
        fixed.fixed = true;
        assert_eq!(fixed.request().expect("valid").dynamic, Some(false));
    }

    #[test]
    fn an_expression_form_builds_an_expression_target_or_is_refused_at_its_field() {
        let mut values = filled();
        values.target = "expression".into();
        values.target_expression = "tag:lab AND NOT attr.region = eu-*".into();
        values.fixed = true;
        let request = values.request().expect("valid");
        assert_eq!(
            request.target,
            Target::Expression(
                "tag:lab AND NOT attr.region = eu-*"
                    .parse()
                    .expect("parses")
            )
        );
        assert_eq!(request.dynamic, Some(false), "static like a tag target");
        values.target_expression = "tag:lab AND".into();
        let refusal = Refusal::of(&values, values.request().expect_err("incomplete"));
        assert_eq!(refusal.field.as_deref(), Some("target-expr"));
        assert!(
            refusal.words.starts_with("target expression, column "),
            "{}",
            refusal.words
        );
    }

    #[test]
    fn a_soft_form_builds_a_soft_install_and_names_its_fields() {
        let mut values = filled();
        values.soft = true;
        values.max_deferrals = "3".into();
        values.soft_deadline = "2027-01-31T12:00".into();
        let soft = values.request().expect("valid").install.soft.expect("soft");
        assert_eq!(soft.max_deferrals, Some(3));
        assert_eq!(
            soft.deadline.map(|d| d.to_rfc3339()),
            Some("2027-01-31T12:00:00+00:00".into())
        );
        assert_eq!(
            values.field_for("install.soft.max_deferrals").as_deref(),
            Some("max-deferrals")
        );
        assert_eq!(
            values.field_for("install.soft.deadline").as_deref(),
            Some("soft-deadline")
        );
        assert_eq!(values.field_for("install.soft").as_deref(), Some("soft"));
        values.soft = false;
        assert_eq!(
            values.request().expect("valid").install.soft,
            None,
            "unticked: forced"
        );
    }

    #[test]
    fn a_phased_form_builds_phases_without_the_blank_rows() {
        let mut values = filled();
        values.strategy = "phased".into();
        values.phases.insert(
            0,
            PhaseValues {
                name: "canary".into(),
                admits: "tag".into(),
                value: "canary".into(),
                soak: "30m".into(),
                ..PhaseValues::default()
            },
        );
        values.phases.insert(
            1,
            PhaseValues {
                admits: "percent".into(),
                ..PhaseValues::default()
            },
        );
        values.threshold_kind = "count".into();
        values.threshold = "3".into();
        values.on_failure = "abort".into();
        values.device_timeout = "2h".into();
        values.window_start = "02:00".into();
        values.window_end = "04:30".into();
        values.download_only = true;
        let request = values.request().expect("valid");
        let Strategy::Phased(phased) = request.strategy else {
            panic!("phased")
        };
        assert_eq!(phased.phases.len(), 3, "{phased:?}");
        assert_eq!(phased.phases[0].devices, PhaseDevices::Tag("canary".into()));
        assert_eq!(phased.phases[0].soak_secs, 1800);
        assert_eq!(phased.phases[1].devices, PhaseDevices::Percent(10));
        assert_eq!(phased.phases[1].soak_secs, 3600);
        assert_eq!(phased.phases[2].devices, PhaseDevices::Percent(100));
        assert_eq!(phased.failure_threshold, FailureThreshold::Count(3));
        assert_eq!(phased.on_failure, BreakerAction::Abort);
        assert_eq!(phased.device_timeout_secs, 7200);
        assert!(request.install.download_only);
        assert!(request.install.window.is_some());
    }

    #[test]
    fn what_is_not_a_number_is_refused_at_its_field() {
        let mut values = filled();
        values.strategy = "phased".into();
        values.threshold = "lots".into();
        let refusal = Refusal::of(&values, values.request().expect_err("not a number"));
        assert_eq!(refusal.field.as_deref(), Some("threshold"));
        values.threshold = "5".into();
        values.phases[1].soak = "a while".into();
        let refusal = Refusal::of(&values, values.request().expect_err("not a duration"));
        assert_eq!(refusal.field.as_deref(), Some("phase-1-soak"));
        values.phases[1].soak = String::new();
        values.window_start = "2am".into();
        values.window_end = "04:00".into();
        let refusal = Refusal::of(&values, values.request().expect_err("not a time"));
        assert_eq!(refusal.field.as_deref(), Some("window-start"));
    }

    #[test]
    fn api_messages_land_next_to_the_field_they_name() {
        let mut values = filled();
        // A blank row between phases: the API's phases[1] is row 2.
        values.phases.insert(
            1,
            PhaseValues {
                admits: "percent".into(),
                ..PhaseValues::default()
            },
        );
        let cases = [
            (
                "strategy.failure_threshold.percent: must be within 0–100",
                Some("threshold"),
            ),
            (
                "strategy.phases[1].devices.percent: percentages are cumulative",
                Some("phase-2-value"),
            ),
            (
                "strategy.phases[0].deadline_secs: must be at least 1 second",
                Some("phase-0-deadline"),
            ),
            ("target.tag: must not be empty", Some("target-tag")),
            (
                "target.expression: target expression, column 9: expected a value",
                Some("target-expr"),
            ),
            (
                "target: 3 of its devices are still in active deployment",
                Some("target"),
            ),
            (
                "install.window: opens and closes at the same time",
                Some("window-start"),
            ),
            ("package_id: no package 123", Some("package")),
            ("name: must be 1–128 characters", Some("name")),
            ("deployment changed meanwhile", None),
        ];
        for (message, field) in cases {
            let refusal = Refusal::of(&values, message.to_owned());
            assert_eq!(refusal.field.as_deref(), field, "{message}");
        }
    }
}
