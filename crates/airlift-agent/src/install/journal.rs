//! The installers' journals: what an install changed, kept on disk so that
//! commit and rollback still work after a power cut or a restart.
//!
//! A journal is one JSON file in the installer's work directory, written
//! atomically (temporary file, `fsync`, rename, `fsync` of the directory)
//! before every change it describes, and removed once a commit or rollback
//! has finished. Its shape:
//!
//! ```json
//! {
//!   "format": 1,
//!   "package": { "name": "gateway", "version": "1.4.0" },
//!   "phase": "installing",
//!   "entries": [ … ]
//! }
//! ```
//!
//! `phase` is `installing` while payloads are installed, then `committing`
//! or `rolling_back` from the moment a commit or rollback starts: once one
//! has started, only it can be finished (a half-done commit cannot be rolled
//! back, a half-done rollback cannot be committed). The entries belong to the
//! installer:
//!
//! - `files.json` ([`FileInstaller`](super::FileInstaller)), one entry per
//!   replaced file:
//!   `{ "target": "/etc/app.conf", "path": "/etc/app.conf",
//!      "staging": "/etc/.app.conf.airlift-new",
//!      "backup": "/etc/app.conf.airlift-backup" }`
//!   (`backup` is `null` when there was no file before).
//! - `modules.json` ([`ModuleInstaller`](super::ModuleInstaller)), one entry
//!   per module payload:
//!   `{ "module": "container", "target": "web", "index": 0,
//!      "size": 1048576, "sha256": "<64 hex digits>",
//!      "work_dir": "/var/lib/airlift/install/modules/0-container",
//!      "installed": true, "reboot": false, "rebooted": false, "done": false }`
//!   (`installed`: its `install` call succeeded; `reboot`: it printed
//!   `reboot`; `rebooted`: its `reboot` call succeeded; `done`: its `commit`
//!   or `rollback` call of the current phase succeeded).
//!
//! A journal that cannot be parsed is an error, never a reason to start
//! afresh: it lists changes that still have to be undone.

use super::InstallError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The journal format this agent writes and reads.
pub const FORMAT: u32 = 1;

/// The package a journal belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageId {
    /// The manifest's `name`.
    pub name: String,
    /// The manifest's `version`.
    pub version: String,
}

impl fmt::Display for PackageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// Where a journal's update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Payloads are being installed; commit or rollback may follow.
    Installing,
    /// A commit has started; only a commit may follow.
    Committing,
    /// A rollback has started; only a rollback may follow.
    RollingBack,
}

/// One journal file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal<E> {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The package whose payloads the entries describe.
    pub package: PackageId,
    /// Where the update stands.
    pub phase: Phase,
    /// What was changed, in the order it was changed.
    pub entries: Vec<E>,
}

impl<E> Journal<E> {
    /// An empty journal for `package`, in phase `installing`.
    pub fn new(package: PackageId) -> Self {
        Self {
            format: FORMAT,
            package,
            phase: Phase::Installing,
            entries: Vec::new(),
        }
    }
}

/// Reads the journal at `path`; `None` if there is none.
pub(crate) fn load<E: DeserializeOwned>(path: &Path) -> Result<Option<Journal<E>>, InstallError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(InstallError::io("reading journal", path)(e)),
    };
    let journal: Journal<E> =
        serde_json::from_slice(&bytes).map_err(|e| InstallError::Journal {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if journal.format != FORMAT {
        return Err(InstallError::Journal {
            path: path.to_owned(),
            reason: format!(
                "format {} is not the one this agent knows ({FORMAT})",
                journal.format
            ),
        });
    }
    Ok(Some(journal))
}

/// Reads the journal at `path` for installing `package`: a new one if there
/// is none, the existing one if it is this package's and still installing.
pub(crate) fn load_for_install<E: DeserializeOwned>(
    path: &Path,
    package: &PackageId,
) -> Result<Journal<E>, InstallError> {
    match load(path)? {
        None => Ok(Journal::new(package.clone())),
        Some(journal) if journal.package == *package && journal.phase == Phase::Installing => {
            Ok(journal)
        }
        Some(journal) => Err(InstallError::Pending {
            path: path.to_owned(),
            what: describe(&journal),
        }),
    }
}

/// Reads the journal at `path` for finishing it in `phase`, and records that
/// phase before anything is done. `None` if there is nothing to do.
pub(crate) fn load_for_finish<E: DeserializeOwned + Serialize>(
    path: &Path,
    phase: Phase,
) -> Result<Option<Journal<E>>, InstallError> {
    let Some(mut journal) = load::<E>(path)? else {
        return Ok(None);
    };
    if journal.phase != Phase::Installing && journal.phase != phase {
        return Err(InstallError::Pending {
            path: path.to_owned(),
            what: describe(&journal),
        });
    }
    if journal.phase != phase {
        journal.phase = phase;
        store(path, &journal)?;
    }
    Ok(Some(journal))
}

fn describe<E>(journal: &Journal<E>) -> String {
    let what = match journal.phase {
        Phase::Installing => "an uncommitted install",
        Phase::Committing => "an unfinished commit",
        Phase::RollingBack => "an unfinished rollback",
    };
    format!("{what} of {}", journal.package)
}

/// Writes `journal` to `path` atomically: a temporary file beside it,
/// `fsync`, rename over `path`, `fsync` of the directory.
pub(crate) fn store<E: Serialize>(path: &Path, journal: &Journal<E>) -> Result<(), InstallError> {
    let dir = parent(path);
    fs::create_dir_all(dir).map_err(InstallError::io("creating work directory", dir))?;
    let bytes = serde_json::to_vec_pretty(journal).map_err(|e| InstallError::Journal {
        path: path.to_owned(),
        reason: format!("cannot be serialised: {e}"),
    })?;
    let tmp = sibling(path, ".tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(InstallError::io("creating journal", &tmp))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(InstallError::io("writing journal", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(InstallError::io("replacing journal", path))?;
    sync_dir(dir)
}

/// Removes the journal at `path` (durably) once its update is finished.
pub(crate) fn remove(path: &Path) -> Result<(), InstallError> {
    remove_if_exists(path, "removing journal")?;
    sync_dir(parent(path))
}

/// `fsync` of a directory, so that renames and removals in it survive a
/// power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(InstallError::io("syncing directory", dir))
}

/// Removes a file; a file that is not there is fine.
pub(crate) fn remove_if_exists(path: &Path, action: &'static str) -> Result<(), InstallError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InstallError::io(action, path)(e)),
    }
}

/// The directory `path` is in (`.` for a bare name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Appended to a target's name for what it held before the update, kept
/// until commit.
pub(crate) const BACKUP_SUFFIX: &str = ".airlift-backup";
/// Appended (after a leading `.`) to a target's name for the new content
/// before it is renamed into place.
pub(crate) const STAGING_SUFFIX: &str = ".airlift-new";

/// Where an in-place payload for `target` goes below `root`, and the names
/// beside it for its new content and its backup; its directory must exist.
pub(crate) struct Place {
    /// The target under the root.
    pub path: PathBuf,
    /// `.<name>.airlift-new` beside it.
    pub staging: PathBuf,
    /// `<name>.airlift-backup` beside it.
    pub backup: PathBuf,
}

impl Place {
    pub(crate) fn of(root: &Path, target: &str) -> Result<Self, InstallError> {
        let path = root.join(target.trim_start_matches('/'));
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(InstallError::MissingDirectory { path });
        };
        if !dir.is_dir() {
            return Err(InstallError::MissingDirectory {
                path: dir.to_owned(),
            });
        }
        let beside = |prefix: &str, suffix: &str| {
            let mut out = std::ffi::OsString::from(prefix);
            out.push(name);
            out.push(suffix);
            dir.join(out)
        };
        Ok(Self {
            staging: beside(".", STAGING_SUFFIX),
            backup: beside("", BACKUP_SUFFIX),
            path,
        })
    }
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(version: &str) -> PackageId {
        PackageId {
            name: "gateway".into(),
            version: version.into(),
        }
    }

    #[test]
    fn round_trips_and_leaves_no_temporary_file() -> Result<(), InstallError> {
        let dir = tempfile::tempdir().map_err(InstallError::io("tempdir", "/tmp"))?;
        let path = dir.path().join("files.json");
        assert!(load::<u32>(&path)?.is_none());
        let mut journal = Journal::new(package("1.0.0"));
        journal.entries.push(7u32);
        store(&path, &journal)?;
        assert_eq!(load::<u32>(&path)?, Some(journal));
        assert!(!sibling(&path, ".tmp").exists());
        remove(&path)?;
        assert!(!path.exists());
        Ok(())
    }

    #[test]
    fn a_corrupt_journal_is_an_error_not_a_fresh_start() -> Result<(), InstallError> {
        let dir = tempfile::tempdir().map_err(InstallError::io("tempdir", "/tmp"))?;
        let path = dir.path().join("files.json");
        fs::write(&path, b"{\"format\":1,\"pack").map_err(InstallError::io("write", &path))?;
        let error = load_for_install::<u32>(&path, &package("1.0.0")).err();
        assert!(
            matches!(error, Some(InstallError::Journal { .. })),
            "{error:?}"
        );
        assert!(path.exists(), "the corrupt journal must be kept");
        Ok(())
    }

    #[test]
    fn phases_only_move_forward() -> Result<(), InstallError> {
        let dir = tempfile::tempdir().map_err(InstallError::io("tempdir", "/tmp"))?;
        let path = dir.path().join("modules.json");
        store(&path, &Journal::<u32>::new(package("1.0.0")))?;

        let other = load_for_install::<u32>(&path, &package("2.0.0")).err();
        assert!(
            matches!(other, Some(InstallError::Pending { .. })),
            "{other:?}"
        );

        let journal = load_for_finish::<u32>(&path, Phase::Committing)?;
        assert_eq!(journal.map(|j| j.phase), Some(Phase::Committing));
        let rollback = load_for_finish::<u32>(&path, Phase::RollingBack).err();
        let message = rollback.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("an unfinished commit of gateway 1.0.0"),
            "{message}"
        );
        assert!(load_for_finish::<u32>(&path, Phase::Committing)?.is_some());
        Ok(())
    }
}
