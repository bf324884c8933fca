//! Device shadows in the store: the [`ShadowStore`] trait (a supertrait of
//! [`Store`](crate::Store), so the server's `Arc<dyn Store>` has its
//! methods), the limits a write is held to, and the pure bookkeeping both
//! backends share (per-key timestamps, versions, reading rows back). The
//! SQL is in `sql/shadow.rs`; the merge rules are
//! [`airlift_protocol::shadow`]'s.
//!
//! A group's desired document (a tag's, an attribute filter's, a target
//! expression's) is one row however many devices it reaches: setting a
//! value for a tag of 10 000 devices writes one row, and each device's
//! effective document is merged when it is read (at check-in, from two
//! indexed queries; a third reads the device's facts when there are
//! expression groups, which are evaluated in memory by
//! [`GroupRule`](airlift_protocol::shadow::GroupRule) — their number is
//! bounded by [`ShadowLimits::max_groups`]).

use crate::codec::{json, time};
use crate::{StoreError, StoreResult};
use airlift_protocol::management::Device;
use airlift_protocol::shadow::{
    DeviceShadow, Document, GroupRule, GroupShadow, ShadowGroup, VersionedDocument,
};
use airlift_protocol::target_expr::DeviceFacts;
use airlift_protocol::DeviceId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// Bounds on shadow documents, given with every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowLimits {
    /// Most bytes of a document, as compact JSON [default: 64 KiB].
    pub max_document_bytes: usize,
    /// Most top-level keys of a document [default: 256].
    pub max_keys: usize,
    /// Most group documents (tags, attribute filters and expressions)
    /// [default: 1000].
    pub max_groups: u64,
}

impl Default for ShadowLimits {
    fn default() -> Self {
        Self {
            max_document_bytes: 64 * 1024,
            max_keys: 256,
            max_groups: 1000,
        }
    }
}

impl ShadowLimits {
    /// Why `document` is over these limits, naming the limit; `None` if it
    /// is within them.
    pub fn exceeded_by(&self, document: &Document) -> Option<String> {
        let bytes = document_bytes(document);
        if bytes > self.max_document_bytes {
            return Some(format!(
                "the document is {bytes} bytes as JSON; the limit is {} bytes",
                self.max_document_bytes
            ));
        }
        if document.len() > self.max_keys {
            return Some(format!(
                "the document has {} top-level keys; the limit is {}",
                document.len(),
                self.max_keys
            ));
        }
        None
    }
}

/// Size of a document as compact JSON.
pub fn document_bytes(document: &Document) -> usize {
    serde_json::to_vec(document).map_or(usize::MAX, |bytes| bytes.len())
}

/// A change to a desired document.
#[derive(Debug, Clone, PartialEq)]
pub enum DesiredChange {
    /// The whole document becomes this (`null` values are left out).
    Replace(Document),
    /// These keys change: a value sets, `null` removes (RFC 7396 at the top level).
    Merge(Document),
}

/// What a write of a desired document came to.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowWrite {
    /// Stored (or unchanged): the document now.
    Written(VersionedDocument),
    /// Refused, nothing written: the result would be over a limit (the
    /// text names it).
    TooLarge(String),
    /// Refused, nothing written: a new group document would be one more
    /// than [`ShadowLimits::max_groups`].
    TooManyGroups(u64),
}

/// A device's own documents, without the groups that reach it: what a
/// cache that holds the groups itself needs (one indexed query).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceDocuments {
    /// Its own desired document.
    pub desired: VersionedDocument,
    /// What it reported it applied.
    pub reported: VersionedDocument,
}

/// Shadow documents, per device and per group. Every method is one atomic
/// operation.
#[async_trait]
pub trait ShadowStore: Send + Sync {
    /// The device's shadow: its own desired and its reported documents,
    /// the group documents that reach it, the effective document and the
    /// delta. `None` if there is no such device.
    async fn device_shadow(&self, device: DeviceId) -> StoreResult<Option<DeviceShadow>>;
    /// The device's own desired and reported documents, in one query
    /// (no groups, no merge). `None` if there is no such device.
    async fn device_documents(&self, device: DeviceId) -> StoreResult<Option<DeviceDocuments>>;
    /// Changes the device's own desired document, within `limits`.
    /// `NotFound` if there is no such device.
    async fn change_device_desired(
        &self,
        device: DeviceId,
        change: &DesiredChange,
        limits: &ShadowLimits,
        at: DateTime<Utc>,
    ) -> StoreResult<ShadowWrite>;
    /// Replaces the device's reported document with what it applied, and
    /// its failure with `failure` (cleared by `None`); its shadow after.
    /// `NotFound` if there is no such device.
    async fn record_reported(
        &self,
        device: DeviceId,
        document: &Document,
        failure: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<DeviceShadow>;
    /// A group's desired document, if it has one.
    async fn group_shadow(&self, group: &ShadowGroup) -> StoreResult<Option<GroupShadow>>;
    /// Up to `limit` group documents, by id.
    async fn list_group_shadows(&self, limit: u32) -> StoreResult<Vec<GroupShadow>>;
    /// Changes a group's desired document (creating it), within `limits`:
    /// one row, however many devices the group reaches.
    async fn change_group_desired(
        &self,
        group: &ShadowGroup,
        change: &DesiredChange,
        limits: &ShadowLimits,
        at: DateTime<Utc>,
    ) -> StoreResult<ShadowWrite>;
    /// Deletes a group's desired document; false if it had none.
    async fn delete_group_desired(&self, group: &ShadowGroup) -> StoreResult<bool>;
}

/// `document` after `change`, with per-key times moved to `at` for the
/// keys whose value changed and the version counted up if anything did.
pub(crate) fn changed(
    old: &VersionedDocument,
    change: &DesiredChange,
    at: DateTime<Utc>,
) -> VersionedDocument {
    let document = match change {
        DesiredChange::Replace(new) => new
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        DesiredChange::Merge(patch) => {
            let mut document = old.document.clone();
            airlift_protocol::shadow::apply(&mut document, patch);
            document
        }
    };
    restamped(old, document, at)
}

/// `old` replaced by `document`, stamped at `at` where it changed.
pub(crate) fn restamped(
    old: &VersionedDocument,
    document: Document,
    at: DateTime<Utc>,
) -> VersionedDocument {
    if document == old.document && old.version > 0 {
        return old.clone();
    }
    let metadata = document
        .iter()
        .map(|(key, value)| {
            let kept = old.document.get(key) == Some(value);
            let when = old
                .metadata
                .get(key)
                .copied()
                .filter(|_| kept)
                .unwrap_or(at);
            (key.clone(), when)
        })
        .collect();
    VersionedDocument {
        document,
        version: old.version.saturating_add(1),
        metadata,
        updated_at: Some(at),
    }
}

/// A document's stored columns: document, per-key times, version, when.
pub(crate) fn columns(doc: &VersionedDocument) -> StoreResult<(String, String, i64, Option<i64>)> {
    let meta: BTreeMap<&String, i64> = doc
        .metadata
        .iter()
        .map(|(k, at)| (k, at.timestamp_millis()))
        .collect();
    Ok((
        crate::codec::to_json(&doc.document, "shadow document")?,
        crate::codec::to_json(&meta, "shadow metadata")?,
        crate::codec::to_i64(doc.version, "shadow version")?,
        doc.updated_at.map(|at| at.timestamp_millis()),
    ))
}

/// A document read back from its columns.
pub(crate) fn from_columns(
    column: &str,
    document: Option<&str>,
    meta: Option<&str>,
    version: Option<i64>,
    at: Option<i64>,
) -> StoreResult<VersionedDocument> {
    let Some(document) = document else {
        return Ok(VersionedDocument::default());
    };
    let meta: BTreeMap<String, i64> = json(column, meta.unwrap_or("{}"))?;
    Ok(VersionedDocument {
        document: json(column, document)?,
        version: u64::try_from(version.unwrap_or(0))
            .map_err(|_| StoreError::Corrupt(format!("{column}: negative version")))?,
        metadata: meta
            .into_iter()
            .map(|(k, ms)| Ok((k, time(column, ms)?)))
            .collect::<StoreResult<_>>()?,
        updated_at: at.map(|ms| time(column, ms)).transpose()?,
    })
}

/// A group read back from its `tag`, `attributes` and `expression`
/// columns.
pub(crate) fn group_from(
    tag: Option<String>,
    attributes: Option<&str>,
    expression: Option<String>,
) -> StoreResult<ShadowGroup> {
    match (tag, attributes, expression) {
        (Some(tag), _, _) => Ok(ShadowGroup::Tag(tag)),
        (None, Some(attributes), _) => Ok(ShadowGroup::Attributes(json(
            "group_shadows.attributes",
            attributes,
        )?)),
        (None, None, Some(expression)) => Ok(ShadowGroup::Expression(expression)),
        (None, None, None) => Err(StoreError::Corrupt(
            "group_shadows: neither a tag, attributes nor an expression".into(),
        )),
    }
}

/// Whether any of `groups` is an expression group, whose reach the query
/// cannot decide.
pub(crate) fn has_expressions(groups: &[GroupShadow]) -> bool {
    groups
        .iter()
        .any(|g| matches!(g.group, ShadowGroup::Expression(_)))
}

/// Keeps the expression groups that reach `device` (all of them are read;
/// the other groups were chosen by the query already).
pub(crate) fn keep_reaching(groups: &mut Vec<GroupShadow>, device: &Device) {
    let facts = DeviceFacts::from(device);
    groups.retain(|g| match &g.group {
        ShadowGroup::Expression(_) => GroupRule::of(&g.group).reaches(&facts),
        ShadowGroup::Tag(_) | ShadowGroup::Attributes(_) => true,
    });
}

/// The whole shadow from its parts.
pub(crate) fn assemble(
    device_id: DeviceId,
    desired: VersionedDocument,
    reported: VersionedDocument,
    mut groups: Vec<GroupShadow>,
    failure: Option<airlift_protocol::shadow::ShadowFailure>,
) -> DeviceShadow {
    groups.sort_by_key(|g| g.group.id());
    let (effective, sources) = airlift_protocol::shadow::effective(&desired, &groups);
    let delta = airlift_protocol::shadow::delta(&effective, &reported.document);
    DeviceShadow {
        device_id,
        desired,
        reported,
        groups,
        effective,
        sources,
        delta,
        failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(value: serde_json::Value) -> Document {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_change_stamps_only_the_keys_it_changes_and_counts_a_version() {
        let t1 = DateTime::from_timestamp_millis(1_000).unwrap_or_default();
        let t2 = DateTime::from_timestamp_millis(2_000).unwrap_or_default();
        let first = changed(
            &VersionedDocument::default(),
            &DesiredChange::Replace(doc(json!({"a": 1, "b": 2, "n": null}))),
            t1,
        );
        assert_eq!(first.version, 1);
        assert_eq!(first.document, doc(json!({"a": 1, "b": 2})));
        let second = changed(
            &first,
            &DesiredChange::Merge(doc(json!({"b": 3, "a": 1}))),
            t2,
        );
        assert_eq!(second.version, 2);
        assert_eq!(second.metadata["a"], t1);
        assert_eq!(second.metadata["b"], t2);
        let same = changed(&second, &DesiredChange::Merge(doc(json!({"b": 3}))), t2);
        assert_eq!(same, second);
        let removed = changed(&second, &DesiredChange::Merge(doc(json!({"a": null}))), t2);
        assert_eq!(removed.document, doc(json!({"b": 3})));
        assert!(!removed.metadata.contains_key("a"));
    }

    #[test]
    fn limits_name_the_limit_a_document_exceeds() {
        let limits = ShadowLimits {
            max_document_bytes: 20,
            max_keys: 2,
            max_groups: 1,
        };
        assert_eq!(limits.exceeded_by(&doc(json!({"a": 1}))), None);
        let big = limits.exceeded_by(&doc(json!({"a": "0123456789abcdefghij"})));
        assert!(big.is_some_and(|m| m.contains("limit is 20 bytes")));
        let many = limits.exceeded_by(&doc(json!({"a": 1, "b": 2, "c": 3})));
        assert!(many.is_some_and(|m| m.contains("limit is 2")));
    }
}
