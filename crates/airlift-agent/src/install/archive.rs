//! `archive` payloads: a tar archive unpacked into the directory its target
//! names, which is replaced as a whole; the old directory is kept until the
//! update is committed so that a rollback can put it back.

use super::journal::{self, Journal, Phase};
use super::{InstallError, InstallOutcome, Installer, PayloadRef, Reboot};
use rustix::fs::{renameat_with, RenameFlags, CWD};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The journal's file name in the work directory.
const JOURNAL: &str = "archives.json";

/// Replaces whole directories with the content of tar archives, keeping the
/// old ones until commit.
///
/// For a payload with target `/opt/app` (joined under the installer's root,
/// `/` on a device):
///
/// 1. the journal records `/opt/app`, its staging directory
///    `/opt/.app.airlift-new` and, if the directory exists, its backup name
///    `/opt/app.airlift-backup`;
/// 2. the archive is unpacked into the fresh staging directory as its bytes
///    stream in (no copy of the archive is kept). Regular files, directories,
///    symbolic and hard links are allowed; an entry of another kind (a
///    device, a FIFO) or whose path would leave the directory (absolute, or
///    through `..` or a symbolic link) is refused by name. Modes and
///    modification times are kept; owners are not (the files belong to the
///    agent's user, as with `tar --no-same-owner`). Every file and directory
///    is `fsync`ed, and the journal records the new directory's identity
///    (device and inode);
/// 3. the staging directory and the target are exchanged in one step
///    (`renameat2` with `RENAME_EXCHANGE`), so the target is at every moment
///    the old directory or the new one, then the old one is renamed to the
///    backup name. Where the file system cannot exchange, the old directory
///    is renamed to the backup name first and the new one into place after.
///
/// [`commit`](Installer::commit) deletes the backups;
/// [`rollback`](Installer::rollback) puts them back (or removes a directory
/// that did not exist before). Both read the journal and tell the
/// directories apart by the recorded identity, so they finish correctly
/// whatever step a power cut interrupted, also on a new installer after a
/// restart. A missing parent directory is an error, not created.
#[derive(Debug, Clone)]
pub struct ArchiveInstaller {
    work_dir: PathBuf,
    root: PathBuf,
}

/// A directory's identity: it survives renames, and a new directory never
/// has an old one's while both exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirId {
    dev: u64,
    ino: u64,
}

impl DirId {
    /// The identity of the directory at `path`, if there is one.
    fn of(path: &Path) -> Result<Option<Self>, InstallError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(Some(Self {
                dev: meta.dev(),
                ino: meta.ino(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(InstallError::io("inspecting", path)(e)),
        }
    }
}

/// One replaced directory, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveEntry {
    /// The payload's target, as in the manifest.
    target: String,
    /// The directory replaced: the target under the root.
    path: PathBuf,
    /// Where the new content is unpacked before the exchange.
    staging: PathBuf,
    /// Where the old directory is kept; `None` if there was none.
    backup: Option<PathBuf>,
    /// The new directory, once it is completely unpacked and synced.
    unpacked: Option<DirId>,
}

impl ArchiveInstaller {
    /// An installer keeping its journal in `work_dir`, replacing directories
    /// below `/`.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Self {
            work_dir: work_dir.into(),
            root: PathBuf::from("/"),
        }
    }

    /// Replaces directories below `root` instead of `/`.
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = root.into();
        self
    }

    /// Where the journal is kept.
    pub fn journal_path(&self) -> PathBuf {
        self.work_dir.join(JOURNAL)
    }

    fn new_entry(&self, target: &str) -> Result<ArchiveEntry, InstallError> {
        let place = journal::Place::of(&self.root, target)?;
        let path = place.path;
        let backup = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => Some(place.backup),
            Ok(_) => return Err(InstallError::NotDirectory { path: path.clone() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(InstallError::io("inspecting", &path)(e)),
        };
        Ok(ArchiveEntry {
            target: target.to_owned(),
            staging: place.staging,
            backup,
            path,
            unpacked: None,
        })
    }
}

impl Installer for ArchiveInstaller {
    fn install(
        &mut self,
        payload: PayloadRef<'_>,
        installed: &mut dyn Read,
    ) -> Result<InstallOutcome, InstallError> {
        let target = &payload.entry().target;
        let journal_path = self.journal_path();
        let mut journal: Journal<ArchiveEntry> =
            journal::load_for_install(&journal_path, &payload.package_id())?;
        let mut entry = self.new_entry(target)?;
        if journal.entries.iter().any(|e| e.path == entry.path) {
            return Err(InstallError::Archive {
                target: target.clone(),
                reason: "an earlier archive payload of this package replaces the same directory"
                    .into(),
            });
        }
        // Names left over from an interrupted attempt that no journal lists.
        remove_dir_if_exists(&entry.staging)?;
        if let Some(backup) = &entry.backup {
            remove_dir_if_exists(backup)?;
        }
        journal.entries.push(entry.clone());
        journal::store(&journal_path, &journal)?;
        tracing::info!(target_path = %entry.path.display(), "unpacking archive");

        let bytes = match unpack(&entry, payload, installed) {
            Ok(bytes) => bytes,
            Err(e) => {
                if let Err(cleanup) = remove_dir_if_exists(&entry.staging) {
                    tracing::warn!(error = %cleanup, "could not remove the staging directory");
                }
                return Err(e);
            }
        };
        entry.unpacked = DirId::of(&entry.staging)?;
        if let Some(last) = journal.entries.last_mut() {
            *last = entry.clone();
        }
        journal::store(&journal_path, &journal)?;

        let dir = journal::parent(&entry.path);
        match &entry.backup {
            Some(backup) => {
                swap_in(&entry.staging, &entry.path, backup)?;
            }
            None => fs::rename(&entry.staging, &entry.path).map_err(InstallError::io(
                "renaming the new directory into place at",
                &entry.path,
            ))?,
        }
        journal::sync_dir(dir)?;
        Ok(InstallOutcome {
            reboot: Reboot::NotNeeded,
            bytes,
        })
    }

    fn commit(&mut self) -> Result<(), InstallError> {
        let path = self.journal_path();
        let Some(journal) = journal::load_for_finish::<ArchiveEntry>(&path, Phase::Committing)?
        else {
            return Ok(());
        };
        for entry in &journal.entries {
            remove_dir_if_exists(&entry.staging)?;
            if let Some(backup) = &entry.backup {
                remove_dir_if_exists(backup)?;
            }
            journal::sync_dir(journal::parent(&entry.path))?;
            tracing::info!(target_path = %entry.path.display(), "archive committed");
        }
        journal::remove(&path)
    }

    fn rollback(&mut self) -> Result<(), InstallError> {
        let path = self.journal_path();
        let Some(journal) = journal::load_for_finish::<ArchiveEntry>(&path, Phase::RollingBack)?
        else {
            return Ok(());
        };
        for entry in journal.entries.iter().rev() {
            restore(entry)?;
            journal::sync_dir(journal::parent(&entry.path))?;
            tracing::info!(target_path = %entry.path.display(), "archive rolled back");
        }
        journal::remove(&path)
    }
}

/// Puts the directory from before the update back at `entry.path`, wherever
/// the install stopped, and removes the new one.
fn restore(entry: &ArchiveEntry) -> Result<(), InstallError> {
    let Some(new) = entry.unpacked else {
        // Stopped while unpacking: the target was never touched.
        return remove_dir_if_exists(&entry.staging);
    };
    let is_new = |path: &Path| -> Result<bool, InstallError> { Ok(DirId::of(path)? == Some(new)) };
    // If there was an old directory, it is at the backup name or — stopped
    // between the exchange and the rename — still at the staging name.
    let mut old = None;
    if let Some(backup) = &entry.backup {
        for place in [backup.as_path(), entry.staging.as_path()] {
            if DirId::of(place)?.is_some_and(|id| id != new) {
                old = Some(place);
                break;
            }
        }
    }
    if is_new(&entry.path)? {
        match old {
            Some(old) => exchange(old, &entry.path)?,
            None => remove_dir_if_exists(&entry.path)?,
        }
    } else if let Some(old) = old {
        if DirId::of(&entry.path)?.is_none() {
            // Stopped between the two renames of the fallback.
            fs::rename(old, &entry.path).map_err(InstallError::io(
                "restoring the old directory at",
                &entry.path,
            ))?;
        }
    }
    // Whatever holds the new directory now is removed.
    for path in [Some(entry.staging.as_path()), entry.backup.as_deref()]
        .into_iter()
        .flatten()
    {
        if is_new(path)? {
            remove_dir_if_exists(path)?;
        }
    }
    Ok(())
}

/// Puts `staging` in place at `path` and keeps the old directory at
/// `backup`, never leaving `path` empty where the file system can help it.
fn swap_in(staging: &Path, path: &Path, backup: &Path) -> Result<(), InstallError> {
    match renameat_with(CWD, staging, CWD, path, RenameFlags::EXCHANGE) {
        Ok(()) => {
            journal::sync_dir(journal::parent(path))?;
            fs::rename(staging, backup)
                .map_err(InstallError::io("keeping the old directory as", backup))
        }
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            tracing::debug!(path = %path.display(), "no atomic exchange here; renaming twice");
            fs::rename(path, backup)
                .map_err(InstallError::io("keeping the old directory as", backup))?;
            journal::sync_dir(journal::parent(path))?;
            fs::rename(staging, path).map_err(InstallError::io(
                "renaming the new directory into place at",
                path,
            ))
        }
        Err(e) => Err(InstallError::io("exchanging the new directory with", path)(
            e.into(),
        )),
    }
}

/// Exchanges two directories in one step (or, where the file system cannot,
/// with a third name in between).
fn exchange(a: &Path, b: &Path) -> Result<(), InstallError> {
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            let aside = journal::sibling(b, ".airlift-aside");
            fs::rename(b, &aside)
                .and_then(|()| fs::rename(a, b))
                .and_then(|()| fs::rename(&aside, a))
                .map_err(InstallError::io("exchanging directories at", b))
        }
        Err(e) => Err(InstallError::io("exchanging directories at", b)(e.into())),
    }
}

/// Unpacks the archive into `entry.staging` and syncs it; returns the
/// installed bytes read.
fn unpack(
    entry: &ArchiveEntry,
    payload: PayloadRef<'_>,
    installed: &mut dyn Read,
) -> Result<u64, InstallError> {
    let staging = &entry.staging;
    fs::create_dir(staging).map_err(InstallError::io("creating staging directory", staging))?;
    let mut source = Tracked {
        inner: installed,
        bytes: 0,
        error: None,
    };
    let payload_error = |source: &mut Tracked<'_>| {
        source.error.take().map(|source| InstallError::Payload {
            index: payload.index(),
            target: entry.target.clone(),
            source,
        })
    };
    let refuse = |reason: String| InstallError::Archive {
        target: entry.target.clone(),
        reason,
    };
    let result = {
        let mut archive = tar::Archive::new(&mut source);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(false);
        archive.set_overwrite(true);
        unpack_entries(&mut archive, staging).map_err(refuse)
    };
    if let Some(error) = payload_error(&mut source) {
        return Err(error);
    }
    result?;
    // The end-of-archive blocks and any padding: reading to the end is what
    // checks the payload's digest.
    let drained = io::copy(&mut source, &mut io::sink());
    if let Some(error) = payload_error(&mut source) {
        return Err(error);
    }
    drained.map_err(InstallError::io(
        "reading the rest of the archive for",
        staging,
    ))?;
    let expected = payload.entry().installed.size;
    if source.bytes != expected {
        return Err(InstallError::SizeMismatch {
            target: entry.target.clone(),
            expected,
            actual: source.bytes,
        });
    }
    sync_tree(staging)?;
    Ok(source.bytes)
}

/// Unpacks every entry of `archive` into `staging`; on a refusal, says why,
/// naming the entry.
fn unpack_entries(archive: &mut tar::Archive<impl Read>, staging: &Path) -> Result<(), String> {
    use tar::EntryType as Kind;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for item in entries {
        let mut item = item.map_err(|e| format!("unreadable entry: {e}"))?;
        let name = String::from_utf8_lossy(&item.path_bytes()).into_owned();
        match item.header().entry_type() {
            Kind::Regular | Kind::Continuous | Kind::Directory | Kind::Symlink | Kind::Link => {}
            other => {
                return Err(format!(
                    "entry {name:?} is a {other:?}; archives may hold files, directories and links only"
                ))
            }
        }
        match item.unpack_in(staging) {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "entry {name:?} would be written outside the directory"
                ))
            }
            Err(e) => return Err(format!("unpacking {name:?}: {e}")),
        }
    }
    Ok(())
}

/// The payload's bytes, counted; an error from them is kept so that it is
/// reported as the payload's (a digest mismatch) rather than the archive's.
struct Tracked<'a> {
    inner: &'a mut dyn Read,
    bytes: u64,
    error: Option<io::Error>,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Err(copy)
            }
        }
    }
}

/// `fsync`s every regular file and directory below `dir`, and `dir`.
fn sync_tree(dir: &Path) -> Result<(), InstallError> {
    for item in fs::read_dir(dir).map_err(InstallError::io("listing", dir))? {
        let item = item.map_err(InstallError::io("listing", dir))?;
        let path = item.path();
        let kind = item
            .file_type()
            .map_err(InstallError::io("inspecting", &path))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(InstallError::io("flushing", &path))?;
        }
    }
    journal::sync_dir(dir)
}

fn remove_dir_if_exists(path: &Path) -> Result<(), InstallError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InstallError::io("removing", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::testutil::{self, Spec};
    use airlift_package::PayloadType;
    use std::os::unix::fs::PermissionsExt;

    /// A tar archive of (path, content) files; a path ending in `/` is a
    /// directory.
    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut header = tar::Header::new_gnu();
            if path.ends_with('/') {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
            } else {
                header.set_mode(0o640);
                header.set_size(content.len() as u64);
            }
            header.set_mtime(1_700_000_000);
            builder
                .append_data(&mut header, path, *content)
                .expect("append");
        }
        builder.into_inner().expect("tar")
    }

    /// A tar archive with one entry whose raw name is `name` (which the
    /// builder would refuse to write).
    fn hostile_tar(name: &[u8], kind: tar::EntryType) -> Vec<u8> {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(4);
        header.set_cksum();
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(b"evil");
        out.resize(out.len() + 508 + 1024, 0);
        out
    }

    /// A symbolic link `lib` to a directory outside, then a file through it.
    fn symlink_escape(outside: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        builder
            .append_link(&mut link, "lib", outside)
            .expect("link");
        let mut file = tar::Header::new_gnu();
        file.set_size(4);
        file.set_mode(0o644);
        builder
            .append_data(&mut file, "lib/planted", &b"evil"[..])
            .expect("file");
        builder.into_inner().expect("tar")
    }

    struct Setup {
        _dir: tempfile::TempDir,
        root: PathBuf,
        installer: ArchiveInstaller,
    }

    impl Setup {
        fn new() -> testutil::Result<Self> {
            let dir = tempfile::tempdir()?;
            let root = dir.path().join("root");
            fs::create_dir_all(root.join("opt/app/lib"))?;
            fs::write(root.join("opt/app/version"), b"1.0")?;
            fs::write(root.join("opt/app/lib/old.so"), b"old")?;
            let installer = ArchiveInstaller::new(dir.path().join("work")).with_root(&root);
            fs::create_dir_all(dir.path().join("work"))?;
            Ok(Self {
                _dir: dir,
                root,
                installer,
            })
        }

        fn app(&self) -> PathBuf {
            self.root.join("opt/app")
        }

        fn install(&mut self, archive: &[u8]) -> Result<(), InstallError> {
            let package =
                testutil::package(&[Spec::plain(PayloadType::Archive, "/opt/app", archive)])
                    .expect("test package");
            package.install_all(&mut self.installer).map(|_| ())
        }

        /// The names in `/opt`, sorted.
        fn opt(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.root.join("opt"))
                .expect("opt")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    fn new_release() -> Vec<u8> {
        tar_of(&[
            ("version", b"2.0"),
            ("bin/", b""),
            ("bin/app", b"#!/bin/sh\necho 2.0\n"),
        ])
    }

    #[test]
    fn an_archive_replaces_the_directory_and_commit_drops_the_old_one() -> testutil::Result {
        let mut setup = Setup::new()?;
        setup.install(&new_release())?;
        let app = setup.app();
        assert_eq!(fs::read(app.join("version"))?, b"2.0");
        assert_eq!(fs::read(app.join("bin/app"))?, b"#!/bin/sh\necho 2.0\n");
        assert!(
            !app.join("lib/old.so").exists(),
            "the directory is replaced whole"
        );
        assert_eq!(
            fs::metadata(app.join("bin/app"))?.permissions().mode() & 0o777,
            0o640,
            "modes kept"
        );
        assert_eq!(setup.opt(), ["app", "app.airlift-backup"]);

        setup.installer.commit()?;
        assert_eq!(setup.opt(), ["app"]);
        assert!(!setup.installer.journal_path().exists());
        Ok(())
    }

    #[test]
    fn a_rollback_puts_the_old_directory_back() -> testutil::Result {
        let mut setup = Setup::new()?;
        setup.install(&new_release())?;
        // A new installer, as after a restart, finds its way from the journal.
        let mut restarted = setup.installer.clone();
        restarted.rollback()?;
        assert_eq!(fs::read(setup.app().join("version"))?, b"1.0");
        assert_eq!(fs::read(setup.app().join("lib/old.so"))?, b"old");
        assert_eq!(setup.opt(), ["app"]);
        Ok(())
    }

    #[test]
    fn a_new_directory_is_removed_by_a_rollback() -> testutil::Result {
        let mut setup = Setup::new()?;
        fs::remove_dir_all(setup.app())?;
        setup.install(&new_release())?;
        assert_eq!(fs::read(setup.app().join("version"))?, b"2.0");
        setup.installer.rollback()?;
        assert!(setup.opt().is_empty(), "{:?}", setup.opt());
        Ok(())
    }

    #[test]
    fn a_power_cut_between_the_exchange_and_the_backup_rename_rolls_back() -> testutil::Result {
        let mut setup = Setup::new()?;
        setup.install(&new_release())?;
        // Undo the last rename by hand: the old directory is still at the
        // staging name, as if the power failed right after the exchange.
        let opt = setup.root.join("opt");
        fs::rename(opt.join("app.airlift-backup"), opt.join(".app.airlift-new"))?;
        setup.installer.rollback()?;
        assert_eq!(fs::read(setup.app().join("version"))?, b"1.0");
        assert_eq!(setup.opt(), ["app"]);
        Ok(())
    }

    #[test]
    fn a_power_cut_between_the_fallback_renames_rolls_back() -> testutil::Result {
        let mut setup = Setup::new()?;
        setup.install(&new_release())?;
        // As if the file system could not exchange and the power failed
        // after the old directory was moved aside: the new one is only at
        // the staging name, nothing at the target.
        let opt = setup.root.join("opt");
        fs::rename(opt.join("app"), opt.join(".app.airlift-new"))?;
        setup.installer.rollback()?;
        assert_eq!(fs::read(setup.app().join("version"))?, b"1.0");
        assert_eq!(setup.opt(), ["app"]);
        Ok(())
    }

    #[test]
    fn a_damaged_archive_changes_nothing() -> testutil::Result {
        let mut setup = Setup::new()?;
        let release = new_release();
        let mut package =
            testutil::package(&[Spec::plain(PayloadType::Archive, "/opt/app", &release)])?;
        package.corrupt_last_byte();
        let error = package
            .install_all(&mut setup.installer)
            .expect_err("digest mismatch");
        assert!(matches!(error, InstallError::Payload { .. }), "{error}");
        setup.installer.rollback()?;
        assert_eq!(fs::read(setup.app().join("version"))?, b"1.0");
        assert_eq!(setup.opt(), ["app"]);
        Ok(())
    }

    #[test]
    fn hostile_entries_are_refused_by_name() -> testutil::Result {
        let outside = tempfile::tempdir()?;
        let outside_name = outside.path().display().to_string();
        for (archive, needle) in [
            (symlink_escape(&outside_name), "lib/planted"),
            (
                hostile_tar(b"../escape", tar::EntryType::Regular),
                "outside",
            ),
            (
                hostile_tar(b"lib/../../escape", tar::EntryType::Regular),
                "outside",
            ),
            (hostile_tar(b"console", tar::EntryType::Char), "console"),
            (
                b"this is not a tar archive at all, just text".repeat(20),
                "archive",
            ),
        ] {
            let mut setup = Setup::new()?;
            let error = setup.install(&archive).expect_err("refused");
            assert!(
                matches!(error, InstallError::Archive { .. }),
                "{needle}: {error}"
            );
            assert!(error.to_string().contains(needle), "{error}");
            setup.installer.rollback()?;
            assert_eq!(fs::read(setup.app().join("version"))?, b"1.0");
            assert_eq!(setup.opt(), ["app"], "nothing left behind");
            assert!(!setup.root.join("escape").exists());
            assert!(!outside.path().join("planted").exists());
        }
        Ok(())
    }
}
