//! The trial-boot variables and the transitions on them, without I/O: each
//! transition reads [`BootVars`] and returns the writes to make in one go.
//! All three backends share these, so they cannot disagree on the rules.

use std::collections::BTreeMap;

use super::{BootError, BootOutcome, Slot};

/// The `bootlimit` a trial gets when the environment has none.
pub const DEFAULT_BOOTLIMIT: u32 = 3;

pub(crate) const SLOT: &str = "airlift_slot";
pub(crate) const UPGRADE_AVAILABLE: &str = "upgrade_available";
pub(crate) const BOOTCOUNT: &str = "bootcount";
pub(crate) const BOOTLIMIT: &str = "bootlimit";

/// The variables [`BootVars`] is made of.
pub(crate) const NAMES: [&str; 4] = [SLOT, UPGRADE_AVAILABLE, BOOTCOUNT, BOOTLIMIT];

/// Variables to write together, in one tool invocation or file write.
pub(crate) type Writes = Vec<(&'static str, String)>;

/// The trial-boot variables of a boot environment, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootVars {
    /// `airlift_slot`; `None` when unset, which the bootloader scripts boot
    /// as `a`.
    pub slot: Option<Slot>,
    /// `upgrade_available == 1`.
    pub upgrade_available: bool,
    /// `bootcount`; 0 when unset.
    pub bootcount: u32,
    /// `bootlimit`; `None` when unset.
    pub bootlimit: Option<u32>,
}

impl BootVars {
    /// Parses the variables from `lookup` (a name to its value, `None` or
    /// empty when unset: U-Boot deletes a variable set to the empty string).
    /// `location` names where they came from, for the error.
    pub(crate) fn parse<'a>(
        location: &str,
        lookup: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, BootError> {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let invalid = |name: &str, value: &str, expected: &str| BootError::InvalidEnv {
            location: location.to_owned(),
            reason: format!("{name} is {value:?}; expected {expected}"),
        };
        let slot = get(SLOT)
            .map(|v| {
                v.parse::<Slot>()
                    .map_err(|_| invalid(SLOT, v, "`a` or `b`"))
            })
            .transpose()?;
        let upgrade_available = match get(UPGRADE_AVAILABLE) {
            None | Some("0") => false,
            Some("1") => true,
            Some(v) => return Err(invalid(UPGRADE_AVAILABLE, v, "0 or 1")),
        };
        let number = |name: &str| {
            get(name)
                .map(|v| parse_u32(v).ok_or_else(|| invalid(name, v, "a decimal number")))
                .transpose()
        };
        Ok(BootVars {
            slot,
            upgrade_available,
            bootcount: number(BOOTCOUNT)?.unwrap_or(0),
            bootlimit: number(BOOTLIMIT)?,
        })
    }

    /// The slot the bootloader boots next: `airlift_slot`, or `a` when unset
    /// (the documented scripts' default).
    pub fn next_slot(&self) -> Slot {
        self.slot.unwrap_or(Slot::A)
    }

    /// `bootlimit`, or [`DEFAULT_BOOTLIMIT`] when unset.
    pub fn effective_bootlimit(&self) -> u32 {
        self.bootlimit.unwrap_or(DEFAULT_BOOTLIMIT)
    }
}

/// Digits only: `u32::from_str` also takes `+7`, which no bootloader writes.
fn parse_u32(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Picks our variables out of a tool's `name=value` listing (one variable a
/// line, as `grub-editenv list` and `fw_printenv` print them). Lines of other
/// variables are skipped: their values may hold newlines, which both tools
/// print raw. One of our variables appearing twice is an error, never a guess.
pub(crate) fn pick_from_listing(
    location: &str,
    listing: &str,
) -> Result<BTreeMap<&'static str, String>, BootError> {
    let mut found = BTreeMap::new();
    for line in listing.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let Some(&name) = NAMES.iter().find(|n| **n == name) else {
            continue;
        };
        if found.insert(name, value.to_owned()).is_some() {
            return Err(BootError::InvalidEnv {
                location: location.to_owned(),
                reason: format!("{name} appears more than once in the listing"),
            });
        }
    }
    Ok(found)
}

/// Checks that a listing read back after `command` wrote `writes` holds
/// them: a tool that exits 0 without writing (or writing something else)
/// must not pass for a transition.
pub(crate) fn verify_writes(
    picked: &BTreeMap<&'static str, String>,
    writes: &Writes,
    command: &str,
    hint: &'static str,
) -> Result<(), BootError> {
    for (name, expected) in writes {
        let found = picked.get(name);
        if found != Some(expected) {
            return Err(BootError::NotApplied {
                command: command.to_owned(),
                variable: name,
                expected: expected.clone(),
                found: found.cloned(),
                hint,
            });
        }
    }
    Ok(())
}

/// The writes that arm a trial boot of `slot` while `running` runs.
pub(crate) fn start_trial(vars: &BootVars, running: Slot, slot: Slot) -> Result<Writes, BootError> {
    if slot == running {
        return Err(BootError::TrialOfRunningSlot { slot });
    }
    if vars.upgrade_available && vars.next_slot() != slot {
        return Err(BootError::TrialPending {
            requested: slot,
            pending: vars.next_slot(),
        });
    }
    if vars.bootlimit == Some(0) {
        return Err(BootError::FallbackDisabled);
    }
    let mut writes = vec![
        (SLOT, slot.to_string()),
        (UPGRADE_AVAILABLE, "1".to_owned()),
        (BOOTCOUNT, "0".to_owned()),
    ];
    if vars.bootlimit.is_none() {
        writes.push((BOOTLIMIT, DEFAULT_BOOTLIMIT.to_string()));
    }
    Ok(writes)
}

/// The writes that commit the trial `running` is in; none when no trial is
/// pending and `running` is what boots next anyway.
pub(crate) fn commit(vars: &BootVars, running: Slot) -> Result<Writes, BootError> {
    let next = vars.next_slot();
    if running != next {
        return Err(BootError::NotInTrialSlot {
            running,
            next,
            trial: vars.upgrade_available,
        });
    }
    if !vars.upgrade_available {
        return Ok(Writes::new());
    }
    Ok(vec![
        (UPGRADE_AVAILABLE, "0".to_owned()),
        (BOOTCOUNT, "0".to_owned()),
    ])
}

/// The writes that give up a trial and boot `previous` next.
pub(crate) fn abandon_trial(previous: Slot) -> Writes {
    vec![
        (SLOT, previous.to_string()),
        (UPGRADE_AVAILABLE, "0".to_owned()),
        (BOOTCOUNT, "0".to_owned()),
    ]
}

/// What the bootloader does on power-up, as U-Boot's bootcount feature
/// (`CONFIG_BOOTCOUNT_LIMIT` with `CONFIG_BOOTCOUNT_ENV`) does it: during a
/// trial, count the boot, and past `bootlimit` run the fallback instead. Like
/// U-Boot, a `bootlimit` of 0 never falls back. Returns the writes the
/// bootloader saves (none on a normal boot) and what booted.
pub(crate) fn power_up(vars: &BootVars) -> (Writes, BootOutcome) {
    let slot = vars.next_slot();
    if !vars.upgrade_available {
        let outcome = BootOutcome {
            slot,
            trial: false,
            fell_back: false,
        };
        return (Writes::new(), outcome);
    }
    let bootcount = vars.bootcount.saturating_add(1);
    let limit = vars.effective_bootlimit();
    if limit != 0 && bootcount > limit {
        let fallback = slot.other();
        let outcome = BootOutcome {
            slot: fallback,
            trial: false,
            fell_back: true,
        };
        return (abandon_trial(fallback), outcome);
    }
    let outcome = BootOutcome {
        slot,
        trial: true,
        fell_back: false,
    };
    (vec![(BOOTCOUNT, bootcount.to_string())], outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Result<BootVars, BootError> {
        BootVars::parse("test", |name| {
            pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        })
    }

    #[test]
    fn unset_and_empty_variables_take_the_bootloader_defaults() -> Result<(), BootError> {
        let expected = BootVars {
            slot: None,
            upgrade_available: false,
            bootcount: 0,
            bootlimit: None,
        };
        assert_eq!(vars(&[])?, expected);
        let empty = [
            (SLOT, ""),
            (UPGRADE_AVAILABLE, ""),
            (BOOTCOUNT, ""),
            (BOOTLIMIT, ""),
        ];
        assert_eq!(vars(&empty)?, expected);
        assert_eq!(expected.next_slot(), Slot::A);
        assert_eq!(expected.effective_bootlimit(), DEFAULT_BOOTLIMIT);
        Ok(())
    }

    #[test]
    fn values_the_bootloader_logic_does_not_expect_are_refused() {
        for (name, value) in [
            (SLOT, "c"),
            (SLOT, "A"),
            (UPGRADE_AVAILABLE, "2"),
            (UPGRADE_AVAILABLE, "yes"),
            (BOOTCOUNT, "-1"),
            (BOOTCOUNT, "+1"),
            (BOOTCOUNT, "1 "),
            (BOOTCOUNT, "99999999999"),
            (BOOTLIMIT, "three"),
        ] {
            let err = vars(&[(name, value)]).err().map(|e| e.to_string());
            let message = err.unwrap_or_default();
            assert!(
                message.contains(name) && message.contains(&format!("{value:?}")),
                "{name}={value}: {message}"
            );
        }
    }

    #[test]
    fn listings_give_our_variables_and_refuse_duplicates() -> Result<(), BootError> {
        let listing = "saved_entry=0\nbootcmd=echo one\necho bootcount=9\nairlift_slot=b\nbootcount=2\nbootlimit=\n";
        let picked = pick_from_listing("test", listing)?;
        assert_eq!(picked.get(SLOT).map(String::as_str), Some("b"));
        assert_eq!(picked.get(BOOTCOUNT).map(String::as_str), Some("2"));
        assert_eq!(picked.get(BOOTLIMIT).map(String::as_str), Some(""));
        assert_eq!(picked.get(UPGRADE_AVAILABLE), None);

        let err = pick_from_listing("test", "bootcount=1\nbootcount=2\n").err();
        assert!(matches!(err, Some(BootError::InvalidEnv { .. })), "{err:?}");
        Ok(())
    }

    #[test]
    fn power_up_counts_trial_boots_and_falls_back_on_the_one_past_the_limit(
    ) -> Result<(), BootError> {
        let mut current = vars(&[(SLOT, "b"), (UPGRADE_AVAILABLE, "1"), (BOOTLIMIT, "2")])?;
        for expected_count in 1..=2 {
            let (writes, outcome) = power_up(&current);
            assert_eq!(
                outcome,
                BootOutcome {
                    slot: Slot::B,
                    trial: true,
                    fell_back: false
                }
            );
            assert_eq!(writes, vec![(BOOTCOUNT, expected_count.to_string())]);
            current.bootcount = expected_count;
        }
        let (writes, outcome) = power_up(&current);
        assert_eq!(
            outcome,
            BootOutcome {
                slot: Slot::A,
                trial: false,
                fell_back: true
            }
        );
        assert_eq!(writes, abandon_trial(Slot::A));
        Ok(())
    }

    #[test]
    fn power_up_with_bootlimit_zero_never_falls_back_like_u_boot() -> Result<(), BootError> {
        let current = vars(&[
            (SLOT, "b"),
            (UPGRADE_AVAILABLE, "1"),
            (BOOTCOUNT, "4000000000"),
            (BOOTLIMIT, "0"),
        ])?;
        let (_, outcome) = power_up(&current);
        assert!(outcome.trial && !outcome.fell_back);
        Ok(())
    }

    #[test]
    fn a_normal_boot_writes_nothing() -> Result<(), BootError> {
        let (writes, outcome) = power_up(&vars(&[(SLOT, "b"), (BOOTCOUNT, "7")])?);
        assert!(writes.is_empty());
        assert_eq!(
            outcome,
            BootOutcome {
                slot: Slot::B,
                trial: false,
                fell_back: false
            }
        );
        Ok(())
    }

    #[test]
    fn start_trial_sets_bootlimit_only_when_unset() -> Result<(), BootError> {
        let writes = start_trial(&vars(&[])?, Slot::A, Slot::B)?;
        assert!(writes.contains(&(BOOTLIMIT, "3".to_owned())));
        let writes = start_trial(&vars(&[(BOOTLIMIT, "5")])?, Slot::A, Slot::B)?;
        assert!(writes.iter().all(|(name, _)| *name != BOOTLIMIT));
        Ok(())
    }

    #[test]
    fn commit_outside_a_trial_is_a_no_op_only_on_the_slot_that_boots_next() -> Result<(), BootError>
    {
        assert!(commit(&vars(&[(SLOT, "b")])?, Slot::B)?.is_empty());
        let err = commit(&vars(&[(SLOT, "b")])?, Slot::A).err();
        assert!(
            matches!(err, Some(BootError::NotInTrialSlot { trial: false, .. })),
            "{err:?}"
        );
        Ok(())
    }
}
