//! The fleet and its deployments, written through the store crate's public
//! API (`airlift_store::Store`), the code the server itself writes with.
//!
//! Not through the HTTP APIs: enrolling 100 000 devices there takes about
//! five minutes (see the check-in bench), and deployments created there
//! would all start out pending. Not with SQL of our own either: the store's
//! batch calls are fast enough (a device is one transaction, a deployment
//! with all its devices one more), and what they write cannot drift from
//! what the server writes. Two differences from a fleet grown by the server,
//! both without effect on the pages measured: devices are stored with their
//! inventory at once, so their inventory digest is only set at their next
//! check-in; and only failures (and their reasons) are written as history
//! events, other states as the initial state of the deployment's device.

use crate::rng::Rng;
use airlift_protocol::management::{Device, Target};
use airlift_protocol::state::{DeploymentStatus, DeviceStatus, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use airlift_store::{CheckInCount, DeploymentRecord, RolloutState, SharedStore};
use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::time::Instant;

/// Device types and their share of the fleet, in per cent.
pub const DEVICE_TYPES: [(&str, u32); 4] = [
    ("gateway-a", 50),
    ("gateway-b", 30),
    ("sensor-hub", 15),
    ("kiosk", 5),
];
/// Regions (the `region` attribute), evenly spread.
pub const REGIONS: [&str; 8] = [
    "eu-west", "eu-north", "us-east", "us-west", "ap-south", "ap-east", "sa-east", "af-south",
];
/// Installed `os` versions and their share, in per cent.
pub const OS_VERSIONS: [(&str, u32); 5] = [
    ("3.2.0", 40),
    ("3.1.4", 30),
    ("3.1.0", 15),
    ("2.9.7", 10),
    ("2.8.1", 5),
];
/// Tags a device may carry besides its `batch-N` tag.
const TAGS: [&str; 6] = ["canary", "lab", "field", "beta", "retail", "warehouse"];
/// Batches: every accepted device carries one `batch-N` tag.
pub const BATCHES: usize = 20;
/// Failure reasons and their weights: a few common, a long tail.
const REASONS: [(&str, u32); 7] = [
    (
        "download interrupted: connection reset by peer after 3 retries",
        30,
    ),
    (
        "installer exited with status 2: not enough space on /data (need 412 MiB, have 97 MiB)",
        20,
    ),
    (
        "health check failed after reboot: service airlift-app did not start within 120 s",
        15,
    ),
    ("signature check failed: payload rootfs digest mismatch", 10),
    ("rolled back by the bootloader: boot count exceeded", 10),
    ("device rebooted during install: power loss", 10),
    (
        "compatibility rule refused: hardware revision r1 is not supported",
        5,
    ),
];

/// What was seeded, for the requests that follow.
pub struct Fleet {
    /// Every device, in creation order.
    pub devices: Vec<(DeviceId, DeviceStatus)>,
    /// Every deployment with its device count, largest first.
    pub deployments: Vec<(DeploymentId, usize, DeploymentStatus)>,
    /// Device updates written.
    pub updates: usize,
    /// Failures written as history.
    pub failures: usize,
}

/// Seeds `devices` devices and `deployments` deployments of `package`.
pub async fn seed(
    store: &SharedStore,
    package: PackageId,
    devices: usize,
    deployments: usize,
    concurrency: usize,
) -> Result<Fleet> {
    let now = Utc::now();
    let started = Instant::now();
    let fleet = seed_devices(store, devices, concurrency, now).await?;
    eprintln!(
        "  {} devices in {:.1} s",
        fleet.len(),
        started.elapsed().as_secs_f64()
    );
    let minutes: Vec<CheckInCount> = (1..=24 * 60)
        .map(|minute| CheckInCount {
            minute: now - Duration::minutes(minute),
            // A fleet polling once a minute, mostly online.
            check_ins: (devices as u64 * 85 / 100) + minute as u64 % 97,
        })
        .collect();
    store
        .add_check_ins(&minutes, now - Duration::days(2))
        .await
        .context("check-ins per minute")?;
    let started = Instant::now();
    let accepted: Vec<&DeviceSeed> = fleet
        .iter()
        .filter(|d| d.status == DeviceStatus::Accepted)
        .collect();
    let mut rng = Rng::new(7);
    let mut result = Fleet {
        devices: fleet.iter().map(|d| (d.id, d.status)).collect(),
        deployments: Vec::new(),
        updates: 0,
        failures: 0,
    };
    let plans = (0..deployments)
        .map(|index| Plan::new(index, deployments, &accepted, package, now, &mut rng))
        .collect::<Result<Vec<Plan>>>()?;
    let written: Vec<(DeploymentId, usize, DeploymentStatus, usize)> =
        futures::stream::iter(plans.into_iter().map(|plan| write_deployment(store, plan)))
            .buffer_unordered(concurrency.clamp(1, 4))
            .try_collect()
            .await?;
    for (id, size, status, failures) in written {
        result.updates += size;
        result.failures += failures;
        result.deployments.push((id, size, status));
    }
    result.deployments.sort_by_key(|d| std::cmp::Reverse(d.1));
    eprintln!(
        "  {} deployments, {} device updates ({} failures with reasons) in {:.1} s",
        result.deployments.len(),
        result.updates,
        result.failures,
        started.elapsed().as_secs_f64()
    );
    Ok(result)
}

struct DeviceSeed {
    id: DeviceId,
    status: DeviceStatus,
    batch: usize,
    region: usize,
}

async fn seed_devices(
    store: &SharedStore,
    count: usize,
    concurrency: usize,
    now: DateTime<Utc>,
) -> Result<Vec<DeviceSeed>> {
    let mut rng = Rng::new(1);
    let mut seeds = Vec::with_capacity(count);
    let mut devices = Vec::with_capacity(count);
    for index in 0..count {
        let (device, seed) = device(index, count, now, &mut rng)?;
        seeds.push(seed);
        devices.push(device);
    }
    let done = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::iter(devices.iter().map(|device| {
        let done = &done;
        async move {
            store
                .insert_device(device)
                .await
                .with_context(|| format!("device {}", device.id))?;
            let done = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if done % 20_000 == 0 {
                eprintln!("  … {done} devices");
            }
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect::<()>()
    .await?;
    Ok(seeds)
}

/// Device `index` of `count`: 92 % accepted (with an inventory, tags and
/// attributes), 5 % pending, 3 % rejected; created over the last year,
/// accepted ones mostly heard from in the last two minutes.
fn device(
    index: usize,
    count: usize,
    now: DateTime<Utc>,
    rng: &mut Rng,
) -> Result<(Device, DeviceSeed)> {
    let status = match rng.below(100) {
        0..=91 => DeviceStatus::Accepted,
        92..=96 => DeviceStatus::Pending,
        _ => DeviceStatus::Rejected,
    };
    let serial = format!("SN-{:08}", index * 7919 % 100_000_000);
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    seed[8..16].copy_from_slice(&rng.next().to_le_bytes());
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut identity = BTreeMap::from([("serial".to_owned(), serial)]);
    identity.insert(
        "mac".to_owned(),
        format!(
            "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
            index >> 24 & 0xff,
            index >> 16 & 0xff,
            index >> 8 & 0xff,
            index & 0xff
        ),
    );
    let age = Duration::seconds(365 * 86_400 * (count - index) as i64 / count as i64);
    let batch = index % BATCHES;
    let region = rng.below(REGIONS.len() as u64) as usize;
    let mut device = Device {
        id: DeviceId::new(),
        status,
        identity,
        public_key: airlift_protocol::auth::public_key_pem(&key.verifying_key()),
        tags: Vec::new(),
        device_type: None,
        hardware_revision: None,
        installed: BTreeMap::new(),
        security_version: 0,
        attributes: BTreeMap::new(),
        created_at: now - age,
        last_check_in: None,
    };
    if status == DeviceStatus::Accepted {
        let device_type = weighted(&DEVICE_TYPES, rng);
        device.device_type = Some(device_type.to_owned());
        device.hardware_revision = Some(format!("r{}", 1 + rng.below(4)));
        device.security_version = 3 + rng.below(3);
        device.installed = BTreeMap::from([
            ("os".to_owned(), weighted(&OS_VERSIONS, rng).to_owned()),
            (
                "bootloader".to_owned(),
                format!("2024.{}", 1 + rng.below(4)),
            ),
            (
                "app".to_owned(),
                format!("1.{}.{}", rng.below(12), rng.below(5)),
            ),
        ]);
        device.attributes = BTreeMap::from([
            ("region".to_owned(), REGIONS[region].to_owned()),
            ("site".to_owned(), format!("site-{:03}", rng.below(400))),
            (
                "modem".to_owned(),
                ["lte-cat4", "lte-m", "5g", "none"][rng.below(4) as usize].to_owned(),
            ),
            (
                "customer".to_owned(),
                format!("customer-{:02}", rng.below(60)),
            ),
        ]);
        device.tags.push(format!("batch-{batch}"));
        for tag in TAGS {
            if rng.below(100) < 8 {
                device.tags.push(tag.to_owned());
            }
        }
        // 85 % online (heard of within the last 150 s, under the three
        // 60 s poll intervals), the rest silent for minutes to weeks.
        let silent = if rng.below(100) < 85 {
            rng.below(150)
        } else {
            600 + rng.below(30 * 86_400)
        };
        device.last_check_in = Some(now - Duration::seconds(silent as i64));
    }
    let seed = DeviceSeed {
        id: device.id,
        status,
        batch,
        region,
    };
    Ok((device, seed))
}

/// One deployment to write: its record, its devices' states, and which of
/// them failed with which reason.
struct Plan {
    record: DeploymentRecord,
    devices: Vec<(DeviceId, UpdateState)>,
    /// Devices admitted per phase of a phased rollout.
    phases: Vec<Vec<DeviceId>>,
    failures: Vec<(DeviceId, UpdateState, &'static str)>,
}

impl Plan {
    /// Deployment `index` of `count` (the oldest first): the first eight
    /// target a region (about 11 % of the fleet each), the next twenty a
    /// batch tag (5 %), the rest 20–150 listed devices. Every 50th is
    /// active and the one after it paused; of the rest some were aborted or
    /// cancelled, most finished. Every third is phased.
    fn new(
        index: usize,
        count: usize,
        accepted: &[&DeviceSeed],
        package: PackageId,
        now: DateTime<Utc>,
        rng: &mut Rng,
    ) -> Result<Self> {
        let (target, members): (Target, Vec<DeviceId>) = match index {
            0..=7 => (
                Target::Attributes(BTreeMap::from([(
                    "region".to_owned(),
                    REGIONS[index].to_owned(),
                )])),
                accepted
                    .iter()
                    .filter(|d| d.region == index)
                    .map(|d| d.id)
                    .collect(),
            ),
            8..=27 => {
                let batch = index - 8;
                (
                    Target::Tag(format!("batch-{batch}")),
                    accepted
                        .iter()
                        .filter(|d| d.batch == batch)
                        .map(|d| d.id)
                        .collect(),
                )
            }
            _ => {
                let size = 20 + rng.below(131) as usize;
                let start = rng.below(accepted.len().saturating_sub(size).max(1) as u64) as usize;
                let ids: Vec<DeviceId> = accepted
                    .iter()
                    .skip(start)
                    .take(size)
                    .map(|d| d.id)
                    .collect();
                (Target::Devices(ids.clone()), ids)
            }
        };
        let status = match index % 50 {
            0 => DeploymentStatus::Active,
            1 => DeploymentStatus::Paused,
            2 | 27 => DeploymentStatus::Aborted,
            3 | 13 | 33 => DeploymentStatus::Cancelled,
            _ => DeploymentStatus::Finished,
        };
        let phased = index % 3 == 0;
        let created_at = now - Duration::minutes(((count - index) * 480) as i64);
        let open = matches!(status, DeploymentStatus::Active | DeploymentStatus::Paused);
        let strategy = if phased {
            serde_json::json!({
                "type": "phased",
                "phases": [
                    {"name": "canary", "devices": {"percent": 5}, "soak_secs": 3600},
                    {"devices": {"percent": 25}, "soak_secs": 7200, "success_percent": 95},
                    {"devices": {"percent": 100}}
                ],
                "failure_threshold": {"percent": 10},
                "on_failure": if index % 2 == 0 { "pause" } else { "abort" }
            })
        } else {
            serde_json::json!({"type": "all"})
        };
        let phase = if open { 1 } else { 2 };
        let mut plan = Plan {
            record: DeploymentRecord {
                id: DeploymentId::new(),
                name: format!("os 3.2.0 wave {index}"),
                package_id: package,
                target,
                strategy: serde_json::from_value(strategy).context("the strategy")?,
                install: Default::default(),
                status,
                created_at,
                finished_at: (!open).then(|| created_at + Duration::hours(30)),
                rollout: RolloutState {
                    phase: if phased { phase } else { 0 },
                    phase_started_at: Some(created_at + Duration::hours(2)),
                    phase_met_at: None,
                    reason: match status {
                        DeploymentStatus::Paused => Some("failure threshold crossed: 11 % of 2 phases' devices failed (limit 10 %)".to_owned()),
                        DeploymentStatus::Aborted => Some("aborted by the breaker: 14 % failed".to_owned()),
                        _ => None,
                    },
                    acknowledged_failures: 0,
                },
                dynamic: false,
                ends_at: None,
            },
            devices: Vec::with_capacity(members.len()),
            phases: Vec::new(),
            failures: Vec::new(),
        };
        plan.assign_states(&members, status, phased, rng);
        Ok(plan)
    }

    fn assign_states(
        &mut self,
        members: &[DeviceId],
        status: DeploymentStatus,
        phased: bool,
        rng: &mut Rng,
    ) {
        let open = matches!(status, DeploymentStatus::Active | DeploymentStatus::Paused);
        // Devices admitted so far: all, unless an open phased rollout is in
        // its second phase (5 % + 25 % admitted).
        let admitted = if phased && open {
            members.len() * 30 / 100
        } else {
            members.len()
        };
        if phased {
            let canary = members.len() * 5 / 100;
            self.phases.push(members[..canary].to_vec());
            self.phases
                .push(members[canary..admitted.max(canary)].to_vec());
            if admitted == members.len() {
                self.phases.push(members[admitted.max(canary)..].to_vec());
            }
        }
        for (position, id) in members.iter().enumerate() {
            if position >= admitted {
                self.devices.push((*id, UpdateState::Pending));
                continue;
            }
            let roll = rng.below(1000);
            let state = match status {
                DeploymentStatus::Finished => match roll {
                    0..=899 => UpdateState::Success,
                    900..=939 => UpdateState::Failure,
                    940..=959 => UpdateState::RolledBack,
                    960..=979 => UpdateState::AlreadyInstalled,
                    _ => UpdateState::Incompatible,
                },
                DeploymentStatus::Aborted | DeploymentStatus::Cancelled => match roll {
                    0..=449 => UpdateState::Success,
                    450..=549 => UpdateState::Failure,
                    550..=599 => UpdateState::TimedOut,
                    _ => UpdateState::Cancelled,
                },
                _ => match roll {
                    0..=299 => UpdateState::Pending,
                    300..=449 => UpdateState::Downloading,
                    450..=499 => UpdateState::Downloaded,
                    500..=549 => UpdateState::Installing,
                    550..=579 => UpdateState::Rebooting,
                    580..=929 => UpdateState::Success,
                    930..=979 => UpdateState::Failure,
                    _ => UpdateState::TimedOut,
                },
            };
            match state {
                UpdateState::Failure | UpdateState::RolledBack | UpdateState::TimedOut => {
                    let reason = if state == UpdateState::TimedOut {
                        "no report for 3600 s: timed out"
                    } else {
                        weighted(&REASONS, rng)
                    };
                    self.devices.push((*id, UpdateState::Installing));
                    self.failures.push((*id, state, reason));
                }
                _ => self.devices.push((*id, state)),
            }
        }
    }
}

/// Writes one deployment: the record with its devices' states, the phases'
/// admissions, then each failure as the device (or, for a time-out, the
/// server) reports it, with its reason and a history event.
async fn write_deployment(
    store: &SharedStore,
    plan: Plan,
) -> Result<(DeploymentId, usize, DeploymentStatus, usize)> {
    let id = plan.record.id;
    store
        .insert_deployment(&plan.record, &plan.devices)
        .await
        .with_context(|| format!("deployment {}", plan.record.name))?;
    for (phase, devices) in plan.phases.iter().enumerate() {
        store
            .admit_devices(id, phase as u32, devices)
            .await
            .context("admitting a phase's devices")?;
    }
    let at = plan.record.created_at + Duration::hours(3);
    for (device, state, reason) in &plan.failures {
        if *state == UpdateState::TimedOut {
            store
                .decide_update_state(id, *device, *state, Some(reason), at)
                .await
                .context("a time-out")?;
        } else {
            store
                .record_update_state(id, *device, *state, Some(reason), at)
                .await
                .context("a failure")?;
        }
    }
    Ok((
        id,
        plan.devices.len(),
        plan.record.status,
        plan.failures.len(),
    ))
}

/// One of `choices`, by weight.
fn weighted<T: Copy>(choices: &[(T, u32)], rng: &mut Rng) -> T {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut roll = rng.below(u64::from(total)) as u32;
    for (choice, weight) in choices {
        if roll < *weight {
            return *choice;
        }
        roll -= weight;
    }
    choices[0].0
}
