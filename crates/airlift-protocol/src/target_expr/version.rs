//! The order of installed versions, as text whose byte order is that order.
//!
//! Devices report versions as free text; the project reads them as semver
//! with an optional leading `v` (the package format's `requires` does). A
//! comparison such as `installed.rootfs < 2.4.0` must give the same answer
//! in memory (admission at check-in) and in SQL (device lists, deployment
//! creation), so both compare one *key* per version, built here: the
//! database stores it beside each installed version and compares it as
//! bytes (`COLLATE "C"` on PostgreSQL), memory compares the same strings.
//!
//! The order is semver's precedence, relaxed to any number of numeric
//! release components (1 to [`MAX_RELEASE_COMPONENTS`]; missing ones count
//! as zero, so `2.4` = `2.4.0`), numbers of any size up to 20 digits, and
//! build metadata (`+…`) ignored. Anything else (`abc`, `2024-05`, empty)
//! is not a version and compares as nothing: neither less, equal nor more.
//!
//! Key layout (all ASCII):
//! - each release component: one length character (`'0' + digits`) then
//!   its digits without leading zeros, components joined by `.`;
//! - then `-` for a release, or `,` then the pre-release identifiers for a
//!   pre-release (`,` < `-` < `.`: a pre-release sorts before its release,
//!   and a shorter release before a longer one);
//! - each pre-release identifier: `#` + length character + digits when
//!   numeric, `$` + the text when not (numeric before alphanumeric), joined
//!   by `+`, which sorts below every character an identifier may hold, so a
//!   shorter identifier sorts first and fewer identifiers sort first.

/// Most numeric components of a release (`1.2.3.4.5.6.7.8`).
pub const MAX_RELEASE_COMPONENTS: usize = 8;
/// Longest version text that gets a key, in bytes.
pub const MAX_VERSION_LEN: usize = 128;
/// Most digits of one numeric component (`u64::MAX` has 20).
const MAX_DIGITS: usize = 20;

/// The order-preserving key of `version`, or `None` when it is not a
/// version (see the module documentation).
pub fn version_key(version: &str) -> Option<String> {
    if version.is_empty() || version.len() > MAX_VERSION_LEN {
        return None;
    }
    let version = version
        .strip_prefix('v')
        .or_else(|| version.strip_prefix('V'))
        .unwrap_or(version);
    let version = version
        .split_once('+')
        .map_or(version, |(v, build)| if build.is_empty() { "" } else { v });
    let (release, pre) = match version.split_once('-') {
        Some((release, pre)) => (release, Some(pre)),
        None => (version, None),
    };
    let mut components = release
        .split('.')
        .map(number)
        .collect::<Option<Vec<&str>>>()?;
    if components.len() > MAX_RELEASE_COMPONENTS {
        return None;
    }
    while components.len() > 1 && components.last() == Some(&"0") {
        components.pop();
    }
    let mut key = String::with_capacity(version.len() * 2 + 4);
    for (index, component) in components.iter().enumerate() {
        if index > 0 {
            key.push('.');
        }
        push_number(&mut key, component);
    }
    match pre {
        None => key.push('-'),
        Some(pre) => {
            key.push(',');
            for (index, identifier) in pre.split('.').enumerate() {
                if index > 0 {
                    key.push('+');
                }
                push_identifier(&mut key, identifier)?;
            }
        }
    }
    Some(key)
}

/// The digits of a numeric component without leading zeros (`"0"` for
/// zero), or `None` when it is not one.
fn number(text: &str) -> Option<&str> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = text.trim_start_matches('0');
    let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
    (trimmed.len() <= MAX_DIGITS).then_some(trimmed)
}

fn push_number(key: &mut String, digits: &str) {
    // At most 20 digits: '0' + 20 = 'D', still one ASCII character.
    key.push(char::from(b'0' + digits.len() as u8));
    key.push_str(digits);
}

fn push_identifier(key: &mut String, identifier: &str) -> Option<()> {
    if identifier.is_empty()
        || !identifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return None;
    }
    if identifier.bytes().all(|b| b.is_ascii_digit()) {
        key.push('#');
        push_number(key, number(identifier)?);
    } else {
        key.push('$');
        key.push_str(identifier);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(v: &str) -> String {
        version_key(v).unwrap_or_else(|| panic!("{v} should be a version"))
    }

    #[test]
    fn keys_sort_as_versions() {
        // Semver's own example of precedence, then wider releases.
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2",
            "1.2.0.1",
            "1.10.0",
            "2.4.0-rc-1",
            "2.4.0-rc1",
            "2.4.0",
            "10.0.0",
            "99999999999999999999.0.0",
        ];
        for pair in ordered.windows(2) {
            assert!(key(pair[0]) < key(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn equal_versions_share_a_key() {
        for (a, b) in [
            ("2.4", "2.4.0"),
            ("v2.4.0", "2.4.0"),
            ("2.04.0", "2.4"),
            ("2.4.0+build.7", "2.4.0"),
            ("1.0.0-rc.01", "1.0.0-rc.1"),
        ] {
            assert_eq!(key(a), key(b), "{a} = {b}");
        }
    }

    #[test]
    fn text_that_is_not_a_version_has_no_key() {
        for text in [
            "",
            "abc",
            "1..2",
            "1.2.",
            "1.2.3-",
            "1.2.3-rc..1",
            "1.2.3-rc_1",
            "1.2.3+",
            "1.2.3.4.5.6.7.8.9",
            "123456789012345678901.0",
            "١.٢",
        ] {
            assert_eq!(version_key(text), None, "{text:?}");
        }
        assert_eq!(version_key(&"1.".repeat(100)), None);
    }

    fn numeric() -> impl Strategy<Value = u64> {
        prop_oneof![0..12u64, any::<u64>()]
    }

    fn identifier() -> impl Strategy<Value = semver::Prerelease> {
        proptest::collection::vec(
            prop_oneof!["[0-9]{1,3}", "[a-zA-Z-][a-zA-Z0-9-]{0,4}"],
            1..4,
        )
        .prop_filter_map("valid pre-release", |ids| {
            let ids: Vec<String> = ids
                .into_iter()
                .map(|id| {
                    // Semver refuses leading zeros in numbers.
                    if id.bytes().all(|b| b.is_ascii_digit()) {
                        id.trim_start_matches('0').to_owned() + "0"
                    } else {
                        id
                    }
                })
                .collect();
            semver::Prerelease::new(&ids.join(".")).ok()
        })
    }

    fn semver_version() -> impl Strategy<Value = semver::Version> {
        (
            numeric(),
            numeric(),
            numeric(),
            proptest::option::of(identifier()),
        )
            .prop_map(|(major, minor, patch, pre)| semver::Version {
                pre: pre.unwrap_or(semver::Prerelease::EMPTY),
                ..semver::Version::new(major, minor, patch)
            })
    }

    proptest! {
        /// The keys' byte order is semver's precedence.
        #[test]
        fn key_order_is_semver_order(a in semver_version(), b in semver_version()) {
            let (ka, kb) = (key(&a.to_string()), key(&b.to_string()));
            prop_assert_eq!(ka.cmp(&kb), a.cmp_precedence(&b), "{} vs {}", a, b);
        }
    }
}
