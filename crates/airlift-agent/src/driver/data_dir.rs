//! The agent's data directory: where each file lives, and the small files
//! the driver keeps beside the state file.
//!
//! ```text
//! <data_dir>/
//!   lock             held (flock) by the one agent process using the
//!                    directory (DataDirLock)
//!   state            the machine's state (StateFile: checksummed, atomic)
//!   outbox/          reports the server could not take yet (Outbox)
//!   device.key       the device's Ed25519 key
//!   package.head     the head of the package under way (header, manifest,
//!                    signatures), saved when the offer is taken
//!   offer.json       its deployment, kept apart from the state file so a
//!                    corrupt state file can still be reported
//!   installed.a      what the agent installed and committed itself, and
//!   installed.b      its security version: two checksummed copies, and
//!   installed.init   the marker that they were written once (see
//!                    `crate::installed`; `installed.json` of older agents
//!                    is taken over at the first start)
//!   work/<installer> each installer's journal and work files
//! ```

use super::{io_error, AgentError};
use crate::installed::{InstalledRecord, InstalledStore, RecordError};
use crate::machine::Job;
use airlift_protocol::DeploymentId;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// The data directory held by this process (taken by [`DataDir::create`])
/// until it is dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// The layout of the agent's data directory (`data_dir` in `agent.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The layout under `root`; touches nothing.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the directory, takes it for this process ([`Self::lock`]),
    /// then creates those the agent writes into from the start.
    pub(super) fn create(&self) -> Result<DataDirLock, AgentError> {
        std::fs::create_dir_all(&self.root).map_err(io_error("creating", &self.root))?;
        let lock = self.lock()?;
        for dir in [
            self.outbox_dir(),
            self.work_dir("file"),
            self.work_dir("module"),
        ] {
            std::fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        }
        // A lost record is not fatal here: the agent still checks in and
        // says why it refuses every install.
        if let Err(error) = self.installed_store().initialise() {
            tracing::error!(%error, "the installed record cannot be read");
        }
        Ok(lock)
    }

    /// Takes the directory for this process, or says that another agent
    /// holds it. Two agents on one directory (a second `run` beside the
    /// service, or `install` while it runs) would each write the state
    /// file and the inactive slot from what they believe; the second is
    /// refused at once rather than left waiting. The lock is the kernel's (`flock`
    /// on `lock`), so it ends with the process however the process ends:
    /// a crash or a power cut leaves nothing to clean up.
    fn lock(&self) -> Result<DataDirLock, AgentError> {
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("opening", &path))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(errno) if errno == rustix::io::Errno::WOULDBLOCK => {
                Err(AgentError::Locked(self.root.clone()))
            }
            Err(errno) => Err(io_error("locking", &path)(errno.into())),
        }
    }

    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The machine's state file.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state")
    }

    /// The queue of reports waiting for the server.
    pub fn outbox_dir(&self) -> PathBuf {
        self.root.join("outbox")
    }

    /// The device key.
    pub fn key_file(&self) -> PathBuf {
        self.root.join("device.key")
    }

    /// The head (header, manifest, signatures) of the package being
    /// installed, saved when the offer was taken: streams start from it.
    pub fn head_path(&self) -> PathBuf {
        self.root.join("package.head")
    }

    /// The deployment of the update under way, kept apart from the state
    /// file so that a corrupt state file can still be reported.
    pub fn offer_path(&self) -> PathBuf {
        self.root.join("offer.json")
    }

    /// What the agent installed and committed itself, and its security
    /// version (two checksummed copies).
    pub fn installed_store(&self) -> InstalledStore {
        InstalledStore::new(&self.root)
    }

    /// The work directory of an installer (`file`, `archive`, `module`).
    pub fn work_dir(&self, installer: &str) -> PathBuf {
        self.root.join("work").join(installer)
    }

    /// Saves what a stream and a corrupt-state report need, before the
    /// offer is fed to the machine.
    pub(super) fn save_offer(
        &self,
        head: &[u8],
        deployment_id: Option<DeploymentId>,
    ) -> Result<(), AgentError> {
        let head_path = self.head_path();
        crate::boot::atomic_write(&head_path, head).map_err(io_error("saving", &head_path))?;
        let offered_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|since| since.as_secs());
        let offer = serde_json::to_vec(&SavedOffer {
            deployment_id,
            offered_at,
        })
        .map_err(|e| AgentError::Setup(format!("encoding the offer: {e}")))?;
        let offer_path = self.offer_path();
        crate::boot::atomic_write(&offer_path, &offer).map_err(io_error("saving", &offer_path))
    }

    /// The saved offer, if there is one that can be read.
    pub(super) fn saved_offer(&self) -> Option<SavedOffer> {
        let bytes = std::fs::read(self.offer_path()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// When the update under way was offered (its download deadline counts
    /// from then, across restarts); `None` if unknown.
    pub(super) fn offered_at(&self) -> Option<std::time::SystemTime> {
        let secs = self.saved_offer()?.offered_at?;
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))
    }

    /// Removes the saved head and offer (once the job is over).
    pub(super) fn remove_offer(&self) -> Result<(), AgentError> {
        for path in [self.head_path(), self.offer_path()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("removing", &path)(e)),
            }
        }
        Ok(())
    }

    /// What the agent committed itself, for the inventory; empty if lost
    /// (installs are refused then: see [`security_version`](Self::security_version)).
    pub(super) fn record(&self) -> InstalledRecord {
        self.installed_store().load().unwrap_or_default()
    }

    /// The security version installs may not go below; an error, which
    /// refuses the install, when the record was written once and is lost.
    pub(super) fn security_version(&self) -> Result<u64, RecordError> {
        self.installed_store()
            .load()
            .map(|record| record.security_version)
    }

    /// Adds `job` (its package and what it provides) to the record.
    pub(super) fn record_installed(&self, job: &Job) -> Result<(), AgentError> {
        let store = self.installed_store();
        let mut record = store.load().unwrap_or_else(|error| {
            // Only a job vetted before the loss gets here: its security
            // version is a floor that is known again.
            tracing::warn!(%error, "rewriting a lost installed record from the update committed now");
            InstalledRecord::default()
        });
        record
            .installed
            .insert(job.name.clone(), job.version.to_string());
        for (name, version) in &job.provides {
            record.installed.insert(name.clone(), version.to_string());
        }
        record.security_version = record.security_version.max(job.security_version);
        store
            .save(&record, record.generation)
            .map_err(|e| AgentError::Setup(e.to_string()))
    }
}

/// What is kept of an offer beside the state file.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SavedOffer {
    pub(super) deployment_id: Option<DeploymentId>,
    /// Seconds since the Unix epoch when it was taken (absent in offers
    /// saved by older agents).
    #[serde(default)]
    pub(super) offered_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::test_support::image_job;

    #[test]
    fn the_layout_is_the_documented_one() {
        let data = DataDir::new("/var/lib/airlift");
        let paths = [
            (data.state_file(), "state"),
            (data.outbox_dir(), "outbox"),
            (data.key_file(), "device.key"),
            (data.head_path(), "package.head"),
            (data.offer_path(), "offer.json"),
            (data.work_dir("module"), "work/module"),
        ];
        for (path, relative) in paths {
            assert_eq!(path, Path::new("/var/lib/airlift").join(relative));
        }
    }

    #[test]
    fn an_offer_is_saved_and_removed() -> Result<(), AgentError> {
        let dir = tempfile::tempdir().map_err(io_error("creating", Path::new("tmp")))?;
        let data = DataDir::new(dir.path().join("data"));
        data.create()?;
        let id = image_job().deployment_id;
        data.save_offer(b"head", id)?;
        assert_eq!(std::fs::read(data.head_path()).ok(), Some(b"head".to_vec()));
        assert_eq!(data.saved_offer().and_then(|o| o.deployment_id), id);
        let offered = data.offered_at().expect("the offer's time is kept");
        assert!(offered.elapsed().map_or(true, |e| e.as_secs() < 60));
        data.remove_offer()?;
        data.remove_offer()?;
        assert!(data.saved_offer().is_none());
        assert!(!data.head_path().exists());
        Ok(())
    }

    #[test]
    fn one_agent_at_a_time_holds_the_directory_and_its_end_frees_it() -> Result<(), AgentError> {
        let dir = tempfile::tempdir().map_err(io_error("creating", Path::new("tmp")))?;
        let data = DataDir::new(dir.path().join("data"));
        let held = data.create()?;
        match data.create() {
            Err(AgentError::Locked(root)) => assert_eq!(root, data.root()),
            other => panic!("a second agent on the directory: {other:?}"),
        }
        let message = AgentError::Locked(data.root().to_owned()).to_string();
        assert!(message.contains("another airlift-agent"), "{message}");
        drop(held);
        data.create()?;
        Ok(())
    }

    #[test]
    fn the_record_keeps_what_was_committed() -> Result<(), AgentError> {
        let dir = tempfile::tempdir().map_err(io_error("creating", Path::new("tmp")))?;
        let data = DataDir::new(dir.path());
        assert!(data.record().installed.is_empty());
        let job = image_job();
        data.record_installed(&job)?;
        let record = data.record();
        assert_eq!(
            record.installed.get("rootfs"),
            Some(&job.version.to_string())
        );
        assert_eq!(record.security_version, job.security_version);
        Ok(())
    }

    #[test]
    fn a_lost_record_refuses_and_a_fresh_one_reads_zero() -> Result<(), AgentError> {
        let dir = tempfile::tempdir().map_err(io_error("creating", Path::new("tmp")))?;
        let data = DataDir::new(dir.path());
        data.create()?;
        assert_eq!(data.security_version().ok(), Some(0), "first start");
        data.record_installed(&image_job())?;
        for copy in data.installed_store().copies() {
            std::fs::remove_file(&copy).map_err(io_error("removing", &copy))?;
        }
        data.create()?; // a restart
        assert!(data.security_version().is_err(), "lost, not zero");
        Ok(())
    }
}
