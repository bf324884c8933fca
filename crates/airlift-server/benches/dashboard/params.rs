//! The benchmark's parameters, from the environment.

use anyhow::{Context, Result};

/// What to seed and how much to measure.
#[derive(Debug, Clone)]
pub struct Params {
    /// Devices in the fleet (`AIRLIFT_BENCH_DEVICES`, 100 000).
    pub devices: usize,
    /// Deployments (`AIRLIFT_BENCH_DEPLOYMENTS`, 1 000).
    pub deployments: usize,
    /// Requests per page kind (`AIRLIFT_BENCH_SAMPLES`, 300).
    pub samples: usize,
    /// Changes timed on an open deployment page (`AIRLIFT_BENCH_LIVE_SAMPLES`, 25).
    pub live_samples: usize,
    /// Open dashboards for the memory figure (`AIRLIFT_BENCH_DASHBOARDS`, 200).
    pub dashboards: usize,
    /// Store calls in flight while seeding (`AIRLIFT_BENCH_SEED_CONCURRENCY`, 16).
    pub seed_concurrency: usize,
}

impl Params {
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            devices: number("AIRLIFT_BENCH_DEVICES", 100_000, 1_000, 10_000_000)?,
            deployments: number("AIRLIFT_BENCH_DEPLOYMENTS", 1_000, 40, 100_000)?,
            samples: number("AIRLIFT_BENCH_SAMPLES", 300, 5, 100_000)?,
            live_samples: number("AIRLIFT_BENCH_LIVE_SAMPLES", 25, 5, 10_000)?,
            dashboards: number("AIRLIFT_BENCH_DASHBOARDS", 200, 1, 5_000)?,
            seed_concurrency: number("AIRLIFT_BENCH_SEED_CONCURRENCY", 16, 1, 256)?,
        })
    }

    /// The environment that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "AIRLIFT_BENCH_DEVICES={} AIRLIFT_BENCH_DEPLOYMENTS={} AIRLIFT_BENCH_SAMPLES={} \
             AIRLIFT_BENCH_LIVE_SAMPLES={} AIRLIFT_BENCH_DASHBOARDS={} \
             cargo bench -p airlift-server --bench dashboard",
            self.devices, self.deployments, self.samples, self.live_samples, self.dashboards
        )
    }
}

/// `name` as a number in `low..=high`, or `default` when unset.
fn number(name: &str, default: usize, low: usize, high: usize) -> Result<usize> {
    let Ok(text) = std::env::var(name) else {
        return Ok(default);
    };
    let value: usize = text
        .trim()
        .parse()
        .with_context(|| format!("{name}={text:?} is not a number"))?;
    anyhow::ensure!(
        (low..=high).contains(&value),
        "{name}={value} is out of range {low}..={high}"
    );
    Ok(value)
}
