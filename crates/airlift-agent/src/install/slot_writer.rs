//! Copying an image payload into its slot with the slot's storage working
//! beside the download, not after it.
//!
//! One thread reads the payload (the download, and the package reader's
//! SHA-256 of every block before it hands the block on); a second thread
//! writes the slot, syncs it every `sync_every` bytes, tells the driver
//! what is durable (its checkpoint, itself a synced file), and — for a
//! write this process makes whole — reads each synced stretch back from
//! the storage at once. Done one after the other, as before, every sync
//! held the download still and the read-back waited for the last byte: a
//! 1 GiB install took the download's time plus the storage's, plus a
//! second pass over the slot. Now it takes about the longest of the three.
//!
//! Memory stays bounded: [`IN_FLIGHT`] buffers of [`BUFFER`] bytes move
//! between the threads and come back to be filled again.
//!
//! The read-back here is the check [`super::readback`] describes as "as
//! written", made stretch by stretch: each synced stretch's cached pages
//! are dropped, it is read from the storage, and the XXH3-128 of all that
//! was read must equal that of all that was written. A write resumed from a
//! checkpoint, or of a format 1 package, is not read back here; the signed
//! read-back after the write does it.

use super::readback::Tally;
use super::InstallError;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use xxhash_rust::xxh3::Xxh3;

/// Bytes moved per read and write.
pub(super) const BUFFER: usize = 1024 * 1024;

/// Buffers between the reading and the writing thread: enough for the
/// reader to go on while the writer syncs, few enough that an agent on a
/// small device stays small (4 MiB in all).
const IN_FLIGHT: usize = 4;

/// What one copy needs to know.
pub(super) struct Copy<'a> {
    /// The slot, open for writing at byte `already`.
    pub slot: &'a mut File,
    /// Its path, for errors and for reading it back.
    pub path: &'a Path,
    /// The payload's index and target, for errors.
    pub payload: usize,
    pub target: &'a str,
    /// The installed size the manifest declares.
    pub size: u64,
    /// Installed bytes already in the slot: the reader's first `already`
    /// bytes are those, read back to be hashed, and are not written again.
    pub already: u64,
    /// Sync every this many bytes, then call `synced`.
    pub sync_every: u64,
    pub synced: &'a mut (dyn FnMut(u64) -> io::Result<()> + Send),
    /// XXH3-128 of the bytes written, for a whole write: such a write is
    /// read back stretch by stretch.
    pub tally: Option<&'a mut Tally>,
}

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Copied {
    /// Installed bytes, `already` included.
    pub installed: u64,
    /// Whether every byte written was read back from the storage and found
    /// as written (a whole write); `false` when the copy read nothing back.
    pub read_back: bool,
}

/// A buffer on its way to the slot, and which of its bytes to write.
struct Chunk {
    buf: Vec<u8>,
    fresh: Range<usize>,
}

/// Copies `installed` into the slot until end-of-file, refusing more bytes
/// than declared (see the module's documentation for how).
pub(super) fn copy(installed: &mut dyn Read, job: Copy<'_>) -> Result<Copied, InstallError> {
    let Copy {
        slot,
        path,
        payload,
        target,
        size,
        already,
        sync_every,
        synced,
        tally,
    } = job;
    let (to_writer, chunks) = mpsc::sync_channel::<Chunk>(IN_FLIGHT);
    let (recycle, spare) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut writer = SlotWriter {
                slot,
                path,
                position: already,
                synced_to: already,
                sync_every,
                synced,
                check: tally.map(|tally| ReadBackCheck::new(tally, path, already)),
            };
            let result = chunks.iter().try_for_each(|chunk| {
                writer.write(&chunk.buf[chunk.fresh.clone()])?;
                // The reader may have stopped: a buffer it does not take back is dropped.
                let _ = recycle.send(chunk.buf);
                Ok(())
            });
            result.and_then(|()| writer.finish())
        });
        let read = read_chunks(
            installed, &to_writer, &spare, payload, target, size, already,
        );
        // Closing the channel tells the writer that the payload ended (or
        // that the reader failed: its error wins over the writer's).
        drop(to_writer);
        let written = writer.join().unwrap_or_else(|_| {
            Err(InstallError::io("writing slot", path)(io::Error::other(
                "the slot writer panicked",
            )))
        });
        let installed = read?;
        let read_back = written?;
        if installed != size {
            return Err(InstallError::SizeMismatch {
                target: target.to_owned(),
                expected: size,
                actual: installed,
            });
        }
        Ok(Copied {
            installed,
            read_back,
        })
    })
}

/// The reading side: fills buffers from `installed` and sends their fresh
/// bytes to the writer; returns how many installed bytes there were.
fn read_chunks(
    installed: &mut dyn Read,
    to_writer: &mpsc::SyncSender<Chunk>,
    spare: &mpsc::Receiver<Vec<u8>>,
    payload: usize,
    target: &str,
    size: u64,
    already: u64,
) -> Result<u64, InstallError> {
    let mut total = 0u64;
    let mut made = 0;
    // A buffer that went nowhere (a read interrupted, bytes the slot
    // holds already) is filled again.
    let mut unsent: Option<Vec<u8>> = None;
    loop {
        let mut buf = match unsent.take().map_or_else(|| spare.try_recv(), Ok) {
            Ok(buf) => buf,
            Err(_) if made < IN_FLIGHT + 1 => {
                made += 1;
                vec![0u8; BUFFER]
            }
            // Every buffer is with the writer; wait for one, or for the
            // writer's end (its error is what the caller reports).
            Err(_) => match spare.recv() {
                Ok(buf) => buf,
                Err(_) => return Ok(total),
            },
        };
        let n = match installed.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                unsent = Some(buf);
                continue;
            }
            Err(source) => {
                return Err(InstallError::Payload {
                    index: payload,
                    target: target.to_owned(),
                    source,
                })
            }
        };
        total += n as u64;
        if total > size {
            return Err(InstallError::SizeMismatch {
                target: target.to_owned(),
                expected: size,
                actual: total,
            });
        }
        // Bytes below `already` are the slot's own, read back to be hashed.
        let fresh = total.saturating_sub(already).min(n as u64) as usize;
        if fresh == 0 {
            unsent = Some(buf);
            continue;
        }
        if to_writer
            .send(Chunk {
                buf,
                fresh: n - fresh..n,
            })
            .is_err()
        {
            // The writer stopped on an error; the caller reports it.
            return Ok(total);
        }
    }
}

/// The writing side.
struct SlotWriter<'a> {
    slot: &'a mut File,
    path: &'a Path,
    /// Installed bytes in the slot (written or there before).
    position: u64,
    /// Installed bytes known durable.
    synced_to: u64,
    sync_every: u64,
    synced: &'a mut (dyn FnMut(u64) -> io::Result<()> + Send),
    check: Option<ReadBackCheck<'a>>,
}

impl SlotWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), InstallError> {
        self.slot
            .write_all(bytes)
            .map_err(InstallError::io("writing slot", self.path))?;
        if let Some(check) = self.check.as_mut() {
            check.tally.update(bytes);
        }
        self.position += bytes.len() as u64;
        if self.position - self.synced_to >= self.sync_every {
            self.sync()?;
            (self.synced)(self.synced_to)
                .map_err(InstallError::io("saving progress", self.path))?;
        }
        Ok(())
    }

    /// Makes everything written durable, then reads what became durable
    /// back.
    fn sync(&mut self) -> Result<(), InstallError> {
        self.slot
            .sync_data()
            .map_err(InstallError::io("flushing slot", self.path))?;
        if let Some(check) = self.check.as_mut() {
            check.read_back(self.synced_to..self.position)?;
        }
        self.synced_to = self.position;
        Ok(())
    }

    /// After the last byte: syncs and reads back the rest; whether the
    /// whole write was read back as written.
    fn finish(mut self) -> Result<bool, InstallError> {
        self.sync()?;
        match self.check {
            Some(check) => check.verdict(self.position).map(|()| true),
            None => Ok(false),
        }
    }
}

/// The read-back of a whole write, one synced stretch at a time.
struct ReadBackCheck<'a> {
    tally: &'a mut Tally,
    path: &'a Path,
    /// The slot, open for reading; opened at the first stretch.
    reader: Option<File>,
    read: Xxh3,
    read_to: u64,
    buf: Vec<u8>,
}

impl<'a> ReadBackCheck<'a> {
    fn new(tally: &'a mut Tally, path: &'a Path, from: u64) -> Self {
        Self {
            tally,
            path,
            reader: None,
            read: Xxh3::new(),
            read_to: from,
            buf: Vec::new(),
        }
    }

    /// Drops the cached pages of `stretch` (synced, so clean) and reads it
    /// from the storage.
    fn read_back(&mut self, stretch: Range<u64>) -> Result<(), InstallError> {
        if stretch.is_empty() {
            return Ok(());
        }
        let path = self.path;
        let reader = match &mut self.reader {
            Some(reader) => reader,
            slot => slot.insert(
                File::open(path).map_err(InstallError::io("opening slot to read back", path))?,
            ),
        };
        super::sys::drop_cached_range(reader, stretch.clone());
        if self.buf.is_empty() {
            self.buf = vec![0u8; BUFFER];
        }
        let mut at = stretch.start;
        while at < stretch.end {
            let want = (stretch.end - at).min(BUFFER as u64) as usize;
            let n = match reader.read_at(&mut self.buf[..want], at) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(InstallError::io("reading slot back", path)(e)),
            };
            self.read.update(&self.buf[..n]);
            at += n as u64;
        }
        self.read_to = at;
        if at < stretch.end {
            // The storage holds less than was written and synced.
            return Err(InstallError::ReadBackDiffers {
                path: path.to_owned(),
                size: stretch.end,
                read: at,
            });
        }
        Ok(())
    }

    /// Whether all `size` bytes came back as they were written.
    fn verdict(self, size: u64) -> Result<(), InstallError> {
        if self.read_to != size || !self.tally.matches(self.read.digest128()) {
            return Err(InstallError::ReadBackDiffers {
                path: self.path.to_owned(),
                size,
                read: self.read_to,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::{Seek, SeekFrom};
    use std::sync::Mutex;

    type Result = std::result::Result<(), Box<dyn std::error::Error>>;

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn open_at(path: &Path, already: u64) -> io::Result<File> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(already == 0)
            .open(path)?;
        file.seek(SeekFrom::Start(already))?;
        Ok(file)
    }

    /// Copies `bytes` into `slot` (read back from `read_path`, which is
    /// the slot itself unless a test makes the storage lie), syncing every
    /// `sync_every`; returns the outcome and the synced counts reported.
    fn run(
        bytes: &[u8],
        slot: &Path,
        read_path: &Path,
        already: u64,
        sync_every: u64,
        whole: bool,
    ) -> (std::result::Result<Copied, InstallError>, Vec<u64>) {
        let reported = Mutex::new(Vec::new());
        let mut synced = |n: u64| {
            reported
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .push(n);
            Ok(())
        };
        let mut tally = Tally::for_whole_write();
        let mut file = match open_at(slot, already) {
            Ok(file) => file,
            Err(e) => return (Err(InstallError::io("opening", slot)(e)), Vec::new()),
        };
        let result = copy(
            &mut &bytes[..],
            Copy {
                slot: &mut file,
                path: read_path,
                payload: 0,
                target: "rootfs",
                size: bytes.len() as u64,
                already,
                sync_every,
                synced: &mut synced,
                tally: whole.then_some(&mut tally),
            },
        );
        let reported = reported.into_inner().unwrap_or_default();
        (result, reported)
    }

    #[test]
    fn a_whole_copy_writes_every_byte_syncs_in_order_and_reads_it_back() -> Result {
        let dir = tempfile::tempdir()?;
        let slot = dir.path().join("slot");
        let bytes = image(7 * BUFFER + 333);
        let (copied, synced) = run(&bytes, &slot, &slot, 0, 2 * BUFFER as u64, true);
        assert_eq!(
            copied?,
            Copied {
                installed: bytes.len() as u64,
                read_back: true
            }
        );
        assert_eq!(fs::read(&slot)?, bytes);
        let every = 2 * BUFFER as u64;
        assert_eq!(
            synced,
            vec![every, 2 * every, 3 * every],
            "whole syncs only, in order"
        );
        Ok(())
    }

    #[test]
    fn a_storage_that_hands_back_other_bytes_or_fewer_fails_the_copy() -> Result {
        let dir = tempfile::tempdir()?;
        let slot = dir.path().join("slot");
        let bytes = image(3 * BUFFER + 9);
        // The "storage" the read-back reads: what a failing medium returns.
        let medium = dir.path().join("medium");
        let mut flipped = bytes.clone();
        flipped[2 * BUFFER + 1] ^= 0x10;
        fs::write(&medium, &flipped)?;
        let (copied, _) = run(&bytes, &slot, &medium, 0, BUFFER as u64, true);
        assert!(
            matches!(copied, Err(InstallError::ReadBackDiffers { .. })),
            "{copied:?}"
        );
        fs::write(&medium, &bytes[..BUFFER + 5])?;
        let (copied, _) = run(&bytes, &slot, &medium, 0, BUFFER as u64, true);
        assert!(
            matches!(copied, Err(InstallError::ReadBackDiffers { read, .. }) if read == BUFFER as u64 + 5),
            "{copied:?}"
        );
        Ok(())
    }

    #[test]
    fn a_resumed_copy_keeps_the_slots_prefix_and_reads_nothing_back() -> Result {
        let dir = tempfile::tempdir()?;
        let slot = dir.path().join("slot");
        let bytes = image(9 * BUFFER + 1);
        // More than every buffer in flight: the reader must reuse them.
        let already = (IN_FLIGHT as u64 + 3) * BUFFER as u64 + 17;
        let mut left = bytes[..already as usize].to_vec();
        left.extend_from_slice(&[0xEE; 4096]);
        fs::write(&slot, &left)?;
        let (copied, synced) = run(&bytes, &slot, &slot, already, BUFFER as u64, false);
        assert_eq!(
            copied?,
            Copied {
                installed: bytes.len() as u64,
                read_back: false
            }
        );
        assert_eq!(fs::read(&slot)?, bytes);
        assert!(synced.iter().all(|n| *n > already), "{synced:?}");
        Ok(())
    }

    #[test]
    fn more_or_fewer_bytes_than_declared_fail_and_a_failing_read_stops_the_writer() -> Result {
        let dir = tempfile::tempdir()?;
        let slot = dir.path().join("slot");
        let bytes = image(2 * BUFFER);
        for (declared, expected) in [
            (bytes.len() as u64 - 1, "more"),
            (bytes.len() as u64 + 1, "fewer"),
        ] {
            let mut file = open_at(&slot, 0)?;
            let mut tally = Tally::for_whole_write();
            let copied = copy(
                &mut &bytes[..],
                Copy {
                    slot: &mut file,
                    path: &slot,
                    payload: 0,
                    target: "rootfs",
                    size: declared,
                    already: 0,
                    sync_every: u64::MAX,
                    synced: &mut |_| Ok(()),
                    tally: Some(&mut tally),
                },
            );
            assert!(
                matches!(copied, Err(InstallError::SizeMismatch { .. })),
                "{expected}: {copied:?}"
            );
        }
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("the download broke off"));
                }
                self.0 -= 1;
                buf.fill(7);
                Ok(buf.len())
            }
        }
        let mut file = open_at(&slot, 0)?;
        let copied = copy(
            &mut Broken(IN_FLIGHT * 3),
            Copy {
                slot: &mut file,
                path: &slot,
                payload: 0,
                target: "rootfs",
                size: u64::MAX,
                already: 0,
                sync_every: BUFFER as u64,
                synced: &mut |_| Ok(()),
                tally: None,
            },
        );
        assert!(
            matches!(copied, Err(InstallError::Payload { .. })),
            "{copied:?}"
        );
        Ok(())
    }

    #[test]
    fn a_checkpoint_that_cannot_be_saved_stops_the_copy() -> Result {
        let dir = tempfile::tempdir()?;
        let slot = dir.path().join("slot");
        let bytes = image(20 * BUFFER);
        let mut file = open_at(&slot, 0)?;
        let copied = copy(
            &mut &bytes[..],
            Copy {
                slot: &mut file,
                path: &slot,
                payload: 0,
                target: "rootfs",
                size: bytes.len() as u64,
                already: 0,
                sync_every: BUFFER as u64,
                synced: &mut |_| Err(io::Error::other("disk full")),
                tally: None,
            },
        );
        let message = copied.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("saving progress"), "{message}");
        Ok(())
    }
}
