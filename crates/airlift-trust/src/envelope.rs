//! The signed envelope every trust document travels in: the signed part as
//! it stands in the file, and signatures over exactly those bytes.
//!
//! ```json
//! {"signed":{"type":"airlift-root",...},"signatures":[{"key_id":"1f2e…","signature":"9a8b…"}]}
//! ```
//!
//! The signed part is kept as raw JSON text, never re-serialised, so a
//! verifier checks the very bytes the signer signed and no canonical form is
//! needed. Reformatting the signed part breaks its signatures.

use crate::error::TrustError;
use crate::limits::MAX_SIGNATURES;
use airlift_package::{KeyId, PublicKey, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};

/// One signature as written in the envelope: hex key id and hex signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// The signer's key id (16 hex digits, as the package format names keys).
    pub key_id: String,
    /// The 64-byte Ed25519 signature in hex.
    pub signature: String,
}

/// A signed document: the exact signed bytes and their signatures.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    signed: Box<RawValue>,
    signatures: Vec<SignatureEntry>,
}

/// A signature parsed from its entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParsedSignature {
    pub(crate) key_id: KeyId,
    pub(crate) signature: [u8; 64],
}

impl Envelope {
    /// Wraps a signed part (JSON text) with no signatures yet.
    pub fn new(signed_json: String) -> Result<Self, TrustError> {
        let signed =
            RawValue::from_string(signed_json).map_err(|e| TrustError::malformed("signed", e))?;
        Ok(Self {
            signed,
            signatures: Vec::new(),
        })
    }

    /// Parses an envelope of at most `limit` bytes.
    pub fn parse(bytes: &[u8], kind: &'static str, limit: usize) -> Result<Self, TrustError> {
        if bytes.len() > limit {
            return Err(TrustError::TooLarge {
                kind,
                len: bytes.len(),
                limit,
            });
        }
        let envelope: Self =
            serde_json::from_slice(bytes).map_err(|e| TrustError::malformed(kind, e))?;
        if envelope.signatures.len() > MAX_SIGNATURES {
            return Err(TrustError::TooMany {
                what: "signatures",
                count: envelope.signatures.len(),
                limit: MAX_SIGNATURES,
            });
        }
        Ok(envelope)
    }

    /// The exact bytes the signatures cover.
    pub fn signed_bytes(&self) -> &[u8] {
        self.signed.get().as_bytes()
    }

    /// The signatures as written.
    pub fn signatures(&self) -> &[SignatureEntry] {
        &self.signatures
    }

    /// Adds `key`'s signature over the signed bytes, replacing an earlier
    /// one by the same key.
    pub fn sign(&mut self, key: &SigningKey) {
        let signature = key.sign(self.signed_bytes());
        let key_id = signature.key_id.to_string();
        self.signatures.retain(|s| s.key_id != key_id);
        self.signatures.push(SignatureEntry {
            key_id,
            signature: hex::encode(signature.signature),
        });
    }

    /// The envelope as compact JSON, the signed part byte for byte.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and a RawValue cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn parsed_signatures(&self) -> Result<Vec<ParsedSignature>, TrustError> {
        self.signatures
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let key_id =
                    entry
                        .key_id
                        .parse::<KeyId>()
                        .map_err(|e| TrustError::BadSignatureEntry {
                            index,
                            reason: e.to_string(),
                        })?;
                let mut signature = [0u8; 64];
                hex::decode_to_slice(&entry.signature, &mut signature).map_err(|_| {
                    TrustError::BadSignatureEntry {
                        index,
                        reason: "the signature is not 128 hex digits".into(),
                    }
                })?;
                Ok(ParsedSignature { key_id, signature })
            })
            .collect()
    }

    /// The distinct keys among `keys` (the members of one role) whose
    /// signature verifies. A signature that does not verify is not counted,
    /// as in TUF: it neither helps nor vetoes.
    pub(crate) fn valid_signers(
        &self,
        keys: &BTreeMap<KeyId, PublicKey>,
        members: &BTreeSet<KeyId>,
    ) -> Result<BTreeSet<KeyId>, TrustError> {
        let message = self.signed_bytes();
        let mut valid = BTreeSet::new();
        for signature in self.parsed_signatures()? {
            if !members.contains(&signature.key_id) || valid.contains(&signature.key_id) {
                continue;
            }
            if let Some(key) = keys.get(&signature.key_id) {
                if key.verify(message, &signature.signature) {
                    valid.insert(signature.key_id);
                }
            }
        }
        Ok(valid)
    }
}
