//! Live pages: how long a device's report takes to reach an open
//! deployment page's event stream, and what open dashboards cost the
//! server in memory.

use crate::client::{Admin, Viewer};
use crate::ADMIN_TOKEN;
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use airlift_testkit::device::{Endpoint, TestDevice};
use anyhow::{ensure, Context, Result};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a change may take to arrive before the run fails.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Devices enrolled through the device API, each with a token, all in one
/// all-at-once deployment, each waiting to report.
pub struct Reporters {
    api: Endpoint,
    devices: Vec<TestDevice>,
    next: usize,
    pub deployment: DeploymentId,
}

impl Reporters {
    /// `count` devices of `device_type`: pre-authorised by the admin,
    /// authenticated and checked in as devices do, then targeted by a new
    /// deployment of `package`.
    pub async fn enrol(
        admin: &Admin,
        url: &str,
        count: usize,
        device_type: &str,
        package: &str,
    ) -> Result<Self> {
        let api = Endpoint::new(url);
        let mut devices = Vec::with_capacity(count);
        for index in 0..count {
            let mut device = TestDevice::new(&format!("LIVE-{index:04}"), device_type);
            let body =
                json!({"identity": {"serial": device.serial}, "public_key": device.public_key()});
            admin
                .post(
                    "/devices/preauthorize",
                    body.to_string().into(),
                    true,
                    StatusCode::CREATED,
                )
                .await?;
            ensure!(
                device.authenticate(&api).await == StatusCode::OK,
                "device auth"
            );
            device.check_in(&api).await;
            devices.push(device);
        }
        let ids: Vec<String> = devices
            .iter()
            .filter_map(|d| d.id.map(|id| id.to_string()))
            .collect();
        let body = json!({"name": "live bench", "package_id": package, "target": {"devices": ids}});
        let created = admin
            .post(
                "/deployments",
                body.to_string().into(),
                true,
                StatusCode::CREATED,
            )
            .await?;
        let deployment = created["id"]
            .as_str()
            .context("deployment id")?
            .parse()
            .context("deployment id")?;
        Ok(Self {
            api,
            devices,
            next: 0,
            deployment,
        })
    }

    /// The next device reports that it is downloading: one change to the
    /// deployment. Returns when the report was sent.
    pub async fn report(&mut self) -> Result<Instant> {
        let device = self
            .devices
            .get(self.next)
            .context("every device has reported")?;
        self.next += 1;
        let sent = Instant::now();
        let response = device
            .report(&self.api, self.deployment, UpdateState::Downloading, None)
            .await;
        ensure!(
            response.status().is_success(),
            "status report: {}",
            response.status()
        );
        Ok(sent)
    }
}

/// An open live stream, read by a task of its own that sends when each
/// event named `event` arrived.
pub struct Stream {
    task: JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream {
    /// Opens `/ui/live?topics=…` for `viewer` and reads it; each `event`
    /// is sent to `arrivals` with `index` and the time it arrived.
    pub async fn open(
        viewer: &Viewer,
        topics: &str,
        event: String,
        index: usize,
        arrivals: mpsc::UnboundedSender<(usize, Instant)>,
    ) -> Result<Self> {
        let topics = form_urlencoded::byte_serialize(topics.as_bytes()).collect::<String>();
        let mut response = viewer.open(&format!("/ui/live?topics={topics}")).await?;
        let wanted = format!("event: {event}");
        let task = tokio::spawn(async move {
            let mut pending = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                let now = Instant::now();
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    if line.trim_end() == wanted && arrivals.send((index, now)).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Self { task })
    }
}

/// Times `samples` reports from the device API to the deployment page's
/// stream.
pub async fn latency(
    viewer: &Viewer,
    reporters: &mut Reporters,
    samples: usize,
) -> Result<Vec<Duration>> {
    let (sender, mut arrivals) = mpsc::unbounded_channel();
    let deployment = reporters.deployment;
    let topic = format!("deployment:{deployment}");
    let _stream = Stream::open(viewer, &topic, topic.clone(), 0, sender).await?;
    // The stream subscribes once its headers are sent; a beat more lets the
    // feed's follower settle before the first change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        while arrivals.try_recv().is_ok() {}
        let sent = reporters.report().await?;
        let (_, arrived) = tokio::time::timeout(ARRIVAL_TIMEOUT, arrivals.recv())
            .await
            .context("no event within 30 s of a report")?
            .context("the live stream ended")?;
        times.push(arrived.saturating_duration_since(sent));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(times)
}

/// Memory of the server, in KiB: resident and proportional set sizes.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: Option<u64>,
}

pub fn memory(pid: u32) -> Result<Memory> {
    Ok(Memory {
        rss_kib: airlift_testkit::procfs::status_kib(pid, "VmRSS").context("the server's VmRSS")?,
        pss_kib: airlift_testkit::procfs::pss_kib(pid),
    })
}

/// The server's memory with no dashboard, then with `count` dashboards
/// open (each its own session, its deployment page loaded once, its live
/// stream open) after a change reached every one of them.
pub async fn dashboards_memory(
    client: &reqwest::Client,
    url: &str,
    pid: u32,
    reporters: &mut Reporters,
    count: usize,
) -> Result<(Memory, Memory, Duration)> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = memory(pid)?;
    let deployment = reporters.deployment;
    let page = format!("/ui/deployments/{deployment}");
    let topics = format!("overview deployment:{deployment}");
    let (sender, mut arrivals) = mpsc::unbounded_channel();
    let mut streams = Vec::with_capacity(count);
    let mut viewers = Vec::with_capacity(count);
    for index in 0..count {
        let viewer = Viewer::sign_in(client, url, ADMIN_TOKEN).await?;
        viewer.time(&page).await?;
        let event = format!("deployment:{deployment}");
        streams.push(Stream::open(&viewer, &topics, event, index, sender.clone()).await?);
        viewers.push(viewer);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = reporters.report().await?;
    let mut heard = vec![false; count];
    let mut left = count;
    let mut last = sent;
    while left > 0 {
        let (index, arrived) = tokio::time::timeout(ARRIVAL_TIMEOUT, arrivals.recv())
            .await
            .with_context(|| format!("{left} of {count} dashboards heard no change within 30 s"))?
            .context("the live streams ended")?;
        if !std::mem::replace(&mut heard[index], true) {
            left -= 1;
            last = last.max(arrived);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open = memory(pid)?;
    drop(streams);
    Ok((idle, open, last.saturating_duration_since(sent)))
}
