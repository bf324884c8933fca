//! Device shadows: what configuration a device *should* have (`desired`),
//! what it says it applied (`reported`), and the difference (`delta`), as
//! AWS IoT's device shadow keeps them.
//!
//! A document is a JSON object whose top-level keys are the unit of
//! everything: merging, per-key timestamps, the delta. A value may be any
//! JSON (an object is replaced whole, not merged into). The desired
//! document a device must converge to — its *effective* document — is
//! merged from the documents of the groups it belongs to (a tag, an
//! attribute filter, a [target expression](crate::target_expr)) and its
//! own:
//!
//! 1. the device's own keys win over every group's;
//! 2. between groups, the key set most recently wins (its per-key
//!    timestamp); on the same millisecond, the group whose id sorts last
//!    (`attributes:…` before `expr:…` before `tag:…`, then by text).
//!
//! Which groups reach a device is [`GroupRule::reaches`]: the store's
//! query decides tags and attribute filters in SQL by the same rule, and
//! evaluates expressions with it.
//!
//! The delta is every effective key whose reported value differs (absent
//! counts as different), plus every reported key no longer desired, as
//! `null`: the device removes it.

use crate::ids::DeviceId;
use crate::target_expr::{DeviceFacts, TargetExpr};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A shadow document: top-level key → any JSON value.
pub type Document = serde_json::Map<String, serde_json::Value>;

/// Path through which a device reports the document it applied.
pub const REPORTED_PATH: &str = "/api/device/v1/shadow/reported";

/// What a check-in answer carries when the device's configuration differs
/// from what is desired (absent when it does not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShadowDelta {
    /// Keys to set to these values; `null`: remove the key.
    #[schema(value_type = Object)]
    pub delta: Document,
}

/// A device reports the configuration document it has applied (the whole
/// document, not a change), and why the last attempt to apply failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedShadow {
    /// The document in force on the device.
    #[schema(value_type = Object)]
    pub document: Document,
    /// Why applying the delta failed (the module's reason); `None`: it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to a [`ReportedShadow`]: what still differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportedAck {
    /// The reported version now stored.
    pub version: u64,
    /// What still differs (empty when converged).
    #[schema(value_type = Object)]
    pub delta: Document,
}

/// One stored document with its bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionedDocument {
    /// The document.
    #[schema(value_type = Object)]
    pub document: Document,
    /// Counts its changes; 0: never written.
    pub version: u64,
    /// When each key was last set.
    pub metadata: BTreeMap<String, DateTime<Utc>>,
    /// When it last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Longest canonical text of an expression group's expression, in bytes
/// (shorter than an expression may be): the group's id is a primary key,
/// and PostgreSQL's B-tree index holds entries of at most about 2.7 KB.
pub const MAX_GROUP_EXPRESSION_LEN: usize = 2048;

/// Longest canonical JSON of an attribute group's pairs, in bytes (less
/// than 16 pairs of the longest names and values a device may report):
/// the group's id is a primary key, as an expression group's is.
pub const MAX_GROUP_ATTRIBUTES_LEN: usize = 2048;

/// Which devices a group's desired document is for.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ShadowGroup {
    /// Devices carrying this tag.
    Tag(String),
    /// Devices whose inventory attributes equal all of these.
    Attributes(BTreeMap<String, String>),
    /// Devices a target expression matches, evaluated against what each
    /// reported at its last check-in. The canonical text of the parsed
    /// expression ([`ShadowGroup::expression`]), so that `a=1 and b=2`
    /// and `a = 1 AND b = 2` are one group.
    Expression(String),
}

impl ShadowGroup {
    /// The group of the devices `expression` matches, named by its
    /// canonical text.
    pub fn expression(expression: &TargetExpr) -> Self {
        Self::Expression(expression.to_string())
    }

    /// The group's id: `tag:<tag>`, `attributes:<canonical JSON>` or
    /// `expr:<canonical expression>`; the tie-break between groups is on
    /// it.
    pub fn id(&self) -> String {
        match self {
            Self::Tag(tag) => format!("tag:{tag}"),
            Self::Attributes(attributes) => format!(
                "attributes:{}",
                serde_json::to_string(attributes).unwrap_or_default()
            ),
            Self::Expression(text) => format!("expr:{text}"),
        }
    }
}

/// A group's rule, ready to test many devices: an expression group's text
/// is parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRule {
    /// A tag the device carries, exactly.
    Tag(String),
    /// Attribute pairs the device reports every one of, exactly.
    Attributes(BTreeMap<String, String>),
    /// A target expression the device matches; `None`: stored text that
    /// does not parse (a corrupt row, or a grammar newer than this
    /// server), which reaches no device rather than the wrong ones.
    Expression(Option<TargetExpr>),
}

impl GroupRule {
    /// The rule of `group`.
    pub fn of(group: &ShadowGroup) -> Self {
        match group {
            ShadowGroup::Tag(tag) => Self::Tag(tag.clone()),
            ShadowGroup::Attributes(pairs) => Self::Attributes(pairs.clone()),
            ShadowGroup::Expression(text) => Self::Expression(text.parse().ok()),
        }
    }

    /// Whether the group's document reaches this device.
    pub fn reaches(&self, device: &DeviceFacts<'_>) -> bool {
        match self {
            Self::Tag(tag) => device.tags.iter().any(|t| t == tag),
            Self::Attributes(pairs) => pairs
                .iter()
                .all(|(key, value)| device.attributes.get(key) == Some(value)),
            Self::Expression(expression) => expression
                .as_ref()
                .is_some_and(|expression| expression.matches(device)),
        }
    }
}

impl std::fmt::Display for ShadowGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id())
    }
}

/// A group's desired document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupShadow {
    /// Which devices it is for.
    pub group: ShadowGroup,
    /// Its desired document.
    pub desired: VersionedDocument,
}

/// A failed attempt of the device to apply its delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShadowFailure {
    /// The configuration module's reason.
    pub reason: String,
    /// When the device reported it.
    pub at: DateTime<Utc>,
}

/// Everything about one device's shadow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceShadow {
    /// The device.
    pub device_id: DeviceId,
    /// The device's own desired document.
    pub desired: VersionedDocument,
    /// What the device reported it applied.
    pub reported: VersionedDocument,
    /// The groups whose documents apply to it.
    pub groups: Vec<GroupShadow>,
    /// The merged desired document it must converge to.
    #[schema(value_type = Object)]
    pub effective: Document,
    /// For each effective key, where it comes from: `device` or a group id.
    pub sources: BTreeMap<String, String>,
    /// What differs: keys to set, `null` to remove. Empty: converged.
    #[schema(value_type = Object)]
    pub delta: Document,
    /// The last failure reported, until the device reports success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ShadowFailure>,
}

/// Merges group documents and the device's own into the effective desired
/// document, with each key's source (see the module's rules).
pub fn effective(
    own: &VersionedDocument,
    groups: &[GroupShadow],
) -> (Document, BTreeMap<String, String>) {
    // key → (set at, group id, value)
    let mut chosen: BTreeMap<&str, (Option<DateTime<Utc>>, String, &serde_json::Value)> =
        BTreeMap::new();
    for group in groups {
        let id = group.group.id();
        for (key, value) in &group.desired.document {
            let at = group.desired.metadata.get(key).copied();
            let candidate = (at, id.clone(), value);
            match chosen.get(key.as_str()) {
                Some((held_at, held_id, _)) if (*held_at, held_id) >= (at, &id) => {}
                _ => {
                    chosen.insert(key, candidate);
                }
            }
        }
    }
    let mut document = Document::new();
    let mut sources = BTreeMap::new();
    for (key, (_, id, value)) in chosen {
        document.insert(key.to_owned(), value.clone());
        sources.insert(key.to_owned(), id);
    }
    for (key, value) in &own.document {
        document.insert(key.clone(), value.clone());
        sources.insert(key.clone(), "device".to_owned());
    }
    (document, sources)
}

/// What differs between the effective desired document and the reported
/// one: desired keys whose reported value differs, and reported keys no
/// longer desired as `null`.
pub fn delta(effective: &Document, reported: &Document) -> Document {
    let mut delta = Document::new();
    for (key, value) in effective {
        if reported.get(key) != Some(value) {
            delta.insert(key.clone(), value.clone());
        }
    }
    for key in reported.keys() {
        if !effective.contains_key(key) {
            delta.insert(key.clone(), serde_json::Value::Null);
        }
    }
    delta
}

/// Applies a delta (or an RFC 7396 merge patch at the top level) to a
/// document: `null` removes the key, any other value replaces it.
pub fn apply(document: &mut Document, delta: &Document) {
    for (key, value) in delta {
        if value.is_null() {
            document.remove(key);
        } else {
            document.insert(key.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn doc(value: serde_json::Value) -> Document {
        value.as_object().cloned().unwrap_or_default()
    }

    fn versioned(value: serde_json::Value, at_ms: i64) -> VersionedDocument {
        let document = doc(value);
        let at = Utc.timestamp_millis_opt(at_ms).single();
        let metadata = document
            .keys()
            .filter_map(|k| Some((k.clone(), at?)))
            .collect();
        VersionedDocument {
            document,
            version: 1,
            metadata,
            updated_at: at,
        }
    }

    #[test]
    fn the_device_wins_over_groups_and_the_latest_group_key_wins_between_groups() {
        let groups = [
            GroupShadow {
                group: ShadowGroup::Tag("b".into()),
                desired: versioned(json!({"level": "debug", "a": 1}), 2_000),
            },
            GroupShadow {
                group: ShadowGroup::Tag("a".into()),
                desired: versioned(json!({"level": "info", "b": 2}), 1_000),
            },
        ];
        let own = versioned(json!({"a": 10}), 500);
        let (merged, sources) = effective(&own, &groups);
        assert_eq!(merged, doc(json!({"level": "debug", "a": 10, "b": 2})));
        assert_eq!(sources["level"], "tag:b");
        assert_eq!(sources["a"], "device");
        assert_eq!(sources["b"], "tag:a");
    }

    #[test]
    fn on_the_same_millisecond_the_group_id_sorting_last_wins_in_any_order() {
        let a = GroupShadow {
            group: ShadowGroup::Tag("a".into()),
            desired: versioned(json!({"k": "a"}), 1_000),
        };
        let z = GroupShadow {
            group: ShadowGroup::Tag("z".into()),
            desired: versioned(json!({"k": "z"}), 1_000),
        };
        let own = VersionedDocument::default();
        for groups in [[a.clone(), z.clone()], [z, a]] {
            assert_eq!(effective(&own, &groups).0, doc(json!({"k": "z"})));
        }
    }

    #[test]
    fn an_expression_group_is_named_by_its_canonical_text_and_sorts_between_the_others() {
        let parse = |text: &str| text.parse::<TargetExpr>().expect("parses");
        let spaced = ShadowGroup::expression(&parse("attr.site = oslo  and  installed.os<2.4"));
        let tight = ShadowGroup::expression(&parse("attr.site=oslo AND installed.os < 2.4"));
        assert_eq!(spaced, tight);
        assert_eq!(spaced.id(), "expr:attr.site = oslo AND installed.os < 2.4");
        let json = serde_json::to_value(&spaced).expect("serialises");
        assert_eq!(
            json,
            json!({"expression": "attr.site = oslo AND installed.os < 2.4"})
        );
        // Same millisecond: tag groups win over expression groups, which
        // win over attribute filters.
        let at = |group: ShadowGroup| GroupShadow {
            group,
            desired: versioned(json!({"k": "x"}), 1_000),
        };
        let attributes = at(ShadowGroup::Attributes(BTreeMap::from([(
            "site".to_owned(),
            "oslo".to_owned(),
        )])));
        let own = VersionedDocument::default();
        let groups = [at(spaced.clone()), attributes];
        assert_eq!(effective(&own, &groups).1["k"], spaced.id());
        let groups = [at(ShadowGroup::Tag("a".into())), at(spaced)];
        assert_eq!(effective(&own, &groups).1["k"], "tag:a");
    }

    #[test]
    fn a_rule_reaches_the_devices_its_group_names() {
        let tags = vec!["lobby".to_owned()];
        let attributes = BTreeMap::from([
            ("site".to_owned(), "oslo".to_owned()),
            ("floor".to_owned(), "2".to_owned()),
        ]);
        let mut installed = BTreeMap::from([("os".to_owned(), "2.3.9".to_owned())]);
        // Checks the tag and attribute rules on a device with `installed`;
        // answers whether the expression group reaches it.
        let expression_reaches = |installed: &BTreeMap<String, String>| -> bool {
            let device = DeviceFacts {
                status: crate::state::DeviceStatus::Accepted,
                tags: &tags,
                device_type: Some("pi4"),
                attributes: &attributes,
                installed,
            };
            let rule = |group: ShadowGroup| GroupRule::of(&group).reaches(&device);
            let pairs = |p: &[(&str, &str)]| {
                ShadowGroup::Attributes(
                    p.iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                )
            };
            assert!(rule(ShadowGroup::Tag("lobby".into())));
            assert!(!rule(ShadowGroup::Tag("lob".into())));
            assert!(rule(pairs(&[("site", "oslo"), ("floor", "2")])));
            assert!(!rule(pairs(&[("site", "oslo"), ("floor", "3")])));
            assert!(!rule(pairs(&[("wing", "b")])));
            // Text that does not parse reaches no one.
            assert!(!rule(ShadowGroup::Expression("tag:lobby AND".into())));
            rule(ShadowGroup::Expression(
                "tag:lob* AND attr.site = oslo AND installed.os < 2.4".into(),
            ))
        };
        assert!(expression_reaches(&installed));
        // Once its version moves past the bound, the device leaves it.
        installed.insert("os".into(), "2.4.0".into());
        assert!(!expression_reaches(&installed));
    }

    #[test]
    fn the_delta_sets_what_differs_and_removes_what_is_no_longer_desired() {
        let desired = doc(json!({"same": 1, "changed": 2, "new": {"x": 1}}));
        let reported = doc(json!({"same": 1, "changed": 1, "gone": true}));
        assert_eq!(
            delta(&desired, &reported),
            doc(json!({"changed": 2, "new": {"x": 1}, "gone": null}))
        );
        let mut applied = reported.clone();
        apply(&mut applied, &delta(&desired, &reported));
        assert_eq!(applied, desired);
        assert!(delta(&desired, &desired).is_empty());
    }
}
