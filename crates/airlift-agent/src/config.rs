//! `agent.toml`: what the agent needs to know about its device and server.
//! Parsed strictly (unknown keys are errors) and checked before use.

use crate::health::HealthCheck;
use crate::system::{RunningSystem, VersionSource, DEFAULT_VERSION_KEY};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The agent's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The update server, e.g. `https://updates.example.com`.
    pub server_url: String,
    /// Where the agent keeps its key, state and queue.
    pub data_dir: PathBuf,
    /// The device type packages must list.
    pub device_type: String,
    /// Hardware revision, if packages distinguish them.
    #[serde(default)]
    pub hardware_revision: Option<String>,
    /// Identity attributes sent when authenticating (serial, MAC, …).
    #[serde(default)]
    pub identity: BTreeMap<String, String>,
    /// A program printing `key=value` identity lines, instead of `identity`.
    #[serde(default)]
    pub identity_command: Option<Vec<String>>,
    /// Static inventory attributes reported at every check-in.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Software installed at the factory (name → version); afterwards the
    /// agent keeps its own record of what it installed.
    #[serde(default)]
    pub installed: BTreeMap<String, String>,
    /// A `KEY=VALUE` file of the running root filesystem, such as
    /// `/etc/os-release`, whose `system_version_key` is the version it
    /// holds: reported as the installed version of `system_software`, over
    /// the agent's own record (see [`crate::system`]).
    #[serde(default)]
    pub system_version_file: Option<PathBuf>,
    /// The key of `system_version_file` [default: `VERSION_ID`].
    #[serde(default)]
    pub system_version_key: Option<String>,
    /// A program printing the running system's version, instead of
    /// `system_version_file`.
    #[serde(default)]
    pub system_version_command: Option<Vec<String>>,
    /// The installed-software name the running system's version is
    /// reported under [default: the name of the one `[slots.NAME]` pair,
    /// e.g. `rootfs`].
    #[serde(default)]
    pub system_software: Option<String>,
    /// Public keys (PEM) trusted to sign packages, when no `trust_root` is given.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// The first signed trust root (`docs/trust.md`); with it the agent
    /// trusts its current root's release keys and `trusted_keys` is unused.
    #[serde(default)]
    pub trust_root: Option<PathBuf>,
    /// Trusted signatures required [default: 1].
    #[serde(default = "one")]
    pub trust_threshold: usize,
    /// age identity file for encrypted payloads.
    #[serde(default)]
    pub age_identity: Option<PathBuf>,
    /// Seconds between check-ins until the server says otherwise [default: 60].
    #[serde(default = "sixty")]
    pub poll_interval_secs: u64,
    /// Seconds between download progress reports to the server; 0: none
    /// [default: 30].
    #[serde(default = "thirty")]
    pub progress_interval_secs: u64,
    /// Download rate cap in bytes per second.
    #[serde(default)]
    pub bandwidth_limit: Option<u64>,
    /// Seconds a connection may stay silent (while connecting, or between
    /// two reads of an answer) before the agent gives up on it and, for a
    /// download, reconnects where it was [default: 60].
    #[serde(default = "sixty")]
    pub network_timeout_secs: u64,
    /// Bounds against slow retrieval (`[download]`).
    #[serde(default)]
    pub download: crate::download::DownloadBounds,
    /// Private CA, server key pins, client certificate (`[tls]`).
    #[serde(default)]
    pub tls: crate::tls::TlsConfig,
    /// A/B slot pairs by image target name (`rootfs` → a, b).
    #[serde(default)]
    pub slots: BTreeMap<String, SlotPair>,
    /// How to read and steer the bootloader.
    pub boot: BootConfig,
    /// Checks that decide whether a trial boot is healthy.
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    /// What a trial boot must show besides the health checks.
    #[serde(default)]
    pub trial: TrialConfig,
    /// The command that reboots the device [default: `systemctl reboot`].
    #[serde(default = "default_reboot")]
    pub reboot_command: Vec<String>,
    /// Where update modules (`module:<name>` payloads) live.
    #[serde(default = "default_modules")]
    pub modules_dir: PathBuf,
    /// Prefix for `file` payload targets [default: `/`]; tests use a directory.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// How the agent hears "check in now" nudges [default: the server's
    /// push stream]. Polling goes on either way.
    #[serde(default)]
    pub push: crate::push::PushConfig,
    /// The `config` module that applies the device's desired configuration
    /// (see [`crate::shadow`]) [default: none: the device takes none].
    #[serde(default)]
    pub shadow: crate::shadow::ShadowConfig,
    /// Asked before a soft update installs (program and arguments, no
    /// shell): exit 0 installs, exit 75 defers ("not now"), anything else
    /// or a timeout installs; see [`crate::defer`] [default: none: soft
    /// updates install as soon as permitted, like forced ones].
    #[serde(default)]
    pub defer_command: Vec<String>,
    /// Seconds `defer_command` may take to answer, 1 to 3600 [default: 60].
    #[serde(default = "sixty")]
    pub defer_timeout_secs: u64,
}

/// The two slots of one A/B pair: block devices or files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotPair {
    /// Slot A.
    pub a: PathBuf,
    /// Slot B.
    pub b: PathBuf,
}

/// The trial boot's built-in check: the new version reaches the server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialConfig {
    /// Seconds the new version of an update from the server has to reach
    /// the server (authenticate and check in) during its trial boot; after
    /// them the trial fails and the device rolls back, since a version that
    /// cannot reach the server can never be updated again. Tried after the
    /// health checks, again and again (with backoff) until the time is up,
    /// as a network may come up slowly after a boot. `0` leaves it out; a
    /// local install (`airlift-agent install`) never has it [default: 300].
    #[serde(default = "default_reach_server")]
    pub reach_server_timeout_secs: u64,
}

impl Default for TrialConfig {
    fn default() -> Self {
        Self {
            reach_server_timeout_secs: default_reach_server(),
        }
    }
}

fn default_reach_server() -> u64 {
    300
}

/// Which bootloader interface to use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum BootConfig {
    /// GRUB via `grub-editenv`.
    Grub {
        /// The grubenv file.
        grubenv: PathBuf,
        /// Kernel command line, for the booted slot [default: /proc/cmdline].
        #[serde(default = "default_cmdline")]
        cmdline: PathBuf,
    },
    /// U-Boot via `fw_printenv`/`fw_setenv`.
    Uboot {
        /// `fw_env.config`.
        #[serde(default = "default_fw_env")]
        config: PathBuf,
        /// Kernel command line, for the booted slot [default: /proc/cmdline].
        #[serde(default = "default_cmdline")]
        cmdline: PathBuf,
    },
    /// `FileBootEnv`: a file-backed model of the bootloader, for tests,
    /// simulation and a device of plain files on a laptop. Something must
    /// play the bootloader's power-up step at each "reboot": a harness, or
    /// `reboot_command` running `airlift-agent boot-env power-up`
    /// (`docs/laptop-device.md`).
    File {
        /// The environment file.
        path: PathBuf,
    },
}

fn one() -> usize {
    1
}
fn sixty() -> u64 {
    60
}
fn thirty() -> u64 {
    30
}
fn default_reboot() -> Vec<String> {
    vec!["systemctl".into(), "reboot".into()]
}
fn default_modules() -> PathBuf {
    PathBuf::from("/usr/lib/airlift/modules")
}
fn default_root() -> PathBuf {
    PathBuf::from("/")
}
fn default_cmdline() -> PathBuf {
    PathBuf::from("/proc/cmdline")
}
fn default_fw_env() -> PathBuf {
    PathBuf::from("/etc/fw_env.config")
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read the agent configuration {path} (pass --config PATH if it is elsewhere)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not valid TOML for the agent.
    #[error("{path}: {message}")]
    Parse {
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value out of range.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl AgentConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks TOML text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        if config.trust_root.is_none() && config.trusted_keys.is_empty() {
            return Err(invalid(
                "trusted_keys is empty: the agent refuses every package it cannot verify; give trust_root or list the release public key",
            ));
        }
        if config.trust_root.is_none()
            && (config.trust_threshold == 0 || config.trust_threshold > config.trusted_keys.len())
        {
            return Err(invalid(
                "trust_threshold must be between 1 and the number of trusted_keys",
            ));
        }
        if config.identity.is_empty() && config.identity_command.is_none() {
            return Err(invalid(
                "set identity (e.g. serial = \"…\") or identity_command",
            ));
        }
        if config.device_type.is_empty() {
            return Err(invalid("device_type must not be empty"));
        }
        if config.network_timeout_secs == 0 {
            return Err(invalid("network_timeout_secs must be at least 1"));
        }
        config
            .download
            .check(config.bandwidth_limit)
            .map_err(|m| invalid(&m))?;
        config.tls.check().map_err(|m| invalid(&m))?;
        if config.poll_interval_secs == 0 {
            return Err(invalid("poll_interval_secs must be at least 1"));
        }
        if config.reboot_command.is_empty() {
            return Err(invalid("reboot_command must name a program"));
        }
        if matches!(config.boot, BootConfig::File { .. })
            && config.reboot_command == default_reboot()
        {
            return Err(invalid(
                "backend = \"file\" has no bootloader for a real reboot to run: set reboot_command to play its power-up, e.g. [\"airlift-agent\", \"--config\", \"THIS FILE\", \"boot-env\", \"power-up\"]",
            ));
        }
        config.running_system().map_err(|m| invalid(&m))?;
        if !(1..=crate::defer::MAX_DEFER_TIMEOUT_SECS).contains(&config.defer_timeout_secs) {
            return Err(invalid(&format!(
                "defer_timeout_secs must be 1 to {}",
                crate::defer::MAX_DEFER_TIMEOUT_SECS
            )));
        }
        if config.defer_command.first().is_some_and(String::is_empty) {
            return Err(invalid("defer_command must name a program first"));
        }
        for (name, pair) in &config.slots {
            if pair.a == pair.b {
                return Err(invalid(&format!(
                    "[slots.{name}]: a and b are both {}; the slots must be two different partitions",
                    pair.a.display()
                )));
            }
        }
        if let crate::push::PushConfig::Mqtt { url, topic_prefix } = &config.push {
            if let Err(e) = url.parse::<airlift_protocol::push::MqttBroker>() {
                return Err(invalid(&format!("push: {e}")));
            }
            if topic_prefix.is_empty() || topic_prefix.contains(['+', '#']) {
                return Err(invalid(
                    "push: topic_prefix must be non-empty and free of MQTT wildcards (+, #)",
                ));
            }
        }
        Ok(config)
    }

    /// Where the running system's version comes from, if configured
    /// (`system_version_file` or `system_version_command`), and the name it
    /// is reported under; why not, if the settings do not fit together.
    pub fn running_system(&self) -> Result<Option<RunningSystem>, String> {
        let source = match (&self.system_version_file, &self.system_version_command) {
            (Some(_), Some(_)) => {
                return Err(
                    "set system_version_file or system_version_command, not both".to_owned(),
                )
            }
            (Some(path), None) => {
                let key = self
                    .system_version_key
                    .clone()
                    .unwrap_or_else(|| DEFAULT_VERSION_KEY.to_owned());
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "system_version_key {key:?} is not a KEY of a KEY=VALUE file (letters, digits, _)"
                    ));
                }
                VersionSource::File {
                    path: path.clone(),
                    key,
                }
            }
            (None, Some(command)) if command.is_empty() => {
                return Err("system_version_command must name a program".to_owned())
            }
            (None, Some(command)) => VersionSource::Command(command.clone()),
            (None, None) => {
                if self.system_version_key.is_some() || self.system_software.is_some() {
                    return Err(
                        "system_version_key and system_software need system_version_file (or system_version_command)"
                            .to_owned(),
                    );
                }
                return Ok(None);
            }
        };
        if self.system_version_key.is_some() && self.system_version_file.is_none() {
            return Err("system_version_key goes with system_version_file".to_owned());
        }
        let software = match (&self.system_software, self.slots.keys().next()) {
            (Some(name), _) if name.is_empty() => {
                return Err("system_software must not be empty".to_owned())
            }
            (Some(name), _) => name.clone(),
            (None, Some(name)) if self.slots.len() == 1 => name.clone(),
            (None, _) => {
                return Err(
                    "set system_software = \"NAME\": the installed-software name the running system's version is reported under (the default, the name of the [slots.NAME] pair, needs exactly one pair)"
                        .to_owned(),
                )
            }
        };
        Ok(Some(RunningSystem { software, source }))
    }

    /// The device key file (see [`DataDir`](crate::driver::DataDir)).
    pub fn key_path(&self) -> PathBuf {
        crate::driver::DataDir::new(&self.data_dir).key_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
server_url = "http://127.0.0.1:8080"
data_dir = "/var/lib/airlift"
device_type = "acme-gw"
identity = { serial = "SN1" }
trusted_keys = ["/etc/airlift/release.pub"]
[boot]
backend = "grub"
grubenv = "/boot/grub/grubenv"
[slots.rootfs]
a = "/dev/mmcblk0p2"
b = "/dev/mmcblk0p3"
[[health_checks]]
name = "app"
command = ["/usr/bin/app", "--self-test"]
"#;

    #[test]
    fn a_minimal_config_parses_with_defaults() {
        let config = AgentConfig::parse(MINIMAL, Path::new("agent.toml")).expect("valid");
        assert_eq!(config.poll_interval_secs, 60);
        assert_eq!(config.reboot_command, ["systemctl", "reboot"]);
        assert_eq!(config.health_checks[0].timeout_secs, 60);
        assert_eq!(config.trial.reach_server_timeout_secs, 300);
        assert_eq!(
            config.boot,
            BootConfig::Grub {
                grubenv: "/boot/grub/grubenv".into(),
                cmdline: "/proc/cmdline".into(),
            }
        );
        assert_eq!(config.running_system(), Ok(None));
    }

    fn parse(text: &str) -> Result<AgentConfig, String> {
        AgentConfig::parse(text, Path::new("agent.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_system_version_is_read_from_a_file_or_a_command_under_the_slots_name() {
        let with = |lines: &str| parse(&format!("{lines}\n{MINIMAL}"));
        let config = with(r#"system_version_file = "/etc/os-release""#).expect("valid");
        assert_eq!(
            config.running_system(),
            Ok(Some(RunningSystem {
                software: "rootfs".into(),
                source: VersionSource::File {
                    path: "/etc/os-release".into(),
                    key: "VERSION_ID".into()
                }
            }))
        );
        let config = with(
            "system_version_file = \"/etc/acme-release\"\nsystem_version_key = \"IMAGE_VERSION\"\nsystem_software = \"acme-os\"",
        )
        .expect("valid");
        let system = config.running_system().ok().flatten().expect("configured");
        assert_eq!(system.software, "acme-os");
        assert!(matches!(system.source, VersionSource::File { key, .. } if key == "IMAGE_VERSION"));
        let config = with(r#"system_version_command = ["/usr/bin/os-version"]"#).expect("valid");
        let system = config.running_system().ok().flatten().expect("configured");
        assert_eq!(
            system.source,
            VersionSource::Command(vec!["/usr/bin/os-version".into()])
        );
    }

    #[test]
    fn system_version_settings_that_do_not_fit_together_are_refused() {
        let with = |lines: &str| parse(&format!("{lines}\n{MINIMAL}"));
        for (lines, expected) in [
            (
                "system_version_file = \"/etc/os-release\"\nsystem_version_command = [\"v\"]",
                "not both",
            ),
            (
                "system_version_key = \"VERSION\"",
                "need system_version_file",
            ),
            ("system_version_command = []", "must name a program"),
            (
                "system_version_file = \"/etc/os-release\"\nsystem_version_key = \"A B\"",
                "is not a KEY",
            ),
            (
                "system_version_command = [\"v\"]\nsystem_version_key = \"X\"",
                "goes with system_version_file",
            ),
        ] {
            let error = with(lines).expect_err(lines);
            assert!(error.contains(expected), "{lines}: {error}");
        }
        // Two slot pairs: which one is the running system is not a guess.
        let two = format!(
            "system_version_file = \"/etc/os-release\"\n{MINIMAL}[slots.data]\na = \"/dev/x1\"\nb = \"/dev/x2\"\n"
        );
        let error = parse(&two).expect_err("two pairs");
        assert!(error.contains("set system_software"), "{error}");
    }

    #[test]
    fn slots_on_one_device_and_a_file_backend_that_would_reboot_for_real_are_refused() {
        let same = MINIMAL.replace("/dev/mmcblk0p3", "/dev/mmcblk0p2");
        let error = parse(&same).expect_err("one device");
        assert!(
            error.contains("[slots.rootfs]: a and b are both /dev/mmcblk0p2"),
            "{error}"
        );
        let file = MINIMAL.replace(
            "backend = \"grub\"\ngrubenv = \"/boot/grub/grubenv\"",
            "backend = \"file\"\npath = \"/var/lib/airlift/bootenv\"",
        );
        let error = parse(&file).expect_err("file backend with systemctl reboot");
        assert!(error.contains("boot-env"), "{error}");
        let playing =
            format!("reboot_command = [\"airlift-agent\", \"boot-env\", \"power-up\"]\n{file}");
        assert!(parse(&playing).is_ok());
    }

    #[test]
    fn mistakes_are_named() {
        let typo = MINIMAL.replace("device_type", "devicetype");
        let error = AgentConfig::parse(&typo, Path::new("agent.toml")).expect_err("typo");
        assert!(error.to_string().contains("devicetype"), "{error}");
        let untrusting = MINIMAL.replace(r#"["/etc/airlift/release.pub"]"#, "[]");
        let error = AgentConfig::parse(&untrusting, Path::new("agent.toml")).expect_err("no keys");
        assert!(error.to_string().contains("trusted_keys"), "{error}");
        let bad_broker = format!("{MINIMAL}[push]\ntransport = \"mqtt\"\nurl = \"tcp://broker\"\n");
        let error = AgentConfig::parse(&bad_broker, Path::new("agent.toml")).expect_err("broker");
        assert!(error.to_string().contains("only mqtt://"), "{error}");
    }

    #[test]
    fn push_defaults_to_the_servers_stream() {
        let config = AgentConfig::parse(MINIMAL, Path::new("agent.toml")).expect("valid");
        assert_eq!(config.push, crate::push::PushConfig::Events);
    }

    #[test]
    fn the_shipped_example_parses() {
        let example = include_str!("../../../dist/agent.toml");
        let config = AgentConfig::parse(example, Path::new("dist/agent.toml")).expect("valid");
        assert_eq!(
            config.boot,
            BootConfig::Uboot {
                config: "/etc/fw_env.config".into(),
                cmdline: "/proc/cmdline".into(),
            }
        );
        assert!(matches!(config.push, crate::push::PushConfig::Events));
    }
}
