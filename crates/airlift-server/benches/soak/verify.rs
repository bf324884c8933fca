//! "Nothing lost": after the run, the store must hold, for every device,
//! what the device last had acknowledged — its inventory (written before a
//! check-in is answered), a check-in time no older than its last answered
//! check-in (times are written behind, once a second; a graceful stop or
//! the next check-in writes them), and, for targeted devices, the update
//! state of its last acknowledged report.

use crate::fleet::{local_counts, Admin, Device};
use airlift_protocol::management::{Deployment, Device as StoredDevice, DeviceUpdate, Page};
use airlift_protocol::state::{DeviceStatus, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};

/// What the check found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// `(check, devices checked, mismatches)`.
    pub rows: Vec<(String, usize, usize)>,
    /// The first few mismatches of each check, for people.
    pub examples: Vec<String>,
    /// Targeted devices whose last report went unanswered: either state is right.
    pub unanswered_reports: usize,
    /// Devices whose last check-in with a changed inventory went unanswered.
    pub unanswered_inventories: usize,
    pub deployment_status: String,
    pub local_counts: BTreeMap<UpdateState, u64>,
    pub store_counts: BTreeMap<UpdateState, u64>,
}

impl Verdict {
    pub fn lost(&self) -> usize {
        self.rows.iter().map(|(_, _, bad)| bad).sum()
    }

    fn row(&mut self, check: &str, checked: usize, bad: Vec<String>) {
        self.rows.push((check.to_owned(), checked, bad.len()));
        self.examples
            .extend(bad.into_iter().take(5).map(|b| format!("{check}: {b}")));
    }
}

/// Every item of a paged list under `path`, 1 000 at a time.
async fn every_page<T: serde::de::DeserializeOwned>(admin: &Admin, path: &str) -> Result<Vec<T>> {
    const PER_PAGE: usize = 1000;
    let mut all = Vec::new();
    for page in 1.. {
        let got: Page<T> = admin
            .get(&format!("{path}?per_page={PER_PAGE}&page={page}"))
            .await?;
        let n = got.items.len();
        all.extend(got.items);
        if n < PER_PAGE {
            break;
        }
    }
    Ok(all)
}

/// Every device the store holds.
async fn stored_devices(admin: &Admin) -> Result<HashMap<DeviceId, StoredDevice>> {
    let all: Vec<StoredDevice> = every_page(admin, "/devices").await?;
    Ok(all.into_iter().map(|d| (d.id, d)).collect())
}

pub async fn verify(
    admins: &[Admin],
    devices: &[Device],
    deployment: DeploymentId,
) -> Result<Verdict> {
    let mut verdict = Verdict {
        local_counts: local_counts(devices),
        ..Verdict::default()
    };
    let stored = stored_devices(&admins[0]).await?;
    check_devices(&mut verdict, devices, &stored);

    // The deployment, as each instance reads it.
    let targeted: Vec<&Device> = devices.iter().filter(|d| d.targeted).collect();
    for admin in admins {
        // Counts first, then the devices: a report landing in between
        // shows as a disagreement, which after the run (nothing moving)
        // is a real one.
        let detail: Deployment = admin.get(&format!("/deployments/{deployment}")).await?;
        let updates: Vec<DeviceUpdate> =
            every_page(admin, &format!("/deployments/{deployment}/devices")).await?;
        check_deployment(&mut verdict, &targeted, (&detail, &updates), &admin.url);
    }
    verdict.unanswered_reports = targeted
        .iter()
        .filter(|d| d.update.as_ref().is_some_and(|u| u.unacked.is_some()))
        .count();
    Ok(verdict)
}

/// Each device's row in the store against what the device last had
/// acknowledged: there, accepted, its inventory, its check-in time.
fn check_devices(
    verdict: &mut Verdict,
    devices: &[Device],
    stored: &HashMap<DeviceId, StoredDevice>,
) {
    let mut missing = Vec::new();
    let mut status = Vec::new();
    let mut inventory = Vec::new();
    let mut check_in_time = Vec::new();
    for device in devices {
        let Some(row) = stored.get(&device.id) else {
            missing.push(format!(
                "device {} ({}) is not in the store",
                device.index, device.id
            ));
            continue;
        };
        if row.status != DeviceStatus::Accepted {
            status.push(format!("device {}: status {}", device.index, row.status));
        }
        let Some((acked, sent_at)) = &device.acked else {
            continue;
        };
        let holds = |inv: &airlift_protocol::device::Inventory| {
            row.device_type.as_deref() == Some(inv.device_type.as_str())
                && row.hardware_revision == inv.hardware_revision
                && row.installed == inv.installed
                && row.security_version == inv.security_version
                && row.attributes == inv.attributes
        };
        if device.inventory_unacked && acked != &device.inventory {
            verdict.unanswered_inventories += 1;
        }
        let either = device.inventory_unacked && holds(&device.inventory);
        if !holds(acked) && !either {
            inventory.push(format!(
                "device {} ({}): stored installed {:?}, last acknowledged {:?}",
                device.index, device.id, row.installed, acked.installed
            ));
        }
        let tolerance = chrono::Duration::milliseconds(1);
        match row.last_check_in {
            Some(at) if at + tolerance >= *sent_at => {}
            other => check_in_time.push(format!(
                "device {} ({}): stored last check-in {other:?}, last answered check-in sent at {sent_at}",
                device.index, device.id
            )),
        }
    }
    let extra = stored.len().saturating_sub(devices.len() - missing.len());
    verdict.row("device in the store", devices.len(), missing);
    verdict.row(
        "no device the fleet does not have",
        stored.len(),
        (0..extra)
            .map(|_| "an extra device in the store".to_owned())
            .collect(),
    );
    verdict.row("status accepted", devices.len(), status);
    verdict.row(
        "inventory = last acknowledged check-in's",
        devices.len(),
        inventory,
    );
    verdict.row(
        "last check-in time ≥ last answered check-in's",
        devices.len(),
        check_in_time,
    );
}

/// The deployment and its paged device list as read `via` one instance,
/// against the targeted devices' last acknowledged reports.
fn check_deployment(
    verdict: &mut Verdict,
    targeted: &[&Device],
    (deployment, updates): (&Deployment, &[DeviceUpdate]),
    via: &str,
) {
    let states: HashMap<DeviceId, UpdateState> =
        updates.iter().map(|u| (u.device_id, u.state)).collect();
    let mut wrong = Vec::new();
    for device in targeted {
        let update = device.update.as_ref();
        let acked = update.and_then(|u| u.acked).unwrap_or(UpdateState::Pending);
        let unacked = update.and_then(|u| u.unacked);
        match states.get(&device.id) {
            Some(state) if *state == acked || Some(*state) == unacked => {}
            Some(state) => wrong.push(format!(
                "device {} ({}): stored {state}, last acknowledged {acked}{}",
                device.index,
                device.id,
                unacked
                    .map(|u| format!(", unanswered {u}"))
                    .unwrap_or_default()
            )),
            None => wrong.push(format!(
                "device {} ({}): not in the deployment",
                device.index, device.id
            )),
        }
    }
    let extra: Vec<String> = updates
        .iter()
        .filter(|u| !targeted.iter().any(|d| d.id == u.device_id))
        .map(|u| {
            format!(
                "device {} is in the deployment but not targeted",
                u.device_id
            )
        })
        .collect();
    let mut from_list = BTreeMap::new();
    for update in updates {
        *from_list.entry(update.state).or_insert(0u64) += 1;
    }
    let counts_agree = if from_list == deployment.counts {
        Vec::new()
    } else {
        vec![format!(
            "counts {:?} but the device list gives {from_list:?}",
            deployment.counts
        )]
    };
    verdict.row(
        &format!("update state = last acknowledged report (read via {via})"),
        targeted.len(),
        wrong,
    );
    verdict.row(
        &format!("no untargeted device in the deployment (via {via})"),
        updates.len(),
        extra,
    );
    verdict.row(
        &format!("deployment counts = its device list (via {via})"),
        1,
        counts_agree,
    );
    verdict.deployment_status = deployment.status.to_string();
    verdict.store_counts = deployment.counts.clone();
}
