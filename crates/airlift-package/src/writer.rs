//! Writing a package: encode each payload (hashing as it goes), sign the
//! manifest, then write header, manifest, signatures and payloads in order.
//!
//! The manifest must carry every payload's stored size and digest (and, in
//! format version 2, the digest of every block of them), so the stored bytes
//! are produced first (into wherever the caller keeps them, a temporary file
//! in the CLI) and copied into the package afterwards.

use crate::blocks::{self, BlockHasher, WriterBlocks, DEFAULT_BLOCK_SIZE};
use crate::digest::{Sha256Digest, Sha256Hasher};
use crate::error::Error;
use crate::format::{Header, HEADER_LEN, SIGNATURE_ENTRY_LEN};
use crate::keys::{KeyId, ManifestSignature, SigningKey};
use crate::limits::Limits;
use crate::manifest::{Blob, Compression, Encryption, Manifest, PayloadEntry, PayloadType};
use std::io::{self, Read, Write};
use std::sync::Arc;

/// What to make of one input stream.
#[derive(Debug, Clone)]
pub struct PayloadSpec {
    /// How it will be installed.
    pub kind: PayloadType,
    /// Where it goes.
    pub target: String,
    /// How to compress it.
    pub compression: Compression,
}

impl PayloadSpec {
    /// A payload of `kind` for `target`, compressed as given.
    pub fn new(kind: PayloadType, target: impl Into<String>, compression: Compression) -> Self {
        Self {
            kind,
            target: target.into(),
            compression,
        }
    }
}

/// Settings for [`encode_payload`].
pub struct EncodeOptions {
    /// zstd level, 1–19.
    pub zstd_level: i32,
    /// zstd worker threads; 0 compresses on the calling thread.
    pub zstd_workers: u32,
    /// Encrypt to these age recipients; empty means no encryption.
    pub recipients: Vec<age::x25519::Recipient>,
    /// Block size of the stored bytes' digests for a version 2 block
    /// index: a power of two within [`Limits`]' block sizes; every payload
    /// of one package must use the same ([`block_size_for`](crate::block_size_for)
    /// picks one for a package's size).
    pub block_size: u32,
}

impl std::fmt::Debug for EncodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeOptions")
            .field("zstd_level", &self.zstd_level)
            .field("zstd_workers", &self.zstd_workers)
            .field("recipients", &self.recipients.len())
            .field("block_size", &self.block_size)
            .finish()
    }
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            zstd_level: 3,
            zstd_workers: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            recipients: Vec::new(),
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

/// Streams `input` through compression and encryption into `out`, and
/// returns the manifest entry with both sizes and digests, and the stored
/// bytes' block digests (hashed in the same pass) for a version 2 index.
pub fn encode_payload<R: Read, W: Write>(
    input: R,
    spec: &PayloadSpec,
    options: &EncodeOptions,
    out: W,
) -> Result<PayloadEntry, Error> {
    let mut installed = HashingReader {
        inner: input,
        hasher: Sha256Hasher::new(),
    };
    let mut stored = HashingWriter {
        inner: out,
        hasher: BlockHasher::new(options.block_size),
    };
    let encrypt = !options.recipients.is_empty();
    match (spec.compression, encrypt) {
        (Compression::None, false) => {
            io::copy(&mut installed, &mut stored)?;
        }
        (Compression::Zstd, false) => {
            let mut encoder = zstd_encoder(&mut stored, options)?;
            io::copy(&mut installed, &mut encoder)?;
            encoder.finish()?;
        }
        (Compression::None, true) => {
            let mut encryptor = age_writer(&mut stored, options)?;
            io::copy(&mut installed, &mut encryptor)?;
            encryptor.finish()?;
        }
        (Compression::Zstd, true) => {
            let encryptor = age_writer(&mut stored, options)?;
            let mut encoder = zstd_encoder(encryptor, options)?;
            io::copy(&mut installed, &mut encoder)?;
            encoder.finish()?.finish()?;
        }
    }
    stored.inner.flush()?;
    let (stored_hasher, stored_blocks) = stored.hasher.finish(options.block_size);
    let mut entry = PayloadEntry::new(
        spec.kind.clone(),
        spec.target.clone(),
        blob(stored_hasher),
        blob(installed.hasher),
        spec.compression,
        if encrypt {
            Encryption::Age
        } else {
            Encryption::None
        },
    );
    entry.blocks = WriterBlocks(Some(Arc::new(stored_blocks)));
    Ok(entry)
}

fn blob(hasher: Sha256Hasher) -> Blob {
    Blob {
        size: hasher.len(),
        sha256: hasher.finish(),
    }
}

fn zstd_encoder<'z, W: Write>(out: W, options: &EncodeOptions) -> io::Result<zstd::Encoder<'z, W>> {
    let mut encoder = zstd::Encoder::new(out, options.zstd_level.clamp(1, 19))?;
    if options.zstd_workers > 0 {
        encoder.multithread(options.zstd_workers)?;
    }
    Ok(encoder)
}

fn age_writer<W: Write>(
    out: W,
    options: &EncodeOptions,
) -> Result<age::stream::StreamWriter<W>, Error> {
    let encryptor = age::Encryptor::with_recipients(
        options.recipients.iter().map(|r| r as &dyn age::Recipient),
    )
    .map_err(|e| Error::Encrypt(e.to_string()))?;
    encryptor.wrap_output(out).map_err(Error::Io)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: BlockHasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A validated manifest, its exact bytes and their signatures.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    manifest: Manifest,
    bytes: Vec<u8>,
    signatures: Vec<ManifestSignature>,
    /// Format version 2: the binary block index the manifest commits to.
    block_index: Option<Vec<u8>>,
}

impl SignedManifest {
    /// Validates `manifest` against `limits` and signs its canonical bytes
    /// with every key.
    pub fn sign(manifest: &Manifest, keys: &[&SigningKey], limits: &Limits) -> Result<Self, Error> {
        let bytes = manifest.to_json();
        let len = bytes.len() as u64;
        let end = HEADER_LEN as u64 + len;
        manifest
            .validate(limits)
            .map_err(|reason| Error::Manifest {
                start: HEADER_LEN as u64,
                end,
                reason,
            })?;
        if len > u64::from(limits.max_manifest_len) {
            return Err(Error::BadHeader(format!(
                "the manifest is {len} bytes, more than the {} a reader accepts",
                limits.max_manifest_len
            )));
        }
        if keys.is_empty() || keys.len() > usize::from(limits.max_signatures) {
            return Err(Error::BadHeader(format!(
                "a package needs 1 to {} signatures, {} keys given",
                limits.max_signatures,
                keys.len()
            )));
        }
        let block_index = match &manifest.block_index {
            Some(reference) => Some(
                blocks::build_index(&manifest.payloads, reference.block_size)
                    .filter(|index| Sha256Digest::of(index) == reference.sha256)
                    .ok_or_else(|| {
                        Error::BadBlockIndex(
                            "the manifest's block_index does not match its payloads' blocks; build the manifest from encode_payload's entries with ManifestBuilder".into(),
                        )
                    })?,
            ),
            None => None,
        };
        let signatures = keys.iter().map(|key| key.sign(&bytes)).collect();
        Ok(Self {
            manifest: manifest.clone(),
            bytes,
            signatures,
            block_index,
        })
    }

    /// The manifest that was signed.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact signed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Who signed.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.signatures.iter().map(|s| s.key_id).collect()
    }

    /// Length of the package file this manifest describes.
    pub fn package_len(&self) -> u64 {
        let index = self
            .block_index
            .as_ref()
            .map_or(0, |index| (blocks::INDEX_LEN_FIELD + index.len()) as u64);
        HEADER_LEN as u64
            + self.bytes.len() as u64
            + (self.signatures.len() * SIGNATURE_ENTRY_LEN) as u64
            + index
            + self.manifest.stored_len()
    }
}

/// Writes one package front to back. Refuses payload bytes that do not
/// match their manifest entry, so a corrupt temporary file never ships.
#[derive(Debug)]
pub struct PackageWriter<'m, W> {
    out: W,
    signed: &'m SignedManifest,
    next_index: usize,
}

impl<'m, W: Write> PackageWriter<'m, W> {
    /// Writes the header, manifest and signatures.
    pub fn new(mut out: W, signed: &'m SignedManifest) -> Result<Self, Error> {
        let header = Header {
            format_version: signed.manifest.format_version,
            signature_count: signed.signatures.len() as u16,
            manifest_len: signed.bytes.len() as u32,
        };
        out.write_all(&header.encode())?;
        out.write_all(&signed.bytes)?;
        for signature in &signed.signatures {
            out.write_all(signature.key_id.as_bytes())?;
            out.write_all(&signature.signature)?;
        }
        if let Some(index) = &signed.block_index {
            // Bounded by `Limits::max_block_index_len` when the manifest was
            // validated.
            out.write_all(&(index.len() as u32).to_be_bytes())?;
            out.write_all(index)?;
        }
        Ok(Self {
            out,
            signed,
            next_index: 0,
        })
    }

    /// Copies the next payload's stored bytes, checking size and digest.
    pub fn write_payload(&mut self, stored: impl Read) -> Result<(), Error> {
        let index = self.next_index;
        let Some(entry) = self.signed.manifest.payloads.get(index) else {
            return Err(Error::WriterMismatch {
                index,
                reason: "the manifest has no more payloads".into(),
            });
        };
        let mut hashing = HashingReader {
            inner: stored.take(entry.stored.size.saturating_add(1)),
            hasher: Sha256Hasher::new(),
        };
        io::copy(&mut hashing, &mut self.out)?;
        let size = hashing.hasher.len();
        let digest: Sha256Digest = hashing.hasher.finish();
        if size != entry.stored.size || digest != entry.stored.sha256 {
            return Err(Error::WriterMismatch {
                index,
                reason: format!(
                    "{size} bytes with SHA-256 {digest}, manifest says {} bytes with {}",
                    entry.stored.size, entry.stored.sha256
                ),
            });
        }
        self.next_index += 1;
        Ok(())
    }

    /// Checks every payload was written and flushes.
    pub fn finish(mut self) -> Result<W, Error> {
        let missing = self.signed.manifest.payloads.len() - self.next_index;
        if missing > 0 {
            return Err(Error::WriterMismatch {
                index: self.next_index,
                reason: format!("{missing} payload(s) not written"),
            });
        }
        self.out.flush()?;
        Ok(self.out)
    }
}
