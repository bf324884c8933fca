//! Deployment decisions that do not depend on HTTP: which devices a target
//! matches, what state a newly targeted device starts in, whether a device
//! already runs a package — and phased rollouts: [`plan`] decides, without
//! I/O, what a rollout does next; [`engine`] carries it out in the
//! background.

pub mod engine;
#[cfg(test)]
mod engine_tests;
pub mod plan;
pub mod rollback;
#[cfg(test)]
mod rollback_tests;

pub use engine::RolloutEngine;

use airlift_package::{Compatibility, DeviceFacts, Manifest};
use airlift_protocol::management::{Device, Target};
use airlift_protocol::state::UpdateState;
use std::collections::BTreeMap;

/// The attribute name that targets a device's reported type.
pub const DEVICE_TYPE_ATTRIBUTE: &str = "device_type";

/// Whether `target` selects `device` (status aside).
pub fn target_matches(target: &Target, device: &Device) -> bool {
    match target {
        Target::Devices(ids) => ids.contains(&device.id),
        Target::Tag(tag) => device.tags.iter().any(|t| t == tag),
        Target::Attributes(wanted) => wanted.iter().all(|(key, value)| {
            if key == DEVICE_TYPE_ATTRIBUTE {
                device.device_type.as_deref() == Some(value.as_str())
            } else {
                device.attributes.get(key) == Some(value)
            }
        }),
        Target::Expression(expression) => expression.matches(&device.into()),
    }
}

/// What the device says about itself, as the package format sees it.
pub fn device_facts(device: &Device) -> DeviceFacts {
    DeviceFacts {
        device_type: device.device_type.clone().unwrap_or_default(),
        hardware_revision: device.hardware_revision.clone(),
        installed: device.installed.clone(),
        security_version: device.security_version,
    }
}

/// The state a device starts in when a deployment first targets it, and why.
pub fn initial_state(manifest: &Manifest, device: &Device) -> (UpdateState, Option<String>) {
    if device.device_type.is_none() {
        return (
            UpdateState::Pending,
            Some("device has not reported its inventory yet".into()),
        );
    }
    match manifest.compatibility(&device_facts(device)) {
        Compatibility::Compatible => (UpdateState::Pending, None),
        Compatibility::Incompatible(reason) => {
            (UpdateState::Incompatible, Some(reason.to_string()))
        }
    }
}

/// Whether the device reports running everything the package provides.
pub fn runs_package(provides: &BTreeMap<String, String>, device: &Device) -> bool {
    !provides.is_empty()
        && provides
            .iter()
            .all(|(name, version)| device.installed.get(name) == Some(version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_protocol::state::DeviceStatus;
    use airlift_protocol::DeviceId;
    use chrono::Utc;

    fn device() -> Device {
        Device {
            id: DeviceId::new(),
            status: DeviceStatus::Accepted,
            identity: BTreeMap::new(),
            public_key: String::new(),
            tags: vec!["lab".into()],
            device_type: Some("pi4".into()),
            hardware_revision: None,
            installed: [("os".to_owned(), "1.0.0".to_owned())].into(),
            security_version: 1,
            attributes: [("region".to_owned(), "eu".to_owned())].into(),
            created_at: Utc::now(),
            last_check_in: None,
        }
    }

    #[test]
    fn targets_select_by_id_tag_and_attributes() {
        let d = device();
        assert!(target_matches(&Target::Devices(vec![d.id]), &d));
        assert!(!target_matches(&Target::Devices(vec![DeviceId::new()]), &d));
        assert!(target_matches(&Target::Tag("lab".into()), &d));
        assert!(!target_matches(&Target::Tag("prod".into()), &d));
        let attrs = |pairs: &[(&str, &str)]| {
            Target::Attributes(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert!(target_matches(
            &attrs(&[("region", "eu"), ("device_type", "pi4")]),
            &d
        ));
        assert!(!target_matches(&attrs(&[("region", "us")]), &d));
        assert!(!target_matches(&attrs(&[("device_type", "pi5")]), &d));
    }

    #[test]
    fn expression_targets_select_by_the_expression() {
        let d = device();
        let expression = |text: &str| Target::Expression(text.parse().expect("parses"));
        assert!(target_matches(
            &expression("tag:lab AND installed.os < 1.1 AND attr.region = e?"),
            &d
        ));
        assert!(!target_matches(
            &expression("tag:lab AND NOT device_type = pi*"),
            &d
        ));
        assert!(target_matches(
            &expression("tag:prod OR status = accepted"),
            &d
        ));
    }

    #[test]
    fn incompatible_devices_are_marked_not_offered() {
        let manifest = Manifest::builder("os", "2.0.0".parse().expect("semver"), ["pi5"]).build();
        let (state, reason) = initial_state(&manifest, &device());
        assert_eq!(state, UpdateState::Incompatible);
        assert!(reason.unwrap_or_default().contains("pi4"));
        let manifest = Manifest::builder("os", "2.0.0".parse().expect("semver"), ["pi4"])
            .security_version(1)
            .build();
        assert_eq!(initial_state(&manifest, &device()).0, UpdateState::Pending);
    }

    #[test]
    fn runs_package_compares_every_provided_version() {
        let d = device();
        assert!(runs_package(
            &[("os".to_owned(), "1.0.0".to_owned())].into(),
            &d
        ));
        assert!(!runs_package(
            &[("os".to_owned(), "2.0.0".to_owned())].into(),
            &d
        ));
        assert!(!runs_package(&BTreeMap::new(), &d));
    }
}
