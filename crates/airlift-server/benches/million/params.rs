//! The benchmark's parameters, from `AIRLIFT_BENCH_*` environment
//! variables, each bounded.

use anyhow::{ensure, Context, Result};
use std::time::Duration;

/// What to seed and how hard to load it.
#[derive(Debug, Clone)]
pub struct Params {
    /// Accepted devices seeded (`AIRLIFT_BENCH_DEVICES`, 1 000 000).
    pub devices: usize,
    /// Check-ins a second the generator sends (`AIRLIFT_BENCH_RATE`, 3 300:
    /// a million devices polling every 5 minutes).
    pub rate: u64,
    /// Length of the measured load (`AIRLIFT_BENCH_SECS`, 60); every
    /// check-in of it is a different device.
    pub duration: Duration,
    /// Every `rollout_every`-th device carries the rollout's tag
    /// (`AIRLIFT_BENCH_ROLLOUT_EVERY`, 10: 100 000 of a million).
    pub rollout_every: usize,
    /// Soak of each rollout phase, seconds (`AIRLIFT_BENCH_SOAK_SECS`, 3).
    pub soak_secs: u64,
    /// Share of a phase's devices that must have succeeded before it soaks
    /// (`AIRLIFT_BENCH_SUCCESS_PERCENT`, 2).
    pub success_percent: u64,
    /// Auth requests in flight during the warm-up
    /// (`AIRLIFT_BENCH_AUTH_CONCURRENCY`, 32).
    pub auth_concurrency: usize,
    /// Package size for the download figures, MiB
    /// (`AIRLIFT_BENCH_PACKAGE_MIB`, 64; 0 skips them).
    pub package_mib: u64,
    /// Downloads per kind (`AIRLIFT_BENCH_DOWNLOAD_RUNS`, 5).
    pub download_runs: usize,
}

impl Params {
    pub fn from_env() -> Result<Self> {
        let params = Self {
            devices: number("AIRLIFT_BENCH_DEVICES", 1_000_000, 1_000, 10_000_000)? as usize,
            rate: number("AIRLIFT_BENCH_RATE", 3_300, 1, 100_000)?,
            duration: Duration::from_secs(number("AIRLIFT_BENCH_SECS", 60, 1, 3_600)?),
            rollout_every: number("AIRLIFT_BENCH_ROLLOUT_EVERY", 10, 1, 1_000)? as usize,
            soak_secs: number("AIRLIFT_BENCH_SOAK_SECS", 3, 0, 3_600)?,
            success_percent: number("AIRLIFT_BENCH_SUCCESS_PERCENT", 2, 0, 100)?,
            auth_concurrency: number("AIRLIFT_BENCH_AUTH_CONCURRENCY", 32, 1, 1_024)? as usize,
            package_mib: number("AIRLIFT_BENCH_PACKAGE_MIB", 64, 0, 4_096)?,
            download_runs: number("AIRLIFT_BENCH_DOWNLOAD_RUNS", 5, 1, 100)? as usize,
        };
        ensure!(
            params.checking_in() <= params.devices,
            "AIRLIFT_BENCH_RATE × AIRLIFT_BENCH_SECS = {} check-ins, more than the {} devices: \
             each check-in of the run is a different device",
            params.checking_in(),
            params.devices
        );
        Ok(params)
    }

    /// Devices that check in during the measured load (each once).
    pub fn checking_in(&self) -> usize {
        (self.rate * self.duration.as_secs()) as usize
    }

    /// Devices carrying the rollout's tag.
    pub fn tagged(&self) -> usize {
        self.devices.div_ceil(self.rollout_every)
    }

    /// Whether device `index` carries the rollout's tag.
    pub fn is_tagged(&self, index: usize) -> bool {
        index % self.rollout_every == 0
    }

    /// The environment that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "AIRLIFT_BENCH_DEVICES={} AIRLIFT_BENCH_RATE={} AIRLIFT_BENCH_SECS={} \
             AIRLIFT_BENCH_PACKAGE_MIB={} cargo bench -p airlift-server --bench million",
            self.devices,
            self.rate,
            self.duration.as_secs(),
            self.package_mib
        )
    }
}

/// `name` as a whole number in `low..=high`, or `default` when unset.
fn number(name: &str, default: u64, low: u64, high: u64) -> Result<u64> {
    let Ok(text) = std::env::var(name) else {
        return Ok(default);
    };
    let value: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("{name}={text:?} is not a whole number"))?;
    ensure!(
        (low..=high).contains(&value),
        "{name}={value} is out of range {low}..={high}"
    );
    Ok(value)
}
