//! The system calls the standard library does not offer. Everything unsafe
//! in the installers is here.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

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

/// Tells the kernel `file` is about to be read front to back, so it reads
/// ahead further (a slot read back after its pages were dropped is read
/// from the storage). Best effort, like [`drop_cached_pages`].
pub(crate) fn advise_sequential(file: &File) {
    // SAFETY: as above: an open descriptor, no memory of ours touched.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    if rc != 0 {
        tracing::debug!(
            error = %io::Error::from_raw_os_error(rc),
            "posix_fadvise(SEQUENTIAL) failed; reading back with the default read-ahead"
        );
    }
}

/// [`drop_cached_pages`] for the bytes `range` of `file` only.
pub(crate) fn drop_cached_range(file: &File, range: std::ops::Range<u64>) {
    let (Ok(offset), Ok(len)) = (
        libc::off_t::try_from(range.start),
        libc::off_t::try_from(range.end.saturating_sub(range.start)),
    ) else {
        return;
    };
    // SAFETY: as above: an open descriptor, no memory of ours touched.
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        tracing::debug!(
            error = %io::Error::from_raw_os_error(rc),
            "posix_fadvise(DONTNEED) failed; reading back through the page cache"
        );
    }
}
