//! The staged rollout: a deployment to the devices carrying the rollout's
//! tag, in three phases (1 %, 10 %, 100 % of them), each advancing once a
//! small share of its devices succeeded and soaked, advanced by the
//! servers' own rollout engine; and afterwards, the check that the
//! deployment's records agree exactly with what the generator saw.

use crate::devices::Admin;
use crate::load::Outcome;
use crate::params::Params;
use crate::seed::ROLLOUT_TAG;
use airlift_protocol::management::Deployment;
use airlift_protocol::state::UpdateState;
use airlift_protocol::{DeploymentId, DeviceId};
use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Utc};
use hyper::StatusCode;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// Creates the phased deployment of `package`; its id and how long the
/// server took to create it (every tagged device gets its row).
pub async fn create(admin: &Admin, package: &str, params: &Params) -> Result<(DeploymentId, f64)> {
    let phase = |percent: u64| {
        json!({
            "devices": {"percent": percent},
            "soak_secs": params.soak_secs,
            "success_percent": params.success_percent,
        })
    };
    let started = Instant::now();
    let (status, created) = admin
        .post(
            "/deployments",
            &json!({
                "name": "million: staged rollout",
                "package_id": package,
                "target": {"tag": ROLLOUT_TAG},
                "strategy": {
                    "type": "phased",
                    "phases": [phase(1), phase(10), phase(100)],
                    "failure_threshold": {"percent": 10},
                },
            }),
        )
        .await
        .context("creating the rollout")?;
    ensure!(
        status == StatusCode::CREATED,
        "creating the rollout: {status}: {created}"
    );
    let id = created["id"].as_str().context("deployment id")?.parse()?;
    Ok((id, started.elapsed().as_secs_f64()))
}

/// How often the watcher reads the rollout's phases during the load.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Reads the deployment through the API while the load runs and notes
/// when each phase's admissions were first seen (each phase admits its
/// devices in one transaction): a check-in sent after that must find its
/// device admitted.
pub struct Watcher {
    stop: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<Result<Vec<Option<DateTime<Utc>>>>>,
}

impl Watcher {
    pub fn start(url: &str, id: DeploymentId) -> Result<Self> {
        let admin = Admin::new(url)?;
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let stopped = std::sync::Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut seen: Vec<Option<DateTime<Utc>>> = Vec::new();
            loop {
                let deployment: Deployment =
                    serde_json::from_value(admin.get(&format!("/deployments/{id}")).await?)?;
                let now = Utc::now();
                let phases = deployment.rollout.map(|r| r.phases).unwrap_or_default();
                seen.resize(phases.len(), None);
                for (at, phase) in seen.iter_mut().zip(&phases) {
                    if at.is_none() && phase.admitted > 0 {
                        *at = Some(now);
                    }
                }
                tokio::select! {
                    () = stopped.notified() => return Ok(seen),
                    () = tokio::time::sleep(WATCH_INTERVAL) => {}
                }
            }
        });
        Ok(Self { stop, task })
    }

    /// When each phase's admissions were first seen.
    pub async fn stop(self) -> Result<Vec<Option<DateTime<Utc>>>> {
        self.stop.notify_one();
        self.task.await?
    }
}

/// How the rollout ended up, and whether its records agree with the
/// generator's.
pub struct Verdict {
    pub deployment: Deployment,
    /// Devices admitted, per phase (from the deployment's records).
    pub admitted: Vec<u64>,
    pub offered: usize,
    pub succeeded: usize,
    /// Devices whose check-in time the servers stored during the load.
    pub checked_in: i64,
    /// Check-ins of tagged devices sent after their phase's admissions
    /// were seen: each must have had an offer.
    pub required_offers: usize,
    /// What disagrees; empty when all agree.
    pub problems: Vec<String>,
}

/// Compares the deployment (through the API and the database) with what
/// the generator saw.
pub async fn verify(
    admin: &Admin,
    url: &str,
    id: DeploymentId,
    ids: &[DeviceId],
    outcome: &Outcome,
    admitted_at: &[Option<DateTime<Utc>>],
) -> Result<Verdict> {
    let deployment: Deployment =
        serde_json::from_value(admin.get(&format!("/deployments/{id}")).await?)?;
    let mut problems = Vec::new();
    let offered: HashSet<usize> = outcome.offered.iter().map(|(i, _)| *i).collect();
    let succeeded: HashSet<usize> = outcome.succeeded.iter().copied().collect();
    check_counts(
        &deployment,
        id,
        outcome,
        &offered,
        &succeeded,
        &mut problems,
    );
    let phases = read_phases(url, id).await?;
    let required_offers = check_devices(
        &phases,
        ids,
        outcome,
        admitted_at,
        (&offered, &succeeded),
        &mut problems,
    );
    let mut admitted = vec![0u64; 3];
    for (phase, _) in phases.values() {
        if let Some(p) = phase.and_then(|p| usize::try_from(p).ok()) {
            if let Some(slot) = admitted.get_mut(p) {
                *slot += 1;
            }
        }
    }
    if let Some(rollout) = &deployment.rollout {
        let api: Vec<u64> = rollout.phases.iter().map(|p| p.admitted).collect();
        if api != admitted {
            problems.push(format!(
                "phases admitted {api:?} by the API, {admitted:?} in the table"
            ));
        }
    }
    let checked_in = checked_in_since(url, outcome).await?;
    // A check-in that failed at the generator (a time-out) may still have
    // been stored: between the answered and the sent.
    if checked_in < outcome.answered.len() as i64 || checked_in > outcome.sent as i64 {
        problems.push(format!(
            "{checked_in} devices have a check-in time from the load; {} check-ins were \
             answered of {} sent",
            outcome.answered.len(),
            outcome.sent
        ));
    }
    Ok(Verdict {
        deployment,
        admitted,
        offered: offered.len(),
        succeeded: succeeded.len(),
        checked_in,
        required_offers,
        problems,
    })
}

/// The generator's offers and reports against the deployment's counts.
fn check_counts(
    deployment: &Deployment,
    id: DeploymentId,
    outcome: &Outcome,
    offered: &HashSet<usize>,
    succeeded: &HashSet<usize>,
    problems: &mut Vec<String>,
) {
    if offered.len() != outcome.offered.len() {
        problems.push(format!(
            "{} offers went to a device twice",
            outcome.offered.len() - offered.len()
        ));
    }
    if let Some((index, other)) = outcome.offered.iter().find(|(_, d)| *d != id) {
        problems.push(format!(
            "device {index} was offered deployment {other}, not the rollout"
        ));
    }
    // A report the generator saw fail (a time-out) may or may not have
    // been stored: such a device is offered but not known to succeed.
    let unanswered: u64 = outcome.report_errors.values().sum();
    if !succeeded.is_subset(offered) || offered.len() as u64 != succeeded.len() as u64 + unanswered
    {
        problems.push(format!(
            "{} devices were offered the update, {} reported success and {unanswered} reports failed",
            offered.len(),
            succeeded.len(),
        ));
    }
    let counted = deployment
        .counts
        .get(&UpdateState::Success)
        .copied()
        .unwrap_or(0);
    if counted < succeeded.len() as u64 || counted > offered.len() as u64 {
        problems.push(format!(
            "the deployment counts {counted} successes; the generator saw {} acknowledged of {} offered",
            succeeded.len(),
            offered.len()
        ));
    }
}

/// Each device the generator saw against its row in the deployment.
fn check_devices(
    phases: &HashMap<String, (Option<i64>, String)>,
    ids: &[DeviceId],
    outcome: &Outcome,
    admitted_at: &[Option<DateTime<Utc>>],
    (offered, succeeded): (&HashSet<usize>, &HashSet<usize>),
    problems: &mut Vec<String>,
) -> usize {
    let mut required = 0;
    let by_index = |index: usize| phases.get(&ids[index].to_string()).cloned();
    for &index in offered {
        let acknowledged = succeeded.contains(&index);
        match by_index(index) {
            Some((Some(_), ref state)) if state == "success" || !acknowledged => {}
            other => problems.push(format!(
                "offered device {index} (success acknowledged: {acknowledged}) is recorded as \
                 {other:?}"
            )),
        }
    }
    // A device checking in after its phase's admissions were seen must
    // have been offered the update.
    let started = outcome.started_at.unwrap_or_else(Utc::now);
    for &(index, due, was_offered) in &outcome.tagged {
        let phase = by_index(index).and_then(|(phase, _)| phase);
        let seen = phase
            .and_then(|p| usize::try_from(p).ok())
            .and_then(|p| admitted_at.get(p).copied().flatten());
        let sent = started + chrono::Duration::nanoseconds(due as i64);
        let must = seen.is_some_and(|seen| sent > seen);
        required += usize::from(must);
        if must && !was_offered {
            problems.push(format!(
                "device {index} (admitted by phase {phase:?}) checked in without an offer"
            ));
        }
    }
    required
}

/// Every device of the deployment: its admitting phase and state.
async fn read_phases(
    url: &str,
    id: DeploymentId,
) -> Result<HashMap<String, (Option<i64>, String)>> {
    let mut connection = PgConnection::connect(url).await?;
    let rows: Vec<(String, Option<i64>, String)> = sqlx::query_as(
        "SELECT device_id, phase, state FROM deployment_devices WHERE deployment_id = $1",
    )
    .bind(id.to_string())
    .fetch_all(&mut connection)
    .await
    .context("the rollout's devices")?;
    Ok(rows.into_iter().map(|(d, p, s)| (d, (p, s))).collect())
}

/// Devices whose stored check-in time is from the load or later.
async fn checked_in_since(url: &str, outcome: &Outcome) -> Result<i64> {
    let since = outcome
        .started_at
        .context("the load's start")?
        .timestamp_millis()
        - 1;
    let mut connection = PgConnection::connect(url).await?;
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM device_presence WHERE last_check_in >= $1")
            .bind(since)
            .fetch_one(&mut connection)
            .await?;
    Ok(count)
}
