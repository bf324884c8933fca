//! Stable choices: which devices get which fault, type and attributes.
//!
//! Every choice is a function of (seed, purpose, serial) through SHA-256, so
//! the same flags pick the same devices on every run, on every machine, and
//! each purpose picks independently of the others (the devices that lose
//! power are not the devices with a flaky network).

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A number in `[0, 1)` fixed by `(seed, purpose, serial)`.
pub fn fraction(seed: u64, purpose: &str, serial: &str) -> f64 {
    let mut hash = Sha256::new();
    hash.update(seed.to_le_bytes());
    hash.update(purpose.as_bytes());
    hash.update([0]);
    hash.update(serial.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits: every value is exact in an f64.
    (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// A share of the fleet, 0–100 %.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Share(f64);

impl Share {
    /// No device.
    pub const NONE: Share = Share(0.0);

    /// `percent` % of the devices, if it is within 0–100.
    pub fn percent(percent: f64) -> Result<Self, ParseError> {
        if (0.0..=100.0).contains(&percent) {
            Ok(Share(percent))
        } else {
            Err(ParseError(format!(
                "a share is a percentage from 0 to 100, not {percent}"
            )))
        }
    }

    /// The percentage.
    pub fn as_percent(&self) -> f64 {
        self.0
    }

    /// Whether the device `serial` is in this share for `purpose`.
    pub fn selects(&self, seed: u64, purpose: &str, serial: &str) -> bool {
        fraction(seed, purpose, serial) * 100.0 < self.0
    }
}

impl FromStr for Share {
    type Err = ParseError;

    /// `40`, `40%` or `12.5`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = text.trim().trim_end_matches('%').trim();
        let percent = number.parse::<f64>().map_err(|_| {
            ParseError(format!(
                "{text:?} is not a percentage (write e.g. 40 or 12.5%)"
            ))
        })?;
        if percent.is_nan() {
            return Err(ParseError(format!("{text:?} is not a percentage")));
        }
        Share::percent(percent)
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// A text that is not a share or a mix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A weighted choice among values, e.g. `pi4:70,pi5:30` (weights are
/// relative; a missing weight is 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Mix<T> {
    choices: Vec<(T, f64)>,
    total: f64,
}

impl<T> Mix<T> {
    /// One value for every device.
    pub fn single(value: T) -> Self {
        Mix {
            choices: vec![(value, 1.0)],
            total: 1.0,
        }
    }

    /// The values and their weights.
    pub fn choices(&self) -> impl Iterator<Item = (&T, f64)> {
        self.choices.iter().map(|(value, weight)| (value, *weight))
    }

    /// The value the device `serial` gets for `purpose`.
    pub fn pick(&self, seed: u64, purpose: &str, serial: &str) -> &T {
        let mut point = fraction(seed, purpose, serial) * self.total;
        for (value, weight) in &self.choices {
            if point < *weight {
                return value;
            }
            point -= weight;
        }
        // Rounding at the very top: the last value with a weight.
        let last = self.choices.iter().rev().find(|(_, w)| *w > 0.0);
        &last.unwrap_or(&self.choices[0]).0
    }

    /// Parses `value[:weight],…`, each value with `parse`.
    pub fn parse_with(
        text: &str,
        parse: impl Fn(&str) -> Result<T, ParseError>,
    ) -> Result<Self, ParseError> {
        let mut choices = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (value, weight) = match item.rsplit_once(':') {
                Some((value, weight)) => {
                    let weight =
                        weight
                            .trim()
                            .trim_end_matches('%')
                            .parse::<f64>()
                            .map_err(|_| {
                                ParseError(format!(
                                    "{item:?}: the weight after ':' is not a number"
                                ))
                            })?;
                    (value, weight)
                }
                None => (item, 1.0),
            };
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(ParseError(format!(
                    "{item:?}: a weight must be a number of 0 or more"
                )));
            }
            choices.push((parse(value.trim())?, weight));
        }
        let total: f64 = choices.iter().map(|(_, w)| w).sum();
        if choices.is_empty() || total <= 0.0 {
            return Err(ParseError(format!(
                "{text:?}: list at least one value with a weight above 0, e.g. pi4:70,pi5:30"
            )));
        }
        Ok(Mix { choices, total })
    }
}

/// A device type: not empty, no spaces.
pub fn device_type(text: &str) -> Result<String, ParseError> {
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        return Err(ParseError(format!(
            "{text:?} is not a device type (one word, e.g. pi4)"
        )));
    }
    Ok(text.to_owned())
}

/// One inventory attribute, `key=value`.
pub fn attribute(text: &str) -> Result<(String, String), ParseError> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(ParseError(format!(
            "{text:?} is not an attribute (write key=value, e.g. region=eu)"
        ))),
    }
}

impl FromStr for Mix<String> {
    type Err = ParseError;

    /// Device types: `pi4:70,pi5:30`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Mix::parse_with(text, device_type)
    }
}

impl FromStr for Mix<(String, String)> {
    type Err = ParseError;

    /// Attribute values: `region=eu:50,region=us:50`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Mix::parse_with(text, attribute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serials(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("sim-{i:05}")).collect()
    }

    #[test]
    fn fractions_are_stable_and_spread() {
        assert_eq!(
            fraction(1, "health", "sim-1"),
            fraction(1, "health", "sim-1")
        );
        assert_ne!(
            fraction(1, "health", "sim-1"),
            fraction(2, "health", "sim-1")
        );
        assert_ne!(
            fraction(1, "health", "sim-1"),
            fraction(1, "power", "sim-1")
        );
        let all: Vec<f64> = serials(10_000)
            .iter()
            .map(|s| fraction(7, "x", s))
            .collect();
        assert!(all.iter().all(|f| (0.0..1.0).contains(f)));
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn a_share_selects_about_its_percentage_and_always_the_same_devices() {
        let share: Share = "40".parse().expect("share");
        let serials = serials(5000);
        let picked: Vec<&String> = serials
            .iter()
            .filter(|s| share.selects(3, "health", s))
            .collect();
        let ratio = picked.len() as f64 / serials.len() as f64;
        assert!((ratio - 0.40).abs() < 0.03, "{ratio}");
        let again: Vec<&String> = serials
            .iter()
            .filter(|s| share.selects(3, "health", s))
            .collect();
        assert_eq!(picked, again);
        // Growing the share keeps the devices already picked.
        let more: Share = "60%".parse().expect("share");
        assert!(picked.iter().all(|s| more.selects(3, "health", s)));
        assert!(!serials.iter().any(|s| Share::NONE.selects(3, "health", s)));
        let all: Share = "100".parse().expect("share");
        assert!(serials.iter().all(|s| all.selects(3, "health", s)));
    }

    #[test]
    fn shares_outside_0_to_100_or_not_numbers_are_refused() {
        for bad in ["-1", "100.5", "forty", "", "NaN"] {
            assert!(bad.parse::<Share>().is_err(), "{bad}");
        }
        assert_eq!("12.5%".parse::<Share>().map(|s| s.as_percent()), Ok(12.5));
    }

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let types: Mix<String> = "pi4:70,pi5:30".parse().expect("mix");
        let serials = serials(5000);
        let pi4 = serials
            .iter()
            .filter(|s| types.pick(1, "type", s) == "pi4")
            .count();
        let ratio = pi4 as f64 / serials.len() as f64;
        assert!((ratio - 0.7).abs() < 0.03, "{ratio}");

        let regions: Mix<(String, String)> = "region=eu:50, region=us:50".parse().expect("mix");
        let values: Vec<_> = regions.choices().map(|(v, _)| v.1.clone()).collect();
        assert_eq!(values, ["eu", "us"]);
        let unweighted: Mix<String> = "a,b".parse().expect("mix");
        assert_eq!(unweighted.choices().map(|(_, w)| w).sum::<f64>(), 2.0);
        let never: Mix<String> = "a:0,b:1".parse().expect("mix");
        assert!(serials.iter().all(|s| never.pick(1, "t", s) == "b"));
    }

    #[test]
    fn bad_mixes_say_what_is_wrong() {
        for (bad, says) in [
            ("", "at least one"),
            ("pi4:x", "weight"),
            ("pi4:-2", "weight"),
            ("a:0", "at least one"),
            ("pi 4:1", "device type"),
        ] {
            let error = bad.parse::<Mix<String>>().expect_err(bad);
            assert!(error.0.contains(says), "{bad}: {error}");
        }
        let error = "region:50"
            .parse::<Mix<(String, String)>>()
            .expect_err("no =");
        assert!(error.0.contains("key=value"), "{error}");
    }
}
