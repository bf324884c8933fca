//! Does a package fit a device? Decided from what the device reports.

use crate::manifest::Manifest;
use semver::Version;
use std::collections::BTreeMap;

/// What a device reports about itself, as far as compatibility goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// The device type, e.g. `raspberrypi4`.
    pub device_type: String,
    /// The hardware revision, if the device reports one.
    pub hardware_revision: Option<String>,
    /// Installed software name → version text.
    pub installed: BTreeMap<String, String>,
    /// The security version the device runs (anti-rollback counter).
    pub security_version: u64,
}

/// The answer to "may this device install this package?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    /// Yes.
    Compatible,
    /// No, and why.
    Incompatible(Incompatibility),
}

/// Why a package does not fit a device; each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompatibility {
    /// The device type is not listed.
    #[error("device type {device:?} is not one the package is built for ({accepted})")]
    DeviceType {
        /// The device's type.
        device: String,
        /// The types the package lists.
        accepted: String,
    },
    /// The hardware revision is not listed, or unknown.
    #[error("hardware revision {device} is not one the package is built for ({accepted})")]
    HardwareRevision {
        /// The device's revision, or "unknown".
        device: String,
        /// The revisions the package lists.
        accepted: String,
    },
    /// Required software is not installed.
    #[error(
        "the package requires {name} {required}, which the device does not report as installed"
    )]
    MissingSoftware {
        /// Software name.
        name: String,
        /// Version requirement.
        required: String,
    },
    /// Required software is installed at a version outside the range.
    #[error("the package requires {name} {required}, the device runs {installed}")]
    SoftwareVersion {
        /// Software name.
        name: String,
        /// Version requirement.
        required: String,
        /// Installed version.
        installed: String,
    },
    /// The package's security version is below the device's: a downgrade
    /// to a release with known holes.
    #[error("security version {package} is lower than the device's {device}: installing it would roll back security fixes")]
    SecurityVersion {
        /// The package's security version.
        package: u64,
        /// The device's.
        device: u64,
    },
}

impl Manifest {
    /// Checks the package's compatibility rules and anti-rollback counter
    /// against what the device reports.
    pub fn compatibility(&self, device: &DeviceFacts) -> Compatibility {
        match self.first_incompatibility(device) {
            None => Compatibility::Compatible,
            Some(reason) => Compatibility::Incompatible(reason),
        }
    }

    fn first_incompatibility(&self, device: &DeviceFacts) -> Option<Incompatibility> {
        let compatible = &self.compatible;
        if !compatible.device_types.contains(&device.device_type) {
            return Some(Incompatibility::DeviceType {
                device: device.device_type.clone(),
                accepted: compatible.device_types.join(", "),
            });
        }
        if !compatible.hardware_revisions.is_empty() {
            let fits = device
                .hardware_revision
                .as_ref()
                .is_some_and(|rev| compatible.hardware_revisions.contains(rev));
            if !fits {
                return Some(Incompatibility::HardwareRevision {
                    device: device
                        .hardware_revision
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                    accepted: compatible.hardware_revisions.join(", "),
                });
            }
        }
        for (name, required) in &compatible.requires {
            let Some(installed) = device.installed.get(name) else {
                return Some(Incompatibility::MissingSoftware {
                    name: name.clone(),
                    required: required.to_string(),
                });
            };
            let matches = Version::parse(installed.trim_start_matches('v'))
                .is_ok_and(|v| required.matches(&v));
            if !matches {
                return Some(Incompatibility::SoftwareVersion {
                    name: name.clone(),
                    required: required.to_string(),
                    installed: installed.clone(),
                });
            }
        }
        if self.security_version < device.security_version {
            return Some(Incompatibility::SecurityVersion {
                package: self.security_version,
                device: device.security_version,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use semver::VersionReq;

    fn manifest() -> Manifest {
        Manifest::builder("os", Version::new(2, 0, 0), ["pi4", "pi5"])
            .hardware_revision("1.2")
            .requires("bootloader", VersionReq::parse(">=2.1, <3").expect("valid"))
            .security_version(5)
            .build()
    }

    fn device() -> DeviceFacts {
        DeviceFacts {
            device_type: "pi5".into(),
            hardware_revision: Some("1.2".into()),
            installed: [("bootloader".to_owned(), "2.3.0".to_owned())].into(),
            security_version: 5,
        }
    }

    fn reason(device: DeviceFacts) -> Option<Incompatibility> {
        match manifest().compatibility(&device) {
            Compatibility::Compatible => None,
            Compatibility::Incompatible(reason) => Some(reason),
        }
    }

    #[test]
    fn a_fitting_device_is_compatible() {
        assert_eq!(reason(device()), None);
    }

    #[test]
    fn each_rule_is_enforced() {
        let mut d = device();
        d.device_type = "beaglebone".into();
        assert!(matches!(
            reason(d),
            Some(Incompatibility::DeviceType { .. })
        ));

        let mut d = device();
        d.hardware_revision = None;
        assert!(matches!(
            reason(d),
            Some(Incompatibility::HardwareRevision { .. })
        ));

        let mut d = device();
        d.installed.clear();
        assert!(matches!(
            reason(d),
            Some(Incompatibility::MissingSoftware { .. })
        ));

        let mut d = device();
        d.installed.insert("bootloader".into(), "3.0.0".into());
        assert!(matches!(
            reason(d),
            Some(Incompatibility::SoftwareVersion { .. })
        ));

        let mut d = device();
        d.installed.insert("bootloader".into(), "banana".into());
        assert!(matches!(
            reason(d),
            Some(Incompatibility::SoftwareVersion { .. })
        ));

        let mut d = device();
        d.security_version = 6;
        let text = reason(d).map(|r| r.to_string()).unwrap_or_default();
        assert!(
            text.contains("security version 5 is lower than the device's 6"),
            "{text}"
        );
    }
}
