//! The reader's and writer's errors. Every message says what is wrong and
//! where in the file, so a person can act on it.

use crate::keys::{KeyError, KeyId};
use crate::manifest::ManifestError;
use std::io;

/// Everything that can go wrong reading or writing a package.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the underlying stream failed.
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// The file does not start with the Airlift magic bytes.
    #[error("not an Airlift package: the file does not start with the magic bytes \"AIRLIFT\\0\"")]
    BadMagic,
    /// The header names a format version this reader does not know.
    #[error("package format version {0} is not supported (this reader knows versions 1 and 2); upgrade the tool or rebuild the package")]
    UnsupportedFormat(u16),
    /// A reserved header field or a count is out of range.
    #[error("corrupt header: {0}")]
    BadHeader(String),
    /// The file ends before a part that must be there.
    #[error("truncated package: it ends at byte {offset} inside the {part}")]
    Truncated {
        /// What was being read.
        part: String,
        /// Bytes read before the end.
        offset: u64,
    },
    /// The manifest is malformed or breaks a rule.
    #[error("manifest (bytes {start}..{end}): {reason}")]
    Manifest {
        /// Offset of the manifest's first byte.
        start: u64,
        /// Offset one past its last byte.
        end: u64,
        reason: ManifestError,
    },
    /// The header's and the manifest's format versions differ.
    #[error("header says format version {header} but the manifest says {manifest}")]
    FormatMismatch {
        /// From the header.
        header: u16,
        /// From the manifest.
        manifest: u16,
    },
    /// A signature that names a trusted key does not verify.
    #[error("signature by trusted key {key_id} does not verify: the manifest or the signature was altered after signing")]
    BadSignature {
        /// The key the signature claims.
        key_id: KeyId,
    },
    /// Not enough trusted keys signed.
    #[error("{}", describe_untrusted(.valid, .threshold, .signed_by, .trusted))]
    Untrusted {
        /// Trusted keys whose signatures verified.
        valid: Vec<KeyId>,
        /// How many were needed.
        threshold: usize,
        /// Every key id the package carries a signature from.
        signed_by: Vec<KeyId>,
        /// The trusted key ids.
        trusted: Vec<KeyId>,
    },
    /// A key or trust-set problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A payload's stored bytes do not hash to what the manifest says.
    #[error("payload {index} ({kind} {target}), bytes {start}..{end} of the file: stored SHA-256 does not match the manifest; the payload is corrupt or was altered")]
    DigestMismatch {
        /// Position in the manifest.
        index: usize,
        /// Payload type, for the message.
        kind: String,
        /// Payload target.
        target: String,
        /// File offset of the payload's first stored byte.
        start: u64,
        /// File offset one past its last stored byte.
        end: u64,
    },
    /// A payload's decoded bytes do not hash to what the manifest says,
    /// although its stored bytes do: it was built wrongly or maliciously.
    #[error("payload {index} ({kind} {target}): installed SHA-256 does not match the manifest after decoding its {size} bytes; the package was built wrongly")]
    InstalledDigestMismatch {
        /// Position in the manifest.
        index: usize,
        /// Payload type, for the message.
        kind: String,
        /// Payload target.
        target: String,
        /// Installed size.
        size: u64,
    },
    /// A payload's installed bytes are longer or shorter than declared.
    #[error("payload {index} ({target}): decodes to {actual} bytes but the manifest declares {declared}{}", if *.actual > *.declared { " (stopped reading there)" } else { "" })]
    InstalledSize {
        /// Position in the manifest.
        index: usize,
        /// Payload target.
        target: String,
        /// Declared installed size.
        declared: u64,
        /// Bytes produced (for overflows: the first count past the limit).
        actual: u64,
    },
    /// A payload's compressed or encrypted bytes do not decode.
    #[error("payload {index} ({target}): cannot {step}: {reason}")]
    Decode {
        /// Position in the manifest.
        index: usize,
        /// Payload target.
        target: String,
        /// `decrypt` or `decompress`.
        step: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// An encrypted payload and no identity that opens it.
    #[error("payload {index} ({target}) is encrypted and none of the given identities can decrypt it; pass the device's age identity")]
    NoIdentity {
        /// Position in the manifest.
        index: usize,
        /// Payload target.
        target: String,
    },
    /// Bytes follow the last payload.
    #[error("unexpected data after the last payload, starting at byte {offset}: the file was appended to or its sizes were altered")]
    TrailingData {
        /// Offset of the first extra byte.
        offset: u64,
    },
    /// The writer was given payload bytes that disagree with the manifest.
    #[error("payload {index}: the bytes given do not match the manifest entry ({reason})")]
    WriterMismatch {
        /// Position in the manifest.
        index: usize,
        /// What differs.
        reason: String,
    },
    /// Encrypting a payload failed.
    #[error("encrypting payload: {0}")]
    Encrypt(String),
    /// A block of a payload's stored bytes (format version 2) does not hash
    /// to its digest in the signed block index. Nothing of the block was
    /// handed on; [`Error::damaged_range`] gives the bytes to fetch again.
    #[error("payload {index} ({kind} {target}), block {block}, bytes {start}..{end} of the file: stored SHA-256 does not match the signed block index; those bytes are corrupt or were altered (fetch that range again)")]
    BlockMismatch {
        /// Position of the payload in the manifest.
        index: usize,
        /// Payload type, for the message.
        kind: String,
        /// Payload target.
        target: String,
        /// Block number within the payload, from 0.
        block: u64,
        /// File offset of the block's first byte.
        start: u64,
        /// File offset one past its last byte.
        end: u64,
    },
    /// The block index (format version 2) is malformed, too large, or does
    /// not match the signed manifest.
    #[error("block index: {0}")]
    BadBlockIndex(String),
}

fn describe_untrusted(
    valid: &[KeyId],
    threshold: &usize,
    signed_by: &[KeyId],
    trusted: &[KeyId],
) -> String {
    let list = |ids: &[KeyId]| {
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    format!(
        "package is not signed by enough trusted keys: {} valid trusted signature(s), {threshold} needed; signed by [{}], trusted keys are [{}]. Check the package came from your build system, or trust the signer's public key",
        valid.len(),
        list(signed_by),
        list(trusted)
    )
}

impl From<io::Error> for Error {
    /// Recovers a package error that travelled through `io::Read` as an
    /// `io::Error`, so callers see the precise cause, not "I/O error".
    fn from(error: io::Error) -> Self {
        if error.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(inner) = error.into_inner() {
                if let Ok(package_error) = inner.downcast::<Error>() {
                    return *package_error;
                }
            }
            // Unreachable in practice: the check above saw an `Error` inside.
            return Error::Io(io::Error::other("package error lost while unwrapping"));
        }
        Error::Io(error)
    }
}

impl Error {
    /// The file bytes found damaged, when the error names them: one block
    /// (format version 2) or a whole payload (version 1). A downloader may
    /// fetch exactly that range again and resume from its start.
    pub fn damaged_range(&self) -> Option<std::ops::Range<u64>> {
        match self {
            Error::BlockMismatch { start, end, .. } | Error::DigestMismatch { start, end, .. } => {
                Some(*start..*end)
            }
            _ => None,
        }
    }

    /// Wraps this error so it can travel through `io::Read`.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            Error::Io(io) => io,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
