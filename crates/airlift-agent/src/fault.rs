//! Fault injection for the power-cut tests: halts the agent at a chosen
//! point so that the test harness can kill it there with `SIGKILL`.
//!
//! Compiled in only with the `fault-injection` feature (the agent's own
//! tests enable it; release builds do not have it). When
//! `AIRLIFT_FAULT_HALT_AT` is set, every state save prints
//! `airlift-fault: save N` to standard error, and the agent halts — prints
//! `airlift-fault: halted …` and sleeps for ever — at
//!
//! - `save:N`: right after the Nth state save of this process (the new state
//!   is durable, none of its effects ran);
//! - `byte:N`: once the download has reached package byte N (what was
//!   received since the last checkpoint is not durable).

#[cfg(feature = "fault-injection")]
mod enabled {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    #[derive(Debug, Clone, Copy)]
    enum HaltAt {
        Never,
        Save(u64),
        Byte(u64),
    }

    fn halt_at() -> Option<HaltAt> {
        static HALT_AT: OnceLock<Option<HaltAt>> = OnceLock::new();
        *HALT_AT.get_or_init(|| {
            let value = std::env::var("AIRLIFT_FAULT_HALT_AT").ok()?;
            let parse = |n: &str| n.parse::<u64>().ok();
            Some(match value.split_once(':') {
                Some(("save", n)) => parse(n).map_or(HaltAt::Never, HaltAt::Save),
                Some(("byte", n)) => parse(n).map_or(HaltAt::Never, HaltAt::Byte),
                _ => HaltAt::Never,
            })
        })
    }

    fn halt(what: std::fmt::Arguments<'_>) -> ! {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "airlift-fault: halted {what}");
        let _ = stderr.flush();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }

    pub fn state_saved() {
        static SAVES: AtomicU64 = AtomicU64::new(0);
        let Some(halt_at) = halt_at() else { return };
        let n = SAVES.fetch_add(1, Ordering::SeqCst) + 1;
        eprintln!("airlift-fault: save {n}");
        if let HaltAt::Save(at) = halt_at {
            if n == at {
                halt(format_args!("after save {n}"));
            }
        }
    }

    pub fn downloaded(offset: u64) {
        if let Some(HaltAt::Byte(at)) = halt_at() {
            if offset >= at {
                halt(format_args!("at package byte {offset}"));
            }
        }
    }
}

#[cfg(feature = "fault-injection")]
pub(crate) use enabled::{downloaded, state_saved};

/// Without the feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn state_saved() {}

/// Without the feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn downloaded(_offset: u64) {}
