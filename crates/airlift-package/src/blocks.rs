//! Format version 2's block index: one SHA-256 per fixed-size block of every
//! payload's stored bytes, so a reader checks each block before it hands a
//! byte of it on, and a damaged byte is caught (and named, with the file
//! range to fetch again) within one block instead of at the payload's end.
//!
//! The index is binary and sits in the package's head, right after the
//! signatures; the signed manifest carries its block size and SHA-256
//! (`block_index`), and its length follows from the declared stored sizes.
//! Keeping the digests out of the JSON keeps the signed manifest small; a
//! flat list (not a Merkle tree) is enough because a reader streams front to
//! back and holds the whole index anyway.

use crate::digest::{Sha256Digest, Sha256Hasher};
use crate::error::Error;
use crate::limits::Limits;
use crate::manifest::PayloadEntry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// The block size writers use unless told otherwise: 1 MiB, the unit the
/// agent downloads and writes in, so a re-fetch of one block is one request.
pub const DEFAULT_BLOCK_SIZE: u32 = 1024 * 1024;
/// Bytes per entry of the block index: one SHA-256.
pub const BLOCK_DIGEST_LEN: usize = 32;
/// Bytes of the index length field that precedes the index in the file.
pub(crate) const INDEX_LEN_FIELD: usize = 4;

/// What the signed manifest says about the block index (`block_index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockIndexRef {
    /// Size of every block but each payload's last, in bytes: a power of two.
    pub block_size: u32,
    /// SHA-256 of the whole binary index.
    pub sha256: Sha256Digest,
}

/// How many blocks `size` stored bytes make.
pub(crate) fn block_count(size: u64, block_size: u32) -> u64 {
    size.div_ceil(u64::from(block_size.max(1)))
}

/// Length in bytes of the index for these payloads, `None` past `u64`.
pub(crate) fn index_len(payloads: &[PayloadEntry], block_size: u32) -> Option<u64> {
    payloads.iter().try_fold(0u64, |total, entry| {
        block_count(entry.stored.size, block_size)
            .checked_mul(BLOCK_DIGEST_LEN as u64)
            .and_then(|len| total.checked_add(len))
    })
}

/// Whether `block_size` is one `limits` allow: a power of two in range.
pub(crate) fn block_size_allowed(block_size: u32, limits: &Limits) -> bool {
    block_size.is_power_of_two()
        && (limits.min_block_size..=limits.max_block_size).contains(&block_size)
}

/// The smallest allowed block size, from [`DEFAULT_BLOCK_SIZE`] up, whose
/// index for `stored_len` bytes in `payloads` payloads fits `limits`; the
/// largest allowed size if none does (the writer then refuses the package).
pub fn block_size_for(stored_len: u64, payloads: usize, limits: &Limits) -> u32 {
    let mut size = DEFAULT_BLOCK_SIZE.clamp(limits.min_block_size, limits.max_block_size);
    loop {
        // Each payload's last block may be partial: count one more each.
        let blocks = block_count(stored_len, size).saturating_add(payloads as u64);
        let len = blocks.saturating_mul(BLOCK_DIGEST_LEN as u64);
        if len <= u64::from(limits.max_block_index_len) || size >= limits.max_block_size {
            return size;
        }
        size = size.saturating_mul(2).min(limits.max_block_size);
    }
}

/// Block digests of one payload's stored bytes, made while encoding it and
/// carried with its manifest entry to the signer and the writer. Not part
/// of the entry's JSON or of its equality: a parsed entry has none.
#[derive(Clone, Default)]
pub(crate) struct WriterBlocks(pub(crate) Option<Arc<StoredBlocks>>);

impl PartialEq for WriterBlocks {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for WriterBlocks {}

impl fmt::Debug for WriterBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(blocks) => write!(
                f,
                "{} block(s) of {} bytes",
                blocks.digests.len(),
                blocks.block_size
            ),
            None => f.write_str("none"),
        }
    }
}

/// The digests of one stream cut into blocks.
#[derive(Debug)]
pub(crate) struct StoredBlocks {
    pub block_size: u32,
    pub digests: Vec<Sha256Digest>,
}

/// Hashes a stream whole and block by block in the same loop over the same
/// buffers, so a writer reads its bytes once.
#[derive(Clone)]
pub(crate) struct BlockHasher {
    whole: Sha256Hasher,
    block: Sha256,
    block_size: u64,
    in_block: u64,
    digests: Vec<Sha256Digest>,
}

impl BlockHasher {
    pub fn new(block_size: u32) -> Self {
        Self {
            whole: Sha256Hasher::new(),
            block: Sha256::new(),
            block_size: u64::from(block_size.max(1)),
            in_block: 0,
            digests: Vec::new(),
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.whole.update(bytes);
        while !bytes.is_empty() {
            let room = self.block_size - self.in_block;
            let take = usize::try_from(room).map_or(bytes.len(), |room| room.min(bytes.len()));
            self.block.update(&bytes[..take]);
            self.in_block += take as u64;
            bytes = &bytes[take..];
            if self.in_block == self.block_size {
                self.push_block();
            }
        }
    }

    fn push_block(&mut self) {
        let digest = std::mem::take(&mut self.block).finalize();
        self.digests.push(Sha256Digest::from_bytes(digest.into()));
        self.in_block = 0;
    }

    /// The whole stream's hasher and its blocks.
    pub fn finish(mut self, block_size: u32) -> (Sha256Hasher, StoredBlocks) {
        if self.in_block > 0 {
            self.push_block();
        }
        let blocks = StoredBlocks {
            block_size,
            digests: self.digests,
        };
        (self.whole, blocks)
    }
}

/// The binary index for `payloads`, from the digests their encoding left,
/// or `None` when one of them has none (or of another size) or their count
/// disagrees with the declared stored size.
pub(crate) fn build_index(payloads: &[PayloadEntry], block_size: u32) -> Option<Vec<u8>> {
    let mut index = Vec::with_capacity(usize::try_from(index_len(payloads, block_size)?).ok()?);
    for entry in payloads {
        let count = block_count(entry.stored.size, block_size);
        if count == 0 {
            continue;
        }
        let blocks = entry.blocks.0.as_ref()?;
        if blocks.block_size != block_size || blocks.digests.len() as u64 != count {
            return None;
        }
        for digest in &blocks.digests {
            index.extend_from_slice(digest.as_bytes());
        }
    }
    Some(index)
}

/// The block size every payload of `payloads` was encoded with, if they
/// agree (payloads with no stored bytes agree with anything).
pub(crate) fn common_block_size(payloads: &[PayloadEntry]) -> Option<u32> {
    let mut found = None;
    for entry in payloads.iter().filter(|entry| entry.stored.size > 0) {
        let size = entry.blocks.0.as_ref()?.block_size;
        match found {
            None => found = Some(size),
            Some(other) if other != size => return None,
            Some(_) => {}
        }
    }
    Some(found.unwrap_or(DEFAULT_BLOCK_SIZE))
}

/// A block index that matched the signed manifest.
#[derive(Debug)]
pub(crate) struct BlockIndex {
    block_size: u32,
    digests: Vec<Sha256Digest>,
    /// Position in `digests` of each payload's first block.
    first_block: Vec<usize>,
}

impl BlockIndex {
    /// Checks `bytes` (read from the file, unsigned) against the manifest's
    /// `reference` and the length its declared sizes give.
    pub fn check(
        bytes: &[u8],
        reference: &BlockIndexRef,
        payloads: &[PayloadEntry],
        limits: &Limits,
    ) -> Result<Self, Error> {
        if !block_size_allowed(reference.block_size, limits) {
            return Err(Error::BadBlockIndex(format!(
                "block size {} is not a power of two from {} to {} bytes",
                reference.block_size, limits.min_block_size, limits.max_block_size
            )));
        }
        let expected = index_len(payloads, reference.block_size)
            .filter(|len| *len <= u64::from(limits.max_block_index_len))
            .ok_or_else(|| {
                Error::BadBlockIndex(format!(
                    "the declared payload sizes need an index of more than {} bytes",
                    limits.max_block_index_len
                ))
            })?;
        if bytes.len() as u64 != expected {
            return Err(Error::BadBlockIndex(format!(
                "the file's index is {} bytes but the signed payload sizes need {expected}",
                bytes.len()
            )));
        }
        if Sha256Digest::of(bytes) != reference.sha256 {
            return Err(Error::BadBlockIndex(
                "its SHA-256 does not match the signed manifest's block_index; the head was altered"
                    .into(),
            ));
        }
        let digests = bytes
            .chunks_exact(BLOCK_DIGEST_LEN)
            .map(|chunk| {
                let mut digest = [0u8; BLOCK_DIGEST_LEN];
                digest.copy_from_slice(chunk);
                Sha256Digest::from_bytes(digest)
            })
            .collect();
        let mut first_block = Vec::with_capacity(payloads.len());
        let mut next = 0usize;
        for entry in payloads {
            first_block.push(next);
            // Bounded by the index length checked above.
            next += block_count(entry.stored.size, reference.block_size) as usize;
        }
        Ok(Self {
            block_size: reference.block_size,
            digests,
            first_block,
        })
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The signed digest of block `block` of payload `payload`.
    pub fn digest(&self, payload: usize, block: u64) -> Option<&Sha256Digest> {
        let first = *self.first_block.get(payload)?;
        let at = first.checked_add(usize::try_from(block).ok()?)?;
        self.digests.get(at)
    }
}

/// The reader's place in one payload's blocks: the block being read and
/// the checked bytes of it not handed out yet.
#[derive(Debug, Default)]
pub(crate) struct BlockCursor {
    /// Index within the payload of the next block to read.
    pub next_block: u64,
    /// A checked block read for a caller whose buffer was smaller.
    pub pending: Vec<u8>,
    /// How much of `pending` was handed out.
    pub served: usize,
}

impl BlockCursor {
    /// Copies checked bytes still pending into `buf`; 0 if none.
    pub fn serve(&mut self, buf: &mut [u8]) -> usize {
        let left = &self.pending[self.served..];
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        self.served += n;
        n
    }

    pub fn has_pending(&self) -> bool {
        self.served < self.pending.len()
    }
}

/// The file range of block `block` of a payload whose stored bytes start at
/// `start` and are `size` long.
pub(crate) fn block_range(start: u64, size: u64, block_size: u32, block: u64) -> Range<u64> {
    let offset = block.saturating_mul(u64::from(block_size)).min(size);
    let end = offset.saturating_add(u64::from(block_size)).min(size);
    start + offset..start + end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_blocks_and_whole_in_one_pass() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut hasher = BlockHasher::new(4096);
        for piece in data.chunks(777) {
            hasher.update(piece);
        }
        let (whole, blocks) = hasher.finish(4096);
        assert_eq!(whole.finish(), Sha256Digest::of(&data));
        let expected: Vec<_> = data.chunks(4096).map(Sha256Digest::of).collect();
        assert_eq!(blocks.digests, expected);
    }

    #[test]
    fn block_sizes_grow_until_the_index_fits() {
        let limits = Limits::default();
        assert_eq!(block_size_for(1 << 30, 1, &limits), DEFAULT_BLOCK_SIZE);
        let huge = block_size_for(100 << 30, 1, &limits);
        assert!(huge > DEFAULT_BLOCK_SIZE && huge.is_power_of_two());
        assert!(index_len_for(100 << 30, huge) <= u64::from(limits.max_block_index_len));
        assert_eq!(block_size_for(u64::MAX, 1, &limits), limits.max_block_size);
    }

    fn index_len_for(size: u64, block_size: u32) -> u64 {
        (block_count(size, block_size) + 1) * BLOCK_DIGEST_LEN as u64
    }

    #[test]
    fn block_ranges_end_at_the_payload_end() {
        assert_eq!(block_range(100, 10_000, 4096, 0), 100..4196);
        assert_eq!(block_range(100, 10_000, 4096, 2), 8292..10_100);
        assert_eq!(block_count(0, 4096), 0);
        assert_eq!(block_count(4096, 4096), 1);
        assert_eq!(block_count(4097, 4096), 2);
    }
}
