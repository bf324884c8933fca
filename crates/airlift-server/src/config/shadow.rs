//! Device shadow settings: the bounds every desired and reported document
//! is held to, and how much memory the check-in's shadow cache may hold.
//! Set by `shadow_max_document_kib`, `shadow_max_keys`,
//! `shadow_max_groups` and `shadow_cache_mib` (flags, environment or the
//! TOML file, as every setting); `docs/operations.md` explains them.

use super::ConfigError;
use airlift_store::ShadowLimits;

/// Largest document a server may be set to accept, in KiB. A report of
/// such a document, its reason and its JSON escapes still fit in the
/// device API's body limit (256 KiB).
pub const MAX_DOCUMENT_KIB: u64 = 192;
/// Most top-level keys a server may be set to accept in one document.
pub const MAX_KEYS: u64 = 10_000;
/// Most group documents a server may be set to keep. Every instance holds
/// all of them in memory for check-ins.
pub const MAX_GROUPS: u64 = 100_000;
/// Most memory the shadow cache may be given, in MiB.
pub const MAX_CACHE_MIB: u64 = 64 * 1024;
/// The cache's default size, in MiB.
pub const DEFAULT_CACHE_MIB: u64 = 64;

/// The shadow settings, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowSettings {
    /// Bounds on documents.
    pub limits: ShadowLimits,
    /// Bytes of device documents the check-in cache may hold (group
    /// documents are held apart, bounded by `limits.max_groups`).
    pub cache_bytes: u64,
}

impl Default for ShadowSettings {
    fn default() -> Self {
        Self {
            limits: ShadowLimits::default(),
            cache_bytes: DEFAULT_CACHE_MIB * 1024 * 1024,
        }
    }
}

/// The raw values, as given (`None`: the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawShadow {
    /// `shadow_max_document_kib`.
    pub max_document_kib: Option<u64>,
    /// `shadow_max_keys`.
    pub max_keys: Option<u64>,
    /// `shadow_max_groups`.
    pub max_groups: Option<u64>,
    /// `shadow_cache_mib`.
    pub cache_mib: Option<u64>,
}

/// The settings `raw` names, each within its bounds.
pub fn validate(raw: RawShadow) -> Result<ShadowSettings, ConfigError> {
    let defaults = ShadowLimits::default();
    let kib = bounded(
        "shadow_max_document_kib",
        raw.max_document_kib,
        (defaults.max_document_bytes / 1024) as u64,
        MAX_DOCUMENT_KIB,
    )?;
    let keys = bounded(
        "shadow_max_keys",
        raw.max_keys,
        defaults.max_keys as u64,
        MAX_KEYS,
    )?;
    let max_groups = bounded(
        "shadow_max_groups",
        raw.max_groups,
        defaults.max_groups,
        MAX_GROUPS,
    )?;
    let cache_mib = bounded(
        "shadow_cache_mib",
        raw.cache_mib,
        DEFAULT_CACHE_MIB,
        MAX_CACHE_MIB,
    )?;
    Ok(ShadowSettings {
        limits: ShadowLimits {
            // Both within bounds far below usize::MAX, on any target.
            max_document_bytes: usize::try_from(kib * 1024).unwrap_or(usize::MAX),
            max_keys: usize::try_from(keys).unwrap_or(usize::MAX),
            max_groups,
        },
        cache_bytes: cache_mib * 1024 * 1024,
    })
}

/// `value` (or `default`), checked to be within `1..=max`.
fn bounded(name: &str, value: Option<u64>, default: u64, max: u64) -> Result<u64, ConfigError> {
    match value.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n),
        n => Err(ConfigError::Invalid(format!(
            "{name} is {n}: it must be between 1 and {max} (flag --{}, environment AIRLIFT_{})",
            name.replace('_', "-"),
            name.to_uppercase()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Args, Config};
    use clap::{CommandFactory, Parser};

    fn config(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["airlift-server"];
        argv.extend_from_slice(extra);
        Config::from_args(Args::parse_from(argv), None)
    }

    #[test]
    fn defaults_are_the_stores_limits_and_64_mib_of_cache() {
        let shadow = config(&[]).expect("valid").shadow;
        assert_eq!(shadow, ShadowSettings::default());
        assert_eq!(shadow.limits.max_document_bytes, 64 * 1024);
        assert_eq!(shadow.limits.max_keys, 256);
        assert_eq!(shadow.limits.max_groups, 1000);
        assert_eq!(shadow.cache_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn flags_the_file_and_the_environment_set_them_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "shadow_max_document_kib = 8\nshadow_max_groups = 50\nshadow_cache_mib = 2\n",
        )
        .expect("write");
        let path = file.to_string_lossy().into_owned();
        let shadow = config(&["--config", &path, "--shadow-max-groups", "70"])
            .expect("valid")
            .shadow;
        assert_eq!(shadow.limits.max_document_bytes, 8 * 1024);
        assert_eq!(shadow.limits.max_groups, 70);
        assert_eq!(shadow.cache_bytes, 2 * 1024 * 1024);
        // Only this test reads this variable.
        std::env::set_var("AIRLIFT_SHADOW_MAX_KEYS", "12");
        let from_env = config(&[]).map(|c| c.shadow.limits.max_keys);
        std::env::remove_var("AIRLIFT_SHADOW_MAX_KEYS");
        assert_eq!(from_env.expect("valid"), 12);
    }

    #[test]
    fn out_of_bounds_values_name_the_setting_and_its_bounds() {
        for (flag, value, bound) in [
            ("--shadow-max-document-kib", "0", "between 1 and 192"),
            ("--shadow-max-document-kib", "193", "between 1 and 192"),
            ("--shadow-max-keys", "10001", "between 1 and 10000"),
            ("--shadow-max-groups", "0", "between 1 and 100000"),
            ("--shadow-cache-mib", "65537", "between 1 and 65536"),
        ] {
            let error = config(&[flag, value]).err().map(|e| e.to_string());
            let error = error.unwrap_or_default();
            assert!(error.contains(bound), "{flag} {value}: {error}");
            assert!(error.contains(flag), "{flag} {value}: {error}");
        }
        assert!(config(&["--shadow-max-document-kib", "192"]).is_ok());
    }

    #[test]
    fn help_shows_them_under_their_heading() {
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("Device shadows:"), "{help}");
        for flag in [
            "--shadow-max-document-kib",
            "--shadow-max-keys",
            "--shadow-max-groups",
            "--shadow-cache-mib",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        assert!(help.contains("AIRLIFT_SHADOW_CACHE_MIB"));
    }
}
