//! Replacing a file so that a power cut leaves the old content or the new,
//! never a mix, an empty file or a truncated one.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes` atomically: writes a temporary file in the
/// same directory, fsyncs it, renames it over `path`, and fsyncs the
/// directory so the rename itself is durable.
///
/// On error the temporary file is removed and `path` is untouched. `path`
/// must be a regular file or absent; a symlink is replaced, not followed
/// (resolve it first if that is what you want).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path)?;
    let result = write_and_rename(&tmp, path, bytes);
    if result.is_err() {
        // Best effort: the error that matters is the one above.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_and_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    sync_parent(path)
}

/// A name beside `path` that no other writer in this or another process
/// picks: `.NAME.tmp.PID.N`.
pub(crate) fn temp_path(path: &Path) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(tmp))
}

/// Makes a rename (or create, or unlink) in `path`'s directory durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn entries(dir: &Path) -> io::Result<Vec<OsString>> {
        let mut names = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    #[test]
    fn replaces_the_whole_file_through_a_new_inode_and_leaves_no_temp_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("env");
        atomic_write(&path, b"a long first version of the content\n")?;
        let first = fs::metadata(&path)?.ino();
        atomic_write(&path, b"short\n")?;
        // Nothing of the longer old content survives: the file was replaced,
        // not overwritten in place (which would need a truncate that a power
        // cut could separate from the write).
        assert_eq!(fs::read(&path)?, b"short\n");
        assert_ne!(
            fs::metadata(&path)?.ino(),
            first,
            "written in place, not renamed"
        );
        assert_eq!(entries(dir.path())?, vec![OsString::from("env")]);
        Ok(())
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file_behind() -> TestResult {
        let dir = tempfile::tempdir()?;
        // A directory cannot be replaced by a file: the rename fails after the
        // temporary file was written.
        let path = dir.path().join("occupied");
        fs::create_dir(&path)?;
        fs::write(path.join("keep"), b"x")?;
        assert!(atomic_write(&path, b"new").is_err());
        assert_eq!(entries(dir.path())?, vec![OsString::from("occupied")]);
        assert_eq!(fs::read(path.join("keep"))?, b"x");
        Ok(())
    }

    #[test]
    fn temp_names_are_hidden_siblings_and_unique() -> TestResult {
        let a = temp_path(Path::new("/boot/grub/grubenv"))?;
        let b = temp_path(Path::new("/boot/grub/grubenv"))?;
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/boot/grub")));
        let name = a.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.starts_with(".grubenv.tmp."), "{name}");
        assert!(temp_path(Path::new("/")).is_err());
        Ok(())
    }
}
