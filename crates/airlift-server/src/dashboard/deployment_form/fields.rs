//! The deployment form's fields: each labelled, showing what was typed,
//! with the refusal that names it beside it.

use super::{FormValues, Refusal};
use crate::dashboard::layout::csrf_field;
use crate::dashboard::session::Viewer;
use airlift_protocol::management::Package;
use maud::{html, Markup};

/// A labelled field's error, when the refusal names it.
pub(super) fn error_for(refusal: Option<&Refusal>, field: &str) -> Markup {
    html! {
        @if let Some(words) = refusal.and_then(|r| r.at(field)) {
            p.field-error id=(format!("{field}-error")) role="alert" { (words) }
        }
    }
}

/// `aria-invalid` and `aria-describedby` for a field the refusal names.
pub(super) fn invalid(
    refusal: Option<&Refusal>,
    field: &str,
) -> (Option<&'static str>, Option<String>) {
    match refusal.and_then(|r| r.at(field)) {
        Some(_) => (Some("true"), Some(format!("{field}-error"))),
        None => (None, None),
    }
}

pub(super) fn form(
    viewer: &Viewer,
    values: &FormValues,
    packages: &[Package],
    refusal: Option<&Refusal>,
) -> Markup {
    let text = |id: &str, label: &str, value: &str, help: Option<&str>| {
        let (bad, described) = invalid(refusal, id);
        let help_id = format!("{id}-help");
        let described = described.or(help.map(|_| help_id.clone()));
        html! {
            label for=(id) { (label) }
            input id=(id) name=(id) type="text" value=(value) aria-invalid=[bad] aria-describedby=[described];
            @if let Some(help) = help { p.muted id=(help_id) { (help) } }
            (error_for(refusal, id))
        }
    };
    html! {
        form.card method="post" action="/ui/deployments/new" {
            (csrf_field(viewer))
            // Enter in a field submits with the form's first button: this
            // one, not "more phase rows".
            button.visually-hidden type="submit" tabindex="-1" aria-hidden="true" { "Create deployment" }
            (text("name", "Name", &values.name, None))
            label for="package" { "Package" }
            @let (bad, described) = invalid(refusal, "package");
            select #package name="package" required aria-invalid=[bad] aria-describedby=[described] {
                option value="" { "Choose a package" }
                @for package in packages {
                    option value=(package.id) selected[values.package == package.id.to_string()] {
                        (package.name) " " (package.version) " (" (package.device_types.join(", ")) ")"
                    }
                }
            }
            (error_for(refusal, "package"))
            (target_fields(values, refusal))
            (strategy_fields(values, refusal))
            (install_fields(values, refusal))
            div.actions { button type="submit" { "Create deployment" } }
        }
    }
}

fn radio(name: &str, value: &str, chosen: &str, label: &str) -> Markup {
    let id = format!("{name}-{value}");
    html! {
        input id=(id) type="radio" name=(name) value=(value) checked[chosen == value];
        " " label.check for=(id) { (label) } " "
    }
}

fn target_fields(values: &FormValues, refusal: Option<&Refusal>) -> Markup {
    let area = |id: &str, label: &str, value: &str, help: &str| {
        let (bad, _) = invalid(refusal, id);
        let described = format!("{id}-help");
        html! {
            label for=(id) { (label) }
            textarea id=(id) name=(id) rows="3" aria-invalid=[bad] aria-describedby=(described) { (value) }
            p.muted id=(described) { (help) }
            (error_for(refusal, id))
        }
    };
    let (tag_bad, _) = invalid(refusal, "target-tag");
    html! {
        fieldset {
            legend { "Target: which devices" }
            (radio("target", "tag", &values.target, "devices with a tag"))
            (radio("target", "devices", &values.target, "these devices"))
            (radio("target", "attributes", &values.target, "devices with these attributes"))
            (radio("target", "expression", &values.target, "devices matching an expression"))
            (error_for(refusal, "target"))
            label for="target-tag" { "Tag" }
            input #target-tag name="target-tag" type="text" value=(values.target_tag) aria-invalid=[tag_bad];
            (error_for(refusal, "target-tag"))
            (area("target-devices", "Device ids", &values.target_devices, "Separated by spaces, commas or lines."))
            (area("target-attributes", "Attributes", &values.target_attributes,
                "One name=value a line; all must match. device_type matches the reported device type."))
            (super::expression::field(&values.target_expression, refusal))
            input #static type="checkbox" name="static" value="1" checked[values.fixed];
            " " label.check for="static" { "Static: only the devices the tag, attributes or expression match now. Otherwise devices that match later get it too, until an operator ends the deployment." }
            (error_for(refusal, "static"))
        }
    }
}

fn strategy_fields(values: &FormValues, refusal: Option<&Refusal>) -> Markup {
    let (threshold_bad, threshold_described) = invalid(refusal, "threshold");
    let (timeout_bad, _) = invalid(refusal, "device-timeout");
    html! {
        fieldset {
            legend { "Rollout" }
            (radio("strategy", "all", &values.strategy, "all devices at once"))
            (radio("strategy", "phased", &values.strategy, "in phases"))
            (error_for(refusal, "strategy"))
            p.muted { "The settings below apply to a rollout in phases. Percentages are cumulative shares of the target; the last phase must be 100 %. Blank rows are left out." }
            (error_for(refusal, "phases"))
            (phase_rows(values, refusal))
            button.secondary type="submit" name="more-phases" value="1" formnovalidate { "More phase rows" }
            div.filters {
                div {
                    label for="threshold-kind" { "Circuit breaker trips at more than" }
                    select #threshold-kind name="threshold-kind" {
                        option value="percent" selected[values.threshold_kind != "count"] { "a share (%) of admitted devices failing" }
                        option value="count" selected[values.threshold_kind == "count"] { "a number of admitted devices failing" }
                    }
                }
                div {
                    label for="threshold" { "Failure threshold" }
                    input #threshold name="threshold" type="text" inputmode="numeric" value=(values.threshold)
                        aria-invalid=[threshold_bad] aria-describedby=[threshold_described];
                    (error_for(refusal, "threshold"))
                }
                div {
                    label for="on-failure" { "When it trips" }
                    select #on-failure name="on-failure" {
                        option value="pause" selected[values.on_failure != "abort"] { "pause for an operator" }
                        option value="abort" selected[values.on_failure == "abort"] { "abort the deployment" }
                    }
                    (error_for(refusal, "on-failure"))
                }
                div {
                    label for="advance" { "Phases advance" }
                    select #advance name="advance" {
                        option value="automatic" selected[values.advance != "manual"] { "by themselves" }
                        option value="manual" selected[values.advance == "manual"] { "only when an operator says" }
                    }
                }
                div {
                    label for="device-timeout" { "Device timeout" }
                    input #device-timeout name="device-timeout" type="text" value=(values.device_timeout)
                        placeholder="server default" aria-invalid=[timeout_bad] aria-describedby="device-timeout-help";
                    p.muted #device-timeout-help { "A device stuck this long in one state times out (counts as failed), e.g. 6h." }
                    (error_for(refusal, "device-timeout"))
                }
            }
        }
    }
}

fn phase_rows(values: &FormValues, refusal: Option<&Refusal>) -> Markup {
    let cell = |row: usize, part: &str, label: String, value: &str| {
        let id = format!("phase-{row}-{part}");
        let (bad, described) = invalid(refusal, &id);
        html! {
            td {
                input id=(id) name=(id) type="text" value=(value) aria-label=(label)
                    aria-invalid=[bad] aria-describedby=[described];
                (error_for(refusal, &id))
            }
        }
    };
    html! {
        div.card {
            table {
                thead { tr {
                    th { "Phase" } th { "Name" } th { "Admits" } th { "Percent, tag or device ids" }
                    th { "Soak (e.g. 30m)" } th { "Success %" } th { "Deadline" }
                } }
                tbody {
                    @for (row, phase) in values.phases.iter().enumerate() {
                        @let n = row + 1;
                        tr {
                            td { (n) }
                            (cell(row, "name", format!("Phase {n} name"), &phase.name))
                            td {
                                select name=(format!("phase-{row}-admits")) aria-label=(format!("Phase {n} admits")) {
                                    option value="percent" selected[phase.admits != "tag" && phase.admits != "devices"] { "a share of the target" }
                                    option value="tag" selected[phase.admits == "tag"] { "canaries by tag" }
                                    option value="devices" selected[phase.admits == "devices"] { "canaries by id" }
                                }
                            }
                            (cell(row, "value", format!("Phase {n} percent, tag or device ids"), &phase.value))
                            (cell(row, "soak", format!("Phase {n} soak time"), &phase.soak))
                            (cell(row, "success", format!("Phase {n} success percent"), &phase.success))
                            (cell(row, "deadline", format!("Phase {n} deadline"), &phase.deadline))
                        }
                    }
                }
            }
        }
    }
}

fn install_fields(values: &FormValues, refusal: Option<&Refusal>) -> Markup {
    let (start_bad, start_described) = invalid(refusal, "window-start");
    let (end_bad, end_described) = invalid(refusal, "window-end");
    html! {
        fieldset {
            legend { "Install" }
            div.filters {
                div {
                    label for="window-start" { "Install window opens (UTC)" }
                    input #window-start name="window-start" type="time" value=(values.window_start)
                        aria-invalid=[start_bad] aria-describedby=[start_described];
                    (error_for(refusal, "window-start"))
                }
                div {
                    label for="window-end" { "Closes (UTC)" }
                    input #window-end name="window-end" type="time" value=(values.window_end)
                        aria-invalid=[end_bad] aria-describedby=[end_described];
                    (error_for(refusal, "window-end"))
                }
            }
            p.muted { "Leave both empty to install at any time. Downloading is never held." }
            input #download-only type="checkbox" name="download-only" value="1" checked[values.download_only];
            " " label.check for="download-only" { "Download only: devices wait at downloaded until an operator releases the install" }
            (error_for(refusal, "download-only"))
            div {
                input #soft type="checkbox" name="soft" value="1" checked[values.soft];
                " " label.check for="soft" { "Soft: each device may put the install off (its defer_command answers \"not now\") within these bounds, then it is forced" }
                (error_for(refusal, "soft"))
            }
            div.filters {
                div {
                    label for="max-deferrals" { "Deferrals per device (1–100)" }
                    input #max-deferrals name="max-deferrals" type="number" min="1" max="100" value=(values.max_deferrals);
                    (error_for(refusal, "max-deferrals"))
                }
                div {
                    label for="soft-deadline" { "Until (UTC)" }
                    input #soft-deadline name="soft-deadline" type="datetime-local" value=(values.soft_deadline);
                    (error_for(refusal, "soft-deadline"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_form_keeps_what_was_typed_and_shows_the_error_beside_it() {
        let mut values = FormValues::new(None);
        values.strategy = "phased".into();
        values.threshold = "150".into();
        values.name = "<script>alert(1)</script>".into();
        let refusal = Refusal::of(
            &values,
            "strategy.failure_threshold.percent: must be within 0–100".into(),
        );
        let markup = strategy_fields(&values, Some(&refusal)).into_string();
        let input = markup.find(r#"id="threshold""#).expect("threshold input");
        let error = markup.find(r#"id="threshold-error""#).expect("its error");
        assert!(error > input, "after its input");
        assert!(markup[input..error].contains(r#"value="150""#), "{markup}");
        assert!(
            markup[input..error].contains(r#"aria-invalid="true""#),
            "{markup}"
        );
        assert!(markup.contains("must be within 0–100"), "{markup}");
        let text = html! { (values.name) }.into_string();
        assert!(!text.contains("<script>"));
    }
}
