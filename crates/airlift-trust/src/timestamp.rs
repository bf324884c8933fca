//! The timestamp document: the server's online key vouching, for a short
//! while, that an offer is current — which root it was made under, the
//! latest security version the server knows, and the digest of what it
//! covers. A device refuses a timestamp that expired or is older than one
//! it has seen, so a replayed or frozen offer is not acted on.

use crate::envelope::Envelope;
use crate::error::TrustError;
use crate::limits::MAX_TIMESTAMP_BYTES;
use crate::root::{RoleName, Root};
use airlift_package::{Sha256Digest, SigningKey};
use serde::{Deserialize, Serialize};

/// The `type` of a timestamp document.
pub const TIMESTAMP_TYPE: &str = "airlift-timestamp";

/// The signed part of a timestamp, as written in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampDocument {
    /// Always `airlift-timestamp`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Never lower than one the device has seen (the server uses the time
    /// of signing in milliseconds).
    pub version: u64,
    /// Unix seconds after which it is refused.
    pub expires: u64,
    /// The root version whose timestamp keys signed it.
    pub root_version: u64,
    /// The highest security version of any package the server holds.
    pub security_version: u64,
    /// SHA-256 of what it covers (an offer's signed package head).
    pub covers: Sha256Digest,
}

impl TimestampDocument {
    /// Signs this document with the online key.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, TrustError> {
        let text =
            serde_json::to_string(self).map_err(|e| TrustError::malformed("timestamp", e))?;
        let mut envelope = Envelope::new(text)?;
        envelope.sign(key);
        Ok(envelope.to_bytes())
    }
}

/// A timestamp whose signatures, expiry, order and cover were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp(TimestampDocument);

/// What a device remembers and knows when it checks a timestamp.
#[derive(Debug, Clone, Copy)]
pub struct FreshnessCheck<'a> {
    /// The root the device trusts now.
    pub root: &'a Root,
    /// Unix seconds on the device's clock.
    pub now: u64,
    /// The highest timestamp version the device has accepted before.
    pub last_seen: Option<u64>,
    /// The digest of what came with the timestamp.
    pub covered: &'a Sha256Digest,
}

impl Timestamp {
    /// Reads the root version a timestamp names without trusting it, so a
    /// device knows to fetch newer roots before it verifies.
    pub fn peek_root_version(bytes: &[u8]) -> Result<u64, TrustError> {
        Ok(parse(bytes)?.1.root_version)
    }

    /// Verifies a timestamp: a threshold of the root's timestamp keys, not
    /// expired, not older than the last one seen, covering exactly `covered`.
    pub fn verify(bytes: &[u8], check: FreshnessCheck<'_>) -> Result<Self, TrustError> {
        let (envelope, document) = parse(bytes)?;
        let root_version = check.root.version();
        if document.root_version > root_version {
            return Err(TrustError::NeedsNewerRoot {
                needed: document.root_version,
                have: root_version,
            });
        }
        check
            .root
            .check_threshold(&envelope, RoleName::Timestamp, "the timestamp")?;
        if check.now >= document.expires {
            return Err(TrustError::Expired {
                what: format!("timestamp version {}", document.version),
                expires: document.expires,
                now: check.now,
            });
        }
        if let Some(seen) = check.last_seen {
            if document.version < seen {
                return Err(TrustError::Rollback {
                    seen,
                    got: document.version,
                });
            }
        }
        // Sha256Digest compares in constant time.
        if document.covers != *check.covered {
            return Err(TrustError::WrongCover {
                covered: document.covers.to_string(),
                actual: check.covered.to_string(),
            });
        }
        Ok(Self(document))
    }

    /// The verified document.
    pub fn document(&self) -> &TimestampDocument {
        &self.0
    }

    /// The version to remember as the last seen.
    pub fn version(&self) -> u64 {
        self.0.version
    }

    /// Refuses a package whose security version is above what the server
    /// vouches for: a leaked release key alone cannot fast-forward a device.
    pub fn admits_security_version(&self, package: u64) -> Result<(), TrustError> {
        if package > self.0.security_version {
            return Err(TrustError::SecurityVersionAhead {
                package,
                latest: self.0.security_version,
            });
        }
        Ok(())
    }
}

fn parse(bytes: &[u8]) -> Result<(Envelope, TimestampDocument), TrustError> {
    let envelope = Envelope::parse(bytes, "timestamp", MAX_TIMESTAMP_BYTES)?;
    let document: TimestampDocument = serde_json::from_slice(envelope.signed_bytes())
        .map_err(|e| TrustError::malformed("timestamp", e))?;
    if document.kind != TIMESTAMP_TYPE {
        return Err(TrustError::malformed(
            "timestamp",
            format!("type is {:?}, not {TIMESTAMP_TYPE:?}", document.kind),
        ));
    }
    Ok((envelope, document))
}
