//! The online timestamp key (`docs/trust.md`): the flags, and the signer
//! they make. With a key the server signs a timestamp for every offer it
//! hands out; without one, offers carry none, and devices that hold a
//! trust root refuse them. Flags and environment only (not the TOML file:
//! its keys are checked against the main settings).

use super::ConfigError;
use airlift_package::SigningKey;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Shortest timestamp lifetime (tests use seconds; a fleet wants hours,
/// since a device's clock may be a little off).
const MIN_EXPIRY: Duration = Duration::from_secs(1);
/// Longest: a freeze lasts at most this long.
const MAX_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);
/// The default lifetime of a timestamp.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// Flags of the online timestamp key.
#[derive(Debug, Default, Clone, clap::Args, Serialize, Deserialize)]
pub struct TimestampArgs {
    /// The online timestamp key (PKCS#8 PEM private key, `airlift key
    /// generate`) named in the trust root's timestamp role: every offer
    /// gets a timestamp signed with it. Without it offers carry none, which
    /// devices with a trust_root refuse.
    #[arg(long, env = "AIRLIFT_TIMESTAMP_KEY", value_name = "FILE")]
    pub timestamp_key: Option<PathBuf>,
    /// How long a timestamp stays valid: a device cut off longer stays on
    /// its version, and a replayed offer is refused after it (1s–30d)
    /// [default: 1d].
    #[arg(long, env = "AIRLIFT_TIMESTAMP_EXPIRY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timestamp_expiry: Option<Duration>,
}

/// The key that signs timestamps, and their lifetime. `Debug` shows the key id only.
#[derive(Debug, Clone)]
pub struct TimestampSigner {
    /// The online key.
    pub key: Arc<SigningKey>,
    /// How long each timestamp is valid.
    pub expiry: Duration,
}

impl TimestampArgs {
    /// The signer, if a key is given; reads the key file.
    pub fn validate(&self) -> Result<Option<TimestampSigner>, ConfigError> {
        let expiry = self.timestamp_expiry.unwrap_or(DEFAULT_EXPIRY);
        if !(MIN_EXPIRY..=MAX_EXPIRY).contains(&expiry) {
            return Err(ConfigError::Invalid(format!(
                "timestamp_expiry must be between 1s and 30d, got {}",
                humantime::format_duration(expiry)
            )));
        }
        let Some(path) = &self.timestamp_key else {
            if self.timestamp_expiry.is_some() {
                return Err(ConfigError::Invalid(
                    "timestamp_expiry is set but timestamp_key is not: give the online timestamp key".into(),
                ));
            }
            return Ok(None);
        };
        let pem = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Invalid(format!("reading timestamp_key {}: {e}", path.display()))
        })?;
        let key = SigningKey::from_pem(&pem)
            .map_err(|e| ConfigError::Invalid(format!("timestamp_key {}: {e}", path.display())))?;
        Ok(Some(TimestampSigner {
            key: Arc::new(key),
            expiry,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_makes_a_signer_with_the_default_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("online.key");
        let key = SigningKey::generate().expect("key");
        std::fs::write(&path, key.to_pem().expect("pem").as_bytes()).expect("write");
        let args = TimestampArgs {
            timestamp_key: Some(path.clone()),
            timestamp_expiry: None,
        };
        let signer = args.validate().expect("valid").expect("a signer");
        assert_eq!(signer.expiry, DEFAULT_EXPIRY);
        assert_eq!(signer.key.public_key(), key.public_key());
        assert!(TimestampArgs::default()
            .validate()
            .expect("valid")
            .is_none());
        let too_long = TimestampArgs {
            timestamp_key: Some(path),
            timestamp_expiry: Some(Duration::from_secs(31 * 24 * 3600)),
        };
        assert!(too_long.validate().is_err());
        let no_key = TimestampArgs {
            timestamp_key: None,
            timestamp_expiry: Some(Duration::from_secs(3600)),
        };
        assert!(no_key.validate().is_err());
    }
}
