//! The two system calls the standard library does not offer. Everything
//! unsafe in the installers is here.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Sends `SIGKILL` to the process group `pgid` (a child started with
/// `process_group(0)`, so that whatever it started dies with it). The caller
/// must not have reaped the group's leader yet, so that the id cannot have
/// been reused.
pub(crate) fn kill_process_group(pgid: u32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|&p| p > 1)
        .ok_or_else(|| io::Error::other(format!("refusing to kill process group {pgid}")))?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours; the
    // check above rules out the special targets 0 and -1.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to drop the (clean, already `fsync`ed) cached pages of
/// `file`, so that reading it back reads the storage, not the page cache.
/// Best effort: a kernel that ignores the advice only makes the read-back
/// check weaker.
pub(crate) fn drop_cached_pages(file: &File) {
    // SAFETY: the descriptor is open for the duration of the borrow and
    // posix_fadvise(2) touches no memory of ours.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        tracing::debug!(
            error = %io::Error::from_raw_os_error(rc),
            "posix_fadvise(DONTNEED) failed; reading back through the page cache"
        );
    }
}
