//! Serving a package file from local disk: positional reads into reused
//! buffers on the blocking pool, the next read under way while the last one
//! goes out.
//!
//! Reads, not memory maps: a file truncated behind the server's back makes
//! a read come back short, which ends that one download with an error (the
//! device resumes with `Range` later, and its hash check catches a changed
//! file), where touching a map of it past its new end kills the whole
//! process with SIGBUS. A file replaced by a rename keeps serving its old
//! bytes to downloads already running: they read the inode they opened.
//!
//! Buffers come back to a [`Pool`] when the socket is done with them, so a
//! read is one copy out of the page cache into memory that is already
//! faulted in, not a fresh allocation the kernel must zero page by page.

use bytes::Bytes;
use futures::Stream;
use object_store::path::Path as BlobPath;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

/// Bytes read at a time. In the download bench 256 KiB to 2 MiB were
/// within the noise of one another, 1 MiB as fast as any.
pub const CHUNK: usize = 1 << 20;

/// Most bytes of idle buffers kept for reuse. A download holds two or three
/// buffers while it runs (one read, one or two with the socket) and gives
/// them back when it ends; beyond this they are freed.
const KEPT_BYTES: usize = 32 << 20;

/// The buffers of every download.
static POOL: Pool = Pool::new(KEPT_BYTES / CHUNK);

/// Streams `length` bytes of `file` from `start` in reads of up to
/// [`CHUNK`], each on a blocking thread, the next one started while the
/// last is sent. A file that ends early (truncated while it is served)
/// ends the stream with [`io::ErrorKind::UnexpectedEof`]; that, and any
/// other read error, is logged once and counted in
/// `airlift_blob_errors_total{kind="interrupted"}`.
///
/// One read is in flight per download and it holds a blocking thread only
/// for that read, so a fleet downloading at once cannot use up the blocking
/// threads.
pub fn chunks(
    file: File,
    start: u64,
    length: u64,
    key: BlobPath,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let next = Next {
        file: Arc::new(file),
        offset: start,
        remaining: length,
        key,
    };
    let first = (length > 0).then(|| next.read());
    futures::stream::unfold((first, Some(next)), |(read, next)| async move {
        let (read, mut next) = (read?, next?);
        let chunk = match read.await {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(error)) => return Some((Err(broke_off(error, &next)), (None, None))),
            Err(join) => {
                let error = io::Error::other(join);
                return Some((Err(broke_off(error, &next)), (None, None)));
            }
        };
        next.offset += chunk.len() as u64;
        next.remaining -= chunk.len() as u64;
        // Start the next read now, while this chunk goes out.
        let read = (next.remaining > 0).then(|| next.read());
        Some((Ok(chunk), (read, Some(next))))
    })
}

/// Where a download's next read starts.
struct Next {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    key: BlobPath,
}

impl Next {
    /// Reads the next chunk on a blocking thread.
    fn read(&self) -> tokio::task::JoinHandle<io::Result<Bytes>> {
        let (file, offset) = (Arc::clone(&self.file), self.offset);
        let want = self.remaining.min(CHUNK as u64) as usize;
        tokio::task::spawn_blocking(move || read_chunk(&POOL, &file, offset, want))
    }
}

/// Logs and counts a download that ends with `error`, and returns it.
fn broke_off(error: io::Error, at: &Next) -> io::Error {
    metrics::counter!("airlift_blob_errors_total", "kind" => "interrupted").increment(1);
    let (key, offset) = (&at.key, at.offset);
    if error.kind() == io::ErrorKind::UnexpectedEof {
        tracing::error!(%error, %key, offset, "a package's file changed on disk while it was served; the download broke off: restore the file, or delete the package");
    } else {
        tracing::error!(%error, %key, offset, "reading a package's file failed; the download broke off");
    }
    error
}

/// Reads `want` bytes of `file` at `offset` into a buffer from `pool`.
fn read_chunk(pool: &'static Pool, file: &File, offset: u64, want: usize) -> io::Result<Bytes> {
    let mut filled = Filled {
        buffer: pool.take(want),
        len: want,
        pool,
    };
    // Dropping `filled` on an error gives the buffer back.
    match file.read_exact_at(&mut filled.buffer[..want], offset) {
        Ok(()) => Ok(Bytes::from_owner(filled)),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the package's file is shorter than its recorded size: it ends before byte {}",
                offset + want as u64
            ),
        )),
        Err(error) => Err(error),
    }
}

/// Buffers of [`CHUNK`] bytes, kept for reuse up to a bound.
pub struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Pool {
    /// A pool that keeps at most `keep` idle buffers.
    pub const fn new(keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// A buffer of at least `len` (≤ [`CHUNK`]) bytes: a kept one, or a new
    /// one — of [`CHUNK`] bytes where it will be reused, of `len` where a
    /// small download needs no more.
    fn take(&self, len: usize) -> Vec<u8> {
        let kept = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        kept.unwrap_or_else(|| vec![0; if len < CHUNK { len } else { CHUNK }])
    }

    /// Keeps `buffer` for the next read, if it is a whole one and the pool
    /// is not full.
    fn give_back(&self, buffer: Vec<u8>) {
        if buffer.len() != CHUNK {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < self.keep {
            free.push(buffer);
        }
    }
}

/// A buffer's first `len` bytes, read; the buffer goes back to its pool
/// when the last `Bytes` of it is dropped (once the socket has sent it).
struct Filled {
    buffer: Vec<u8>,
    len: usize,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Filled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Filled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn package(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let temp = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(temp.path(), &bytes).expect("write");
        (temp, bytes)
    }

    fn open(temp: &tempfile::NamedTempFile) -> File {
        File::open(temp.path()).expect("open")
    }

    async fn collect(file: File, start: u64, length: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut chunks = std::pin::pin!(chunks(file, start, length, BlobPath::from("test")));
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            assert!(chunk.len() <= CHUNK, "a chunk is at most CHUNK");
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn chunks_stream_exactly_the_range_asked_for() {
        let (temp, bytes) = package(CHUNK * 2 + 12_345);
        let whole = collect(open(&temp), 0, bytes.len() as u64).await;
        assert_eq!(whole.expect("whole"), bytes);
        // Offsets that are not page-aligned, across chunk boundaries.
        let from = 1_000_001;
        let tail = collect(open(&temp), from as u64, (bytes.len() - from) as u64).await;
        assert_eq!(tail.expect("tail"), bytes[from..]);
        let middle = collect(open(&temp), 7, 10).await.expect("middle");
        assert_eq!(middle, bytes[7..17]);
        let second = collect(open(&temp), CHUNK as u64, CHUNK as u64).await;
        assert_eq!(second.expect("second chunk"), bytes[CHUNK..2 * CHUNK]);
        assert!(collect(open(&temp), 5, 0).await.expect("empty").is_empty());
    }

    #[tokio::test]
    async fn a_file_shorter_than_recorded_ends_the_stream_with_an_error() {
        let (temp, _) = package(100);
        let error = collect(open(&temp), 50, 100).await.expect_err("short file");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(error.to_string().contains("shorter than its recorded size"));
    }

    #[tokio::test]
    async fn a_file_truncated_while_streamed_ends_the_stream_with_an_error() {
        let (temp, bytes) = package(CHUNK * 4);
        let mut chunks = std::pin::pin!(chunks(
            open(&temp),
            0,
            bytes.len() as u64,
            BlobPath::from("test")
        ));
        let first = chunks.next().await.expect("a first chunk").expect("read");
        assert_eq!(first[..], bytes[..CHUNK]);
        // The second read may be done already; the third is not begun.
        std::fs::OpenOptions::new()
            .write(true)
            .open(temp.path())
            .and_then(|file| file.set_len(CHUNK as u64 + 10))
            .expect("truncate");
        let mut sent = first.len();
        let error = loop {
            match chunks.next().await {
                Some(Ok(chunk)) => sent += chunk.len(),
                Some(Err(error)) => break error,
                None => panic!("the stream ended as if whole after {sent} bytes"),
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(sent < bytes.len(), "{sent}");
        assert!(chunks.next().await.is_none(), "nothing after the error");
    }

    #[tokio::test]
    async fn a_file_replaced_while_streamed_still_yields_its_old_bytes() {
        let (temp, bytes) = package(CHUNK * 3 + 1);
        let mut chunks = std::pin::pin!(chunks(
            open(&temp),
            0,
            bytes.len() as u64,
            BlobPath::from("test")
        ));
        let mut out = chunks
            .next()
            .await
            .expect("a chunk")
            .expect("read")
            .to_vec();
        let replacement =
            tempfile::NamedTempFile::new_in(temp.path().parent().expect("a directory"))
                .expect("temp file");
        std::fs::write(replacement.path(), vec![0u8; bytes.len()]).expect("write");
        replacement.persist(temp.path()).expect("rename over");
        while let Some(chunk) = chunks.next().await {
            out.extend_from_slice(&chunk.expect("read"));
        }
        assert!(out == bytes, "the old inode's bytes, whole");
    }

    #[test]
    fn buffers_are_reused_and_the_pool_is_bounded() {
        static TEST_POOL: Pool = Pool::new(1);
        let (temp, _) = package(CHUNK * 2);
        let file = open(&temp);
        let first = read_chunk(&TEST_POOL, &file, 0, CHUNK).expect("read");
        let second = read_chunk(&TEST_POOL, &file, CHUNK as u64, CHUNK).expect("read");
        let first_at = first.as_ptr();
        drop(first);
        drop(second);
        assert_eq!(
            TEST_POOL.free.lock().expect("lock").len(),
            1,
            "at most `keep`"
        );
        let again = read_chunk(&TEST_POOL, &file, 10, 100).expect("read");
        assert_eq!(again.as_ptr(), first_at, "the kept buffer is read into");
        assert_eq!(again.len(), 100);
        drop(again);
        let short = read_chunk(&TEST_POOL, &file, 2 * CHUNK as u64 - 5, 10);
        assert_eq!(
            short.expect_err("past the end").kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            TEST_POOL.free.lock().expect("lock").len(),
            1,
            "a failed read gives its buffer back"
        );
    }
}
