//! What an interrupted upload leaves behind, found and removed at startup.
//!
//! On local disk an upload is written into the blob store's staging file
//! for it (`packages/<id>.airlift#<n>`), renamed into place when committed;
//! a process killed in between (`kill -9`, a power cut) leaves the staging
//! file — and earlier servers, which spooled uploads first, left spool
//! files (`spool/upload-*.spool`). Neither is ever read again, and each may be
//! gigabytes. Whatever is older than [`ABANDONED_AFTER`] is removed: an
//! upload still running writes to its file all the time, so it is never
//! that old.
//!
//! On S3 an interrupted upload leaves a multipart upload whose parts S3
//! keeps (and bills) until it is aborted. Each is recorded in the store
//! while it runs ([`super::recorded`]); [`abandoned_uploads`] aborts those
//! recorded longer than [`ABANDONED_UPLOAD_AFTER`] ago — at startup, then
//! every [`UPLOAD_SWEEP_PERIOD`] — and counts them in
//! `airlift_blob_uploads_swept_total`. With several instances each sweeps;
//! a record that old belongs to no request still running, and an upload
//! aborted twice is no harm.

use super::recorded::RecordedUploads;
use super::{bounded, STALL};
use airlift_store::StaleUpload;
use object_store::path::Path as BlobPath;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Files untouched for this long belong to no upload in progress.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// A recorded S3 upload started this long ago belongs to no request still
/// running (a body that stalls for the body timeout fails long before).
pub const ABANDONED_UPLOAD_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How often a running server sweeps abandoned S3 uploads again.
pub const UPLOAD_SWEEP_PERIOD: Duration = Duration::from_secs(3600);

/// Records read from the store at a time.
const UPLOAD_BATCH: u32 = 100;

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

/// What a sweep of abandoned S3 uploads did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweptUploads {
    /// Uploads aborted (their objects deleted, had a commit landed).
    pub aborted: u64,
    /// Records of uploads that were committed and whose package row was
    /// written: only the record was left.
    pub committed: u64,
    /// Uploads the store would not abort now; their records stay for the
    /// next sweep.
    pub failed: u64,
}

/// Aborts the recorded uploads started before `cutoff` and forgets their
/// records; counts what it aborted in `airlift_blob_uploads_swept_total`
/// and logs it.
pub async fn abandoned_uploads(
    uploads: &RecordedUploads,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> SweptUploads {
    let mut swept = SweptUploads::default();
    loop {
        let batch = match uploads.store.stale_uploads(cutoff, UPLOAD_BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "reading the records of abandoned uploads failed; the next sweep tries again");
                break;
            }
        };
        let whole_batch = batch.len() == UPLOAD_BATCH as usize;
        let failed_before = swept.failed;
        for stale in &batch {
            settle(uploads, stale, &mut swept).await;
        }
        // Records that failed stay, and would come back in every batch.
        let settled = batch.len() as u64 - (swept.failed - failed_before);
        if !whole_batch || settled == 0 {
            break;
        }
    }
    metrics::counter!("airlift_blob_uploads_swept_total").increment(swept.aborted);
    if swept != SweptUploads::default() {
        tracing::info!(
            aborted = swept.aborted,
            committed = swept.committed,
            failed = swept.failed,
            "swept abandoned uploads from the blob store"
        );
    }
    swept
}

/// Ends one abandoned upload: a committed one's record is forgotten; an
/// object whose commit landed while its package row never did is deleted;
/// any other upload is aborted. (An object under the key means the upload
/// was committed: each upload has a key of its own.)
async fn settle(uploads: &RecordedUploads, stale: &StaleUpload, swept: &mut SweptUploads) {
    let record = &stale.upload;
    if stale.package_stored {
        uploads.forget(record).await;
        swept.committed += 1;
        return;
    }
    let path = match BlobPath::parse(&record.object_key) {
        Ok(path) => path,
        Err(error) => {
            tracing::warn!(%error, object_key = %record.object_key, "a recorded upload names no valid key; its record is dropped");
            uploads.forget(record).await;
            return;
        }
    };
    let bucket = &uploads.bucket;
    let ended = match bounded(STALL, "looking for an abandoned object", bucket.head(&path)).await {
        Ok(_) => bounded(STALL, "deleting an abandoned object", bucket.delete(&path)).await,
        Err(object_store::Error::NotFound { .. }) => {
            let abort = bucket.abort_multipart(&path, &record.upload_id);
            bounded(STALL, "aborting an abandoned upload", abort).await
        }
        Err(error) => Err(error),
    };
    match ended {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {
            uploads.forget(record).await;
            tracing::info!(object_key = %record.object_key, upload_id = %record.upload_id, instance = %record.instance, started_at = %record.started_at, "aborted an abandoned upload");
            swept.aborted += 1;
        }
        Err(error) => {
            tracing::warn!(%error, object_key = %record.object_key, upload_id = %record.upload_id, "aborting an abandoned upload failed; the next sweep tries again");
            swept.failed += 1;
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
