//! What the fleet looks like: a [`Snapshot`] of counts for live progress,
//! a [`DeviceReport`] per device for tests, and the final [`Summary`]
//! (a table for people, JSON for scripts).

use crate::fleet::Shared;
use airlift_protocol::state::UpdateState;
use airlift_testkit::proxy::ProxyStats;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Counts across the fleet at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Seconds since the fleet started.
    pub elapsed_secs: u64,
    /// Devices in the fleet.
    pub devices: usize,
    /// Devices per agent state (`idle`, `downloading`, `installing`,
    /// `rebooting`, `verifying`, `committed`, …; `starting` before the
    /// agent first ran, `not_accepted` while the server has not let the
    /// device in).
    pub states: BTreeMap<String, usize>,
    /// Devices per version their booted slot runs (`unknown`: not a
    /// simulator image).
    pub running: BTreeMap<String, usize>,
    /// Devices per final state of their last update (`success`,
    /// `rolled_back`, `failure`, …; `none` before any).
    pub outcomes: BTreeMap<String, usize>,
    /// Devices whose last check-in could not reach the server.
    pub unreachable: usize,
    /// Devices that checked in at least once: the server knows them, and
    /// a deployment created from now on targets them.
    pub checked_in: usize,
    /// Power cuts so far.
    pub power_cuts: u64,
    /// Downloads that went on from a byte past 0 (after a cut connection
    /// or a power cut).
    pub resumed_downloads: u64,
    /// Device steps that failed (agent errors, panics, setup).
    pub errors: u64,
    /// Check-ins so far.
    pub polls: u64,
    /// Push nudges the devices heard.
    pub nudges: u64,
}

impl Snapshot {
    pub(crate) fn of(shared: &Shared, elapsed: Duration) -> Snapshot {
        let mut snapshot = Snapshot {
            elapsed_secs: elapsed.as_secs(),
            devices: shared.views.len(),
            polls: shared.polls.load(Ordering::Relaxed),
            nudges: shared.nudges.load(Ordering::Relaxed),
            ..Snapshot::default()
        };
        for index in 0..shared.views.len() {
            let view = shared.view(index);
            *snapshot.states.entry(view.state.to_owned()).or_default() += 1;
            let running = view.running.clone().unwrap_or_else(|| "off".into());
            *snapshot.running.entry(running).or_default() += 1;
            let outcome = view
                .outcome
                .as_ref()
                .map_or("none", |(_, state, _)| state.as_str());
            *snapshot.outcomes.entry(outcome.to_owned()).or_default() += 1;
            snapshot.unreachable += usize::from(view.unreachable);
            snapshot.checked_in += usize::from(view.checked_in);
            snapshot.power_cuts += u64::from(view.power_cuts);
            snapshot.resumed_downloads += u64::from(view.resumed_downloads);
            snapshot.errors += u64::from(view.errors);
        }
        snapshot
    }

    /// Devices in `state`.
    pub fn in_state(&self, state: &str) -> usize {
        self.states.get(state).copied().unwrap_or(0)
    }

    /// Devices running `version`.
    pub fn running(&self, version: &str) -> usize {
        self.running.get(version).copied().unwrap_or(0)
    }

    /// Devices whose last update ended in `outcome`.
    pub fn with_outcome(&self, outcome: &str) -> usize {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }
}

/// One device: what it drew and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceReport {
    /// Its serial.
    pub serial: String,
    /// Its device type.
    pub device_type: String,
    /// Its inventory attributes.
    pub attributes: BTreeMap<String, String>,
    /// Its health check fails on the chosen version.
    pub fail_health: bool,
    /// It loses power mid-download once per deployment.
    pub power_loss: bool,
    /// It talks through the flaky proxy.
    pub flaky_network: bool,
    /// The agent's state.
    pub state: String,
    /// What its booted slot runs.
    pub running: Option<String>,
    /// How its last update ended.
    pub outcome: Option<UpdateState>,
    /// Why, for a failure or rollback.
    pub message: Option<String>,
    /// Power cuts it met.
    pub power_cuts: u32,
    /// Downloads it resumed.
    pub resumed_downloads: u32,
    /// The last error of a step, if any.
    pub last_error: Option<String>,
}

impl DeviceReport {
    pub(crate) fn all(shared: &Shared) -> Vec<DeviceReport> {
        shared
            .plans
            .iter()
            .enumerate()
            .map(|(index, plan)| {
                let view = shared.view(index).clone();
                DeviceReport {
                    serial: plan.serial.clone(),
                    device_type: plan.device_type.clone(),
                    attributes: plan.attributes.clone(),
                    fail_health: plan.fail_health,
                    power_loss: plan.power_loss,
                    flaky_network: plan.flaky_network,
                    state: view.state.to_owned(),
                    running: view.running,
                    outcome: view.outcome.as_ref().map(|(_, state, _)| *state),
                    message: view.outcome.and_then(|(_, _, message)| message),
                    power_cuts: view.power_cuts,
                    resumed_downloads: view.resumed_downloads,
                    last_error: view.last_error,
                }
            })
            .collect()
    }
}

/// The end of a run, for people (`Display`) and scripts (`Serialize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The counts at the end.
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// Devices that resumed at least one download.
    pub devices_resumed: usize,
    /// Rollbacks per reason (first line of the device's message).
    pub rollbacks: BTreeMap<String, usize>,
    /// Failures per reason.
    pub failures: BTreeMap<String, usize>,
    /// Devices per drawn fault.
    pub faults: BTreeMap<String, usize>,
    /// What the flaky-network proxy did.
    pub proxy: Option<ProxySummary>,
    /// Last errors per message (setup, agent errors), if any.
    pub errors_by_message: BTreeMap<String, usize>,
}

/// What the flaky-network proxy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxySummary {
    /// Requests it saw.
    pub requests: u64,
    /// Answers it cut short.
    pub cuts: u64,
    /// Requests it answered 503.
    pub refusals: u64,
}

/// The first line of a message, at most 100 characters.
fn reason(message: Option<&str>) -> String {
    let line = message
        .and_then(|m| m.lines().next())
        .unwrap_or("(no reason given)");
    let mut short: String = line.chars().take(100).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

impl Summary {
    pub(crate) fn of(shared: &Shared, elapsed: Duration, proxy: Option<&ProxyStats>) -> Summary {
        let snapshot = Snapshot::of(shared, elapsed);
        let devices = DeviceReport::all(shared);
        let mut summary = Summary {
            snapshot,
            devices_resumed: devices.iter().filter(|d| d.resumed_downloads > 0).count(),
            rollbacks: BTreeMap::new(),
            failures: BTreeMap::new(),
            faults: BTreeMap::new(),
            proxy: proxy.map(|p| ProxySummary {
                requests: p.requests(),
                cuts: p.cuts(),
                refusals: p.refusals(),
            }),
            errors_by_message: BTreeMap::new(),
        };
        for device in &devices {
            match device.outcome {
                Some(UpdateState::RolledBack) => {
                    *summary
                        .rollbacks
                        .entry(reason(device.message.as_deref()))
                        .or_default() += 1;
                }
                Some(UpdateState::Failure) => {
                    *summary
                        .failures
                        .entry(reason(device.message.as_deref()))
                        .or_default() += 1;
                }
                _ => {}
            }
            for (fault, drawn) in [
                ("fail_health", device.fail_health),
                ("power_loss", device.power_loss),
                ("flaky_network", device.flaky_network),
            ] {
                if drawn {
                    *summary.faults.entry(fault.to_owned()).or_default() += 1;
                }
            }
            if let Some(error) = &device.last_error {
                *summary
                    .errors_by_message
                    .entry(reason(Some(error)))
                    .or_default() += 1;
            }
        }
        summary
    }
}

fn table(f: &mut fmt::Formatter<'_>, title: &str, rows: &BTreeMap<String, usize>) -> fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let width = rows
        .keys()
        .map(|name| name.chars().count() + 2)
        .chain([title.chars().count(), 30])
        .max()
        .unwrap_or(30);
    writeln!(f, "  {title:<width$} {:>8}", "devices")?;
    let mut rows: Vec<_> = rows.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (name, count) in rows {
        writeln!(f, "    {name:<w$} {count:>8}", w = width - 2)?;
    }
    Ok(())
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.snapshot;
        writeln!(
            f,
            "airlift-sim: {} devices, {} s, {} check-ins",
            s.devices, s.elapsed_secs, s.polls
        )?;
        table(f, "running version", &s.running)?;
        table(f, "last update ended", &s.outcomes)?;
        table(f, "agent state", &s.states)?;
        table(f, "rolled back because", &self.rollbacks)?;
        table(f, "failed because", &self.failures)?;
        table(f, "faults drawn", &self.faults)?;
        writeln!(
            f,
            "  power cuts: {}; resumed downloads: {} (on {} devices); unreachable now: {}",
            s.power_cuts, s.resumed_downloads, self.devices_resumed, s.unreachable
        )?;
        if let Some(proxy) = &self.proxy {
            writeln!(
                f,
                "  flaky network: {} requests, {} answers cut short, {} answered 503",
                proxy.requests, proxy.cuts, proxy.refusals
            )?;
        }
        if s.errors > 0 {
            writeln!(f, "  errors: {} (last error per device below)", s.errors)?;
            table(f, "error", &self.errors_by_message)?;
        }
        Ok(())
    }
}
