//! Serving a package file from read-only memory maps, so that its bytes go
//! from the page cache into the socket with one copy instead of two (a
//! `read` into a buffer, then a `write` out of it).
//!
//! The only `unsafe` here is creating the map; see [`map`] for why it holds.
#![allow(unsafe_code)]

use bytes::Bytes;
use futures::Stream;
use memmap2::{Advice, MmapOptions};
use std::fs::File;
use std::io;

/// Bytes mapped at a time. Each window is unmapped once it has been sent, so
/// a download holds at most two windows of page-cache pages in the server's
/// address space (the one being sent and the next one), whatever the
/// package's size.
pub const WINDOW: u64 = 8 << 20;

/// Streams `length` bytes of `file` from `start`, one mapped window after
/// another. Maps the first window before returning, so a file that cannot be
/// mapped is known before any response is sent; the file comes back with
/// the error so the caller can read it another way. A file shorter than
/// `start + length` is refused with [`io::ErrorKind::UnexpectedEof`].
pub fn windows(
    file: File,
    start: u64,
    length: u64,
) -> Result<impl Stream<Item = io::Result<Bytes>> + Send + 'static, (io::Error, File)> {
    let end = match start.checked_add(length) {
        Some(end) => end,
        None => return Err((io::Error::other("range overflows"), file)),
    };
    match file.metadata() {
        Ok(metadata) if metadata.len() >= end => {}
        Ok(_) => {
            let short = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "package file is shorter than its recorded size",
            );
            return Err((short, file));
        }
        Err(error) => return Err((error, file)),
    }
    let first = match length {
        0 => None,
        _ => match map(&file, start, length.min(WINDOW)) {
            Ok(window) => Some(Ok(window)),
            Err(error) => return Err((error, file)),
        },
    };
    let rest = (start.saturating_add(WINDOW)..end)
        .step_by(WINDOW as usize)
        .map(move |offset| map(&file, offset, (end - offset).min(WINDOW)));
    Ok(futures::stream::iter(first.into_iter().chain(rest)))
}

/// Maps `length` (> 0) bytes of `file` from `offset` (any offset: memmap2
/// aligns the map and hands back the exact range).
fn map(file: &File, offset: u64, length: u64) -> io::Result<Bytes> {
    let length = usize::try_from(length).map_err(io::Error::other)?;
    // SAFETY: a map is undefined behaviour only if the file changes under it.
    // Package files never do: the blob store writes each to a temporary file
    // and renames it into place, and deleting a package unlinks the file,
    // which leaves existing maps intact. `windows` checks the length first,
    // so a file that is already short is refused rather than mapped past its
    // end; one truncated by hand while it is being served would end the
    // server with SIGBUS, as it would any program that maps files.
    let window = unsafe { MmapOptions::new().offset(offset).len(length).map(file)? };
    // Advice only: the kernel reads ahead harder. Failure changes nothing.
    let _ = window.advise(Advice::Sequential);
    Ok(Bytes::from_owner(window))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn collect(file: File, start: u64, length: u64) -> Vec<u8> {
        let Ok(windows) = windows(file, start, length) else {
            panic!("the file maps");
        };
        let mut windows = std::pin::pin!(windows);
        let mut out = Vec::new();
        while let Some(window) = windows.next().await {
            let window = window.expect("window maps");
            assert!(window.len() as u64 <= WINDOW, "a window is at most WINDOW");
            out.extend_from_slice(&window);
        }
        out
    }

    #[tokio::test]
    async fn windows_cover_exactly_the_range_asked_for() {
        let len = WINDOW as usize * 2 + 12_345;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let temp = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(temp.path(), &bytes).expect("write");
        let open = || File::open(temp.path()).expect("open");

        assert_eq!(collect(open(), 0, len as u64).await, bytes);
        // An offset that is not page-aligned, across window boundaries.
        let from = 1_000_001;
        assert_eq!(
            collect(open(), from as u64, (len - from) as u64).await,
            bytes[from..]
        );
        assert_eq!(collect(open(), 7, 10).await, bytes[7..17]);
        assert_eq!(
            collect(open(), WINDOW, WINDOW).await,
            bytes[WINDOW as usize..2 * WINDOW as usize]
        );
        assert!(collect(open(), 5, 0).await.is_empty());
    }

    #[test]
    fn a_file_shorter_than_recorded_is_refused_before_anything_is_mapped() {
        let temp = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(temp.path(), vec![1u8; 100]).expect("write");
        let file = File::open(temp.path()).expect("open");
        let Err((error, _file)) = windows(file, 50, 100) else {
            panic!("a short file must be refused");
        };
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_window_stays_valid_after_its_file_is_deleted() {
        let temp = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(temp.path(), b"still here").expect("write");
        let window = map(&File::open(temp.path()).expect("open"), 6, 4).expect("map");
        drop(temp);
        assert_eq!(&window[..], b"here");
    }
}
