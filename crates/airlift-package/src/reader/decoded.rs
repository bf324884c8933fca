//! The installed bytes of a payload: its stored bytes decrypted,
//! decompressed and checked against the installed size and digest.

use super::PayloadReader;
use crate::digest::{Sha256Digest, Sha256Hasher};
use crate::error::Error;
use crate::manifest::{Compression, Encryption, PayloadEntry};
use std::cell::RefCell;
use std::io::{self, BufReader, Read};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

impl<'a, R: Read> PayloadReader<'a, R> {
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
