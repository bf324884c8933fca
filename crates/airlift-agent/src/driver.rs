//! The driver: performs the [`machine`](crate::machine)'s effects and feeds
//! back what happened, synchronously, one event at a time.
//!
//! [`Agent::resume`] continues whatever was persisted (it must run first at
//! every start); [`Agent::poll_once`] delivers queued reports, checks in and
//! takes an offer through download, install, trial arming and reboot. Every
//! effect is carried out by one [`Agent::perform`] match; the rules it keeps
//! are the machine's (see [`machine`](crate::machine#the-drivers-side-of-the-contract)):
//! the state is saved before its effects run, the first failing effect ends
//! its list, and `success` is only reported once the boot is committed.
//!
//! ```no_run
//! use airlift_agent::config::AgentConfig;
//! use airlift_agent::driver::Agent;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = AgentConfig::load("/etc/airlift/agent.toml".as_ref())?;
//! let mut agent = Agent::new(config)?;
//! agent.resume()?;
//! agent.poll_once()?;
//! # Ok(())
//! # }
//! ```

use crate::boot::{BootControl, BootError, BootVars, FileBootEnv, GrubEnv, Slot, UBootEnv};
use crate::client::{ClientError, ServerClient};
use crate::config::{AgentConfig, BootConfig};
use crate::download::{DownloadEvent, ResumableDownload};
use crate::identity::{self, IdentityError};
use crate::install::{
    ArchiveInstaller, FileInstaller, ImageInstaller, Installer, Installers, ModuleInstaller,
    PayloadRef, SlotDevices,
};
use crate::machine::{
    step, Activation, Decline, Effect, Event, Job, Outbox, OutboxError, Report, State, StateError,
    StateFile, TrialBoot,
};
use crate::progress::ProgressReporter;
use crate::push::{PushListener, Ring, STREAM_TIMEOUT};
use crate::stream::{Source, Stream, StreamError};
use airlift_package::encryption::{Identity as AgeIdentity, IdentityTrait};
use airlift_package::{
    Compatibility, DeviceFacts, Limits, Manifest, PackageReader, PayloadType, PublicKey,
    Sha256Digest, TrustSet, Verified,
};
use airlift_protocol::device::{Inventory, StatusReport, UpdateOffer};
use airlift_protocol::install::InstallPermit;
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Why the agent cannot go on. Failures of an update are not errors: they
/// are events the machine turns into `failure` or `rolled_back`.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state file could not be read or saved.
    #[error(transparent)]
    State(#[from] StateError),
    /// The report queue could not be read or written.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The bootloader could not be read where the agent must know it.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The device key could not be loaded or made.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The server client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A file the agent needs.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The configuration cannot be used as it is.
    #[error("{0}")]
    Setup(String),
    /// A local package cannot be installed.
    #[error("{0}")]
    Refused(String),
    /// A command needs an idle agent (or one with an update under way).
    #[error("the agent is {0}: finish or roll back the update under way first")]
    Busy(&'static str),
}

fn io_error<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> AgentError + 'p {
    move |source| AgentError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// What one [`Agent::poll_once`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Checked in; poll again after this long.
    Checked(Duration),
    /// The server has not accepted the device (yet).
    NotAccepted,
    /// The server could not be reached; try again later.
    Unreachable(String),
    /// The device is rebooting: stop.
    Rebooting,
}

/// What an [`Observer`] hears from the agent.
///
/// For embedding the agent in a simulator (`airlift-sim`) or a test: a
/// real device sets no observer, and then the agent does nothing more than
/// check for one.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Observed<'a> {
    /// The machine moved to this state; it is saved already.
    State(&'a State),
    /// A report is about to be sent (or queued, if the server cannot take it).
    Report(&'a Report),
    /// A download connects or receives a chunk.
    Download(DownloadEvent),
}

/// Hears what the agent does, as it does it (see [`Agent::set_observer`]).
///
/// It is called on the agent's own thread, in the middle of its work. A
/// simulator may end the agent's call from inside it by unwinding (a panic
/// caught with `catch_unwind`): the agent then writes nothing more, as
/// after a power cut, and must be rebuilt and [`resume`](Agent::resume)d.
pub type Observer = Box<dyn FnMut(Observed<'_>) + Send>;

/// The configured bootloader backend.
#[derive(Debug)]
enum Boot {
    Grub(GrubEnv),
    Uboot(UBootEnv),
    File(FileBootEnv),
}

impl Boot {
    fn open(config: &BootConfig) -> Result<Self, BootError> {
        Ok(match config {
            BootConfig::Grub { grubenv, cmdline } => {
                Boot::Grub(GrubEnv::new(grubenv).with_cmdline(cmdline))
            }
            BootConfig::Uboot { config, cmdline } => {
                Boot::Uboot(UBootEnv::new(config).with_cmdline(cmdline))
            }
            BootConfig::File { path } => Boot::File(FileBootEnv::open(path)?),
        })
    }

    fn control(&mut self) -> &mut dyn BootControl {
        match self {
            Boot::Grub(b) => b,
            Boot::Uboot(b) => b,
            Boot::File(b) => b,
        }
    }

    fn vars(&self) -> Result<BootVars, BootError> {
        match self {
            Boot::Grub(b) => b.vars(),
            Boot::Uboot(b) => b.vars(),
            Boot::File(b) => b.vars(),
        }
    }
}

/// What the agent installed and committed itself, over `config.installed`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct InstalledRecord {
    installed: BTreeMap<String, String>,
    security_version: u64,
}

/// How an effect ended, for [`Agent::feed`].
enum Outcome {
    /// Nothing to feed back (yet).
    Done,
    /// Feed this once the list is performed.
    Then(Event),
    /// The effect failed: skip the rest of the list and feed this.
    Failed(Event),
}

/// The agent: configuration, bootloader, installers, persisted state, and
/// the server session.
pub struct Agent {
    config: AgentConfig,
    boot: Boot,
    installers: Installers,
    state_file: StateFile,
    outbox: Outbox,
    client: ServerClient,
    trust: TrustSet,
    identities: Vec<AgeIdentity>,
    state: State,
    poll_interval: Duration,
    download_deferred: bool,
    rebooting: bool,
    /// Why the last job failed or rolled back, for `install FILE`.
    last_failure: Option<String>,
    /// The package file of `install FILE`, while it runs.
    local_source: Option<PathBuf>,
    /// What the server last said about installing, and for which
    /// deployment: a downloaded update waits at `Downloaded` unless it said
    /// `now` for that deployment (heard at every check-in, not persisted:
    /// after a restart the update waits for the first check-in).
    install_permit: Option<(DeploymentId, InstallPermit)>,
    /// Hears states, reports and downloads; `None` on a real device.
    observer: Option<Observer>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("state", &self.state.name())
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Builds the agent from its configuration: opens the bootloader
    /// backend, loads the trusted keys and the device key, and prepares
    /// `data_dir`. Reads no state yet: call [`resume`](Self::resume).
    pub fn new(config: AgentConfig) -> Result<Self, AgentError> {
        let data = config.data_dir.clone();
        for dir in [
            data.clone(),
            data.join("outbox"),
            work_dir(&data, "file"),
            work_dir(&data, "module"),
        ] {
            std::fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        }
        let boot = Boot::open(&config.boot)?;
        let trust = trust_set(&config)?;
        let identities = age_identities(config.age_identity.as_deref())?;
        let key = identity::load_or_create(&config.key_path())?;
        let client = ServerClient::new(
            &config.server_url,
            key,
            device_identity(&config)?,
            Duration::from_secs(config.network_timeout_secs),
        )?;
        let slot_sets = config
            .slots
            .iter()
            .map(|(name, pair)| {
                let devices = SlotDevices {
                    a: pair.a.clone(),
                    b: pair.b.clone(),
                };
                (name.clone(), devices)
            })
            .collect();
        let installers = Installers {
            image: ImageInstaller::new(slot_sets, Slot::B),
            file: FileInstaller::new(work_dir(&data, "file")).with_root(&config.root),
            archive: ArchiveInstaller::new(work_dir(&data, "archive")).with_root(&config.root),
            module: ModuleInstaller::new(&config.modules_dir, work_dir(&data, "module")),
        };
        Ok(Self {
            poll_interval: Duration::from_secs(config.poll_interval_secs),
            boot,
            installers,
            state_file: StateFile::new(data.join("state")),
            outbox: Outbox::new(data.join("outbox")),
            client,
            trust,
            identities,
            state: State::Idle,
            download_deferred: false,
            rebooting: false,
            last_failure: None,
            local_source: None,
            install_permit: None,
            observer: None,
            config,
        })
    }

    /// Sets the [`Observer`] that hears states, reports and downloads.
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    fn observe(&mut self, observed: Observed<'_>) {
        if let Some(observer) = self.observer.as_mut() {
            observer(observed);
        }
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether a reboot was started: the caller should stop.
    pub fn is_rebooting(&self) -> bool {
        self.rebooting
    }

    /// The first thing at every start: loads the state, feeds
    /// [`Event::Resume`] and carries out what follows (health checks after a
    /// trial boot, commit, rollback, pending reports…).
    pub fn resume(&mut self) -> Result<(), AgentError> {
        match self.state_file.load() {
            Ok(state) => self.state = state.unwrap_or_default(),
            Err(StateError::Corrupt { path, detail }) => {
                tracing::error!(path = %path.display(), %detail, "the agent state is corrupt");
                return self.recover_from_corrupt_state();
            }
            Err(other) => return Err(other.into()),
        }
        self.feed(Event::Resume)?;
        self.proceed()
    }

    /// Delivers queued reports, checks in, and takes an offer through to the
    /// reboot (or, for an in-place update, to the commit).
    pub fn poll_once(&mut self) -> Result<Poll, AgentError> {
        self.download_deferred = false;
        self.flush_outbox()?;
        if matches!(self.state, State::Downloading { .. }) {
            self.feed(Event::Resume)?;
        }
        self.proceed()?;
        if self.rebooting {
            return Ok(Poll::Rebooting);
        }
        let polled = self.check_in();
        // Nothing more until the next poll: no connection held open meanwhile.
        self.client.close_idle_connections();
        polled
    }

    /// The check-in half of [`poll_once`](Self::poll_once).
    fn check_in(&mut self) -> Result<Poll, AgentError> {
        let response = match self.client.check_in(&self.inventory()) {
            Ok(response) => response,
            Err(ClientError::NotAccepted(status)) => {
                tracing::info!(status, "the server has not accepted this device yet");
                return Ok(Poll::NotAccepted);
            }
            Err(error) => return Ok(Poll::Unreachable(error.to_string())),
        };
        self.poll_interval = Duration::from_secs(response.poll_interval_secs.max(1));
        self.hear_about_held_install(response.update.as_ref())?;
        if let Some(offer) = response.update {
            if matches!(self.state, State::Idle) {
                self.take_offer(offer)?;
            }
        }
        Ok(if self.rebooting {
            Poll::Rebooting
        } else {
            Poll::Checked(self.next_check_in())
        })
    }

    /// The poll interval — or, while a downloaded update waits for its
    /// install window, the time until the window opens if that is sooner,
    /// plus a random spread of up to a tenth of it (a minute at most) so that
    /// a fleet waiting for one window does not check in in the same second.
    fn next_check_in(&self) -> Duration {
        let until = match (&self.state, &self.install_permit) {
            (
                State::Downloaded { job },
                Some((
                    id,
                    InstallPermit::Later {
                        until: Some(until), ..
                    },
                )),
            ) if job.deployment_id == Some(*id) => *until,
            _ => return self.poll_interval,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let secs = u64::try_from(until.timestamp())
            .unwrap_or(0)
            .saturating_sub(now);
        let wait = Duration::from_secs(secs + random_below((secs / 10).clamp(1, 60)));
        if wait >= self.poll_interval {
            return self.poll_interval;
        }
        tracing::info!(
            secs = wait.as_secs(),
            "checking in again when the install window opens"
        );
        wait
    }

    /// While a downloaded update waits at `Downloaded`: takes the server's
    /// word on installing from its offer for the same deployment and goes on
    /// if it says `now`. Without such an offer, asks the server where the
    /// deployment stands (a repeated `downloaded` report, which changes
    /// nothing), and gives the update up if the server has ended it
    /// (cancelled, timed out), so that the device is free for the next
    /// offer; a paused deployment keeps it waiting.
    fn hear_about_held_install(&mut self, offer: Option<&UpdateOffer>) -> Result<(), AgentError> {
        let State::Downloaded { job } = &self.state else {
            return Ok(());
        };
        let Some(deployment_id) = job.deployment_id else {
            return Ok(());
        };
        match offer {
            Some(offer) if offer.deployment_id == deployment_id => {
                if let InstallPermit::Later { reason, .. } = &offer.install {
                    tracing::info!(%deployment_id, %reason, "downloaded and verified; the install waits");
                }
                self.install_permit = Some((deployment_id, offer.install.clone()));
                self.proceed()
            }
            _ => {
                let probe = StatusReport {
                    state: UpdateState::Downloaded,
                    progress: None,
                    message: None,
                };
                let ended = match self.client.report(deployment_id, &probe) {
                    Ok(ack) => ack.state.is_final().then(|| ack.state.as_str().to_owned()),
                    // Cancelled (410), or the deployment is gone (404).
                    Err(ClientError::Permanent {
                        status, message, ..
                    }) => Some(format!("{status}: {message}")),
                    Err(_) => None,
                };
                match ended {
                    Some(why) => {
                        tracing::info!(%deployment_id, server = %why, "the server ended the waiting update; giving it up");
                        self.feed(Event::Cancelled)
                    }
                    None => Ok(()),
                }
            }
        }
    }

    /// Why the install of `job` must wait, if it must: the server's last
    /// word for its deployment was `later`, or nothing has been heard since
    /// the agent started. A local install never waits.
    fn install_hold(&self, job: &Job) -> Option<String> {
        let deployment_id = job.deployment_id?;
        match &self.install_permit {
            Some((id, InstallPermit::Now)) if *id == deployment_id => None,
            Some((id, InstallPermit::Later { reason, .. })) if *id == deployment_id => {
                Some(reason.clone())
            }
            _ => Some("waiting for the server's word on installing".into()),
        }
    }

    /// Installs a local package file through the same path as an offer,
    /// without any report to a server.
    pub fn install_local(&mut self, file: &Path) -> Result<(), AgentError> {
        if !matches!(self.state, State::Idle) {
            return Err(AgentError::Busy(self.state.name()));
        }
        let head = read_head(file)?;
        let manifest = self.vet(&head).map_err(AgentError::Refused)?;
        let size = std::fs::metadata(file)
            .map_err(io_error("reading", file))?
            .len();
        let job = Job {
            deployment_id: None,
            size,
            sha256: Sha256Digest::of(&head),
            ..self.job_for(&manifest)?
        };
        self.save_offer(&head, None)?;
        self.last_failure = None;
        self.local_source = Some(file.to_owned());
        let result = self.feed(Event::Offer(job)).and_then(|()| self.proceed());
        self.local_source = None;
        result?;
        match self.last_failure.take() {
            Some(reason) => Err(AgentError::Refused(reason)),
            None => Ok(()),
        }
    }

    /// The trial boot's verdict: the configured health checks, then — for
    /// an update from the server — a check-in of the new version (an answer
    /// that the device is not accepted counts too: the server was reached
    /// and knew the device). An offer in that answer waits for the next poll.
    fn check_health(&mut self, job: Option<&Job>) -> Result<(), crate::health::Unhealthy> {
        crate::health::run_all(&self.config.health_checks)?;
        let timeout = self.config.trial.reach_server_timeout_secs;
        if timeout == 0 || job.and_then(|job| job.deployment_id).is_none() {
            return Ok(());
        }
        let inventory = self.inventory();
        let client = &mut self.client;
        crate::health::reach_server(Duration::from_secs(timeout), || {
            match client.check_in(&inventory) {
                Ok(_) | Err(ClientError::NotAccepted(_)) => Ok(()),
                Err(error) => Err(error.to_string()),
            }
        })
    }

    /// `airlift-agent commit`: commits the running trial without waiting
    /// for the health checks.
    pub fn commit(&mut self) -> Result<(), AgentError> {
        self.feed(Event::CommitRequested)
    }

    /// `airlift-agent rollback`: abandons the update or the trial under way.
    pub fn rollback(&mut self) -> Result<(), AgentError> {
        self.feed(Event::RollbackRequested)
    }

    /// Starts listening for nudges as configured (`[push]`), calling
    /// `ring` for each; `None` when push is off. Polling is not affected:
    /// the caller checks in early when it rings.
    pub fn start_push(&self, ring: Ring) -> Result<Option<PushListener>, AgentError> {
        let timeout = Duration::from_secs(self.config.network_timeout_secs).max(STREAM_TIMEOUT);
        let client = self.client.fork(timeout)?;
        PushListener::start(&self.config.push, client, ring).map_err(AgentError::Setup)
    }

    /// How long to wait before the next check-in.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// Steps the machine with `event`, saves the state if it changed, and
    /// performs the effects — feeding back their outcomes until none is left.
    fn feed(&mut self, event: Event) -> Result<(), AgentError> {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            if self.rebooting {
                break;
            }
            tracing::debug!(state = self.state.name(), event = event.name(), "step");
            let (next, effects) = step(self.state.clone(), event);
            if next != self.state {
                self.state_file.save(&next)?;
                tracing::info!(from = self.state.name(), to = next.name(), "state");
                self.observe(Observed::State(&next));
                if let State::Failed { reason, .. } | State::RolledBack { reason, .. } = &next {
                    self.last_failure = Some(reason.clone());
                }
                self.state = next;
            }
            for effect in effects {
                match self.perform(effect)? {
                    Outcome::Done => {}
                    Outcome::Then(event) => queue.push_back(event),
                    Outcome::Failed(event) => {
                        queue.push_back(event);
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Feeds [`Event::Proceed`] while the machine rests (`Downloaded`,
    /// `Installed`) — except that a downloaded update waits while the server
    /// holds its install (a maintenance window, a download-only deployment).
    fn proceed(&mut self) -> Result<(), AgentError> {
        while !self.rebooting
            && matches!(
                self.state,
                State::Downloaded { .. } | State::Installed { .. }
            )
        {
            if let State::Downloaded { job } = &self.state {
                if let Some(reason) = self.install_hold(job) {
                    tracing::debug!(%reason, "the install waits");
                    break;
                }
            }
            let before = self.state.clone();
            self.feed(Event::Proceed)?;
            if self.state == before {
                break;
            }
        }
        Ok(())
    }

    /// Carries out one effect.
    fn perform(&mut self, effect: Effect) -> Result<Outcome, AgentError> {
        let job = self.state.job();
        Ok(match (effect, job) {
            (Effect::Report(report), _) => {
                self.observe(Observed::Report(&report));
                self.deliver(&report)?;
                Outcome::Done
            }
            (Effect::Download { from_offset }, Some(job)) => self.download(&job, from_offset)?,
            (Effect::Install, Some(job)) => self.install(&job),
            (Effect::ArmTrial { slot }, _) => match self.boot.control().start_trial(slot) {
                Ok(()) => Outcome::Then(Event::TrialArmed),
                Err(e) => boot_failed(e),
            },
            (Effect::Reboot, _) => self.reboot(),
            (Effect::InspectBoot, _) => self.inspect_boot(),
            (Effect::RunHealthChecks, job) => match self.check_health(job.as_ref()) {
                Ok(()) => Outcome::Then(Event::HealthPassed),
                Err(unhealthy) => {
                    tracing::warn!(check = %unhealthy.name, reason = %unhealthy.reason, "unhealthy");
                    Outcome::Then(Event::HealthFailed {
                        output: unhealthy.to_string(),
                    })
                }
            },
            (Effect::CommitBoot, job) => self.commit_boot(job.as_ref())?,
            (Effect::AbandonTrial { previous }, _) => {
                self.revert_install();
                match self.boot.control().abandon_trial(previous) {
                    Ok(()) => Outcome::Done,
                    Err(e) => boot_failed(e),
                }
            }
            (Effect::RevertInstall, _) => {
                self.revert_install();
                Outcome::Done
            }
            (Effect::Cleanup, job) => self.cleanup(job.as_ref())?,
            (effect, None) => {
                tracing::error!(?effect, "an effect that needs a job, without one; ignored");
                Outcome::Done
            }
        })
    }

    fn inspect_boot(&mut self) -> Outcome {
        let boot = self.boot.control();
        match (boot.booted_slot(), boot.trial_pending()) {
            (Ok(slot), Ok(trial_pending)) => Outcome::Then(Event::Booted {
                slot,
                trial_pending,
            }),
            (Err(e), _) | (_, Err(e)) => boot_failed(e),
        }
    }

    fn reboot(&mut self) -> Outcome {
        if let Err(e) = self.installers.reboot() {
            return Outcome::Failed(Event::BootControlFailed {
                reason: e.to_string(),
            });
        }
        let command = &self.config.reboot_command;
        tracing::info!(?command, "rebooting");
        let status = Command::new(&command[0]).args(&command[1..]).status();
        match status {
            Ok(status) if status.success() => {
                self.rebooting = true;
                Outcome::Done
            }
            Ok(status) => Outcome::Failed(Event::BootControlFailed {
                reason: format!("{command:?} exited with {status}"),
            }),
            Err(e) => Outcome::Failed(Event::BootControlFailed {
                reason: format!("running {command:?}: {e}"),
            }),
        }
    }

    fn commit_boot(&mut self, job: Option<&Job>) -> Result<Outcome, AgentError> {
        if let Err(e) = self.boot.control().commit() {
            return Ok(boot_failed(e));
        }
        if let Err(e) = self.installers.commit() {
            tracing::error!(error = %e, "installers could not commit; the boot is committed");
        }
        if let Some(job) = job {
            self.record_installed(job)?;
        }
        Ok(Outcome::Then(Event::BootCommitted))
    }

    fn revert_install(&mut self) {
        if let Err(e) = self.installers.rollback() {
            tracing::error!(error = %e, "installers could not roll back");
        }
    }

    fn cleanup(&mut self, job: Option<&Job>) -> Result<Outcome, AgentError> {
        if let (State::Committed { .. }, Some(job)) = (&self.state, job) {
            if let Err(e) = self.installers.commit() {
                tracing::error!(error = %e, "installers could not commit");
            }
            self.record_installed(job)?;
        }
        for path in [self.head_path(), self.offer_path()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("removing", &path)(e)),
            }
        }
        Ok(Outcome::Then(Event::CleanedUp))
    }

    /// Streams the package into the installers from the checkpoint
    /// `from_offset` (see [`stream`](crate::stream)); checkpoints are saved
    /// as [`Event::Progress`] while it runs.
    fn download(&mut self, job: &Job, from_offset: u64) -> Result<Outcome, AgentError> {
        if self.download_deferred {
            return Ok(Outcome::Done);
        }
        let head = match std::fs::read(self.head_path()) {
            Ok(head) => head,
            Err(e) => {
                return Ok(Outcome::Failed(Event::DownloadFailed {
                    permanent: true,
                    reason: format!("the package head saved with the offer is gone: {e}"),
                }))
            }
        };
        // Whatever an interrupted run changed in place is undone: a stream
        // only resumes inside images (see `stream`).
        self.revert_install();
        if let Some(trial) = job.trial() {
            self.installers.image.set_target(trial.target);
        }
        let mut forward = self
            .observer
            .as_mut()
            .map(|observer| move |event| observer(Observed::Download(event)));
        let source = match (job.deployment_id, self.local_source.clone()) {
            (Some(deployment), _) => {
                let sha256 = job.sha256.to_string();
                let observer = forward
                    .as_mut()
                    .map(|f| f as &mut (dyn FnMut(DownloadEvent) + Send));
                let every = Duration::from_secs(self.config.progress_interval_secs);
                let mut progress = ProgressReporter::new(&self.client, deployment, job.size, every);
                let download =
                    ResumableDownload::new(&mut self.client, deployment, &sha256, job.size)
                        .limit(self.config.bandwidth_limit)
                        .observe(observer)
                        .on_progress(move |done| {
                            if let Some(progress) = progress.as_mut() {
                                progress.reached(done);
                            }
                        });
                Source::Server(Box::new(download))
            }
            (None, Some(path)) => Source::File(path),
            (None, None) => {
                return Ok(Outcome::Failed(Event::DownloadFailed {
                    permanent: true,
                    reason:
                        "a local install was interrupted; run `airlift-agent install FILE` again"
                            .into(),
                }))
            }
        };
        let identities: Vec<&dyn IdentityTrait> = self
            .identities
            .iter()
            .map(|i| i as &dyn IdentityTrait)
            .collect();
        let (state, state_file) = (&mut self.state, &self.state_file);
        let mut save = |offset: u64| checkpoint(state, state_file, offset);
        let stream = Stream {
            head: &head,
            trust: &self.trust,
            identities: &identities,
            installers: &mut self.installers,
            from_offset,
            sync_every: sync_interval(job.size),
            checkpoint: &mut save,
        };
        Ok(match crate::stream::run(stream, source) {
            Ok(()) => Outcome::Then(Event::DownloadComplete),
            Err(StreamError::Download(error)) => self.download_failed(error),
            Err(error @ StreamError::Damaged(_)) => Outcome::Failed(Event::DownloadFailed {
                permanent: true,
                reason: error.to_string(),
            }),
            Err(StreamError::Install(reason)) => Outcome::Failed(Event::InstallFailed { reason }),
        })
    }

    fn download_failed(&mut self, error: ClientError) -> Outcome {
        match error {
            ClientError::Permanent { status: 410, .. } => Outcome::Failed(Event::Cancelled),
            error if !error.is_transient() => Outcome::Failed(Event::DownloadFailed {
                permanent: true,
                reason: error.to_string(),
            }),
            error => {
                tracing::warn!(%error, "download interrupted; trying again at the next poll");
                self.download_deferred = true;
                Outcome::Failed(Event::DownloadFailed {
                    permanent: false,
                    reason: error.to_string(),
                })
            }
        }
    }

    /// The streamed package is in place: read every image slot back against
    /// its signed digest, and for an update without a device reboot, run the
    /// installers' own reboot steps (a module that asked for one).
    fn install(&mut self, job: &Job) -> Outcome {
        if let Some(trial) = job.trial() {
            self.installers.image.set_target(trial.target);
        }
        match self.finish_install(job) {
            Ok(()) => Outcome::Then(Event::Installed),
            Err(reason) => Outcome::Failed(Event::InstallFailed { reason }),
        }
    }

    fn finish_install(&mut self, job: &Job) -> Result<(), String> {
        let head = std::fs::read(self.head_path())
            .map_err(|e| format!("reading the package head: {e}"))?;
        let package = PackageReader::open(&head[..], Limits::default())
            .and_then(|reader| reader.verify(&self.trust))
            .map_err(|e| e.to_string())?;
        let manifest = package.manifest();
        for (index, entry) in manifest.payloads.iter().enumerate() {
            if entry.kind != PayloadType::Image {
                continue;
            }
            let payload = PayloadRef::new(manifest, index)
                .ok_or_else(|| format!("payload {index} is not in the manifest"))?;
            self.installers
                .image
                .verify(payload)
                .map_err(|e| e.to_string())?;
        }
        if !job.needs_reboot() {
            self.installers.reboot().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Sends a report, keeping the order: behind queued ones, or queued
    /// itself when the server cannot take it now.
    fn deliver(&mut self, report: &Report) -> Result<(), AgentError> {
        if !self.outbox.is_empty()? {
            self.outbox.push(report)?;
            return self.flush_outbox();
        }
        if let Err(e) = self
            .client
            .report(report.deployment_id, &report.to_status())
        {
            if e.is_transient() || matches!(e, ClientError::NotAccepted(_)) {
                tracing::warn!(error = %e, deployment_id = %report.deployment_id, "report queued");
                self.outbox.push(report)?;
            } else {
                tracing::warn!(error = %e, deployment_id = %report.deployment_id, "report refused; dropped");
            }
        }
        Ok(())
    }

    /// Delivers queued reports, oldest first, until the server cannot take one.
    fn flush_outbox(&mut self) -> Result<(), AgentError> {
        while let Some((id, report)) = self.outbox.peek()? {
            match self
                .client
                .report(report.deployment_id, &report.to_status())
            {
                Ok(_) => {}
                Err(e) if e.is_transient() || matches!(e, ClientError::NotAccepted(_)) => {
                    tracing::debug!(error = %e, "outbox: server unavailable");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, deployment_id = %report.deployment_id, "queued report refused; dropped");
                }
            }
            self.outbox.ack(id)?;
        }
        Ok(())
    }

    /// Verifies an offer's manifest and checks it fits before a byte of
    /// payload is downloaded; declines it (reported as `failure`) if not.
    fn take_offer(&mut self, offer: UpdateOffer) -> Result<(), AgentError> {
        let deployment_id = offer.deployment_id;
        let vetted = STANDARD
            .decode(offer.signed_manifest.as_bytes())
            .map_err(|e| format!("the offered manifest is not base64: {e}"))
            .and_then(|head| self.vet(&head).map(|manifest| (head, manifest)));
        let (head, manifest) = match vetted {
            Ok(vetted) => vetted,
            Err(reason) => {
                tracing::warn!(%deployment_id, %reason, "offer refused");
                let decline = Decline::Refused { reason };
                return self.feed(Event::OfferDeclined {
                    deployment_id,
                    decline,
                });
            }
        };
        if self.installed().get(&manifest.name) == Some(&manifest.version.to_string()) {
            let decline = Decline::AlreadyInstalled;
            return self.feed(Event::OfferDeclined {
                deployment_id,
                decline,
            });
        }
        let sha256 = match offer.sha256.parse() {
            Ok(sha256) => sha256,
            Err(_) => {
                let reason = format!("the offered sha256 {:?} is not a digest", offer.sha256);
                let decline = Decline::Refused { reason };
                return self.feed(Event::OfferDeclined {
                    deployment_id,
                    decline,
                });
            }
        };
        let job = Job {
            deployment_id: Some(deployment_id),
            size: offer.size,
            sha256,
            ..self.job_for(&manifest)?
        };
        tracing::info!(%deployment_id, %job, "update offered");
        self.install_permit = Some((deployment_id, offer.install));
        self.save_offer(&head, Some(deployment_id))?;
        self.feed(Event::Offer(job))?;
        self.proceed()
    }

    /// Verifies a package head (or whole package) with the trust set and
    /// checks that it fits this device.
    fn vet(&self, head: &[u8]) -> Result<Verified<Manifest>, String> {
        let package = PackageReader::open(io::Cursor::new(head), Limits::default())
            .and_then(|reader| reader.verify(&self.trust))
            .map_err(|e| format!("the package does not verify: {e}"))?;
        let manifest = package.manifest().clone();
        match manifest.compatibility(&self.facts()) {
            Compatibility::Compatible => Ok(manifest),
            Compatibility::Incompatible(why) => Err(why.to_string()),
        }
    }

    fn job_for(&mut self, manifest: &Manifest) -> Result<Job, AgentError> {
        let has_image = manifest
            .payloads
            .iter()
            .any(|p| matches!(p.kind, PayloadType::Image));
        let activation = if has_image {
            let running = self.boot.control().booted_slot()?;
            Activation::TrialBoot(TrialBoot {
                target: running.other(),
            })
        } else {
            Activation::InPlace
        };
        Ok(Job {
            deployment_id: None,
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            size: 0,
            sha256: Sha256Digest::of(b""),
            security_version: manifest.security_version,
            provides: manifest.provides.clone(),
            activation,
        })
    }

    /// A corrupt state file: during a trial boot nothing vouches for the
    /// running version, so abandon the trial and reboot; otherwise disarm
    /// any armed trial, set the file aside and start from `Idle`.
    fn recover_from_corrupt_state(&mut self) -> Result<(), AgentError> {
        let vars = self.boot.vars()?;
        let running = self.boot.control().booted_slot()?;
        let aside = self.state_file.set_aside()?;
        tracing::warn!(aside = %aside.display(), "corrupt state set aside");
        self.state = State::Idle;
        let offer = self.saved_offer();
        let in_trial = vars.upgrade_available && vars.slot == Some(running);
        if offer.is_some() || vars.upgrade_available {
            self.revert_install();
        }
        // Tell the server, through the outbox (it survives the reboot).
        if let Some(deployment_id) = offer.and_then(|o| o.deployment_id) {
            let (state, what) = if in_trial {
                (
                    UpdateState::RolledBack,
                    "during the trial boot: rolled back",
                )
            } else {
                (
                    UpdateState::Failure,
                    "before the new version ran: update abandoned",
                )
            };
            let message = format!(
                "the agent's state file was corrupt (set aside as {}) {what}",
                aside.display()
            );
            self.outbox.push(&Report {
                deployment_id,
                state,
                message: Some(message),
            })?;
        }
        for path in [self.head_path(), self.offer_path()] {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(io_error("removing", &path)(e));
                }
            }
        }
        if !vars.upgrade_available {
            return Ok(());
        }
        if in_trial {
            tracing::error!(%running, "corrupt state during a trial boot: rolling back");
            self.boot.control().abandon_trial(running.other())?;
            if let Outcome::Failed(event) = self.reboot() {
                tracing::error!(?event, "could not reboot after abandoning the trial");
            }
        } else {
            self.boot.control().abandon_trial(running)?;
        }
        Ok(())
    }

    /// The head (header, manifest, signatures) of the package being
    /// installed, saved when the offer was taken: streams start from it.
    fn head_path(&self) -> PathBuf {
        self.config.data_dir.join("package.head")
    }

    /// The deployment of the update under way, kept apart from the state
    /// file so that a corrupt state file can still be reported.
    fn offer_path(&self) -> PathBuf {
        self.config.data_dir.join("offer.json")
    }

    /// Saves what a stream and a corrupt-state report need, before the
    /// offer is fed to the machine.
    fn save_offer(
        &self,
        head: &[u8],
        deployment_id: Option<airlift_protocol::DeploymentId>,
    ) -> Result<(), AgentError> {
        let head_path = self.head_path();
        crate::boot::atomic_write(&head_path, head).map_err(io_error("saving", &head_path))?;
        let offer = serde_json::to_vec(&SavedOffer { deployment_id })
            .map_err(|e| AgentError::Setup(format!("encoding the offer: {e}")))?;
        let offer_path = self.offer_path();
        crate::boot::atomic_write(&offer_path, &offer).map_err(io_error("saving", &offer_path))
    }

    fn saved_offer(&self) -> Option<SavedOffer> {
        let bytes = std::fs::read(self.offer_path()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn record_path(&self) -> PathBuf {
        self.config.data_dir.join("installed.json")
    }

    fn record(&self) -> InstalledRecord {
        std::fs::read(self.record_path())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn record_installed(&self, job: &Job) -> Result<(), AgentError> {
        let mut record = self.record();
        record
            .installed
            .insert(job.name.clone(), job.version.to_string());
        for (name, version) in &job.provides {
            record.installed.insert(name.clone(), version.to_string());
        }
        record.security_version = record.security_version.max(job.security_version);
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| AgentError::Setup(format!("encoding the installed record: {e}")))?;
        let path = self.record_path();
        crate::boot::atomic_write(&path, &bytes).map_err(io_error("saving", &path))
    }

    /// `config.installed` overlaid by what the agent committed itself.
    fn installed(&self) -> BTreeMap<String, String> {
        let mut installed = self.config.installed.clone();
        installed.extend(self.record().installed);
        installed
    }

    fn facts(&self) -> DeviceFacts {
        DeviceFacts {
            device_type: self.config.device_type.clone(),
            hardware_revision: self.config.hardware_revision.clone(),
            installed: self.installed(),
            security_version: self.record().security_version,
        }
    }

    fn inventory(&self) -> Inventory {
        let facts = self.facts();
        Inventory {
            device_type: facts.device_type,
            hardware_revision: facts.hardware_revision,
            installed: facts.installed,
            security_version: facts.security_version,
            attributes: self.config.attributes.clone(),
        }
    }
}

/// Installed bytes between two checkpoints of a stream: a hundredth of the
/// package, but no fewer than 64 KiB (each one is two `fsync`s) and no more
/// than 8 MiB (what a power cut may cost).
fn sync_interval(package_size: u64) -> u64 {
    (package_size / 100).clamp(64 * 1024, 8 * 1024 * 1024)
}

/// The head of a package file: header, manifest and signatures.
fn read_head(file: &Path) -> Result<Vec<u8>, AgentError> {
    let mut reader = BufReader::new(File::open(file).map_err(io_error("opening", file))?);
    let head_len = PackageReader::open(&mut reader, Limits::default())
        .map_err(|e| AgentError::Refused(format!("{}: {e}", file.display())))?
        .payload_offset();
    let mut head = Vec::new();
    File::open(file)
        .and_then(|f| f.take(head_len).read_to_end(&mut head))
        .map_err(io_error("reading", file))?;
    Ok(head)
}

/// What is kept of an offer beside the state file.
#[derive(Debug, Serialize, Deserialize)]
struct SavedOffer {
    deployment_id: Option<airlift_protocol::DeploymentId>,
}

/// Feeds [`Event::Progress`] for bytes already synced and saves the state:
/// a restart resumes the download there. Progress asks for no effects.
fn checkpoint(state: &mut State, file: &StateFile, offset: u64) -> io::Result<()> {
    let (next, effects) = step(state.clone(), Event::Progress { offset });
    debug_assert!(effects.is_empty(), "progress asks for nothing");
    if next != *state {
        file.save(&next).map_err(io::Error::other)?;
        *state = next;
    }
    Ok(())
}

fn boot_failed(error: BootError) -> Outcome {
    Outcome::Failed(Event::BootControlFailed {
        reason: error.to_string(),
    })
}

fn work_dir(data: &Path, installer: &str) -> PathBuf {
    data.join("work").join(installer)
}

fn trust_set(config: &AgentConfig) -> Result<TrustSet, AgentError> {
    let mut keys = Vec::new();
    for path in &config.trusted_keys {
        let pem =
            std::fs::read_to_string(path).map_err(io_error("reading the trusted key", path))?;
        let key = PublicKey::from_pem(&pem)
            .map_err(|e| AgentError::Setup(format!("trusted key {}: {e}", path.display())))?;
        keys.push(key);
    }
    TrustSet::new(keys, config.trust_threshold)
        .map_err(|e| AgentError::Setup(format!("trusted_keys: {e}")))
}

fn age_identities(path: Option<&Path>) -> Result<Vec<AgeIdentity>, AgentError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path).map_err(io_error("reading the age identity", path))?;
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with("AGE-SECRET-KEY-"))
        .map(|line| {
            line.parse::<AgeIdentity>()
                .map_err(|e| AgentError::Setup(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// The identity attributes: from the config, or `key=value` lines printed
/// by `identity_command`.
fn device_identity(config: &AgentConfig) -> Result<BTreeMap<String, String>, AgentError> {
    let Some(command) = &config.identity_command else {
        return Ok(config.identity.clone());
    };
    let program = command
        .first()
        .ok_or_else(|| AgentError::Setup("identity_command is empty".into()))?;
    let output = Command::new(program)
        .args(&command[1..])
        .output()
        .map_err(|e| AgentError::Setup(format!("running identity_command {command:?}: {e}")))?;
    if !output.status.success() {
        return Err(AgentError::Setup(format!(
            "identity_command {command:?} exited with {}",
            output.status
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// A random number below `bound` (> 0), for spreading check-ins; 0 if the
/// system has no randomness to give.
fn random_below(bound: u64) -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes) % bound.max(1),
        Err(_) => 0,
    }
}
