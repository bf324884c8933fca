//! The driver: performs the [`machine`](crate::machine)'s effects and feeds
//! back what happened, synchronously, one event at a time.
//!
//! [`Agent::resume`] continues whatever was persisted (it must run first at
//! every start); [`Agent::poll_once`] delivers queued reports, checks in and
//! takes an offer through download, install, trial arming and reboot. Every
//! effect is carried out by one `Agent::perform` match; the rules it keeps
//! are the machine's (see [`machine`](crate::machine#the-drivers-side-of-the-contract)):
//! the state is saved before its effects run, the first failing effect ends
//! its list, and `success` is only reported once the boot is committed.
//!
//! By job:
//!
//! - this file: the [`Agent`], its public calls, and the loop that steps the
//!   machine (`feed`) and lets resting states go on (`proceed`);
//! - `setup`: building an agent from `agent.toml` — the bootloader backend,
//!   the trust set, age identities, the device's identity, the installers;
//! - `offers`: check-ins, offers (verified and vetted before a byte of
//!   payload), and what a downloaded update waiting for its install hears —
//!   the decisions themselves are the machine's ([`install_hold`],
//!   [`next_check_in`](crate::machine::next_check_in),
//!   [`held_install`](crate::machine::held_install));
//! - `effects`: carrying out each [`Effect`](crate::machine::Effect):
//!   download, install, trial arming, reboot, health checks, commit,
//!   rollback, cleanup;
//! - `reports`: delivering reports in order, through the outbox;
//! - `recovery`: a corrupt state file;
//! - [`DataDir`]: where each file of the data directory lives.
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

mod data_dir;
mod defer;
mod effects;
mod offers;
mod recovery;
mod reports;
mod setup;
mod shadow;
mod status;
mod trust_root;

pub use data_dir::{DataDir, DataDirLock};
pub use offers::BOOTED_SLOT_ATTRIBUTE;
pub use status::{status, BootStatus, Progress, Status};

use crate::boot::{BootError, Slot};
use crate::client::{ClientError, ServerClient};
use crate::config::AgentConfig;
use crate::download::DownloadEvent;
use crate::identity::{self, IdentityError};
use crate::install::Installers;
use crate::machine::{
    install_hold, step, Event, HeardPermit, Job, Outbox, OutboxError, Report, State, StateError,
    StateFile,
};
use crate::push::{PushListener, Ring, STREAM_TIMEOUT};
use crate::system::{RunningSystem, SlotError, SystemVersionError};
use airlift_package::encryption::Identity as AgeIdentity;
use airlift_package::{Sha256Digest, TrustSet};
use setup::Boot;
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
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
    /// The running system's version cannot be read.
    #[error(transparent)]
    SystemVersion(#[from] SystemVersionError),
    /// The configured slots cannot be this device's: nothing is written.
    #[error(transparent)]
    Slots(#[from] SlotError),
    /// A file the agent needs.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The configuration cannot be used as it is.
    #[error("{0}")]
    Setup(String),
    /// A local package cannot be installed.
    #[error("{0}")]
    Refused(String),
    /// Another agent process uses the data directory.
    #[error(
        "another airlift-agent is using the data directory {}: stop it first (systemctl stop airlift-agent), or let it do the work",
        .0.display()
    )]
    Locked(PathBuf),
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
    /// Held while this agent lives: no other process uses `data`.
    _data_lock: DataDirLock,
    config: AgentConfig,
    data: DataDir,
    boot: Boot,
    installers: Installers,
    state_file: StateFile,
    outbox: Outbox,
    client: ServerClient,
    trust: TrustSet,
    /// The current trust root, with `trust_root` configured (`trust` is then its release keys).
    root: Option<airlift_trust::Root>,
    /// When the agent last asked the server for newer roots.
    roots_asked_at: Option<std::time::Instant>,
    identities: Vec<AgeIdentity>,
    state: State,
    poll_interval: Duration,
    download_deferred: bool,
    rebooting: bool,
    /// See [`Agent::power_up_played`].
    power_up_played: Option<bool>,
    /// Why the last job failed or rolled back, for `install FILE`.
    last_failure: Option<String>,
    /// The package file of `install FILE`, while it runs.
    local_source: Option<PathBuf>,
    /// What the server last said about installing, and for which
    /// deployment: a downloaded update waits at `Downloaded` unless it said
    /// `now` for that deployment (heard at every check-in, not persisted:
    /// after a restart the update waits for the first check-in).
    install_permit: Option<HeardPermit>,
    /// What the latest offer allows deferring, and the hook's last "not now".
    soft: defer::SoftWord,
    /// Hears states, reports and downloads; `None` on a real device.
    observer: Option<Observer>,
    /// Where the running system's version is read, if configured.
    system: Option<RunningSystem>,
    /// The running system's version, read at the start and at every check-in.
    system_version: Option<String>,
    /// Why it could not be read at the start.
    system_unreadable: Option<SystemVersionError>,
    /// The slot running now, read at the start; `None` when the device has
    /// no slots and the bootloader does not say.
    booted: Option<Slot>,
    /// The device's configuration (its shadow's delta), applied at check-ins.
    shadow: crate::shadow::Shadow,
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
        let data = DataDir::new(&config.data_dir);
        let data_lock = data.create()?;
        let boot = Boot::open(&config.boot)?;
        let booted = setup::check_boot(&config, &boot)?;
        let system = config.running_system().map_err(AgentError::Setup)?;
        // Unreadable, it stops the agent — except in a trial boot, where it
        // fails the trial instead (see `resume`): a new version that lost
        // its version file is rolled back, not left uncommitted.
        let (system_version, system_unreadable) =
            match system.as_ref().map(RunningSystem::version).transpose() {
                Ok(version) => (version, None),
                Err(error) => (None, Some(error)),
            };
        let root = match &config.trust_root {
            Some(path) => Some(trust_root::load_root(path, &data)?),
            None => None,
        };
        let trust = match &root {
            Some(root) => trust_root::release_trust(root)?,
            None => setup::trust_set(&config)?,
        };
        let identities = setup::age_identities(config.age_identity.as_deref())?;
        let key = identity::load_or_create(&data.key_file())?;
        let client = ServerClient::new(
            &config.server_url,
            key,
            setup::device_identity(&config)?,
            Duration::from_secs(config.network_timeout_secs),
        )?
        .with_tls(config.tls.client_config().map_err(AgentError::Setup)?);
        Ok(Self {
            _data_lock: data_lock,
            poll_interval: Duration::from_secs(config.poll_interval_secs),
            boot,
            installers: setup::installers(&config, &data),
            state_file: StateFile::new(data.state_file()),
            outbox: Outbox::new(data.outbox_dir()),
            client,
            trust,
            root,
            roots_asked_at: None,
            identities,
            state: State::Idle,
            download_deferred: false,
            rebooting: false,
            power_up_played: None,
            last_failure: None,
            local_source: None,
            install_permit: None,
            soft: Default::default(),
            observer: None,
            system,
            system_version,
            system_unreadable,
            booted,
            shadow: shadow::new(&config),
            data,
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

    /// With the file backend, after a reboot: whether `reboot_command`
    /// played the bootloader's power-up (it replaced the environment file);
    /// `None` with a real bootloader, or before a reboot.
    pub fn power_up_played(&self) -> Option<bool> {
        self.power_up_played
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
        if !matches!(
            self.state,
            State::Rebooting { .. } | State::Verifying { .. }
        ) {
            if let Some(error) = self.system_unreadable.take() {
                return Err(error.into());
            }
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

    /// Installs a local package file through the same path as an offer,
    /// without any report to a server.
    pub fn install_local(&mut self, file: &Path) -> Result<(), AgentError> {
        if !matches!(self.state, State::Idle) {
            return Err(AgentError::Busy(self.state.name()));
        }
        let head = offers::read_head(file)?;
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
        self.data.save_offer(&head, None)?;
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
                if let Some(reason) = install_hold(job, self.install_permit.as_ref()) {
                    tracing::debug!(%reason, "the install waits");
                    break;
                }
                // A soft update asks its owner first (`defer_command`).
                if self.defers()? {
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
}
