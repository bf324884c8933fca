//! `file` payloads: one file replaced atomically, the old one kept until the
//! update is committed so that a rollback can put it back.

use super::journal::{self, Journal, Phase};
use super::{InstallError, InstallOutcome, Installer, PayloadRef, Reboot};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The journal's file name in the work directory.
const JOURNAL: &str = "files.json";

/// Replaces single files atomically, keeping the old ones until commit.
///
/// For a payload with target `/etc/app.conf` (joined under the installer's
/// root, `/` on a device):
///
/// 1. the journal records `/etc/app.conf`, its staging file
///    `/etc/.app.conf.airlift-new` and, if the file exists, its backup
///    `/etc/app.conf.airlift-backup`;
/// 2. the installed bytes are streamed into the staging file, which gets the
///    old file's mode and (where the agent may) owner, and is `fsync`ed — a
///    read error (a digest mismatch) removes it and changes nothing else;
/// 3. the old file is hard-linked as the backup (copied if the file system
///    has no hard links) and the directory `fsync`ed;
/// 4. the staging file is renamed over the target and the directory
///    `fsync`ed.
///
/// [`commit`](Installer::commit) deletes the backups;
/// [`rollback`](Installer::rollback) renames them back over the targets (or
/// removes a target that did not exist before). Both read the journal, so
/// they also work on a new installer after a restart. Only regular files are
/// replaced; a missing directory is an error, not created.
#[derive(Debug, Clone)]
pub struct FileInstaller {
    work_dir: PathBuf,
    root: PathBuf,
}

/// One replaced file, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    /// The payload's target, as in the manifest.
    target: String,
    /// The file replaced: the target under the root.
    path: PathBuf,
    /// Where the new content is written before the rename.
    staging: PathBuf,
    /// Where the old file is kept; `None` if there was no file.
    backup: Option<PathBuf>,
}

impl FileInstaller {
    /// An installer keeping its journal in `work_dir`, replacing files below
    /// `/`.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Self {
            work_dir: work_dir.into(),
            root: PathBuf::from("/"),
        }
    }

    /// Replaces files below `root` instead of `/` (tests, simulation, a
    /// device whose root file system is mounted elsewhere).
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = root.into();
        self
    }

    /// Where the journal is kept.
    pub fn journal_path(&self) -> PathBuf {
        self.work_dir.join(JOURNAL)
    }

    fn new_entry(&self, target: &str) -> Result<(FileEntry, Option<fs::Metadata>), InstallError> {
        let place = journal::Place::of(&self.root, target)?;
        let path = place.path;
        let old = existing_file(&path)?;
        let entry = FileEntry {
            target: target.to_owned(),
            staging: place.staging,
            backup: old.is_some().then_some(place.backup),
            path,
        };
        Ok((entry, old))
    }
}

impl Installer for FileInstaller {
    fn install(
        &mut self,
        payload: PayloadRef<'_>,
        installed: &mut dyn Read,
    ) -> Result<InstallOutcome, InstallError> {
        let target = &payload.entry().target;
        let journal_path = self.journal_path();
        let mut journal: Journal<FileEntry> =
            journal::load_for_install(&journal_path, &payload.package_id())?;
        let (fresh, old) = self.new_entry(target)?;
        // A target this update already replaced keeps its first entry: its
        // backup holds the content from before the update.
        let (entry, first_time) = match journal.entries.iter().find(|e| e.path == fresh.path) {
            Some(entry) => (entry.clone(), false),
            None => {
                journal.entries.push(fresh.clone());
                journal::store(&journal_path, &journal)?;
                (fresh, true)
            }
        };
        tracing::info!(target_path = %entry.path.display(), "replacing file");

        let written = match write_staging(&entry, old.as_ref(), payload, installed) {
            Ok(written) => written,
            Err(e) => {
                if let Err(cleanup) =
                    journal::remove_if_exists(&entry.staging, "removing staging file")
                {
                    tracing::warn!(error = %cleanup, "could not remove the staging file");
                }
                return Err(e);
            }
        };
        let dir = journal::parent(&entry.path);
        if let Some(backup) = &entry.backup {
            // A journaled target without its backup still holds the content
            // from before the update: a target is replaced only after its
            // backup is durable. A first-time target's backup name may hold
            // a stale file, which is replaced.
            if first_time || (!backup.exists() && entry.path.exists()) {
                make_backup(&entry.path, backup)?;
                journal::sync_dir(dir)?;
            }
        }
        fs::rename(&entry.staging, &entry.path).map_err(InstallError::io(
            "renaming the new file into place at",
            &entry.path,
        ))?;
        journal::sync_dir(dir)?;
        Ok(InstallOutcome {
            reboot: Reboot::NotNeeded,
            bytes: written,
        })
    }

    fn commit(&mut self) -> Result<(), InstallError> {
        let path = self.journal_path();
        let Some(journal) = journal::load_for_finish::<FileEntry>(&path, Phase::Committing)? else {
            return Ok(());
        };
        for entry in &journal.entries {
            journal::remove_if_exists(&entry.staging, "removing staging file")?;
            if let Some(backup) = &entry.backup {
                journal::remove_if_exists(backup, "removing backup")?;
            }
            journal::sync_dir(journal::parent(&entry.path))?;
            tracing::info!(target_path = %entry.path.display(), "file committed");
        }
        journal::remove(&path)
    }

    fn rollback(&mut self) -> Result<(), InstallError> {
        let path = self.journal_path();
        let Some(journal) = journal::load_for_finish::<FileEntry>(&path, Phase::RollingBack)?
        else {
            return Ok(());
        };
        for entry in journal.entries.iter().rev() {
            journal::remove_if_exists(&entry.staging, "removing staging file")?;
            match &entry.backup {
                Some(backup) => match fs::rename(backup, &entry.path) {
                    Ok(()) => {}
                    // Already restored, or never made: the target holds the
                    // old content either way.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(InstallError::io("restoring backup over", &entry.path)(e))
                    }
                },
                None => journal::remove_if_exists(&entry.path, "removing new file")?,
            }
            journal::sync_dir(journal::parent(&entry.path))?;
            tracing::info!(target_path = %entry.path.display(), "file rolled back");
        }
        journal::remove(&path)
    }
}

/// The target's metadata if it is a regular file, `None` if it does not
/// exist, an error if it is anything else.
fn existing_file(path: &Path) -> Result<Option<fs::Metadata>, InstallError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Ok(Some(meta)),
        Ok(meta) => {
            let kind = meta.file_type();
            Err(InstallError::NotRegularFile {
                path: path.to_owned(),
                found: if kind.is_dir() {
                    "a directory"
                } else if kind.is_symlink() {
                    "a symbolic link"
                } else {
                    "not a regular file"
                },
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(InstallError::io("inspecting", path)(e)),
    }
}

/// Streams the installed bytes into the staging file with the old file's
/// mode and owner, and `fsync`s it.
fn write_staging(
    entry: &FileEntry,
    old: Option<&fs::Metadata>,
    payload: PayloadRef<'_>,
    installed: &mut dyn Read,
) -> Result<u64, InstallError> {
    let staging = &entry.staging;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(staging)
        .map_err(InstallError::io("creating staging file", staging))?;
    let expected = payload.entry().installed.size;
    let mut buf = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        let n = match installed.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(InstallError::Payload {
                    index: payload.index(),
                    target: entry.target.clone(),
                    source,
                })
            }
        };
        file.write_all(&buf[..n])
            .map_err(InstallError::io("writing staging file", staging))?;
        written += n as u64;
    }
    if written != expected {
        return Err(InstallError::SizeMismatch {
            target: entry.target.clone(),
            expected,
            actual: written,
        });
    }
    if let Some(old) = old {
        copy_ownership(&file, old, staging)?;
    }
    file.sync_all()
        .map_err(InstallError::io("flushing staging file", staging))?;
    Ok(written)
}

/// Gives `file` the owner (where permitted) and mode of `old`. The owner
/// first: changing it may clear set-user-id bits that the mode then restores.
fn copy_ownership(file: &File, old: &fs::Metadata, path: &Path) -> Result<(), InstallError> {
    if let Err(e) = std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())) {
        tracing::debug!(path = %path.display(), error = %e, "cannot keep the old file's owner");
    }
    file.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))
        .map_err(InstallError::io("setting the mode of", path))
}

/// Keeps the target's current content at `backup`: a hard link, or where the
/// file system has none, a copy made durable before it takes the name.
fn make_backup(path: &Path, backup: &Path) -> Result<(), InstallError> {
    journal::remove_if_exists(backup, "removing stale backup")?;
    match fs::hard_link(path, backup) {
        Ok(()) => return Ok(()),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no hard link for the backup; copying");
        }
    }
    let tmp = journal::sibling(backup, ".tmp");
    fs::copy(path, &tmp)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .map_err(InstallError::io("copying the old file to", &tmp))?;
    fs::rename(&tmp, backup).map_err(InstallError::io("keeping the old file as", backup))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::testutil::{self, Spec};
    use airlift_package::PayloadType;

    struct Setup {
        _dir: tempfile::TempDir,
        root: PathBuf,
        work: PathBuf,
    }

    impl Setup {
        fn new() -> testutil::Result<Self> {
            let dir = tempfile::tempdir()?;
            let root = dir.path().join("root");
            fs::create_dir_all(root.join("etc"))?;
            Ok(Self {
                work: dir.path().join("work"),
                root,
                _dir: dir,
            })
        }

        fn installer(&self) -> FileInstaller {
            FileInstaller::new(&self.work).with_root(&self.root)
        }

        fn etc(&self) -> testutil::Result<Vec<String>> {
            let mut names: Vec<String> = fs::read_dir(self.root.join("etc"))?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()?;
            names.sort();
            Ok(names)
        }
    }

    #[test]
    fn install_then_commit_replaces_and_removes_backups() -> testutil::Result {
        let setup = Setup::new()?;
        let conf = setup.root.join("etc/app.conf");
        fs::write(&conf, b"old")?;
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o640))?;
        let package = testutil::package(&[
            Spec::zstd(PayloadType::File, "/etc/app.conf", b"new content"),
            Spec::plain(PayloadType::File, "/etc/added", b"added"),
        ])?;

        let mut installer = setup.installer();
        let outcomes = package.install_all(&mut installer)?;
        assert!(outcomes.iter().all(|o| !o.needs_reboot()));
        assert_eq!(fs::read(&conf)?, b"new content");
        assert_eq!(fs::metadata(&conf)?.mode() & 0o7777, 0o640, "mode kept");
        assert_eq!(
            fs::read(setup.root.join("etc/app.conf.airlift-backup"))?,
            b"old"
        );
        assert!(installer.journal_path().exists());

        installer.commit()?;
        assert_eq!(setup.etc()?, ["added", "app.conf"]);
        assert_eq!(fs::read(&conf)?, b"new content");
        assert!(!installer.journal_path().exists());
        installer.commit()?; // nothing left to do
        Ok(())
    }

    #[test]
    fn install_then_rollback_restores_the_old_files() -> testutil::Result {
        let setup = Setup::new()?;
        let conf = setup.root.join("etc/app.conf");
        fs::write(&conf, b"old")?;
        let package = testutil::package(&[
            Spec::plain(PayloadType::File, "/etc/app.conf", b"new"),
            Spec::plain(PayloadType::File, "/etc/added", b"added"),
        ])?;

        let mut installer = setup.installer();
        package.install_all(&mut installer)?;
        installer.rollback()?;
        assert_eq!(setup.etc()?, ["app.conf"]);
        assert_eq!(fs::read(&conf)?, b"old");
        assert!(!installer.journal_path().exists());
        Ok(())
    }

    #[test]
    fn rollback_after_a_restart_uses_the_journal() -> testutil::Result {
        let setup = Setup::new()?;
        let conf = setup.root.join("etc/app.conf");
        fs::write(&conf, b"old")?;
        let package =
            testutil::package(&[Spec::plain(PayloadType::File, "/etc/app.conf", b"new")])?;
        package.install_all(&mut setup.installer())?;
        assert_eq!(fs::read(&conf)?, b"new");

        // The agent restarts: a new installer knows only the work directory.
        let mut restarted = setup.installer();
        restarted.rollback()?;
        assert_eq!(fs::read(&conf)?, b"old");
        assert_eq!(setup.etc()?, ["app.conf"]);
        restarted.rollback()?; // idempotent
        Ok(())
    }

    #[test]
    fn a_payload_failing_its_digest_leaves_the_target_untouched() -> testutil::Result {
        let setup = Setup::new()?;
        let conf = setup.root.join("etc/app.conf");
        fs::write(&conf, b"old")?;
        let mut package = testutil::package(&[Spec::plain(
            PayloadType::File,
            "/etc/app.conf",
            b"altered in transit",
        )])?;
        package.corrupt_last_byte();

        let mut installer = setup.installer();
        let error = package.install_all(&mut installer).err();
        assert!(
            matches!(error, Some(InstallError::Payload { .. })),
            "{error:?}"
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("does not match"), "{message}");
        assert_eq!(fs::read(&conf)?, b"old");
        assert_eq!(setup.etc()?, ["app.conf"], "no staging or backup file left");

        installer.rollback()?;
        assert_eq!(fs::read(&conf)?, b"old");
        assert_eq!(setup.etc()?, ["app.conf"]);
        Ok(())
    }

    #[test]
    fn a_download_breaking_off_midway_leaves_the_target_untouched() -> testutil::Result {
        let setup = Setup::new()?;
        let conf = setup.root.join("etc/app.conf");
        fs::write(&conf, b"old")?;
        let content = vec![9u8; 300_000];
        let package =
            testutil::package(&[Spec::zstd(PayloadType::File, "/etc/app.conf", &content)])?;
        let error = package
            .install_all_through(&mut setup.installer(), Some(100_000))
            .err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("connection reset by peer"), "{message}");
        assert!(message.contains("nothing was committed"), "{message}");
        assert_eq!(fs::read(&conf)?, b"old");
        assert_eq!(setup.etc()?, ["app.conf"]);
        setup.installer().rollback()?;
        assert_eq!(fs::read(&conf)?, b"old");
        Ok(())
    }

    #[test]
    fn reinstalling_after_an_interruption_keeps_the_first_backup() -> testutil::Result {
        let setup = Setup::new()?;
        let conf = setup.root.join("etc/app.conf");
        fs::write(&conf, b"old")?;
        let package =
            testutil::package(&[Spec::plain(PayloadType::File, "/etc/app.conf", b"new")])?;
        package.install_all(&mut setup.installer())?;
        // Interrupted before the driver recorded the install: it installs
        // the same package again.
        package.install_all(&mut setup.installer())?;
        assert_eq!(
            fs::read(setup.root.join("etc/app.conf.airlift-backup"))?,
            b"old"
        );
        setup.installer().rollback()?;
        assert_eq!(fs::read(&conf)?, b"old");
        Ok(())
    }

    #[test]
    fn another_package_waits_for_commit_or_rollback() -> testutil::Result {
        let setup = Setup::new()?;
        let first = testutil::package(&[Spec::plain(PayloadType::File, "/etc/a", b"1")])?;
        let second =
            testutil::package_version("2.0.0", &[Spec::plain(PayloadType::File, "/etc/a", b"2")])?;
        let mut installer = setup.installer();
        first.install_all(&mut installer)?;
        let error = second.install_all(&mut installer).err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("uncommitted install of testpkg 1.0.0"),
            "{message}"
        );
        installer.commit()?;
        second.install_all(&mut installer)?;
        assert_eq!(fs::read(setup.root.join("etc/a"))?, b"2");
        Ok(())
    }

    #[test]
    fn refuses_directories_and_missing_directories() -> testutil::Result {
        let setup = Setup::new()?;
        fs::create_dir(setup.root.join("etc/dir"))?;
        let package = testutil::package(&[Spec::plain(PayloadType::File, "/etc/dir", b"x")])?;
        let error = package.install_all(&mut setup.installer()).err();
        assert!(
            matches!(
                error,
                Some(InstallError::NotRegularFile {
                    found: "a directory",
                    ..
                })
            ),
            "{error:?}"
        );

        let package = testutil::package(&[Spec::plain(PayloadType::File, "/opt/app/x", b"x")])?;
        let error = package.install_all(&mut setup.installer()).err();
        assert!(
            matches!(error, Some(InstallError::MissingDirectory { .. })),
            "{error:?}"
        );
        Ok(())
    }
}
