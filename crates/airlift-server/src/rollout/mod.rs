//! Deployment decisions that do not depend on HTTP: which devices a target
//! matches, what state a newly targeted device starts in, whether a device
//! already runs a package — and phased rollouts: [`plan`] decides, without
//! I/O, what a rollout does next; [`engine`] carries it out in the
//! background, keeping a [`view`] of each deployment between ticks.

pub mod engine;
#[cfg(test)]
mod engine_tests;
pub mod plan;
pub mod rollback;
#[cfg(test)]
mod rollback_tests;
pub mod view;
#[cfg(test)]
mod view_tests;

pub use engine::RolloutEngine;

use airlift_package::{Compatibility, DeviceFacts, Manifest};
use airlift_protocol::device::Inventory;
use airlift_protocol::management::{Device, Target};
use airlift_protocol::state::{DeviceStatus, UpdateState};
use airlift_protocol::{target_expr, DeviceId};
use std::collections::BTreeMap;

/// The attribute name that targets a device's reported type.
pub const DEVICE_TYPE_ATTRIBUTE: &str = "device_type";

/// What target matching and package compatibility look at of a device:
/// what the server keeps of it (id, admission status, tags) and what the
/// device reports of itself. A check-in builds it from the inventory it
/// reports ([`DeviceView::checking_in`]) — the device is the truth about
/// what it is and runs, whatever was stored before —, a new deployment
/// from the stored device (`From<&Device>`).
#[derive(Debug, Clone, Copy)]
pub struct DeviceView<'a> {
    /// The device.
    pub id: DeviceId,
    /// Its admission status.
    pub status: DeviceStatus,
    /// Its tags.
    pub tags: &'a [String],
    /// Its type; none before its first check-in.
    pub device_type: Option<&'a str>,
    /// Its hardware revision.
    pub hardware_revision: Option<&'a str>,
    /// Its installed software, name → version.
    pub installed: &'a BTreeMap<String, String>,
    /// Its security version.
    pub security_version: u64,
    /// Its inventory attributes.
    pub attributes: &'a BTreeMap<String, String>,
}

impl<'a> DeviceView<'a> {
    /// A device checking in: what the server keeps of it, and the
    /// inventory it reports now.
    pub fn checking_in(
        id: DeviceId,
        status: DeviceStatus,
        tags: &'a [String],
        inventory: &'a Inventory,
    ) -> Self {
        Self {
            id,
            status,
            tags,
            device_type: Some(&inventory.device_type),
            hardware_revision: inventory.hardware_revision.as_deref(),
            installed: &inventory.installed,
            security_version: inventory.security_version,
            attributes: &inventory.attributes,
        }
    }

    /// What target expressions and group documents are matched against.
    pub fn facts(&self) -> target_expr::DeviceFacts<'a> {
        target_expr::DeviceFacts {
            status: self.status,
            tags: self.tags,
            device_type: self.device_type,
            attributes: self.attributes,
            installed: self.installed,
        }
    }
}

impl<'a> From<&'a Device> for DeviceView<'a> {
    fn from(device: &'a Device) -> Self {
        Self {
            id: device.id,
            status: device.status,
            tags: &device.tags,
            device_type: device.device_type.as_deref(),
            hardware_revision: device.hardware_revision.as_deref(),
            installed: &device.installed,
            security_version: device.security_version,
            attributes: &device.attributes,
        }
    }
}

/// Whether `target` selects `device` (status aside).
pub fn target_matches(target: &Target, device: &DeviceView<'_>) -> bool {
    match target {
        Target::Devices(ids) => ids.contains(&device.id),
        Target::Tag(tag) => device.tags.iter().any(|t| t == tag),
        Target::Attributes(wanted) => wanted.iter().all(|(key, value)| {
            if key == DEVICE_TYPE_ATTRIBUTE {
                device.device_type == Some(value.as_str())
            } else {
                device.attributes.get(key) == Some(value)
            }
        }),
        Target::Expression(expression) => expression.matches(&device.facts()),
    }
}

/// What the device says about itself, as the package format sees it.
pub fn device_facts(device: &DeviceView<'_>) -> DeviceFacts {
    DeviceFacts {
        device_type: device.device_type.unwrap_or_default().to_owned(),
        hardware_revision: device.hardware_revision.map(str::to_owned),
        installed: device.installed.clone(),
        security_version: device.security_version,
    }
}

/// The state a device starts in when a deployment first targets it, and why.
pub fn initial_state(
    manifest: &Manifest,
    device: &DeviceView<'_>,
) -> (UpdateState, Option<String>) {
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
pub fn runs_package(provides: &BTreeMap<String, String>, device: &DeviceView<'_>) -> bool {
    !provides.is_empty()
        && provides
            .iter()
            .all(|(name, version)| device.installed.get(name) == Some(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device tagged `lab` reporting a pi4 in the eu running os 1.0.0.
    struct Reported {
        id: DeviceId,
        tags: Vec<String>,
        inventory: Inventory,
    }

    impl Reported {
        fn checking_in(&self) -> DeviceView<'_> {
            DeviceView::checking_in(self.id, DeviceStatus::Accepted, &self.tags, &self.inventory)
        }
    }

    fn reported() -> Reported {
        Reported {
            id: DeviceId::new(),
            tags: vec!["lab".into()],
            inventory: Inventory {
                device_type: "pi4".into(),
                hardware_revision: None,
                installed: [("os".to_owned(), "1.0.0".to_owned())].into(),
                security_version: 1,
                attributes: [("region".to_owned(), "eu".to_owned())].into(),
            },
        }
    }

    #[test]
    fn targets_select_by_id_tag_and_attributes() {
        let reported = reported();
        let d = reported.checking_in();
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
        let reported = reported();
        let d = reported.checking_in();
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
        let (state, reason) = initial_state(&manifest, &reported().checking_in());
        assert_eq!(state, UpdateState::Incompatible);
        assert!(reason.unwrap_or_default().contains("pi4"));
        let manifest = Manifest::builder("os", "2.0.0".parse().expect("semver"), ["pi4"])
            .security_version(1)
            .build();
        assert_eq!(
            initial_state(&manifest, &reported().checking_in()).0,
            UpdateState::Pending
        );
    }

    #[test]
    fn a_stored_device_that_never_reported_starts_pending_with_the_reason() {
        let manifest = Manifest::builder("os", "2.0.0".parse().expect("semver"), ["pi4"]).build();
        let never = Device {
            id: DeviceId::new(),
            status: DeviceStatus::Accepted,
            identity: BTreeMap::new(),
            public_key: String::new(),
            tags: vec!["lab".into()],
            device_type: None,
            hardware_revision: None,
            installed: BTreeMap::new(),
            security_version: 0,
            attributes: BTreeMap::new(),
            created_at: chrono::Utc::now(),
            last_check_in: None,
        };
        let view = DeviceView::from(&never);
        let (state, reason) = initial_state(&manifest, &view);
        assert_eq!(state, UpdateState::Pending);
        assert!(reason.unwrap_or_default().contains("not reported"));
        assert!(target_matches(&Target::Tag("lab".into()), &view));
        assert!(!target_matches(
            &Target::Attributes([("device_type".to_owned(), "pi4".to_owned())].into()),
            &view
        ));
    }

    #[test]
    fn runs_package_compares_every_provided_version() {
        let reported = reported();
        let d = reported.checking_in();
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
