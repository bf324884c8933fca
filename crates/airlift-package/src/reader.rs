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
//! only then commits can never commit altered bytes.

use crate::digest::{Sha256Digest, Sha256Hasher};
use crate::error::Error;
use crate::format::{Header, HEADER_LEN, SIGNATURE_ENTRY_LEN};
use crate::keys::{KeyId, ManifestSignature, SignatureCheck, TrustSet};
use crate::limits::Limits;
use crate::manifest::{Compression, Encryption, Manifest, PayloadEntry};
use std::cell::RefCell;
use std::io::{self, BufReader, Read};
use std::ops::{Deref, Range};
use std::rc::Rc;
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
        Ok(Self {
            inner,
            limits,
            header,
            manifest_bytes,
            signatures,
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

    /// File offset of the first payload byte.
    pub fn payload_offset(&self) -> u64 {
        payload_offset(&self.header)
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
        })
    }
}

fn payload_offset(header: &Header) -> u64 {
    HEADER_LEN as u64
        + u64::from(header.manifest_len)
        + u64::from(header.signature_count) * SIGNATURE_ENTRY_LEN as u64
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
}

#[derive(Debug)]
struct StoredState {
    index: usize,
    start: u64,
    remaining: u64,
    hasher: Sha256Hasher,
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
            hasher: Sha256Hasher::new(),
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
        state.hasher.update(&buf[..n]);
        state.remaining -= n as u64;
        self.position += n as u64;
        if state.remaining == 0 {
            self.complete_current().map_err(Error::into_io)?;
        }
        Ok(n)
    }

    fn complete_current(&mut self) -> Result<(), Error> {
        let Some(state) = self.current.take() else {
            return Ok(());
        };
        let entry = &self.manifest.payloads[state.index];
        if state.hasher.finish() != entry.stored.sha256 {
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

    /// The installed bytes: decrypted with one of `identities` (when the
    /// payload is encrypted), decompressed, and checked against the installed
    /// size and digest. Decoding never produces more than the declared size.
    pub fn decoded(self, identities: &[&dyn age::Identity]) -> Result<DecodedPayload<'a>, Error>
    where
        R: 'a,
    {
        let entry = self.entry().clone();
        let index = self.index;
        let window_log_max = self.package.limits.max_zstd_window_log;
        let verified = Arc::clone(&self.verified);
        let decode_error = |step: &'static str, reason: String| Error::Decode {
            index,
            target: entry.target.clone(),
            step,
            reason,
        };

        let stored = SharedStored(Rc::new(RefCell::new(self)));
        let drain_handle: Box<dyn Drain + 'a> = Box::new(stored.clone());
        let decrypted: Box<dyn Read + 'a> = match entry.encryption {
            Encryption::None => Box::new(stored),
            Encryption::Age => {
                if identities.is_empty() {
                    return Err(Error::NoIdentity {
                        index,
                        target: entry.target.clone(),
                    });
                }
                let decryptor = age::Decryptor::new_buffered(BufReader::new(stored))
                    .map_err(|e| age_error(e, index, &entry.target))?;
                let stream = decryptor
                    .decrypt(identities.iter().copied())
                    .map_err(|e| age_error(e, index, &entry.target))?;
                Box::new(stream)
            }
        };
        let decoded: Box<dyn Read + 'a> = match entry.compression {
            Compression::None => decrypted,
            Compression::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::new(decrypted)
                    .map_err(|e| decode_error("decompress", e.to_string()))?;
                decoder
                    .window_log_max(window_log_max)
                    .map_err(|e| decode_error("decompress", e.to_string()))?;
                Box::new(decoder)
            }
        };
        // Plain payloads have installed == stored (checked when the manifest
        // was parsed), so the stored digest already covers them.
        let hasher = (entry.compression != Compression::None
            || entry.encryption != Encryption::None)
            .then(Sha256Hasher::new);
        Ok(DecodedPayload {
            inner: decoded,
            index,
            entry,
            hasher,
            produced: 0,
            stored_verified: verified,
            stored: drain_handle,
        })
    }
}

/// The stored reader, shared between the decoder chain and the
/// [`DecodedPayload`] that may need to drain it after a decode error.
struct SharedStored<'a, R>(Rc<RefCell<PayloadReader<'a, R>>>);

impl<R> Clone for SharedStored<'_, R> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<R: Read> Read for SharedStored<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// Reads the rest of a payload's stored bytes, checking their digest.
trait Drain {
    fn drain(&mut self) -> Result<(), Error>;
}

impl<R: Read> Drain for SharedStored<'_, R> {
    fn drain(&mut self) -> Result<(), Error> {
        let mut reader = self
            .0
            .try_borrow_mut()
            .map_err(|_| Error::Io(io::Error::other("stored payload reader busy")))?;
        io::copy(&mut *reader, &mut io::sink())
            .map(|_| ())
            .map_err(Error::from)
    }
}

fn age_error(error: age::DecryptError, index: usize, target: &str) -> Error {
    match error {
        age::DecryptError::NoMatchingKeys => Error::NoIdentity {
            index,
            target: target.to_owned(),
        },
        age::DecryptError::Io(io) => Error::from(io),
        other => Error::Decode {
            index,
            target: target.to_owned(),
            step: "decrypt",
            reason: other.to_string(),
        },
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

/// The installed bytes of one payload. Returns an error instead of
/// end-of-file unless both the stored and the installed digest match and
/// the size is exactly as declared.
pub struct DecodedPayload<'a> {
    inner: Box<dyn Read + 'a>,
    index: usize,
    entry: PayloadEntry,
    hasher: Option<Sha256Hasher>,
    produced: u64,
    stored_verified: Arc<AtomicBool>,
    stored: Box<dyn Drain + 'a>,
}

impl std::fmt::Debug for DecodedPayload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedPayload")
            .field("index", &self.index)
            .field("target", &self.entry.target)
            .field("produced", &self.produced)
            .finish()
    }
}

impl DecodedPayload<'_> {
    /// The payload's manifest entry.
    pub fn entry(&self) -> &PayloadEntry {
        &self.entry
    }

    fn decode_step(&self) -> &'static str {
        match (self.entry.encryption, self.entry.compression) {
            (Encryption::Age, Compression::Zstd) => "decrypt and decompress",
            (Encryption::Age, Compression::None) => "decrypt",
            _ => "decompress",
        }
    }

    fn at_end(&mut self) -> Result<(), Error> {
        if !self.stored_verified.load(Ordering::Acquire) {
            return Err(Error::Decode {
                index: self.index,
                target: self.entry.target.clone(),
                step: self.decode_step(),
                reason: "the encoded stream ends before the payload's stored bytes do".into(),
            });
        }
        if self.produced != self.entry.installed.size {
            return Err(self.size_error());
        }
        if let Some(hasher) = self.hasher.take() {
            let digest: Sha256Digest = hasher.finish();
            if digest != self.entry.installed.sha256 {
                return Err(Error::InstalledDigestMismatch {
                    index: self.index,
                    kind: self.entry.kind.to_string(),
                    target: self.entry.target.clone(),
                    size: self.entry.installed.size,
                });
            }
        }
        Ok(())
    }

    fn size_error(&self) -> Error {
        Error::InstalledSize {
            index: self.index,
            target: self.entry.target.clone(),
            declared: self.entry.installed.size,
            actual: self.produced,
        }
    }
}

impl Read for DecodedPayload<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let error = match Error::from(e) {
                    // A decoder choking on altered bytes: the stored digest
                    // says precisely where, so prefer its verdict.
                    Error::Io(io) => match self.stored.drain() {
                        Err(stored_error) => stored_error,
                        Ok(()) => Error::Decode {
                            index: self.index,
                            target: self.entry.target.clone(),
                            step: self.decode_step(),
                            reason: io.to_string(),
                        },
                    },
                    package_error => package_error,
                };
                return Err(error.into_io());
            }
        };
        if n == 0 {
            self.at_end().map_err(Error::into_io)?;
            return Ok(0);
        }
        self.produced += n as u64;
        if self.produced > self.entry.installed.size {
            return Err(self.size_error().into_io());
        }
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
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
