//! The light load generator: the device API as a fleet uses it, without a
//! million agents.
//!
//! - Warm-up (not measured): every device that will check in
//!   authenticates through the real auth endpoint (a signed request with
//!   its own key, as the agent does when its token has expired), on the
//!   two instances in turn.
//! - Load: open loop at a fixed rate. Check-in `i` is due at
//!   `start + i / rate` whatever became of the ones before it, and its
//!   latency counts from that due time, so a server that falls behind is
//!   charged for the queue it caused (no coordinated omission). Each
//!   check-in is a different device (a device polls every 5 minutes, so a
//!   run shorter than that sees each once, with cold caches), sent to
//!   instance `i % 2` over kept-alive pooled connections (reqwest), with
//!   the inventory it was seeded with. A check-in answered with an offer
//!   is followed by a `success` report for that deployment, sent to the
//!   other instance: the generator does not download or install (it is a
//!   fleet's traffic on the server, not a fleet).

use crate::seed::{inventory, serial, signing_key, DEVICE_TYPE};
use airlift_protocol::device::{status_path, CheckInResponse, StatusReport, CHECK_IN_PATH};
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use airlift_testkit::device::{DeviceApi, TestDevice};
use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One instance's device API through a pooled client.
pub struct Api {
    url: String,
    client: reqwest::Client,
}

impl DeviceApi for Api {
    fn base_url(&self) -> &str {
        &self.url
    }

    fn http(&self) -> &reqwest::Client {
        &self.client
    }
}

impl Api {
    pub fn new(url: &str, client: &reqwest::Client) -> Self {
        Self {
            url: url.to_owned(),
            client: client.clone(),
        }
    }
}

/// A pooled client for the generator: kept-alive connections, no delay.
pub fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// A device of the load: its index in the fleet, its token, and the
/// check-in body it sends.
pub struct LoadDevice {
    pub index: usize,
    pub token: String,
    /// Whether it carries the rollout's tag.
    pub tagged: bool,
    pub body: Bytes,
}

/// Authenticates the devices `indices` through the auth endpoint, on the
/// instances in turn, `concurrency` at a time. Returns them in order and
/// the seconds it took.
pub async fn authenticate(
    apis: &[Api],
    indices: &[usize],
    tagged: &(dyn Fn(usize) -> bool + Sync),
    concurrency: usize,
) -> Result<(Vec<LoadDevice>, f64)> {
    let started = Instant::now();
    let done = AtomicUsize::new(0);
    let devices = futures::stream::iter(indices.iter().enumerate())
        .map(|(n, &index)| {
            let (api, done) = (&apis[n % apis.len()], &done);
            async move {
                let mut device =
                    TestDevice::with_key(&serial(index), DEVICE_TYPE, signing_key(index));
                let status = device.authenticate(api).await;
                ensure!(
                    status.as_u16() == 200,
                    "device {index}: auth answered {status}"
                );
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 50_000 == 0 {
                    eprintln!(
                        "  {n} authenticated ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
                Ok(LoadDevice {
                    index,
                    token: device.token.context("a token")?,
                    tagged: tagged(index),
                    body: Bytes::from(serde_json::to_vec(&inventory(index))?),
                })
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    Ok((devices, started.elapsed().as_secs_f64()))
}

/// What the load saw.
#[derive(Default)]
pub struct Outcome {
    /// (due time since the start, latency), in nanoseconds, per check-in
    /// answered 200.
    pub answered: Vec<(u64, u64)>,
    /// Failed check-ins by what went wrong.
    pub errors: BTreeMap<String, u64>,
    /// Devices offered an update, with the deployment.
    pub offered: Vec<(usize, DeploymentId)>,
    /// Tagged devices answered, with their due time since the start
    /// (nanoseconds) and whether they were offered an update.
    pub tagged: Vec<(usize, u64, bool)>,
    /// When the load started.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Devices whose `success` report was acknowledged.
    pub succeeded: Vec<usize>,
    /// Reports that failed, by what went wrong.
    pub report_errors: BTreeMap<String, u64>,
    /// Latency of the reports, nanoseconds.
    pub report_latencies: Vec<u64>,
    /// From the start to the last answer.
    pub elapsed: Duration,
    /// Check-ins sent.
    pub sent: usize,
}

impl Outcome {
    /// Check-ins answered per second over the run.
    pub fn rate(&self, duration: Duration) -> f64 {
        self.answered.len() as f64 / self.elapsed.max(duration).as_secs_f64()
    }

    pub fn errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Sends each device's check-in once, `rate` a second, open loop.
pub async fn run(urls: &[String], devices: Arc<Vec<LoadDevice>>, rate: u64) -> Result<Outcome> {
    let client = client()?;
    let urls: Arc<Vec<String>> = Arc::new(urls.to_vec());
    let outcome = Arc::new(Mutex::new(Outcome {
        answered: Vec::with_capacity(devices.len()),
        sent: devices.len(),
        ..Outcome::default()
    }));
    let start = Instant::now() + Duration::from_millis(200);
    if let Ok(mut outcome) = outcome.lock() {
        outcome.started_at = Some(chrono::Utc::now() + chrono::Duration::milliseconds(200));
    }
    let period = 1e9 / rate as f64;
    let mut tasks = Vec::with_capacity(devices.len());
    for n in 0..devices.len() {
        let due = start + Duration::from_nanos((n as f64 * period) as u64);
        // Sleep only for a due time ahead: a timer for a past one would
        // still wait for the timer wheel's next tick.
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let (client, urls, devices, outcome) = (
            client.clone(),
            Arc::clone(&urls),
            Arc::clone(&devices),
            Arc::clone(&outcome),
        );
        tasks.push(tokio::spawn(async move {
            check_in(&client, &urls, &devices[n], n, start, due, &outcome).await;
        }));
    }
    for task in tasks {
        task.await.context("a check-in task")?;
    }
    let mut outcome =
        std::mem::take(&mut *outcome.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// One check-in, due at `due`; an offer is answered with a `success`
/// report to the other instance.
async fn check_in(
    client: &reqwest::Client,
    urls: &[String],
    device: &LoadDevice,
    n: usize,
    start: Instant,
    due: Instant,
    outcome: &Mutex<Outcome>,
) {
    let url = &urls[n % urls.len()];
    let answer = client
        .post(format!("{url}{CHECK_IN_PATH}"))
        .bearer_auth(&device.token)
        .header("content-type", "application/json")
        .body(device.body.clone())
        .send()
        .await;
    let (status, body) = match answer {
        Ok(response) => {
            let status = response.status();
            (status, response.bytes().await)
        }
        Err(error) => {
            record_error(outcome, false, kind(&error));
            return;
        }
    };
    let latency = due.elapsed().as_nanos() as u64;
    let body = match body {
        Ok(body) if status.as_u16() == 200 => body,
        Ok(_) => return record_error(outcome, false, format!("status {status}")),
        Err(error) => return record_error(outcome, false, kind(&error)),
    };
    let offer = match serde_json::from_slice::<CheckInResponse>(&body) {
        Ok(answer) => answer.update.map(|u| u.deployment_id),
        Err(_) => return record_error(outcome, false, "not a check-in answer".into()),
    };
    if let Ok(mut outcome) = outcome.lock() {
        outcome
            .answered
            .push(((due - start).as_nanos() as u64, latency));
        if let Some(deployment) = offer {
            outcome.offered.push((device.index, deployment));
        }
        if device.tagged {
            let due = (due - start).as_nanos() as u64;
            outcome.tagged.push((device.index, due, offer.is_some()));
        }
    }
    if let Some(deployment) = offer {
        let other = &urls[(n + 1) % urls.len()];
        report_success(client, other, device, deployment, outcome).await;
    }
}

async fn report_success(
    client: &reqwest::Client,
    url: &str,
    device: &LoadDevice,
    deployment: DeploymentId,
    outcome: &Mutex<Outcome>,
) {
    let report = StatusReport {
        state: UpdateState::Success,
        progress: None,
        message: None,
    };
    let sent = Instant::now();
    let answer = client
        .post(format!("{url}{}", status_path(deployment)))
        .bearer_auth(&device.token)
        .json(&report)
        .send()
        .await;
    match answer {
        Ok(response) if response.status().is_success() => {
            let _ = response.bytes().await;
            if let Ok(mut outcome) = outcome.lock() {
                outcome.succeeded.push(device.index);
                outcome
                    .report_latencies
                    .push(sent.elapsed().as_nanos() as u64);
            }
        }
        Ok(response) => record_error(outcome, true, format!("status {}", response.status())),
        Err(error) => record_error(outcome, true, kind(&error)),
    }
}

fn record_error(outcome: &Mutex<Outcome>, report: bool, what: String) {
    if let Ok(mut outcome) = outcome.lock() {
        let errors = if report {
            &mut outcome.report_errors
        } else {
            &mut outcome.errors
        };
        *errors.entry(what).or_default() += 1;
    }
}

fn kind(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else {
        "broken connection".into()
    }
}
