//! The benchmark's parameters, from `AIRLIFT_BENCH_*` environment variables.

use std::time::Duration;

/// Devices enrolled for the realistic scenario unless told otherwise.
pub const COLD_DEVICES: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct Params {
    /// Devices of the best case (the first of those enrolled).
    pub devices: usize,
    /// Devices of the realistic scenario, each checking in once per pass
    /// (0: no realistic scenario).
    pub cold_devices: usize,
    /// Ceiling and airlift-server samples per scenario, taken in turns.
    pub rounds: usize,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub client_threads: usize,
    /// Enrolments in flight at once.
    pub enrol_concurrency: usize,
    pub package_mib: u64,
    pub download_runs: usize,
    /// Servers on one core and the download client on another while
    /// downloads are measured (`AIRLIFT_BENCH_PIN=0` turns it off; needs two
    /// cores).
    pub pin_downloads: bool,
    /// Only the downloads, from one enrolled device
    /// (`AIRLIFT_BENCH_DOWNLOADS_ONLY=1`): to measure a change to serving.
    pub downloads_only: bool,
    pub keep: bool,
}

impl Params {
    pub fn from_env() -> Self {
        let number = |name: &str, default: u64| -> u64 {
            match std::env::var(name) {
                Ok(value) => value
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={value} is not a whole number")),
                Err(_) => default,
            }
        };
        Self {
            devices: number("AIRLIFT_BENCH_DEVICES", 1000).max(1) as usize,
            cold_devices: number("AIRLIFT_BENCH_COLD_DEVICES", COLD_DEVICES) as usize,
            rounds: number("AIRLIFT_BENCH_ROUNDS", 3).max(1) as usize,
            concurrency: number("AIRLIFT_BENCH_CONCURRENCY", 64).max(1) as usize,
            duration: Duration::from_secs(number("AIRLIFT_BENCH_SECS", 10).max(1)),
            warmup: Duration::from_secs(number("AIRLIFT_BENCH_WARMUP_SECS", 2)),
            client_threads: number("AIRLIFT_BENCH_CLIENT_THREADS", 2).max(1) as usize,
            enrol_concurrency: number("AIRLIFT_BENCH_ENROL_CONCURRENCY", 32).max(1) as usize,
            package_mib: number("AIRLIFT_BENCH_PACKAGE_MIB", 256),
            download_runs: number("AIRLIFT_BENCH_DOWNLOAD_RUNS", 5).max(1) as usize,
            pin_downloads: number("AIRLIFT_BENCH_PIN", 1) != 0
                && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2),
            downloads_only: number("AIRLIFT_BENCH_DOWNLOADS_ONLY", 0) != 0,
            keep: std::env::var_os("AIRLIFT_BENCH_KEEP").is_some(),
        }
    }

    /// Devices to enrol: enough for both scenarios.
    pub fn enrolled(&self) -> usize {
        if self.downloads_only {
            return 1;
        }
        self.devices.max(self.cold_devices)
    }
}
