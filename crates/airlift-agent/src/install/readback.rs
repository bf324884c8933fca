//! Reading a written slot back before it may boot: the check that the
//! storage hands back the bytes the package's signature vouches for.
//!
//! Two checks, chosen by what this process saw going into the slot:
//!
//! - **As written** (one cryptographic pass): a payload of a format 2
//!   package that this process wrote whole, from its first byte. Every byte
//!   it wrote had already been checked by the package reader against the
//!   signed block index (raw bytes: a SHA-256 per block, before any byte of
//!   the block is handed on; decoded bytes: the signed installed digest,
//!   which the reader checks before it reports the end, and a write is only
//!   kept once the end was reached). What is left to prove is that the
//!   medium returns those same bytes, so the bytes are hashed as written
//!   with XXH3-128, a fast non-cryptographic hash, and compared with the
//!   same hash of what is read back. The threat here is a failing medium
//!   (bit rot, a short or misdirected write, a controller cache that lies),
//!   not an adversary: one who can alter the slot between our write and our
//!   read-back already runs code on the device or controls its storage, and
//!   could as well alter the slot after any check of ours, so a second
//!   SHA-256 pass over every byte would buy no security, only time (on a
//!   1 GiB image, about as long as the download's own hashing). A random
//!   corruption escapes a 128-bit hash with probability 2^-128.
//! - **Signed** (full SHA-256 against the manifest's installed digest):
//!   wherever the bytes in the slot were not all seen going in by this
//!   process — a write resumed from a checkpoint after a restart (its first
//!   bytes were written by an earlier run), a read-back in a later run than
//!   the write (the agent restarted between the two steps), or a payload of
//!   a format 1 package (no block index; its bytes are checked only as a
//!   whole, at the end, and it keeps the read-back it has always had).
//!
//! Both read exactly the installed size, after the slot's cached pages were
//! dropped (see [`super::sys::drop_cached_pages`]), so they read the
//! storage rather than the page cache where the kernel allows it. A whole
//! write makes its "as written" check while it writes, each synced stretch
//! read back at once (see [`super::slot_writer`]); [`read_back_written`]
//! is for a record that was not read back that way.

use super::InstallError;
use airlift_package::{Manifest, Sha256Digest, Sha256Hasher};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use xxhash_rust::xxh3::Xxh3;

/// Bytes read per call while reading a slot back.
const BUFFER: usize = 1024 * 1024;

/// What this process wrote into a slot, whole: enough to check that the
/// storage returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Written {
    /// Bytes written.
    pub size: u64,
    /// XXH3-128 of the bytes as written.
    pub xxh3: u128,
    /// The manifest's installed digest of the payload written, so that the
    /// record is only used for the payload it was made for.
    pub installed: Sha256Digest,
    /// Whether the write read every byte back from the storage as it went
    /// (see `super::slot_writer`): then the check is made already.
    pub read_back: bool,
}

/// XXH3-128 over the bytes of one write, as they are written.
pub(super) struct Tally(Xxh3);

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tally(XXH3-128)")
    }
}

impl Tally {
    /// A tally for a write of a payload of `manifest`, or `None` where the
    /// read-back must be the signed one: a write resumed at byte `already`
    /// (> 0: its first bytes came from an earlier run), or a format 1
    /// package.
    pub(super) fn for_write(manifest: &Manifest, already: u64) -> Option<Self> {
        let block_verified = manifest.block_index.is_some();
        (already == 0 && block_verified).then(|| Self(Xxh3::new()))
    }

    /// A tally for a write known to be whole (tests of the slot writer).
    #[cfg(test)]
    pub(super) fn for_whole_write() -> Self {
        Self(Xxh3::new())
    }

    /// Adds bytes just written.
    pub(super) fn update(&mut self, written: &[u8]) {
        self.0.update(written);
    }

    /// Whether bytes read back hash as those written.
    pub(super) fn matches(&self, read_back: u128) -> bool {
        self.0.digest128() == read_back
    }

    /// The record of the whole write; `read_back` when every byte of it
    /// was read back from the storage as written while writing.
    pub(super) fn finish(&self, size: u64, installed: Sha256Digest, read_back: bool) -> Written {
        Written {
            size,
            xxh3: self.0.digest128(),
            installed,
            read_back,
        }
    }
}

/// Which check a slot's read-back makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadBackCheck {
    /// XXH3-128 against the bytes this process wrote.
    AsWritten,
    /// SHA-256 against the manifest's installed digest.
    Signed,
}

impl ReadBackCheck {
    /// For logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ReadBackCheck::AsWritten => "xxh3-128 as written",
            ReadBackCheck::Signed => "sha-256 as signed",
        }
    }
}

/// Reads the first `size` bytes of the slot back and compares their
/// SHA-256 with `expected` (in constant time).
pub(super) fn read_back_signed(
    path: &Path,
    size: u64,
    expected: &Sha256Digest,
) -> Result<(), InstallError> {
    let mut hasher = Sha256Hasher::new();
    let read = read_slot(path, size, |chunk| hasher.update(chunk))?;
    let actual = hasher.finish();
    if read != size || actual != *expected {
        return Err(InstallError::ReadBack {
            path: path.to_owned(),
            size: read,
            expected: *expected,
            actual,
        });
    }
    Ok(())
}

/// Reads the first `written.size` bytes of the slot back and compares
/// their XXH3-128 with that of the bytes written. (Neither hash is a
/// secret nor an authenticator, so a plain comparison is fine.)
pub(super) fn read_back_written(path: &Path, written: &Written) -> Result<(), InstallError> {
    let mut hasher = Xxh3::new();
    let read = read_slot(path, written.size, |chunk| hasher.update(chunk))?;
    if read != written.size || hasher.digest128() != written.xxh3 {
        return Err(InstallError::ReadBackDiffers {
            path: path.to_owned(),
            size: written.size,
            read,
        });
    }
    Ok(())
}

/// Feeds up to `size` bytes of the slot at `path` to `consume`; returns
/// how many there were (fewer when the slot is shorter).
fn read_slot(path: &Path, size: u64, mut consume: impl FnMut(&[u8])) -> Result<u64, InstallError> {
    let slot = File::open(path).map_err(InstallError::io("opening slot to read back", path))?;
    super::sys::advise_sequential(&slot);
    let mut buf = vec![0u8; BUFFER];
    let mut reader = slot.take(size);
    let mut read = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(read),
            Ok(n) => {
                consume(&buf[..n]);
                read += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(InstallError::io("reading slot back", path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn written(bytes: &[u8]) -> Written {
        let mut tally = Tally(Xxh3::new());
        for piece in bytes.chunks(7) {
            tally.update(piece);
        }
        tally.finish(bytes.len() as u64, Sha256Digest::of(bytes), false)
    }

    #[test]
    fn the_signed_read_back_detects_a_slot_that_differs_from_the_signed_digest(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("slot");
        let image = b"the image as signed".to_vec();
        let expected = Sha256Digest::of(&image);
        fs::write(&path, &image)?;
        read_back_signed(&path, image.len() as u64, &expected)?;

        let mut corrupted = image.clone();
        corrupted[4] ^= 0x01;
        fs::write(&path, &corrupted)?;
        let error = read_back_signed(&path, image.len() as u64, &expected).err();
        assert!(
            matches!(error, Some(InstallError::ReadBack { .. })),
            "{error:?}"
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains(&expected.to_string()), "{message}");

        fs::write(&path, &image[..5])?;
        let short = read_back_signed(&path, image.len() as u64, &expected).err();
        assert!(
            matches!(short, Some(InstallError::ReadBack { size: 5, .. })),
            "{short:?}"
        );
        Ok(())
    }

    #[test]
    fn the_read_back_as_written_detects_a_flipped_bit_a_short_slot_and_nothing_else(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("slot");
        let image: Vec<u8> = (0..3 * BUFFER + 11).map(|i| (i % 249) as u8).collect();
        let record = written(&image);
        // Bytes past the written size (a block device's tail) are not read.
        let mut slot = image.clone();
        slot.extend_from_slice(b"old tail");
        fs::write(&path, &slot)?;
        read_back_written(&path, &record)?;

        for at in [0, BUFFER - 1, BUFFER, image.len() - 1] {
            let mut flipped = slot.clone();
            flipped[at] ^= 0x80;
            fs::write(&path, &flipped)?;
            let error = read_back_written(&path, &record).err();
            assert!(
                matches!(error, Some(InstallError::ReadBackDiffers { read, .. }) if read == image.len() as u64),
                "byte {at}: {error:?}"
            );
        }
        fs::write(&path, &image[..BUFFER])?;
        let short = read_back_written(&path, &record).err();
        let message = short.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            matches!(short, Some(InstallError::ReadBackDiffers { read, .. }) if read == BUFFER as u64),
            "{message}"
        );
        assert!(message.contains("storage may be failing"), "{message}");
        Ok(())
    }
}
