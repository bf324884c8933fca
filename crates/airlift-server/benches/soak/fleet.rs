//! The simulated fleet: devices that authenticate, check in on schedule,
//! and — for those a deployment targets — download the package and report
//! each step of an update, the way the agent does, retrying with backoff
//! when the server is unreachable or fails; and their enrolment. The
//! dispatcher that wakes each device when it is due is `dispatch`.

use crate::record::{Failure, Op, Recorder};
use airlift_protocol::device::{
    status_path, AuthResponse, CheckInResponse, Inventory, StatusAck, StatusReport, AUTH_PATH,
    CHECK_IN_PATH, SIGNATURE_HEADER,
};
use airlift_protocol::management::PreauthorizeRequest;
use airlift_protocol::state::UpdateState;
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_testkit::device::TestDevice;
use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEVICE_TYPE: &str = "soak-board";
pub const OS_NAME: &str = "bench-os";
pub const OLD_VERSION: &str = "1.0.0";
pub const NEW_VERSION: &str = "2.0.0";

/// What a targeted device reports, in order, one step per wake-up.
pub const STEPS: [UpdateState; 6] = [
    UpdateState::Downloading,
    UpdateState::Downloaded,
    UpdateState::Installing,
    UpdateState::Installed,
    UpdateState::Rebooting,
    UpdateState::Success,
];

/// What every device task shares.
#[derive(Debug)]
pub struct Ctx {
    pub client: reqwest::Client,
    /// Base URL per instance; device `i` talks to instance `i % 2`.
    pub urls: Vec<String>,
    pub recorder: Arc<Recorder>,
    /// Between a targeted device's steps (each drawn from ½–1 of it).
    pub step: Duration,
    /// After the end of the run: only unanswered reports are retried.
    pub draining: AtomicBool,
    /// Requests sent; the run stops (and fails) past `request_cap`.
    pub requests: AtomicU64,
    pub request_cap: u64,
    pub ok_check_ins: AtomicU64,
    pub failures: AtomicU64,
}

impl Ctx {
    pub fn new(
        urls: Vec<String>,
        recorder: Arc<Recorder>,
        step: Duration,
        cap: u64,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            // Under the server's 30 s idle timeout, so that the client never
            // reuses a connection the server is closing.
            .pool_idle_timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            urls,
            recorder,
            step,
            draining: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            request_cap: cap,
            ok_check_ins: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Sends a request, records its outcome, and returns the body when the
    /// status is `expect`.
    async fn send(
        &self,
        op: Op,
        instance: usize,
        request: reqwest::RequestBuilder,
        expect: StatusCode,
    ) -> Result<Bytes, Failure> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let result = async {
            let response = request.send().await.map_err(classify)?;
            let status = response.status();
            let body = response.bytes().await.map_err(classify)?;
            match status {
                s if s == expect => Ok(body),
                StatusCode::UNAUTHORIZED => Err(Failure::Unauthorized),
                s => Err(Failure::Status(s.as_u16())),
            }
        }
        .await;
        self.recorder
            .outcome(op, instance, sent, result.as_ref().err().copied());
        match (&result, op) {
            (Ok(_), Op::CheckIn) => {
                self.ok_check_ins.fetch_add(1, Ordering::Relaxed);
            }
            (Err(_), _) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        result
    }
}

fn classify(error: reqwest::Error) -> Failure {
    if error.is_timeout() {
        Failure::Timeout
    } else if error.is_connect() {
        Failure::Connect
    } else {
        Failure::Broken
    }
}

/// A small deterministic generator per device (splitmix64), for jitter.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Between half and all of `span`.
    fn jitter(&mut self, span: Duration) -> Duration {
        span.mul_f64(0.5 + 0.5 * self.next_f64())
    }
}

/// A targeted device's progress through the deployment, as it knows it.
#[derive(Debug, Clone)]
pub struct Update {
    pub deployment: DeploymentId,
    download_path: String,
    sha256: String,
    /// Index into [`STEPS`] of the next report.
    pub next: usize,
    due: Instant,
    /// The last state the server acknowledged (its answer named this state).
    pub acked: Option<UpdateState>,
    /// A report sent without an answer (lost, timed out, refused): the
    /// server may or may not have it.
    pub unacked: Option<UpdateState>,
    downloaded: bool,
}

/// One simulated device.
#[derive(Debug)]
pub struct Device {
    pub index: usize,
    pub id: DeviceId,
    /// Its key and serial, which sign its auth requests. Requests are sent
    /// here, not by the kit's device: the load client times and classifies
    /// each one.
    identity: TestDevice,
    token: Option<String>,
    /// What it runs now.
    pub inventory: Inventory,
    body: Bytes,
    /// The inventory of its last answered (200) check-in, and when that
    /// check-in was sent.
    pub acked: Option<(Inventory, DateTime<Utc>)>,
    /// A check-in with the current inventory went unanswered after the
    /// last answered one: the server may hold either.
    pub inventory_unacked: bool,
    pub(crate) next_check_in: Instant,
    poll: Duration,
    failures: u32,
    pub targeted: bool,
    pub update: Option<Update>,
    rng: Rng,
}

pub fn inventory(index: usize) -> Inventory {
    let region = ["eu-west", "us-east", "ap-south"][index % 3];
    Inventory {
        device_type: DEVICE_TYPE.into(),
        hardware_revision: Some("rev-c".into()),
        installed: [
            (OS_NAME, OLD_VERSION),
            ("bootloader", "2024.01.3"),
            ("fleet-agent", "3.2.1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        security_version: 3,
        attributes: [
            ("kernel", "6.6.31-soak".to_owned()),
            ("region", region.to_owned()),
            ("site", format!("plant-{:02}", index % 17)),
            ("serial", format!("SN-{index:06}")),
            (
                "mac",
                format!(
                    "02:00:00:{:02x}:{:02x}:{:02x}",
                    (index >> 16) & 0xff,
                    (index >> 8) & 0xff,
                    index & 0xff
                ),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    }
}

impl Device {
    pub fn instance(&self) -> usize {
        self.index % 2
    }

    fn url(&self, ctx: &Ctx, path: &str) -> String {
        format!("{}{path}", ctx.urls[self.instance()])
    }

    fn set_inventory(&mut self, inventory: Inventory) -> Result<()> {
        self.body = Bytes::from(serde_json::to_vec(&inventory)?);
        self.inventory = inventory;
        Ok(())
    }

    /// Capped exponential backoff with jitter: 1 s, 2 s, 4 s, … up to the
    /// poll interval, each drawn from ½–1 of that.
    fn backoff(&mut self) -> Duration {
        self.failures = (self.failures + 1).min(16);
        let base = Duration::from_secs(1 << (self.failures - 1)).min(self.poll);
        self.rng.jitter(base)
    }

    /// When the dispatcher should wake it next; `None` once it has nothing
    /// left to do (after the run: no unanswered report).
    pub fn next_due(&self, draining: bool) -> Option<Instant> {
        let step_due = self
            .update
            .as_ref()
            .filter(|u| u.next < STEPS.len() && (!draining || u.unacked.is_some()))
            .map(|u| u.due);
        if draining {
            return step_due;
        }
        Some(step_due.map_or(self.next_check_in, |d| d.min(self.next_check_in)))
    }

    /// Does what is due: authenticate if it has no token, the next report
    /// step, the check-in.
    pub async fn wake(mut self, ctx: &Ctx) -> Self {
        let draining = ctx.draining.load(Ordering::Relaxed);
        if self.token.is_none() && self.authenticate(ctx).await.is_err() {
            let wait = self.backoff();
            let next = Instant::now() + wait;
            self.next_check_in = self.next_check_in.max(next);
            if let Some(update) = &mut self.update {
                update.due = update.due.max(next);
            }
            return self;
        }
        let now = Instant::now();
        let step_due = self.update.as_ref().is_some_and(|u| {
            u.next < STEPS.len() && u.due <= now && (!draining || u.unacked.is_some())
        });
        if step_due {
            self.step(ctx).await;
        }
        if !draining && self.next_check_in <= now && self.token.is_some() {
            self.check_in(ctx).await;
        }
        self
    }

    /// A signed authentication request; the answer must be a token.
    async fn authenticate(&mut self, ctx: &Ctx) -> Result<(), Failure> {
        let body = self.identity.auth_body();
        let signature = self.identity.sign(&body);
        let builder = ctx
            .client
            .post(self.url(ctx, AUTH_PATH))
            .header(SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body);
        let answer = ctx
            .send(Op::Auth, self.instance(), builder, StatusCode::OK)
            .await?;
        match serde_json::from_slice::<AuthResponse>(&answer) {
            Ok(AuthResponse::Accepted {
                device_id, token, ..
            }) if device_id == self.id => {
                self.token = Some(token);
                Ok(())
            }
            other => {
                ctx.recorder.anomaly(format!(
                    "device {} ({}): authentication answered {other:?}",
                    self.index, self.id
                ));
                Err(Failure::BadAnswer)
            }
        }
    }

    async fn check_in(&mut self, ctx: &Ctx) {
        let token = self.token.clone().unwrap_or_default();
        let sent_at = Utc::now();
        let sent = Instant::now();
        let builder = ctx
            .client
            .post(self.url(ctx, CHECK_IN_PATH))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(self.body.clone());
        let result = ctx
            .send(Op::CheckIn, self.instance(), builder, StatusCode::OK)
            .await;
        let now = Instant::now();
        match result {
            Ok(answer) => {
                self.failures = 0;
                self.acked = Some((self.inventory.clone(), sent_at));
                self.inventory_unacked = false;
                match serde_json::from_slice::<CheckInResponse>(&answer) {
                    Ok(answer) => {
                        self.poll = Duration::from_secs(answer.poll_interval_secs.max(1));
                        // As the agent: the next poll is an interval after
                        // this one began, however long the answer took.
                        self.next_check_in = sent + self.poll;
                        if let Some(offer) = answer.update {
                            self.offered(ctx, offer, now);
                        }
                    }
                    Err(error) => {
                        ctx.recorder.anomaly(format!(
                            "device {}: unreadable check-in answer: {error}",
                            self.index
                        ));
                        self.next_check_in = sent + self.poll;
                    }
                }
            }
            Err(Failure::Unauthorized) => {
                self.token = None;
                self.next_check_in = now;
            }
            Err(failure) => {
                if matches!(failure, Failure::Timeout | Failure::Broken)
                    && self.acked.as_ref().map(|(inv, _)| inv) != Some(&self.inventory)
                {
                    self.inventory_unacked = true;
                }
                self.next_check_in = now + self.backoff();
            }
        }
    }

    fn offered(&mut self, ctx: &Ctx, offer: airlift_protocol::device::UpdateOffer, now: Instant) {
        if !self.targeted {
            ctx.recorder.anomaly(format!(
                "device {} ({}) is not targeted but was offered deployment {}",
                self.index, self.id, offer.deployment_id
            ));
            return;
        }
        match &self.update {
            None => {
                let due = now + self.rng.jitter(ctx.step);
                self.update = Some(Update {
                    deployment: offer.deployment_id,
                    download_path: offer.download_path,
                    sha256: offer.sha256,
                    next: 0,
                    due,
                    acked: None,
                    unacked: None,
                    downloaded: false,
                });
            }
            Some(update) if update.deployment != offer.deployment_id => {
                ctx.recorder.anomaly(format!(
                    "device {} was offered deployment {} while updating from {}",
                    self.index, offer.deployment_id, update.deployment
                ));
            }
            Some(update) if update.acked == Some(UpdateState::Success) => {
                ctx.recorder.anomaly(format!(
                    "device {} ({}) was offered deployment {} again after its success was acknowledged",
                    self.index, self.id, update.deployment
                ));
            }
            Some(_) => {}
        }
    }

    /// The next report (after downloading the package, for `downloaded`).
    async fn step(&mut self, ctx: &Ctx) {
        let Some(update) = self.update.clone() else {
            return;
        };
        let state = STEPS[update.next];
        let token = self.token.clone().unwrap_or_default();
        if state == UpdateState::Downloaded
            && !update.downloaded
            && !self.download(ctx, &update, &token).await
        {
            return;
        }
        if let Some(u) = &mut self.update {
            u.unacked = Some(state);
        }
        let report = StatusReport {
            state,
            progress: None,
            message: None,
        };
        let builder = ctx
            .client
            .post(self.url(ctx, &status_path(update.deployment)))
            .bearer_auth(&token)
            .json(&report);
        let result = ctx
            .send(Op::Report, self.instance(), builder, StatusCode::OK)
            .await;
        match result {
            Ok(answer) => {
                self.failures = 0;
                let ack = match serde_json::from_slice::<StatusAck>(&answer) {
                    Ok(ack) => ack,
                    Err(error) => {
                        ctx.recorder.anomaly(format!(
                            "device {}: unreadable status answer: {error}",
                            self.index
                        ));
                        self.retry_step();
                        return;
                    }
                };
                if ack.state != state {
                    ctx.recorder.anomaly(format!(
                        "device {} ({}) reported {state}; the server answered state {} (applied: {})",
                        self.index, self.id, ack.state, ack.applied
                    ));
                }
                let jitter = self.rng.jitter(ctx.step);
                if ack.state == UpdateState::Success {
                    ctx.recorder.success(Instant::now());
                }
                if let Some(u) = &mut self.update {
                    u.unacked = None;
                    u.acked = Some(ack.state);
                    u.next += 1;
                    u.due = Instant::now() + jitter;
                }
                if state == UpdateState::Rebooting {
                    // It booted the new version: its check-ins say so from now on.
                    let mut inventory = self.inventory.clone();
                    inventory
                        .installed
                        .insert(OS_NAME.to_owned(), NEW_VERSION.to_owned());
                    if let Err(error) = self.set_inventory(inventory) {
                        ctx.recorder
                            .anomaly(format!("device {}: {error:#}", self.index));
                    }
                    // As the agent does from a trial boot: check in at once.
                    self.next_check_in = Instant::now();
                }
            }
            Err(Failure::Unauthorized) => {
                self.token = None;
            }
            Err(Failure::Status(code @ (404 | 410))) => {
                ctx.recorder.anomaly(format!(
                    "device {} ({}): reporting {state} answered {code}",
                    self.index, self.id
                ));
                self.retry_step();
            }
            Err(_) => self.retry_step(),
        }
    }

    /// Downloads the package and checks its SHA-256; `false` when that
    /// failed (the step is retried later, or the device authenticates again).
    async fn download(&mut self, ctx: &Ctx, update: &Update, token: &str) -> bool {
        let builder = ctx
            .client
            .get(self.url(ctx, &update.download_path))
            .bearer_auth(token);
        let result = ctx
            .send(Op::Download, self.instance(), builder, StatusCode::OK)
            .await;
        match result {
            Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == update.sha256 => {
                if let Some(u) = &mut self.update {
                    u.downloaded = true;
                }
                true
            }
            Ok(bytes) => {
                ctx.recorder.anomaly(format!(
                    "device {}: downloaded {} bytes whose SHA-256 is not the offer's",
                    self.index,
                    bytes.len()
                ));
                self.retry_step();
                false
            }
            Err(Failure::Unauthorized) => {
                self.token = None;
                false
            }
            Err(_) => {
                self.retry_step();
                false
            }
        }
    }

    fn retry_step(&mut self) {
        let wait = self.backoff();
        if let Some(u) = &mut self.update {
            u.due = Instant::now() + wait;
        }
    }
}

// --- enrolment ----------------------------------------------------------------------

/// The management API of one instance.
#[derive(Debug, Clone)]
pub struct Admin {
    pub client: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Admin {
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    pub async fn post<T: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<(StatusCode, Bytes)> {
        let response = self
            .client
            .post(self.api(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        Ok((response.status(), response.bytes().await?))
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self
            .client
            .get(self.api(path))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        ensure!(
            status == StatusCode::OK,
            "GET {path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).with_context(|| format!("reading GET {path}"))
    }
}

/// Pre-authorises `count` devices through the management API (each on its
/// own instance), then each authenticates for a token and checks in once,
/// so that the soak measures the steady state. Device `i` is targeted when
/// `targeted(i)`.
///
/// Devices are pre-authorised, not accepted after a pending first contact:
/// the first-contact limit (60 unknown devices a minute per address) would
/// hold 40 000 devices from one address for hours.
pub async fn enrol(
    ctx: &Ctx,
    admins: &[Admin],
    count: usize,
    targeted: impl Fn(usize) -> bool,
    poll: Duration,
) -> Result<Vec<Device>> {
    let started = Instant::now();
    let done = AtomicU64::new(0);
    let results: Vec<Result<Device>> = futures::stream::iter(0..count)
        .map(|index| {
            let admin = &admins[index % admins.len()];
            let targeted = targeted(index);
            let done = &done;
            async move {
                let device = enrol_one(ctx, admin, index, targeted, poll).await;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 5000 == 0 {
                    eprintln!(
                        "  {n} devices enrolled ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
                device
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut devices = results.into_iter().collect::<Result<Vec<_>>>()?;
    devices.sort_by_key(|d| d.index);
    Ok(devices)
}

async fn enrol_one(
    ctx: &Ctx,
    admin: &Admin,
    index: usize,
    targeted: bool,
    poll: Duration,
) -> Result<Device> {
    let serial = format!("SN-{index:06}");
    let identity = TestDevice::new(&serial, DEVICE_TYPE);
    let request = PreauthorizeRequest {
        identity: [("serial".to_owned(), serial.clone())].into(),
        public_key: identity.public_key(),
        tags: Vec::new(),
    };
    let (status, body) = admin.post("/devices/preauthorize", &request).await?;
    ensure!(
        status == StatusCode::CREATED,
        "preauthorize {serial}: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let created: airlift_protocol::management::Device = serde_json::from_slice(&body)?;
    let inventory = inventory(index);
    let mut rng_seed = [0u8; 8];
    getrandom::getrandom(&mut rng_seed)?;
    let mut device = Device {
        index,
        id: created.id,
        identity,
        token: None,
        body: Bytes::from(serde_json::to_vec(&inventory)?),
        inventory,
        acked: None,
        inventory_unacked: false,
        next_check_in: Instant::now(),
        poll,
        failures: 0,
        targeted,
        update: None,
        rng: Rng(u64::from_le_bytes(rng_seed)),
    };
    if device.authenticate(ctx).await.is_err() {
        bail!("device {index}: first authentication failed");
    }
    device.check_in(ctx).await;
    ensure!(
        device.acked.is_some(),
        "device {index}: first check-in failed"
    );
    Ok(device)
}

/// Per-state counts of what the devices last had acknowledged.
pub fn local_counts(devices: &[Device]) -> BTreeMap<UpdateState, u64> {
    let mut counts = BTreeMap::new();
    for device in devices.iter().filter(|d| d.targeted) {
        let state = device
            .update
            .as_ref()
            .and_then(|u| u.acked)
            .unwrap_or(UpdateState::Pending);
        *counts.entry(state).or_insert(0) += 1;
    }
    counts
}
