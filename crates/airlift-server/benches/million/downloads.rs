//! Downloads with the package in S3: time to first byte and the server's
//! CPU per GiB with offload on (the instance answers `307` to a presigned
//! URL and the object store sends the bytes) and off (the instance streams
//! the object through itself), and the throughput of the streamed
//! download against a direct ranged GET of the same object from the same
//! S3 server (`Range: bytes=0-` on the presigned URL an offloaded download
//! is sent to) — issue 17's "≥ 80 % of a direct ranged GET".
//!
//! Every download is a fresh connection read to its end and thrown away;
//! the three kinds take turns, `runs` rounds after an untimed one, so
//! other work on the machine falls on all alike.

use airlift_testkit::procfs;
use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};

/// How long each instance's CPU is sampled with no download.
const BACKGROUND_SPAN: Duration = Duration::from_secs(3);

/// One kind of download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// From the instance with offload on: `307`, then the presigned URL.
    Offloaded,
    /// From the instance with offload off: streamed through it.
    Streamed,
    /// The presigned URL itself, `Range: bytes=0-`: the object store alone.
    Direct,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Offloaded, Kind::Streamed, Kind::Direct];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Offloaded => "offload on: 307 to a presigned URL, bytes from S3",
            Kind::Streamed => "offload off: streamed through airlift-server",
            Kind::Direct => "direct ranged GET from S3 (baseline)",
        }
    }
}

/// Where to download from.
pub struct Setup {
    /// The download URL at the instance with offload on, and its pid.
    pub offloaded: (String, u32),
    /// The download URL at the instance with offload off, and its pid.
    pub streamed: (String, u32),
    pub token: String,
    pub size: u64,
}

/// What the runs of one kind measured.
#[derive(Default, Clone)]
pub struct Runs {
    pub total: Vec<Duration>,
    pub first_byte: Vec<Duration>,
    /// The serving instance's CPU seconds over all timed runs, less its
    /// CPU with no download (`background`) over the same time.
    pub server_cpu: f64,
    /// The serving instance's CPU seconds per second with no download.
    pub background: f64,
}

impl Runs {
    pub fn bytes_per_second(&self, size: u64) -> f64 {
        size as f64 / median(&self.total).as_secs_f64()
    }

    /// Server CPU seconds per GiB served.
    pub fn cpu_per_gib(&self, size: u64) -> f64 {
        let gib = (size as f64 * self.total.len() as f64) / (1u64 << 30) as f64;
        self.server_cpu / gib
    }
}

pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// Runs the three kinds in turns; per kind, what was measured.
pub async fn measure(setup: &Setup, runs: usize) -> Result<Vec<(Kind, Runs)>> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let presigned = redirect(&client, setup).await?;
    // What each instance spends with no download (its rollout engine, the
    // check-in times it writes behind), subtracted from each run's CPU.
    let pids = [setup.offloaded.1, setup.streamed.1];
    let idle_before: Vec<f64> = pids
        .iter()
        .map(|p| procfs::cpu_seconds(*p).unwrap_or(0.0))
        .collect();
    tokio::time::sleep(BACKGROUND_SPAN).await;
    let background: Vec<f64> = pids
        .iter()
        .zip(&idle_before)
        .map(|(p, before)| {
            (procfs::cpu_seconds(*p).unwrap_or(0.0) - before) / BACKGROUND_SPAN.as_secs_f64()
        })
        .collect();
    let mut results: Vec<(Kind, Runs)> = Kind::ALL.iter().map(|k| (*k, Runs::default())).collect();
    for round in 0..=runs {
        for (kind, runs) in &mut results {
            let (pid, idle_rate) = match kind {
                Kind::Offloaded => (Some(setup.offloaded.1), background[0]),
                Kind::Streamed => (Some(setup.streamed.1), background[1]),
                Kind::Direct => (None, 0.0),
            };
            let cpu = pid.and_then(procfs::cpu_seconds).unwrap_or(0.0);
            let (first_byte, total) = download(&client, setup, *kind, &presigned).await?;
            if round > 0 {
                runs.first_byte.push(first_byte);
                runs.total.push(total);
                let spent = pid.and_then(procfs::cpu_seconds).unwrap_or(0.0) - cpu;
                runs.server_cpu += (spent - idle_rate * total.as_secs_f64()).max(0.0);
                runs.background = idle_rate;
            }
        }
    }
    Ok(results)
}

/// The presigned URL the offloading instance sends a device to.
async fn redirect(client: &reqwest::Client, setup: &Setup) -> Result<String> {
    let response = client
        .get(&setup.offloaded.0)
        .bearer_auth(&setup.token)
        .send()
        .await?;
    ensure!(
        response.status().as_u16() == 307,
        "offload on: {} instead of 307",
        response.status()
    );
    Ok(response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("a 307 without Location")?
        .to_owned())
}

/// One download to its end: time to the first body byte and in all.
async fn download(
    client: &reqwest::Client,
    setup: &Setup,
    kind: Kind,
    presigned: &str,
) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    let mut response = match kind {
        Kind::Offloaded => {
            let location = redirect(client, setup).await?;
            client.get(location).send().await?
        }
        Kind::Streamed => {
            client
                .get(&setup.streamed.0)
                .bearer_auth(&setup.token)
                .send()
                .await?
        }
        Kind::Direct => {
            client
                .get(presigned)
                .header("range", "bytes=0-")
                .send()
                .await?
        }
    };
    let status = response.status().as_u16();
    ensure!(
        status == 200 || status == 206,
        "{}: status {status}",
        kind.label()
    );
    let mut first_byte = None;
    let mut received = 0u64;
    while let Some(chunk) = response.chunk().await? {
        first_byte.get_or_insert_with(|| started.elapsed());
        received += chunk.len() as u64;
    }
    let total = started.elapsed();
    ensure!(
        received == setup.size,
        "{}: {received} bytes instead of {}",
        kind.label(),
        setup.size
    );
    Ok((first_byte.unwrap_or(total), total))
}
