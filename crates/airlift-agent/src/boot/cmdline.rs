//! The running slot, as the bootloader told the kernel: `airlift.slot=a` on
//! the kernel command line.

use std::fs;
use std::path::Path;

use super::{BootError, Slot};

/// The kernel parameter the bootloader scripts set.
pub(crate) const PARAM: &str = "airlift.slot";

/// Where Linux shows the kernel command line.
pub(crate) const PROC_CMDLINE: &str = "/proc/cmdline";

/// Reads the running slot from the command-line file at `path`.
pub(crate) fn booted_slot(path: &Path) -> Result<Slot, BootError> {
    let text = fs::read(path).map_err(|source| BootError::Io {
        action: "reading the kernel command line",
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8_lossy(&text);
    parse(&text).map_err(|reason| BootError::BootedSlotUnknown {
        path: path.to_owned(),
        reason,
    })
}

/// Finds `airlift.slot=` among the whitespace-separated parameters. The value
/// may be quoted (`airlift.slot="a"`). More than one is fine if they agree.
fn parse(cmdline: &str) -> Result<Slot, String> {
    let mut found: Option<Slot> = None;
    for param in cmdline.split_ascii_whitespace() {
        let Some(value) = param
            .strip_prefix(PARAM)
            .and_then(|rest| rest.strip_prefix('='))
        else {
            continue;
        };
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let slot = unquoted
            .parse::<Slot>()
            .map_err(|_| format!("`{param}`: expected {PARAM}=a or {PARAM}=b"))?;
        match found {
            Some(earlier) if earlier != slot => {
                return Err(format!("both {PARAM}={earlier} and {PARAM}={slot} are set"));
            }
            _ => found = Some(slot),
        }
    }
    found.ok_or_else(|| {
        format!(
            "no {PARAM}= parameter; the bootloader must pass the slot it booted \
             (`{PARAM}=${{airlift_slot}}` in the kernel command line, see the \
             airlift_agent::boot documentation)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_slot_among_other_parameters() {
        assert_eq!(
            parse("console=ttyS0 root=/dev/sda2 airlift.slot=a quiet\n"),
            Ok(Slot::A)
        );
        assert_eq!(parse("airlift.slot=b"), Ok(Slot::B));
        assert_eq!(parse("airlift.slot=\"b\" ro"), Ok(Slot::B));
        assert_eq!(parse("airlift.slot=b airlift.slot=b"), Ok(Slot::B));
    }

    #[test]
    fn refuses_a_missing_bad_or_ambiguous_slot() {
        for cmdline in [
            "",
            "root=/dev/sda2 ro",
            "xairlift.slot=a",
            "airlift.slots=a",
            "airlift.slot=",
            "airlift.slot=c",
            "airlift.slot=a airlift.slot=b",
        ] {
            assert!(parse(cmdline).is_err(), "{cmdline:?} was accepted");
        }
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let err = booted_slot(Path::new("/nonexistent/cmdline"))
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("/nonexistent/cmdline"));
    }
}
