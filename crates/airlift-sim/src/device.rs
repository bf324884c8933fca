//! One simulated device: a directory with two slot files, a
//! [`FileBootEnv`], the agent's data directory and an [`AgentConfig`] built
//! in code; the bootloader's power-up step; and the faults it drew.
//!
//! ```text
//! sim-00042/
//!   a.img  b.img      the A/B slots (slot A: the factory image)
//!   bootenv           FileBootEnv: the bootloader's variables
//!   data/             the agent's key, state, outbox
//!   root/ modules/    for file and module payloads
//!   unhealthy         present while the health check must fail
//! ```

use crate::admin::{Admin, AdminError};
use crate::config::FleetConfig;
use crate::image;
use crate::select::{fraction, Mix};
use airlift_agent::boot::{BootError, FileBootEnv, Slot};
use airlift_agent::config::{AgentConfig, BootConfig, SlotPair, TrialConfig};
use airlift_agent::health::HealthCheck;
use airlift_agent::identity::{self, IdentityError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The slot pair's name: image payloads must target it.
pub const SLOT_TARGET: &str = "rootfs";

/// What slot B holds at the factory: no version.
const SPARE: &[u8] = b"an empty slot B\n";

/// Why a device could not be made or powered up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A file of the device.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The boot environment.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The device key.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The server would not pre-authorise it.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> DeviceError + 'p {
    move |source| DeviceError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// What a device is, from the stable choices: fixed by seed and serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Its serial (its identity on the server).
    pub serial: String,
    /// Its device type.
    pub device_type: String,
    /// Its inventory attributes.
    pub attributes: BTreeMap<String, String>,
    /// Its health check fails while `fail_health_on` runs.
    pub fail_health: bool,
    /// It loses power once per deployment, mid-download.
    pub power_loss: bool,
    /// It talks to the server through the flaky proxy.
    pub flaky_network: bool,
}

impl Plan {
    /// The plan of device number `index` of `config`'s fleet.
    pub fn of(config: &FleetConfig, index: usize) -> Plan {
        let serial = format!("{}-{index:05}", config.serial_prefix);
        let seed = config.seed;
        let faults = &config.faults;
        let attributes = config
            .attributes
            .iter()
            .enumerate()
            .map(|(n, mix): (usize, &Mix<(String, String)>)| {
                mix.pick(seed, &format!("attribute-{n}"), &serial).clone()
            })
            .collect();
        Plan {
            device_type: config
                .device_types
                .pick(seed, "device-type", &serial)
                .clone(),
            attributes,
            fail_health: faults.fail_health_on.is_some()
                && faults
                    .fail_health_share
                    .selects(seed, "fail-health", &serial),
            power_loss: faults.power_loss_share.selects(seed, "power-loss", &serial),
            flaky_network: faults
                .flaky_network_share
                .selects(seed, "flaky-network", &serial),
            serial,
        }
    }

    /// Where in a package of `size` bytes of `deployment` this device loses
    /// power: between 10 % and 90 % of it.
    pub fn power_loss_at(&self, seed: u64, deployment: &str, size: u64) -> u64 {
        let at = 0.1 + 0.8 * fraction(seed, &format!("power-loss-at {deployment}"), &self.serial);
        (size as f64 * at) as u64
    }
}

/// A device's files.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The device's directory.
    pub dir: PathBuf,
}

impl Layout {
    fn slot(&self, slot: Slot) -> PathBuf {
        self.dir.join(match slot {
            Slot::A => "a.img",
            Slot::B => "b.img",
        })
    }

    fn bootenv(&self) -> PathBuf {
        self.dir.join("bootenv")
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn marker(&self) -> PathBuf {
        self.dir.join("unhealthy")
    }

    /// Makes the device as it leaves the factory (slot A holding the
    /// factory image and booted, a device key) unless it exists already,
    /// and pre-authorises its key if there is an admin client.
    pub fn create(
        &self,
        config: &FleetConfig,
        plan: &Plan,
        admin: Option<&Admin>,
    ) -> Result<(), DeviceError> {
        let bootenv = self.bootenv();
        if !bootenv.exists() {
            for dir in [self.dir.join("root"), self.dir.join("modules"), self.data()] {
                std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            }
            let factory = image::build(&config.factory.version, config.factory.image_size);
            let (a, b) = (self.slot(Slot::A), self.slot(Slot::B));
            std::fs::write(&a, factory).map_err(io("writing", &a))?;
            std::fs::write(&b, SPARE).map_err(io("writing", &b))?;
            FileBootEnv::create(&bootenv, Slot::A)?;
        }
        let key = identity::load_or_create(&self.data().join("device.key"))?;
        if let Some(admin) = admin {
            let public = airlift_protocol::auth::public_key_pem(&key.verifying_key());
            admin.preauthorize(&plan.serial, public, &config.tags)?;
        }
        Ok(())
    }

    /// The bootloader's power-up step; then, as the booted system would,
    /// sets the health marker from what the booted slot runs. Returns the
    /// running version (`None`: not a simulator image). The device is
    /// unhealthy while it runs one of the `fail_on` versions.
    pub fn power_up(&self, fail_on: &[&str]) -> Result<Option<String>, DeviceError> {
        let outcome = FileBootEnv::open(self.bootenv())?.boot()?;
        let running = image::version_in(&self.slot(outcome.slot));
        let marker = self.marker();
        if running.as_deref().is_some_and(|r| fail_on.contains(&r)) {
            let text = format!(
                "the simulator made this device unhealthy on {}\n",
                running.as_deref().unwrap_or_default()
            );
            std::fs::write(&marker, text).map_err(io("writing", &marker))?;
        } else if let Err(e) = std::fs::remove_file(&marker) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(io("removing", &marker)(e));
            }
        }
        Ok(running)
    }

    /// The agent's configuration for this device, talking to `server_url`.
    pub fn agent_config(&self, config: &FleetConfig, plan: &Plan, server_url: &str) -> AgentConfig {
        AgentConfig {
            server_url: server_url.to_owned(),
            data_dir: self.data(),
            device_type: plan.device_type.clone(),
            hardware_revision: None,
            identity: BTreeMap::from([("serial".to_owned(), plan.serial.clone())]),
            identity_command: None,
            attributes: plan.attributes.clone(),
            installed: BTreeMap::from([(
                config.factory.package.clone(),
                config.factory.version.clone(),
            )]),
            // The simulated device's slots are files, not the running system.
            system_version_file: None,
            system_version_key: None,
            system_version_command: None,
            system_software: None,
            trusted_keys: config.trusted_keys.clone(),
            trust_threshold: 1,
            trust_root: None,
            age_identity: None,
            poll_interval_secs: config.poll_interval.map_or(1, |p| p.as_secs().max(1)),
            progress_interval_secs: 30,
            bandwidth_limit: None,
            network_timeout_secs: 10,
            download: Default::default(),
            tls: Default::default(),
            slots: BTreeMap::from([(
                SLOT_TARGET.to_owned(),
                SlotPair {
                    a: self.slot(Slot::A),
                    b: self.slot(Slot::B),
                },
            )]),
            boot: BootConfig::File {
                path: self.bootenv(),
            },
            // As a device has it: the new version must reach the server.
            trial: TrialConfig::default(),
            // The simulated owner never says "not now".
            defer_command: Vec::new(),
            defer_timeout_secs: 60,
            // A real check, as a device has: it fails while the marker
            // the power-up step wrote is there.
            health_checks: vec![HealthCheck {
                name: "sim".into(),
                command: vec![
                    "test".into(),
                    "!".into(),
                    "-e".into(),
                    self.marker().display().to_string(),
                ],
                timeout_secs: 10,
            }],
            reboot_command: vec!["true".into()],
            modules_dir: self.dir.join("modules"),
            push: config.push.clone(),
            // The agent's own config module, writing a file and reloading
            // nothing; or no configuration at all.
            shadow: if config.shadow {
                airlift_agent::shadow::ShadowConfig {
                    file: Some(self.dir.join("config.json")),
                    ..Default::default()
                }
            } else {
                Default::default()
            },
            root: self.dir.join("root"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::Share;

    #[test]
    fn plans_follow_the_flags_and_the_seed() {
        let mut config = FleetConfig::new("http://x", "k.pub".into(), 1000, "pi4");
        config.device_types = "pi4:70,pi5:30".parse().expect("types");
        config.attributes = vec!["region=eu:50,region=us:50".parse().expect("attributes")];
        config.faults.fail_health_on = Some("2.0.0".into());
        config.faults.fail_health_share = Share::percent(40.0).expect("share");
        let plans: Vec<Plan> = (0..1000).map(|i| Plan::of(&config, i)).collect();
        assert_eq!(plans[42].serial, "sim-00042");
        assert!(plans
            .iter()
            .all(|p| ["pi4", "pi5"].contains(&p.device_type.as_str())));
        assert!(plans
            .iter()
            .all(|p| p.attributes.len() == 1 && p.attributes.contains_key("region")));
        let failing = plans.iter().filter(|p| p.fail_health).count();
        assert!((350..450).contains(&failing), "{failing}");
        assert!(!plans.iter().any(|p| p.power_loss || p.flaky_network));
        assert_eq!(
            plans,
            (0..1000).map(|i| Plan::of(&config, i)).collect::<Vec<_>>()
        );
        config.seed = 1;
        assert_ne!(
            plans,
            (0..1000).map(|i| Plan::of(&config, i)).collect::<Vec<_>>()
        );
        let at = plans[0].power_loss_at(0, "d", 1000);
        assert!((100..=900).contains(&at), "{at}");
    }

    #[test]
    fn power_up_sets_the_marker_only_on_the_failing_version(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let config = FleetConfig::new("http://x", "k.pub".into(), 1, "pi4");
        let plan = Plan::of(&config, 0);
        let layout = Layout {
            dir: dir.path().join("dev"),
        };
        layout.create(&config, &plan, None)?;
        assert_eq!(layout.power_up(&["2.0.0"])?.as_deref(), Some("1.0.0"));
        assert!(!layout.marker().exists());
        assert_eq!(
            layout.power_up(&["3.0.0", "1.0.0"])?.as_deref(),
            Some("1.0.0")
        );
        assert!(layout.marker().exists());
        assert_eq!(layout.power_up(&[])?.as_deref(), Some("1.0.0"));
        assert!(!layout.marker().exists());
        // Made once: a second create keeps the device as it is.
        let key = std::fs::read(layout.data().join("device.key"))?;
        layout.create(&config, &plan, None)?;
        assert_eq!(std::fs::read(layout.data().join("device.key"))?, key);
        Ok(())
    }
}
