//! The online timestamp key (`docs/trust.md`): the flags, and the signer
//! they make. With a key the server signs a timestamp for every offer it
//! hands out; without one, offers carry none, and devices that hold a
//! trust root refuse them. Set by `timestamp_key` and `timestamp_expiry`
//! (flags, environment or the TOML file, as every setting).

use super::ConfigError;
use airlift_package::SigningKey;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Shortest timestamp lifetime (tests use seconds; a fleet wants hours,
/// since a device's clock may be a little off).
const MIN_EXPIRY: Duration = Duration::from_secs(1);
/// Longest: a freeze lasts at most this long.
const MAX_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);
/// The default lifetime of a timestamp.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// The key that signs timestamps, and their lifetime. `Debug` shows the key id only.
#[derive(Debug, Clone)]
pub struct TimestampSigner {
    /// The online key.
    pub key: Arc<SigningKey>,
    /// How long each timestamp is valid.
    pub expiry: Duration,
}

/// The signer `timestamp_key` makes, if given (its file read), with
/// `timestamp_expiry` (humantime: `12h`, `1d`) as the lifetime.
pub fn validate(
    timestamp_key: Option<&Path>,
    timestamp_expiry: Option<&str>,
) -> Result<Option<TimestampSigner>, ConfigError> {
    let expiry = match timestamp_expiry {
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            ConfigError::Invalid(format!("timestamp_expiry {text:?}: {e} (e.g. 12h, 1d)"))
        })?,
        None => DEFAULT_EXPIRY,
    };
    if !(MIN_EXPIRY..=MAX_EXPIRY).contains(&expiry) {
        return Err(ConfigError::Invalid(format!(
            "timestamp_expiry must be between 1s and 30d, got {}",
            humantime::format_duration(expiry)
        )));
    }
    let Some(path) = timestamp_key else {
        if timestamp_expiry.is_some() {
            return Err(ConfigError::Invalid(
                "timestamp_expiry is set but timestamp_key is not: give the online timestamp key"
                    .into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_makes_a_signer_with_the_default_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("online.key");
        let key = SigningKey::generate().expect("key");
        std::fs::write(&path, key.to_pem().expect("pem").as_bytes()).expect("write");
        let signer = validate(Some(&path), None)
            .expect("valid")
            .expect("a signer");
        assert_eq!(signer.expiry, DEFAULT_EXPIRY);
        assert_eq!(signer.key.public_key(), key.public_key());
        assert!(validate(None, None).expect("valid").is_none());
        let hours = validate(Some(&path), Some("12h"))
            .expect("valid")
            .expect("a signer");
        assert_eq!(hours.expiry, Duration::from_secs(12 * 3600));
        assert!(validate(Some(&path), Some("31d")).is_err(), "too long");
        assert!(
            validate(Some(&path), Some("soon")).is_err(),
            "not a duration"
        );
        assert!(validate(None, Some("1h")).is_err(), "no key");
    }
}
