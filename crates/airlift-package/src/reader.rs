//! Reading a package: header and manifest first, signatures verified before
//! any payload byte is handed out, every payload hashed as it streams.
//!
//! ```text
//!  PackageReader::open ──verify(trust)──▶ VerifiedPackage ──next_payload──▶ PayloadReader (stored bytes)
//!   (header, manifest,                     (Verified<Manifest>)               │ .decoded(identities)
//!    signatures read,                                                         ▼
//!    nothing trusted)                                                   DecodedPayload (installed bytes)
//! ```
//!
//! A payload reader returns an error instead of end-of-file when its bytes do
//! not match the signed digest, so a caller that writes until end-of-file and
//! only then commits can never commit altered bytes. In format version 2 it
//! goes further: it hands out no byte of a block before the whole block
//! matched its digest in the signed block index.

mod decoded;

pub use decoded::DecodedPayload;

use crate::blocks::{self, BlockCursor, BlockIndex, BLOCK_DIGEST_LEN, INDEX_LEN_FIELD};
use crate::digest::{Sha256Digest, Sha256Hasher};
use crate::error::Error;
use crate::format::{Header, HEADER_LEN, SIGNATURE_ENTRY_LEN};
use crate::keys::{KeyId, ManifestSignature, SignatureCheck, TrustSet};
use crate::limits::Limits;
use crate::manifest::{Manifest, PayloadEntry};
use std::io::{self, Read};
use std::ops::{Deref, Range};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A value whose signatures have been checked against a [`TrustSet`].
/// Only this crate can make one.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    value: T,
    signed_by: Vec<KeyId>,
}

impl<T> Verified<T> {
    /// The trusted keys whose signatures verified.
    pub fn signed_by(&self) -> &[KeyId] {
        &self.signed_by
    }

    /// The verified value.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// A package whose header, manifest and signatures have been read but not
/// yet verified. Nothing it holds is trustworthy.
#[derive(Debug)]
pub struct PackageReader<R> {
    inner: R,
    limits: Limits,
    header: Header,
    manifest_bytes: Vec<u8>,
    signatures: Vec<ManifestSignature>,
    /// Format version 2: the block index as read, not yet checked.
    block_index: Vec<u8>,
}

impl<R: Read> PackageReader<R> {
    /// Reads the header, manifest and signatures; enforces `limits` on sizes
    /// before allocating anything.
    pub fn open(mut inner: R, limits: Limits) -> Result<Self, Error> {
        let mut header = [0u8; HEADER_LEN];
        read_exact_at(&mut inner, &mut header, 0, "header")?;
        let header = Header::decode(&header, &limits)?;

        let mut manifest_bytes = vec![0u8; header.manifest_len as usize];
        read_exact_at(
            &mut inner,
            &mut manifest_bytes,
            HEADER_LEN as u64,
            "manifest",
        )?;

        let mut offset = HEADER_LEN as u64 + u64::from(header.manifest_len);
        let mut signatures = Vec::with_capacity(usize::from(header.signature_count));
        for _ in 0..header.signature_count {
            let mut entry = [0u8; SIGNATURE_ENTRY_LEN];
            read_exact_at(&mut inner, &mut entry, offset, "signatures")?;
            offset += SIGNATURE_ENTRY_LEN as u64;
            let mut key_id = [0u8; KeyId::LEN];
            key_id.copy_from_slice(&entry[..KeyId::LEN]);
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&entry[KeyId::LEN..]);
            signatures.push(ManifestSignature {
                key_id: KeyId::from_bytes(key_id),
                signature,
            });
        }
        let block_index = if header.format_version >= 2 {
            read_block_index(&mut inner, offset, &limits)?
        } else {
            Vec::new()
        };
        Ok(Self {
            inner,
            limits,
            header,
            manifest_bytes,
            signatures,
            block_index,
        })
    }

    /// The exact manifest bytes that were signed.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The signatures as found in the file.
    pub fn signatures(&self) -> &[ManifestSignature] {
        &self.signatures
    }

    /// File offset of the first payload byte: the length of the package's
    /// head (header, manifest, signatures and, in version 2, block index).
    pub fn payload_offset(&self) -> u64 {
        let index = if self.header.format_version >= 2 {
            INDEX_LEN_FIELD as u64 + self.block_index.len() as u64
        } else {
            0
        };
        HEADER_LEN as u64
            + u64::from(self.header.manifest_len)
            + u64::from(self.header.signature_count) * SIGNATURE_ENTRY_LEN as u64
            + index
    }

    /// The package's format version, from its header.
    pub fn format_version(&self) -> u16 {
        self.header.format_version
    }

    /// Format version 2: the block index as the file carries it, not yet
    /// checked (it is, against the signed manifest, by [`Self::verify`]).
    /// Empty in version 1.
    pub fn block_index_bytes(&self) -> &[u8] {
        &self.block_index
    }

    /// Parses the manifest WITHOUT checking any signature, for showing a
    /// package to a person. Never act on what this returns.
    pub fn manifest_unverified(&self) -> Result<Manifest, Error> {
        self.parse_manifest()
    }

    fn parse_manifest(&self) -> Result<Manifest, Error> {
        let start = HEADER_LEN as u64;
        let end = start + self.manifest_bytes.len() as u64;
        let manifest = Manifest::from_json(&self.manifest_bytes, &self.limits)
            .map_err(|reason| Error::Manifest { start, end, reason })?;
        if manifest.format_version != self.header.format_version {
            return Err(Error::FormatMismatch {
                header: self.header.format_version,
                manifest: manifest.format_version,
            });
        }
        Ok(manifest)
    }

    /// Checks the signatures over the exact manifest bytes against `trust`,
    /// and only then parses the manifest. The returned package hands out
    /// payloads.
    pub fn verify(self, trust: &TrustSet) -> Result<VerifiedPackage<R>, Error> {
        let signed_by = match trust.check(&self.manifest_bytes, &self.signatures) {
            SignatureCheck::Trusted(ids) => ids,
            SignatureCheck::Forged(key_id) => return Err(Error::BadSignature { key_id }),
            SignatureCheck::NotEnough { valid, signed_by } => {
                return Err(Error::Untrusted {
                    valid,
                    threshold: trust.threshold(),
                    signed_by,
                    trusted: trust.key_ids().collect(),
                })
            }
        };
        let manifest = self.parse_manifest()?;
        let blocks = match &manifest.block_index {
            Some(reference) => Some(BlockIndex::check(
                &self.block_index,
                reference,
                &manifest.payloads,
                &self.limits,
            )?),
            None => None,
        };
        let position = self.payload_offset();
        Ok(VerifiedPackage {
            inner: self.inner,
            limits: self.limits,
            manifest: Verified {
                value: manifest,
                signed_by,
            },
            manifest_bytes: self.manifest_bytes,
            payloads_start: position,
            position,
            next_index: 0,
            current: None,
            failed: false,
            blocks,
            refetch: None,
        })
    }
}

/// Reads version 2's index length field and the index, bounded by `limits`
/// before anything is allocated; what it holds is checked after the
/// signatures.
fn read_block_index(inner: &mut impl Read, offset: u64, limits: &Limits) -> Result<Vec<u8>, Error> {
    let mut len = [0u8; INDEX_LEN_FIELD];
    read_exact_at(inner, &mut len, offset, "block index length")?;
    let len = u32::from_be_bytes(len);
    if len > limits.max_block_index_len || len as usize % BLOCK_DIGEST_LEN != 0 {
        return Err(Error::BadBlockIndex(format!(
            "its length {len} is not a multiple of {BLOCK_DIGEST_LEN} bytes up to {}",
            limits.max_block_index_len
        )));
    }
    let mut index = vec![0u8; len as usize];
    read_exact_at(
        inner,
        &mut index,
        offset + INDEX_LEN_FIELD as u64,
        "block index",
    )?;
    Ok(index)
}

/// A package whose manifest is verified. Payloads come out one at a time,
/// in manifest order.
#[derive(Debug)]
pub struct VerifiedPackage<R> {
    inner: R,
    limits: Limits,
    manifest: Verified<Manifest>,
    manifest_bytes: Vec<u8>,
    /// File offset of the first payload byte.
    payloads_start: u64,
    position: u64,
    next_index: usize,
    current: Option<StoredState>,
    failed: bool,
    /// Format version 2: the checked block index every payload byte is
    /// verified against, block by block.
    blocks: Option<BlockIndex>,
    /// Format version 2: asked whether a damaged block can be read again
    /// (see [`VerifiedPackage::refetch_damaged_blocks`]).
    refetch: Option<RefetchHook>,
}

/// Decides whether a damaged block is read again: told the
/// [`Error::BlockMismatch`], it answers `true` once it has arranged for the
/// inner reader to deliver that block's file range again from its next byte.
pub type RefetchDecision = dyn FnMut(&Error) -> bool + Send;

struct RefetchHook(Box<RefetchDecision>);

impl std::fmt::Debug for RefetchHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefetchHook")
    }
}

#[derive(Debug)]
struct StoredState {
    index: usize,
    start: u64,
    remaining: u64,
    /// Version 1: the whole payload's digest, checked at its end.
    hasher: Option<Sha256Hasher>,
    /// Version 2: where in the payload's blocks the reader is.
    cursor: BlockCursor,
    verified: Arc<AtomicBool>,
}

impl<R: Read> VerifiedPackage<R> {
    /// The verified manifest.
    pub fn manifest(&self) -> &Verified<Manifest> {
        &self.manifest
    }

    /// The exact signed manifest bytes (to pass on, e.g. in an update offer).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// Where each payload's stored bytes lie in the package file, in
    /// manifest order.
    pub fn payload_ranges(&self) -> Vec<Range<u64>> {
        let mut start = self.payloads_start;
        self.manifest
            .payloads
            .iter()
            .map(|entry| {
                let range = start..start.saturating_add(entry.stored.size);
                start = range.end;
                range
            })
            .collect()
    }

    /// Format version 2: instead of failing at a block that does not match
    /// the signed block index, asks `refetch` (with the
    /// [`Error::BlockMismatch`], whose [`Error::damaged_range`] is the
    /// block's file range) and, when it answers `true`, reads the block
    /// again from the inner reader: `true` promises that the inner reader's
    /// next bytes are that range again (a downloader asked for it anew with
    /// `Range`). Nothing of a damaged block is ever handed out; `refetch`
    /// bounds the attempts (answering `false` fails the read as without it).
    /// Version 1 payloads are checked whole at their end, so their damage
    /// is never re-read.
    pub fn refetch_damaged_blocks(&mut self, refetch: impl FnMut(&Error) -> bool + Send + 'static) {
        self.refetch = Some(RefetchHook(Box::new(refetch)));
    }

    /// For resuming an interrupted read: the next payload handed out is
    /// `index`, and the inner reader must continue at that payload's first
    /// stored byte.
    ///
    /// The caller vouches that the payloads before `index` were read to
    /// their end and checked by an earlier run (an agent that installed them
    /// and recorded so durably). Only allowed before the first payload is
    /// read; `index` may be the payload count (nothing left but the check
    /// for trailing data).
    pub fn resume_at(&mut self, index: usize) -> Result<(), Error> {
        self.ensure_usable()?;
        if self.next_index != 0 || self.current.is_some() {
            return Err(Error::Io(io::Error::other(
                "a package read can only be resumed before its first payload",
            )));
        }
        let Some(start) = self
            .payload_ranges()
            .get(index)
            .map(|range| range.start)
            .or_else(|| (index == self.manifest.payloads.len()).then(|| self.payload_end()))
        else {
            return Err(Error::Io(io::Error::other(format!(
                "cannot resume at payload {index}: the package has {}",
                self.manifest.payloads.len()
            ))));
        };
        self.position = start;
        self.next_index = index;
        Ok(())
    }

    fn payload_end(&self) -> u64 {
        self.payload_ranges()
            .last()
            .map_or(self.payloads_start, |range| range.end)
    }

    /// The next payload, or `None` after the last. A payload not read to its
    /// end is read (and checked) before the next one starts.
    pub fn next_payload(&mut self) -> Result<Option<PayloadReader<'_, R>>, Error> {
        self.ensure_usable()?;
        if self.current.is_some() {
            self.drain_current()?;
        }
        let index = self.next_index;
        let Some(entry) = self.manifest.payloads.get(index) else {
            return Ok(None);
        };
        let verified = Arc::new(AtomicBool::new(false));
        self.current = Some(StoredState {
            index,
            start: self.position,
            remaining: entry.stored.size,
            // Version 2 checks blocks only: every block matched a signed
            // digest, so a second whole-payload hash would be a second pass
            // over the same bytes for nothing.
            hasher: self.blocks.is_none().then(Sha256Hasher::new),
            cursor: BlockCursor::default(),
            verified: Arc::clone(&verified),
        });
        self.next_index += 1;
        Ok(Some(PayloadReader {
            package: self,
            index,
            verified,
        }))
    }

    /// Reads and checks every payload not read yet, then checks that nothing
    /// follows the last one.
    pub fn finish(mut self) -> Result<(), Error> {
        while self.next_payload()?.is_some() {}
        self.drain_current()?;
        let mut probe = [0u8; 1];
        loop {
            match self.inner.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(Error::TrailingData {
                        offset: self.position,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    fn ensure_usable(&self) -> Result<(), Error> {
        if self.failed {
            return Err(Error::Io(io::Error::other(
                "the package already failed verification; it cannot be read further",
            )));
        }
        Ok(())
    }

    fn drain_current(&mut self) -> Result<(), Error> {
        let mut scratch = vec![0u8; 64 * 1024];
        while self.current.is_some() {
            self.read_stored(&mut scratch).map_err(Error::from)?;
        }
        Ok(())
    }

    /// Reads stored bytes of the current payload. Checks the digest as soon
    /// as the last byte arrives, before returning it.
    fn read_stored(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("the package already failed verification"));
        }
        if self.blocks.is_some() {
            return self.read_blocks(buf);
        }
        let Some(state) = self.current.as_mut() else {
            return Ok(0);
        };
        if state.remaining == 0 {
            self.complete_current().map_err(Error::into_io)?;
            return Ok(0);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(state.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.failed = true;
            let entry = &self.manifest.payloads[state.index];
            return Err(Error::Truncated {
                part: format!(
                    "payload {} ({} {}), which should span bytes {}..{}",
                    state.index,
                    entry.kind,
                    entry.target,
                    state.start,
                    state.start + entry.stored.size
                ),
                offset: self.position,
            }
            .into_io());
        }
        if let Some(hasher) = state.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        state.remaining -= n as u64;
        self.position += n as u64;
        if state.remaining == 0 {
            self.complete_current().map_err(Error::into_io)?;
        }
        Ok(n)
    }

    /// Version 2: hands out checked bytes of the current payload, reading
    /// and checking the next block when none are left. A caller's buffer
    /// that holds the whole block gets it read straight in (no copy): on a
    /// mismatch the read fails, so the caller never takes those bytes.
    fn read_blocks(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let block_size = self.blocks.as_ref().map_or(1, BlockIndex::block_size);
        let Some(state) = self.current.as_mut() else {
            return Ok(0);
        };
        if !state.cursor.has_pending() {
            if state.remaining == 0 {
                self.complete_current().map_err(Error::into_io)?;
                return Ok(0);
            }
            if buf.is_empty() {
                return Ok(0);
            }
            // At most the block size, a u32: fits any usize we run on.
            let block_len = state.remaining.min(u64::from(block_size)) as usize;
            if buf.len() >= block_len {
                self.read_block(&mut buf[..block_len])
                    .map_err(Error::into_io)?;
                self.complete_if_done().map_err(Error::into_io)?;
                return Ok(block_len);
            }
            let mut pending = std::mem::take(&mut state.cursor.pending);
            pending.resize(block_len, 0);
            let result = self.read_block(&mut pending);
            let Some(state) = self.current.as_mut() else {
                return Ok(0);
            };
            if let Err(error) = result {
                return Err(error.into_io());
            }
            state.cursor.pending = pending;
            state.cursor.served = 0;
        }
        let Some(state) = self.current.as_mut() else {
            return Ok(0);
        };
        let n = state.cursor.serve(buf);
        self.complete_if_done().map_err(Error::into_io)?;
        Ok(n)
    }

    /// Reads the current payload's next block into `dest`, exactly its
    /// length, and checks it against the block index; a damaged block is
    /// read again while the refetch hook allows it.
    fn read_block(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        loop {
            let mismatch = match self.read_block_once(dest)? {
                None => return Ok(()),
                Some(mismatch) => mismatch,
            };
            let again = self
                .refetch
                .as_mut()
                .is_some_and(|RefetchHook(refetch)| refetch(&mismatch));
            if !again {
                self.failed = true;
                return Err(mismatch);
            }
        }
    }

    /// One attempt at the next block: `Ok(None)` when it matched (and the
    /// reader moved past it), `Ok(Some(BlockMismatch))` when it did not
    /// (the reader still at the block's start); a failed or short read
    /// fails the reader.
    fn read_block_once(&mut self, dest: &mut [u8]) -> Result<Option<Error>, Error> {
        let mut hasher = Sha256Hasher::new();
        let filled = match fill_hashing(&mut self.inner, dest, &mut hasher) {
            Ok(filled) => filled,
            Err(error) => {
                // Part of a block was consumed: the stream cannot go on.
                self.failed = true;
                return Err(Error::Io(error));
            }
        };
        let Some(state) = self.current.as_mut() else {
            return Ok(None);
        };
        let entry = &self.manifest.payloads[state.index];
        if filled < dest.len() {
            self.failed = true;
            return Err(Error::Truncated {
                part: format!(
                    "payload {} ({} {}), which should span bytes {}..{}",
                    state.index,
                    entry.kind,
                    entry.target,
                    state.start,
                    state.start + entry.stored.size
                ),
                offset: self.position + filled as u64,
            });
        }
        let block = state.cursor.next_block;
        let expected = self
            .blocks
            .as_ref()
            .and_then(|index| index.digest(state.index, block));
        let digest: Sha256Digest = hasher.finish();
        if !expected.is_some_and(|expected| *expected == digest) {
            let block_size = self.blocks.as_ref().map_or(1, BlockIndex::block_size);
            let range = blocks::block_range(state.start, entry.stored.size, block_size, block);
            return Ok(Some(Error::BlockMismatch {
                index: state.index,
                kind: entry.kind.to_string(),
                target: entry.target.clone(),
                block,
                start: range.start,
                end: range.end,
            }));
        }
        state.cursor.next_block += 1;
        state.remaining -= dest.len() as u64;
        self.position += dest.len() as u64;
        Ok(None)
    }

    /// Version 2: the payload is done once its last block is checked and
    /// handed out.
    fn complete_if_done(&mut self) -> Result<(), Error> {
        match &self.current {
            Some(state) if state.remaining == 0 && !state.cursor.has_pending() => {
                self.complete_current()
            }
            _ => Ok(()),
        }
    }

    fn complete_current(&mut self) -> Result<(), Error> {
        let Some(state) = self.current.take() else {
            return Ok(());
        };
        let entry = &self.manifest.payloads[state.index];
        // Version 2 has no whole-payload hasher: each block was checked.
        if state
            .hasher
            .is_some_and(|hasher| hasher.finish() != entry.stored.sha256)
        {
            self.failed = true;
            return Err(Error::DigestMismatch {
                index: state.index,
                kind: entry.kind.to_string(),
                target: entry.target.clone(),
                start: state.start,
                end: state.start + entry.stored.size,
            });
        }
        state.verified.store(true, Ordering::Release);
        Ok(())
    }
}

/// The stored bytes of one payload, exactly as many as the manifest
/// declares. Returns an error instead of end-of-file if they do not hash to
/// the signed digest.
#[derive(Debug)]
pub struct PayloadReader<'a, R> {
    package: &'a mut VerifiedPackage<R>,
    index: usize,
    verified: Arc<AtomicBool>,
}

impl<'a, R: Read> PayloadReader<'a, R> {
    /// Position of this payload in the manifest.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The payload's manifest entry.
    pub fn entry(&self) -> &PayloadEntry {
        &self.package.manifest.payloads[self.index]
    }

    /// The file offsets its stored bytes occupy.
    pub fn file_range(&self) -> Range<u64> {
        let size = self.entry().stored.size;
        let start = match &self.package.current {
            Some(state) if state.index == self.index => state.start,
            _ => self.package.position - size,
        };
        start..start + size
    }
}

impl<R: Read> Read for PayloadReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.package.current {
            Some(state) if state.index == self.index => self.package.read_stored(buf),
            _ => Ok(0),
        }
    }
}

/// Bytes read (and hashed) at a time within a block: small enough that
/// they are still in the CPU's cache when hashed, large enough that the
/// extra reads cost nothing measurable.
const HASH_CHUNK: usize = 128 * 1024;

/// Reads into `buf` until it is full or the stream ends, hashing each piece
/// as it arrives (one pass over the bytes, while they are in cache);
/// returns how much was read.
fn fill_hashing(
    reader: &mut impl Read,
    buf: &mut [u8],
    hasher: &mut Sha256Hasher,
) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let end = buf.len().min(filled + HASH_CHUNK);
        match reader.read(&mut buf[filled..end]) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[filled..filled + n]);
                filled += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn read_exact_at(
    reader: &mut impl Read,
    buf: &mut [u8],
    start: u64,
    part: &str,
) -> Result<(), Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(Error::Truncated {
                    part: part.to_owned(),
                    offset: start + filled as u64,
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Ok(())
}
