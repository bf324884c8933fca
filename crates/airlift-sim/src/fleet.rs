//! The fleet: devices waiting in a queue ordered by their next poll time,
//! and a few worker threads taking the device that is due, running one
//! step of its agent, and putting it back.
//!
//! A step is one of: make the device (files, key, pre-authorisation);
//! power it up and start a fresh agent, which [`resume`](Agent::resume)s;
//! or one [`poll_once`](Agent::poll_once). A reboot the agent asks for, a
//! power cut and a crash all end the same way: the agent is dropped, the
//! bootloader's power-up step runs, and a new agent starts.
//!
//! A power cut is an unwinding panic with a [`PowerCut`] payload, raised
//! from the agent's [`Observer`](airlift_agent::driver::Observer) as a
//! chunk of the download arrives: the agent's call ends there without
//! another write. The worker catches it; a panic hook keeps it quiet.

use crate::admin::Admin;
use crate::config::{ConfigError, FleetConfig};
use crate::device::{Layout, Plan};
use crate::schedule::Schedule;
use crate::summary::{DeviceReport, Snapshot, Summary};
use airlift_agent::download::DownloadEvent;
use airlift_agent::driver::{Agent, Observed, Poll};
use airlift_agent::push::PushListener;
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use airlift_testkit::proxy::{Faults, FlakyProxy};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a simulated reboot takes.
const REBOOT: Duration = Duration::from_millis(100);

/// Why a fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The fleet's directory, threads or proxy.
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// [`Fleet::wait_until`] gave up; this is how the fleet stood.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the fleet did not get there in time: {0:?}")]
pub struct TimedOut(pub Box<Snapshot>);

/// The panic payload of a simulated power cut.
#[derive(Debug, Clone, Copy)]
pub struct PowerCut;

/// What the simulator knows of one device, updated as it goes.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    /// The agent's state name, or `starting` / `not_accepted`.
    pub state: &'static str,
    /// What the booted slot holds.
    pub running: Option<String>,
    /// The last final report: deployment, state, message.
    pub outcome: Option<(DeploymentId, UpdateState, Option<String>)>,
    pub power_cuts: u32,
    pub resumed_downloads: u32,
    /// The deployment whose package bytes arrived last.
    pub receiving: Option<DeploymentId>,
    /// Deployments this device has lost power in already.
    pub cut_in: Vec<DeploymentId>,
    pub unreachable: bool,
    /// Whether a check-in ever got through (the server knows the device).
    pub checked_in: bool,
    pub last_error: Option<String>,
    pub errors: u32,
}

pub(crate) struct Shared {
    pub config: FleetConfig,
    pub plans: Vec<Plan>,
    pub views: Vec<Mutex<View>>,
    queue: Mutex<Schedule<Box<SimDevice>>>,
    wake: Condvar,
    stop: AtomicBool,
    pub polls: AtomicU64,
    /// Push nudges heard (each brings the device's next step forward,
    /// unless it is due already).
    pub nudges: AtomicU64,
    admin: Option<Admin>,
    proxy_url: Option<String>,
    root: PathBuf,
}

impl Shared {
    pub fn view(&self, index: usize) -> MutexGuard<'_, View> {
        // A view is never left half-written: a poisoned lock's data is fine.
        self.views[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Brings device `index`'s next step forward to now (a push nudge).
    pub fn nudge(&self, index: usize) {
        self.nudges.fetch_add(1, Ordering::Relaxed);
        if self.queue().nudge(index, Instant::now()) {
            self.wake.notify_one();
        }
    }

    fn queue(&self) -> MutexGuard<'_, Schedule<Box<SimDevice>>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A device as the worker drives it.
struct SimDevice {
    index: usize,
    layout: Layout,
    created: bool,
    powered: bool,
    agent: Option<Agent>,
    /// The agent's push listener, while the agent runs.
    push: Option<PushListener>,
}

/// A running fleet of simulated devices.
///
/// ```no_run
/// use airlift_sim::{Fleet, FleetConfig};
/// use std::time::Duration;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = FleetConfig::new("http://127.0.0.1:8080", "release.pub".into(), 200, "pi4");
/// config.admin_token = Some("alt_…".into());
/// let fleet = Fleet::start(config)?;
/// let settled = fleet.wait_until(Duration::from_secs(60), |s| s.states.get("idle") == Some(&200));
/// println!("{}", fleet.stop());
/// # Ok(())
/// # }
/// ```
pub struct Fleet {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    proxy: Option<FlakyProxy>,
    started: Instant,
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("devices", &self.shared.plans.len())
            .field("root", &self.shared.root)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Makes the devices' plans, starts the flaky-network proxy if any
    /// device needs it, and starts the workers. Devices are made and
    /// first powered up by the workers, spread over `ramp_up`.
    pub fn start(config: FleetConfig) -> Result<Fleet, SimError> {
        config.check()?;
        quiet_power_cuts();
        let setup = |what| move |source| SimError::Setup { what, source };
        let (temp, root) = match &config.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(setup("creating the fleet directory"))?;
                (None, dir.clone())
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("airlift-sim-")
                    .tempdir()
                    .map_err(setup("creating a temporary directory"))?;
                let root = temp.path().to_owned();
                (Some(temp), root)
            }
        };
        let plans: Vec<Plan> = (0..config.devices).map(|i| Plan::of(&config, i)).collect();
        let proxy = if plans.iter().any(|p| p.flaky_network) {
            let faults = Faults::Random { seed: config.seed };
            let proxy = FlakyProxy::start(&config.server_url, faults)
                .map_err(setup("starting the flaky-network proxy"))?;
            Some(proxy)
        } else {
            None
        };
        let started = Instant::now();
        let mut queue = Schedule::new(plans.len());
        for (index, plan) in plans.iter().enumerate() {
            let spread = crate::select::fraction(config.seed, "start", &plan.serial);
            let device = Box::new(SimDevice {
                index,
                layout: Layout {
                    dir: root.join(&plan.serial),
                },
                created: false,
                powered: false,
                agent: None,
                push: None,
            });
            queue.put(
                index,
                started + config.ramp_up.mul_f64(spread),
                started,
                device,
            );
        }
        let shared = Arc::new(Shared {
            admin: config
                .admin_token
                .as_deref()
                .map(|token| Admin::new(&config.server_url, token)),
            views: plans
                .iter()
                .map(|_| {
                    Mutex::new(View {
                        state: "starting",
                        ..View::default()
                    })
                })
                .collect(),
            plans,
            queue: Mutex::new(queue),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            polls: AtomicU64::new(0),
            nudges: AtomicU64::new(0),
            proxy_url: proxy.as_ref().map(|p| p.url().to_owned()),
            root,
            config,
        });
        let workers = (0..shared.config.workers)
            .map(|n| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("airlift-sim-{n}"))
                    .spawn(move || work(&shared))
                    .map_err(setup("starting a worker thread"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Fleet {
            shared,
            workers,
            proxy,
            started,
            _temp: temp,
        })
    }

    /// Counts per agent state, running version and outcome, now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::of(&self.shared, self.started.elapsed())
    }

    /// Every device: what it drew and where it stands.
    pub fn devices(&self) -> Vec<DeviceReport> {
        DeviceReport::all(&self.shared)
    }

    /// Takes a snapshot every 50 ms until `done` holds (`Ok`) or `timeout`
    /// passes ([`TimedOut`] with the last one).
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Snapshot) -> bool,
    ) -> Result<Snapshot, TimedOut> {
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = self.snapshot();
            if done(&snapshot) {
                return Ok(snapshot);
            }
            if Instant::now() >= deadline {
                return Err(TimedOut(Box::new(snapshot)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The summary so far.
    pub fn summary(&self) -> Summary {
        let proxy = self.proxy.as_ref().map(FlakyProxy::stats);
        Summary::of(&self.shared, self.started.elapsed(), proxy)
    }

    /// Stops the workers (each finishes the step it is in) and returns the
    /// final summary. The devices' directories are deleted unless
    /// [`FleetConfig::dir`] was set.
    pub fn stop(mut self) -> Summary {
        self.halt();
        self.summary()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        self.shared.queue().clear();
        if let Some(proxy) = self.proxy.as_mut() {
            proxy.stop();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Installs (once) a panic hook that says nothing of [`PowerCut`]s and
/// hands every other panic to the hook that was there.
fn quiet_power_cuts() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<PowerCut>().is_none() {
                previous(info);
            }
        }));
    });
}

/// A worker: takes the device that is due, steps it, puts it back.
fn work(shared: &Arc<Shared>) {
    loop {
        let mut device = {
            let mut queue = shared.queue();
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let now = Instant::now();
                if let Some(device) = queue.take_due(now) {
                    break device;
                }
                queue = match queue.next_at() {
                    Some(at) => {
                        shared
                            .wake
                            .wait_timeout(queue, at - now)
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .0
                    }
                    None => shared
                        .wake
                        .wait(queue)
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                };
            }
        };
        let delay = step(shared, &mut device);
        let now = Instant::now();
        let index = device.index;
        shared.queue().put(index, now + delay, now, device);
        shared.wake.notify_one();
    }
}

/// One step of one device; returns how long until its next.
fn step(shared: &Arc<Shared>, device: &mut SimDevice) -> Duration {
    let index = device.index;
    let plan = &shared.plans[index];
    let config = &shared.config;
    let retry = config.poll_interval.unwrap_or(Duration::from_secs(1));
    if !device.created {
        if let Err(e) = device.layout.create(config, plan, shared.admin.as_ref()) {
            return failed(shared, index, &e, retry);
        }
        device.created = true;
    }
    let Some(agent) = device.agent.as_mut() else {
        return start(shared, device, retry);
    };
    shared.polls.fetch_add(1, Ordering::Relaxed);
    let polled = catch_unwind(AssertUnwindSafe(|| agent.poll_once()));
    let state = agent.state().name();
    let interval = agent.poll_interval();
    let next = |server: Duration| config.poll_interval.unwrap_or(server);
    match polled {
        Ok(Ok(Poll::Checked(server))) => {
            settle(shared, index, state, false);
            shared.view(index).checked_in = true;
            next(server)
        }
        Ok(Ok(Poll::NotAccepted)) => {
            settle(shared, index, "not_accepted", false);
            next(interval)
        }
        Ok(Ok(Poll::Unreachable(_))) => {
            settle(shared, index, state, true);
            next(interval)
        }
        Ok(Ok(Poll::Rebooting)) => {
            settle(shared, index, state, false);
            device.agent = None;
            device.push = None;
            device.powered = false;
            REBOOT
        }
        Ok(Err(e)) => {
            device.agent = None;
            device.push = None;
            device.powered = false;
            failed(shared, index, &e, retry)
        }
        Err(panic) => {
            crashed(shared, index, panic.as_ref());
            device.agent = None;
            device.push = None;
            device.powered = false;
            REBOOT
        }
    }
}

/// Powers the device up (if it is off) and starts a fresh agent, which
/// resumes whatever it had under way.
fn start(shared: &Arc<Shared>, device: &mut SimDevice, retry: Duration) -> Duration {
    let index = device.index;
    let plan = &shared.plans[index];
    let config = &shared.config;
    if !device.powered {
        let faults = &config.faults;
        let fail_on: Vec<&str> = faults
            .fail_health_on
            .as_deref()
            .filter(|_| plan.fail_health)
            .into_iter()
            .chain(faults.fail_health_everywhere_on.as_deref())
            .collect();
        match device.layout.power_up(&fail_on) {
            Ok(running) => {
                shared.view(index).running = Some(running.unwrap_or_else(|| "unknown".into()));
                device.powered = true;
            }
            Err(e) => return failed(shared, index, &e, retry),
        }
    }
    let url = match (&shared.proxy_url, plan.flaky_network) {
        (Some(proxy), true) => proxy.as_str(),
        _ => config.server_url.as_str(),
    };
    let agent_config = device.layout.agent_config(config, plan, url);
    let mut agent = match Agent::new(agent_config) {
        Ok(agent) => agent,
        Err(e) => return failed(shared, index, &e, retry),
    };
    agent.set_observer(observer(shared, index));
    let resumed = catch_unwind(AssertUnwindSafe(|| agent.resume()));
    let state = agent.state().name();
    match resumed {
        Ok(Ok(())) if agent.is_rebooting() => {
            settle(shared, index, state, false);
            device.powered = false;
            REBOOT
        }
        Ok(Ok(())) => {
            settle(shared, index, state, false);
            device.push = match agent.start_push(ringer(shared, index)) {
                Ok(push) => push,
                Err(e) => return failed(shared, index, &e, retry),
            };
            device.agent = Some(agent);
            // The first check-in follows at once.
            Duration::ZERO
        }
        Ok(Err(e)) => {
            device.powered = false;
            failed(shared, index, &e, retry)
        }
        Err(panic) => {
            crashed(shared, index, panic.as_ref());
            device.powered = false;
            REBOOT
        }
    }
}

/// A push listener's bell for device `index`: its next step comes forward.
fn ringer(shared: &Arc<Shared>, index: usize) -> airlift_agent::push::Ring {
    let shared = Arc::downgrade(shared);
    Arc::new(move |_| {
        if let Some(shared) = shared.upgrade() {
            shared.nudge(index);
        }
    })
}

fn settle(shared: &Shared, index: usize, state: &'static str, unreachable: bool) {
    let mut view = shared.view(index);
    view.state = state;
    view.unreachable = unreachable;
}

fn failed(
    shared: &Shared,
    index: usize,
    error: &dyn std::fmt::Display,
    retry: Duration,
) -> Duration {
    let message = error.to_string();
    tracing::warn!(serial = %shared.plans[index].serial, error = %message, "device step failed");
    let mut view = shared.view(index);
    view.errors += 1;
    view.last_error = Some(message);
    retry
}

/// A power cut (counted where it was raised) or a real panic of the agent.
fn crashed(shared: &Shared, index: usize, panic: &(dyn std::any::Any + Send)) {
    if panic.downcast_ref::<PowerCut>().is_some() {
        return;
    }
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".into());
    let mut view = shared.view(index);
    view.errors += 1;
    view.last_error = Some(format!("the agent panicked: {message}"));
}

/// What the device's agent tells the simulator, and where its power is cut.
fn observer(shared: &Arc<Shared>, index: usize) -> airlift_agent::driver::Observer {
    let shared = shared.clone();
    let plan = shared.plans[index].clone();
    let seed = shared.config.seed;
    Box::new(move |observed| match observed {
        Observed::State(state) => {
            shared.view(index).state = state.name();
        }
        Observed::Report(report) => {
            // The first final report of a deployment is its outcome: a
            // device whose `success` is still queued may later decline the
            // same offer as `already_installed`, which the server ignores.
            let mut view = shared.view(index);
            let known = view
                .outcome
                .as_ref()
                .is_some_and(|(deployment, _, _)| *deployment == report.deployment_id);
            if report.state.is_final() && !known {
                view.outcome = Some((report.deployment_id, report.state, report.message.clone()));
            }
        }
        Observed::Download(DownloadEvent::Connecting { deployment, .. }) => {
            // A connection after bytes of this package arrived: a resume
            // (the first one asks past the head, which came with the offer).
            let mut view = shared.view(index);
            if view.receiving == Some(deployment) {
                view.resumed_downloads += 1;
            }
        }
        Observed::Download(DownloadEvent::Received {
            deployment,
            offset,
            size,
        }) => {
            {
                let mut view = shared.view(index);
                if view.receiving != Some(deployment) {
                    view.receiving = Some(deployment);
                }
            }
            if !plan.power_loss || offset < plan.power_loss_at(seed, &deployment.to_string(), size)
            {
                return;
            }
            {
                let mut view = shared.view(index);
                if view.cut_in.contains(&deployment) {
                    return;
                }
                view.cut_in.push(deployment);
                view.power_cuts += 1;
            }
            std::panic::panic_any(PowerCut);
        }
        _ => {}
    })
}
