//! What an interrupted upload leaves behind, found and removed at startup.
//!
//! An upload is spooled to a file of its own and then copied into the blob
//! store in parts; a process killed in between (`kill -9`, a power cut)
//! leaves the spool file, and the local blob store's staging file for the
//! unfinished copy (`packages/<id>.airlift#<n>`). Neither is ever read
//! again, and each may be gigabytes. Whatever is older than
//! [`ABANDONED_AFTER`] is removed: an upload still running writes to its
//! files all the time, so it is never that old.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Files untouched for this long belong to no upload in progress.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Prefix of a spool file's name.
pub const SPOOL_PREFIX: &str = "upload-";
/// Suffix of a spool file's name.
pub const SPOOL_SUFFIX: &str = ".spool";

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Files removed.
    pub files: Vec<PathBuf>,
    /// Their bytes.
    pub bytes: u64,
}

/// Removes abandoned spool files from `spool_dir` and abandoned staging
/// files from anywhere under `blob_dir`, untouched since before `cutoff`.
/// Files it cannot read or remove are left, and logged.
pub fn sweep(spool_dir: &Path, blob_dir: &Path, cutoff: SystemTime) -> Swept {
    let mut swept = Swept::default();
    let is_spool = |name: &str| name.starts_with(SPOOL_PREFIX) && name.ends_with(SPOOL_SUFFIX);
    visit(spool_dir, false, &is_spool, cutoff, &mut swept);
    visit(blob_dir, true, &is_staging, cutoff, &mut swept);
    swept
}

/// `object_store`'s local staging name: the final name, `#`, a number.
fn is_staging(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(stem, counter)| {
        !stem.is_empty() && !counter.is_empty() && counter.bytes().all(|b| b.is_ascii_digit())
    })
}

fn visit(
    dir: &Path,
    recurse: bool,
    matches: &dyn Fn(&str) -> bool,
    cutoff: SystemTime,
    swept: &mut Swept,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            if recurse {
                visit(&path, recurse, matches, cutoff, swept);
            }
            continue;
        }
        let name = entry.file_name();
        let old = meta.modified().is_ok_and(|at| at < cutoff);
        if !meta.is_file() || !old || !name.to_str().is_some_and(matches) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                swept.bytes += meta.len();
                swept.files.push(path);
            }
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "cannot remove an abandoned upload file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, age: Duration) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, b"partial").expect("write");
        let when = SystemTime::now() - age;
        let file = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open");
        file.set_modified(when).expect("set mtime");
    }

    #[test]
    fn only_old_leftovers_of_uploads_are_removed() {
        let root = tempfile::tempdir().expect("tempdir");
        let spool = root.path().join("spool");
        let blobs = root.path().join("blobs");
        let hour = ABANDONED_AFTER;
        let old_spool = spool.join("upload-abc.spool");
        let fresh_spool = spool.join("upload-def.spool");
        let other_in_spool = spool.join("notes.txt");
        let old_staging = blobs.join("packages/0b0e.airlift#1");
        let fresh_staging = blobs.join("packages/1c1f.airlift#3");
        let package = blobs.join("packages/2d2a.airlift");
        let odd_name = blobs.join("packages/x#y");
        touch(&old_spool, hour * 2);
        touch(&fresh_spool, Duration::from_secs(5));
        touch(&other_in_spool, hour * 2);
        touch(&old_staging, hour * 2);
        touch(&fresh_staging, Duration::from_secs(5));
        touch(&package, hour * 48);
        touch(&odd_name, hour * 2);

        let swept = sweep(&spool, &blobs, SystemTime::now() - hour);
        let mut removed = swept.files.clone();
        removed.sort();
        assert_eq!(removed, vec![old_staging.clone(), old_spool.clone()]);
        assert_eq!(swept.bytes, 2 * b"partial".len() as u64);
        for kept in [
            &fresh_spool,
            &other_in_spool,
            &fresh_staging,
            &package,
            &odd_name,
        ] {
            assert!(kept.exists(), "{} must stay", kept.display());
        }
        assert!(!old_spool.exists() && !old_staging.exists());
    }

    #[test]
    fn missing_directories_are_nothing_to_sweep() {
        let root = tempfile::tempdir().expect("tempdir");
        let swept = sweep(
            &root.path().join("a"),
            &root.path().join("b"),
            SystemTime::now(),
        );
        assert_eq!(swept, Swept::default());
    }
}
