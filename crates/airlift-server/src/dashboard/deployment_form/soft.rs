//! The deployment form's Soft checkbox and its two bounds: how many times
//! each device may defer, and until when (UTC), turned into the API's
//! `install.soft` (`docs/operations.md`, "Forced and soft deployments").

use serde_json::{json, Value};

/// `install.soft` for the form's values; `None` when Soft is not ticked.
/// The API checks the bounds (at least one, 1–100, a future deadline).
pub(super) fn install(
    soft: bool,
    max_deferrals: &str,
    deadline: &str,
) -> Result<Option<Value>, String> {
    if !soft {
        return Ok(None);
    }
    let mut policy = json!({});
    if !max_deferrals.trim().is_empty() {
        let n: u32 = max_deferrals.trim().parse().map_err(|_| {
            "install.soft.max_deferrals: write a whole number from 1 to 100".to_owned()
        })?;
        policy["max_deferrals"] = n.into();
    }
    if !deadline.trim().is_empty() {
        policy["deadline"] = utc(deadline.trim())?.into();
    }
    Ok(Some(policy))
}

/// A `datetime-local` value (`2026-12-31T00:00`, seconds optional) read as
/// UTC, or an RFC 3339 time; as RFC 3339.
fn utc(text: &str) -> Result<String, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc).to_rfc3339());
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .map(|at| at.and_utc().to_rfc3339())
        .ok_or_else(|| {
            "install.soft.deadline: write a date and time (UTC), e.g. 2026-12-31T00:00".into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_bounds_become_the_api_policy() {
        assert_eq!(install(false, "3", ""), Ok(None));
        assert_eq!(
            install(true, " 3 ", "2026-12-31T00:00"),
            Ok(Some(
                json!({"max_deferrals": 3, "deadline": "2026-12-31T00:00:00+00:00"})
            ))
        );
        assert_eq!(
            install(true, "", ""),
            Ok(Some(json!({}))),
            "the API names what is missing"
        );
        let bad = install(true, "three", "").expect_err("not a number");
        assert!(bad.starts_with("install.soft.max_deferrals"), "{bad}");
        let bad = install(true, "", "tomorrow").expect_err("not a time");
        assert!(bad.starts_with("install.soft.deadline"), "{bad}");
    }
}
