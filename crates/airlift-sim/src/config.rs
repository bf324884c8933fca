//! What a fleet is made of: how many devices, of which types and
//! attributes, where their server is, and which faults they meet.

use crate::select::{Mix, Share};
use airlift_agent::push::PushConfig;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A fleet to simulate. Build one with [`FleetConfig::new`] and adjust the
/// public fields; [`Fleet::start`](crate::Fleet::start) checks it.
#[derive(Clone)]
pub struct FleetConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub server_url: String,
    /// A token with the operator role: every device is pre-authorised with
    /// it (`POST /api/v1/devices/preauthorize`) before it first makes
    /// contact. Without one, devices stay `pending` until someone accepts
    /// them.
    pub admin_token: Option<String>,
    /// Public keys (PEM files) the devices trust.
    pub trusted_keys: Vec<PathBuf>,
    /// How many devices.
    pub devices: usize,
    /// Serials are `{prefix}-{index:05}`.
    pub serial_prefix: String,
    /// Tags every device is pre-authorised with.
    pub tags: Vec<String>,
    /// Device types and their shares.
    pub device_types: Mix<String>,
    /// Inventory attributes: each mix gives every device one `key=value`.
    pub attributes: Vec<Mix<(String, String)>>,
    /// The package every device has installed at the factory, and the
    /// version of the image in its slot A.
    pub factory: Factory,
    /// Poll this often, whatever the server says; `None`: as the server
    /// says (and once a second until it has said).
    pub poll_interval: Option<Duration>,
    /// First contacts are spread over this long (a fleet does not all
    /// power up in the same millisecond).
    pub ramp_up: Duration,
    /// Threads driving the devices.
    pub workers: usize,
    /// Seed of every stable choice (types, attributes, faults).
    pub seed: u64,
    /// The faults to inject.
    pub faults: Faults,
    /// Where the devices' directories go; `None`: a temporary directory,
    /// deleted when the fleet is dropped.
    pub dir: Option<PathBuf>,
    /// How devices hear "check in now" nudges: each runs the agent's own
    /// push listener (a thread per device) [default: off, poll only].
    pub push: PushConfig,
    /// Whether devices take configuration (their shadow's delta): each
    /// applies it with the agent's `config` module to `config.json` in its
    /// directory, with no reload command, and reports it [default: no:
    /// they report that they take none].
    pub shadow: bool,
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("server_url", &self.server_url)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("trusted_keys", &self.trusted_keys)
            .field("devices", &self.devices)
            .field("device_types", &self.device_types)
            .field("attributes", &self.attributes)
            .field("factory", &self.factory)
            .field("poll_interval", &self.poll_interval)
            .field("workers", &self.workers)
            .field("seed", &self.seed)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// What every device runs when it leaves the factory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Factory {
    /// The package name (packages of the same name replace it).
    pub package: String,
    /// Its version, also written into the slot A image.
    pub version: String,
    /// Size of the factory image in slot A.
    pub image_size: usize,
}

impl Default for Factory {
    fn default() -> Self {
        Factory {
            package: "rootfs".into(),
            version: "1.0.0".into(),
            image_size: 4096,
        }
    }
}

/// Faults, each met by a stable share of the fleet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// The health check fails while this version runs, on
    /// `fail_health_share` of the devices.
    pub fail_health_on: Option<String>,
    /// See `fail_health_on`.
    pub fail_health_share: Share,
    /// The health check fails on every device while this version runs (a
    /// release that is bad everywhere, e.g. a rollback target that is
    /// itself broken).
    pub fail_health_everywhere_on: Option<String>,
    /// These devices lose power once per deployment, at a random byte of
    /// the download and install.
    pub power_loss_share: Share,
    /// These devices talk to the server through a proxy that cuts
    /// connections and answers 503 now and then.
    pub flaky_network_share: Share,
}

/// A fleet configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The field (or flag) at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl FleetConfig {
    /// `devices` devices of type `device_type` polling `server_url`,
    /// trusting `trusted_key`, with no faults.
    pub fn new(server_url: &str, trusted_key: PathBuf, devices: usize, device_type: &str) -> Self {
        FleetConfig {
            server_url: server_url.trim_end_matches('/').to_owned(),
            admin_token: None,
            trusted_keys: vec![trusted_key],
            devices,
            serial_prefix: "sim".into(),
            tags: Vec::new(),
            device_types: Mix::single(device_type.to_owned()),
            attributes: Vec::new(),
            factory: Factory::default(),
            poll_interval: None,
            ramp_up: Duration::from_secs(1),
            workers: 8,
            seed: 0,
            faults: Faults::default(),
            dir: None,
            push: PushConfig::Off,
            shadow: false,
        }
    }

    /// Refuses what cannot work, naming the field.
    pub fn check(&self) -> Result<(), ConfigError> {
        let error = |field, message: &str| {
            Err(ConfigError {
                field,
                message: message.to_owned(),
            })
        };
        if !(self.server_url.starts_with("http://") || self.server_url.starts_with("https://")) {
            return error("server_url", "must start with http:// or https://");
        }
        if self.trusted_keys.is_empty() {
            return error(
                "trusted_keys",
                "list the public key packages are signed with: devices trust nothing else",
            );
        }
        if self.devices == 0 {
            return error("devices", "must be at least 1");
        }
        if self.workers == 0 {
            return error("workers", "must be at least 1");
        }
        if self.poll_interval.is_some_and(|p| p.is_zero()) {
            return error("poll_interval", "must be more than 0");
        }
        if self.factory.version.is_empty() || self.factory.package.is_empty() {
            return error("factory", "name a package and a version");
        }
        if self.faults.fail_health_share > Share::NONE && self.faults.fail_health_on.is_none() {
            return error(
                "fail_health_share",
                "say on which version the health check fails (fail_health_on)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_config_is_valid_and_mistakes_are_named() {
        let config = FleetConfig::new("http://127.0.0.1:1/", "k.pub".into(), 10, "pi4");
        assert_eq!(config.server_url, "http://127.0.0.1:1");
        assert_eq!(config.check(), Ok(()));
        type Spoil = fn(&mut FleetConfig);
        let cases: Vec<(&str, Spoil)> = vec![
            ("server_url", |c| c.server_url = "localhost:8080".into()),
            ("trusted_keys", |c| c.trusted_keys.clear()),
            ("devices", |c| c.devices = 0),
            ("workers", |c| c.workers = 0),
            ("poll_interval", |c| c.poll_interval = Some(Duration::ZERO)),
            ("fail_health_share", |c| {
                c.faults.fail_health_share = Share::percent(40.0).unwrap_or_default()
            }),
        ];
        for (field, spoil) in cases {
            let mut bad = config.clone();
            spoil(&mut bad);
            assert_eq!(bad.check().map_err(|e| e.field), Err(field));
        }
    }

    #[test]
    fn the_admin_token_is_not_shown() {
        let mut config = FleetConfig::new("http://x", "k.pub".into(), 1, "pi4");
        config.admin_token = Some("alt_secret".into());
        assert!(!format!("{config:?}").contains("alt_secret"));
    }
}
