//! Keeping the image cache from growing without end: every agent build
//! makes a new image directory (about 90 MiB) named by its inputs' hash,
//! and a developer rebuilds the agent many times a day.
//!
//! Each use of an image marks its directory; the directories not used for a
//! day are removed, except the few used last (a test run and a long
//! benchmark may hold different images at once, and a VM running from an
//! image must never lose its base disk).

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The file whose modification time says when an image was last used.
const LAST_USED: &str = "last-used";
/// Image directories always kept, the most recently used first.
const KEEP: usize = 4;
/// Older than this, and not among the [`KEEP`] last used: removed.
const UNUSED_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Marks `dir` as used now.
pub fn mark_used(dir: &Path) -> std::io::Result<()> {
    fs::write(dir.join(LAST_USED), b"")
}

/// Removes the image directories of `cache` not used for a day, keeping
/// the [`KEEP`] used last whatever their age; returns how many it removed.
/// Only directories named like an image (24 hex digits) are considered;
/// the kernel, the release key and anything else stay.
pub fn prune(cache: &Path, now: SystemTime) -> std::io::Result<usize> {
    let mut images = Vec::new();
    for entry in fs::read_dir(cache)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_image = name.len() == 24
            && name
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()));
        if !is_image || !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        let used = fs::metadata(path.join(LAST_USED))
            .or_else(|_| entry.metadata())
            .and_then(|m| m.modified())?;
        images.push((used, path));
    }
    images.sort_by_key(|image| std::cmp::Reverse(image.0));
    let mut removed = 0;
    for (used, path) in images.into_iter().skip(KEEP) {
        let age = now.duration_since(used).unwrap_or_default();
        if age > UNUSED_FOR {
            fs::remove_dir_all(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_dir(
        cache: &Path,
        n: usize,
        used_hours_ago: u64,
        now: SystemTime,
    ) -> std::path::PathBuf {
        let dir = cache.join(format!("{n:024x}"));
        fs::create_dir_all(&dir).expect("dir");
        fs::write(dir.join("disk.img"), b"disk").expect("disk");
        mark_used(&dir).expect("mark");
        let file = fs::File::options()
            .write(true)
            .open(dir.join(LAST_USED))
            .expect("open");
        file.set_modified(now - Duration::from_secs(used_hours_ago * 3600))
            .expect("set time");
        dir
    }

    #[test]
    fn images_unused_for_a_day_go_but_the_last_used_and_other_files_stay() {
        let cache = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        // Used 1, 2, …, 7 hours ago and 30, 40, 50 hours ago.
        let recent: Vec<_> = (1..=7)
            .map(|h| image_dir(cache.path(), h as usize, h, now))
            .collect();
        let old: Vec<_> = [30, 40, 50]
            .iter()
            .map(|&h| image_dir(cache.path(), h as usize, h, now))
            .collect();
        fs::create_dir_all(cache.path().join("debian-kernel")).expect("kernel dir");
        fs::write(cache.path().join("release.key"), b"key").expect("key");

        assert_eq!(prune(cache.path(), now).expect("prune"), 3);
        assert!(recent.iter().all(|d| d.join("disk.img").is_file()));
        assert!(old.iter().all(|d| !d.exists()));
        assert!(cache.path().join("debian-kernel").is_dir());
        assert!(cache.path().join("release.key").is_file());
    }

    #[test]
    fn the_last_used_images_stay_however_old() {
        let cache = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let dirs: Vec<_> = (1..=6)
            .map(|n| image_dir(cache.path(), n, 100 + n as u64, now))
            .collect();
        assert_eq!(prune(cache.path(), now).expect("prune"), 2);
        assert!(dirs[..KEEP].iter().all(|d| d.is_dir()));
        assert!(dirs[KEEP..].iter().all(|d| !d.exists()));
    }
}
