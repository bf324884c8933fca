//! The deployment form's Expression target: a target expression
//! (`tag:lab AND installed.rootfs < 2.4.0`, `docs/targets.md`) typed into
//! one field, read with the protocol's own parser, and turned into the
//! API's `target.expression`. An expression that does not parse comes
//! back beside its field with the parser's words and column, before the
//! API is asked, so nothing is created.
//!
//! The grammar hint under the field links the grammar itself: the
//! dashboard serves `docs/targets.md` (embedded at build time) at
//! [`GRAMMAR_PATH`], so the link works where the dashboard does, offline
//! and without a documentation site.

use super::fields::{error_for, invalid};
use super::Refusal;
use crate::dashboard::layout::{self, Nav, PageInfo};
use crate::dashboard::session::Viewer;
use airlift_protocol::management::Target;
use airlift_protocol::target_expr::TargetExpr;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde_json::Value;

/// Where the dashboard serves the grammar of target expressions.
pub(super) const GRAMMAR_PATH: &str = "/ui/deployments/new/target-expressions";

/// `docs/targets.md`, as the repository has it.
const GRAMMAR: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/targets.md"
));

/// The form's field (and the id of its error); not `target-expression`,
/// the id of the target's Expression radio button.
pub(super) const FIELD: &str = "target-expr";

/// `target` for the typed expression, or the parser's refusal in the API's
/// shape (`target.expression: target expression, column N: …`).
pub(super) fn target(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Err(
            "target.expression: write an expression, e.g. tag:lab AND installed.rootfs < 2.4.0"
                .into(),
        );
    }
    let expression: TargetExpr = text
        .parse()
        .map_err(|e| format!("target.expression: {e}"))?;
    serde_json::to_value(Target::Expression(expression))
        .map_err(|e| format!("target.expression: could not be written: {e}"))
}

/// The expression field, its grammar hint, and its error when refused.
pub(super) fn field(value: &str, refusal: Option<&Refusal>) -> Markup {
    let (bad, described) = invalid(refusal, FIELD);
    let help = format!("{FIELD}-help");
    let described = described.map_or_else(|| help.clone(), |error| format!("{error} {help}"));
    html! {
        label for=(FIELD) { "Expression" }
        input id=(FIELD) name=(FIELD) type="text" value=(value) spellcheck="false"
            placeholder="tag:lab AND installed.rootfs < 2.4.0"
            aria-invalid=[bad] aria-describedby=(described);
        p.muted id=(help) {
            "Terms " code { "tag:lab" } ", " code { "attr.region = eu-*" } ", "
            code { "device_type = gateway" } ", " code { "status = accepted" } ", "
            code { "installed.rootfs < 2.4.0" } " joined with " code { "AND" } ", "
            code { "OR" } ", " code { "NOT" } " and parentheses; " code { "*" } " and "
            code { "?" } " are wildcards. "
            a href=(GRAMMAR_PATH) target="_blank" rel="noopener" { "The grammar (docs/targets.md)" }
        }
        (error_for(refusal, FIELD))
    }
}

/// `GET /ui/deployments/new/target-expressions`: `docs/targets.md`, as
/// text, for anyone signed in.
pub async fn grammar(viewer: Viewer) -> Response {
    let body = html! {
        p { a href="/ui/deployments/new" { "← New deployment" } }
        pre { (GRAMMAR) }
    };
    layout::page(
        &viewer,
        PageInfo {
            title: "Target expressions",
            nav: Nav::Deployments,
            live: None,
        },
        body,
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expression_becomes_the_api_target() {
        let target = target(" tag:lab AND installed.rootfs < 2.4.0 ").expect("parses");
        let parsed: Target = serde_json::from_value(target).expect("a target");
        let Target::Expression(expression) = parsed else {
            panic!("an expression target: {parsed:?}")
        };
        assert_eq!(
            expression.to_string(),
            "tag:lab AND installed.rootfs < 2.4.0"
        );
    }

    #[test]
    fn a_bad_expression_is_refused_at_its_field_with_its_column() {
        let refused = target("tag:lab AND (status = accepted").expect_err("unclosed");
        let (path, words) = crate::dashboard::layout::field_of(&refused).expect("a field path");
        assert_eq!(path, "target.expression");
        assert!(words.starts_with("target expression, column "), "{words}");
        assert!(words.contains("')'"), "{words}");
        let blank = target("  ").expect_err("blank");
        assert!(
            blank.starts_with("target.expression: write an expression"),
            "{blank}"
        );
    }

    #[test]
    fn the_field_shows_the_refusal_beside_it_and_links_the_grammar() {
        let refusal = Refusal {
            field: Some(FIELD.into()),
            words: "target expression, column 5: expected a value".into(),
        };
        let markup = field("tag:", Some(&refusal)).into_string();
        let input = markup.find(r#"id="target-expr""#).expect("input");
        let error = markup.find(r#"id="target-expr-error""#).expect("error");
        assert!(error > input, "{markup}");
        assert!(markup.contains(r#"aria-invalid="true""#), "{markup}");
        assert!(markup.contains("column 5"), "{markup}");
        assert!(markup.contains(GRAMMAR_PATH), "{markup}");
        assert!(GRAMMAR.starts_with("# Target expressions"));
    }
}
