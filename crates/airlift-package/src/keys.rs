//! Signing keys, key ids, and the trust set a device verifies against.

use crate::digest::Sha256Digest;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::Signer;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// A short, stable name for a public key: the first 8 bytes of the SHA-256 of
/// its 32 raw bytes, shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// Length of a key id on the wire.
    pub const LEN: usize = 8;

    /// Wraps raw key-id bytes.
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 8];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|_| KeyError::KeyId(s.chars().take(40).collect()))?;
        Ok(Self(bytes))
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why a key or trust set could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not a PKCS#8 PEM Ed25519 private key.
    #[error("not an Ed25519 private key in PKCS#8 PEM form (-----BEGIN PRIVATE KEY-----): {0}")]
    PrivatePem(String),
    /// The text is not an SPKI PEM Ed25519 public key.
    #[error("not an Ed25519 public key in PEM form (-----BEGIN PUBLIC KEY-----): {0}")]
    PublicPem(String),
    /// The operating system's random source failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
    /// A key id that is not 16 hex digits.
    #[error("a key id is 16 hex digits, got {0:?}")]
    KeyId(String),
    /// A threshold of zero, or more than the number of keys.
    #[error("a threshold of {threshold} cannot be met with {keys} trusted key(s); it must be between 1 and the number of keys")]
    Threshold {
        /// The threshold asked for.
        threshold: usize,
        /// Distinct keys in the set.
        keys: usize,
    },
}

/// An Ed25519 private key that signs manifests. Its `Debug` never shows the secret.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(key id {})", self.public_key().key_id())
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(Self(key))
    }

    /// Reads a PKCS#8 PEM private key (what `openssl genpkey -algorithm ed25519` writes).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        // Whitespace around the PEM (an editor's extra newline, CRLF) is no error.
        let pem = pem.trim();
        if !pem.starts_with("-----BEGIN PRIVATE KEY-----") {
            return Err(KeyError::PrivatePem(
                "the text does not start with -----BEGIN PRIVATE KEY-----".into(),
            ));
        }
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|e| KeyError::PrivatePem(e.to_string()))
    }

    /// The private key as PKCS#8 PEM, wiped from memory when dropped. Keep it secret.
    pub fn to_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.0
            .to_pkcs8_pem(Default::default())
            .map_err(|e| KeyError::PrivatePem(e.to_string()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message` (the exact manifest bytes).
    pub fn sign(&self, message: &[u8]) -> ManifestSignature {
        ManifestSignature {
            key_id: self.public_key().key_id(),
            signature: self.0.sign(message).to_bytes(),
        }
    }
}

/// An Ed25519 public key that verifies manifests.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    /// Reads an SPKI PEM public key (what `openssl pkey -pubout` writes).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        // Whitespace around the PEM (an editor's extra newline, CRLF) is no error.
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
            .map(Self)
            .map_err(|e| KeyError::PublicPem(e.to_string()))
    }

    /// The public key as SPKI PEM.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.0
            .to_public_key_pem(Default::default())
            .map_err(|e| KeyError::PublicPem(e.to_string()))
    }

    /// This key's id.
    pub fn key_id(&self) -> KeyId {
        let digest = Sha256Digest::of(self.0.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.as_bytes()[..8]);
        KeyId(id)
    }

    /// Strict Ed25519 verification (rejects malleable and small-order forms).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &signature).is_ok()
    }
}

/// One signature over the manifest bytes, tagged with the signer's key id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ManifestSignature {
    /// Which key made it.
    pub key_id: KeyId,
    /// The 64-byte Ed25519 signature.
    pub signature: [u8; 64],
}

impl fmt::Debug for ManifestSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestSignature(by {})", self.key_id)
    }
}

/// The keys a verifier trusts, and how many of them must have signed.
///
/// Rotating a key means shipping a trust set with both the old and the new
/// key for a while; a threshold above one means no single stolen key can sign
/// an update on its own.
#[derive(Debug, Clone)]
pub struct TrustSet {
    keys: BTreeMap<KeyId, PublicKey>,
    threshold: usize,
}

/// The outcome of checking signatures against a trust set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignatureCheck {
    /// Enough trusted keys signed; these ones did.
    Trusted(Vec<KeyId>),
    /// A signature names a trusted key but does not verify: the manifest or
    /// the signature was altered.
    Forged(KeyId),
    /// Fewer trusted signatures than the threshold.
    NotEnough {
        valid: Vec<KeyId>,
        signed_by: Vec<KeyId>,
    },
}

impl TrustSet {
    /// A trust set of `keys` needing `threshold` distinct valid signatures.
    pub fn new(
        keys: impl IntoIterator<Item = PublicKey>,
        threshold: usize,
    ) -> Result<Self, KeyError> {
        let keys: BTreeMap<KeyId, PublicKey> = keys.into_iter().map(|k| (k.key_id(), k)).collect();
        if threshold == 0 || threshold > keys.len() {
            return Err(KeyError::Threshold {
                threshold,
                keys: keys.len(),
            });
        }
        Ok(Self { keys, threshold })
    }

    /// How many distinct trusted signatures are needed.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The ids of the trusted keys.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    pub(crate) fn check(&self, message: &[u8], signatures: &[ManifestSignature]) -> SignatureCheck {
        let mut valid: Vec<KeyId> = Vec::new();
        for signature in signatures {
            let Some(key) = self.keys.get(&signature.key_id) else {
                continue;
            };
            if !key.verify(message, &signature.signature) {
                return SignatureCheck::Forged(signature.key_id);
            }
            if !valid.contains(&signature.key_id) {
                valid.push(signature.key_id);
            }
        }
        if valid.len() >= self.threshold {
            SignatureCheck::Trusted(valid)
        } else {
            SignatureCheck::NotEnough {
                valid,
                signed_by: signatures.iter().map(|s| s.key_id).collect(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let key = SigningKey::generate().expect("random");
        let again = SigningKey::from_pem(&key.to_pem().expect("pem")).expect("parses");
        assert_eq!(key.public_key(), again.public_key());
        let public = PublicKey::from_pem(&key.public_key().to_pem().expect("pem")).expect("parses");
        assert_eq!(public.key_id(), key.public_key().key_id());
        assert!(PublicKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = SigningKey::generate().expect("random");
        let pem = key.to_pem().expect("pem");
        let shown = format!("{key:?}");
        assert!(!shown.contains(pem.lines().nth(1).unwrap_or("x")));
        assert!(shown.contains(&key.public_key().key_id().to_string()));
    }

    #[test]
    fn threshold_counts_distinct_trusted_keys() {
        let (a, b, c) = (
            SigningKey::generate().expect("random"),
            SigningKey::generate().expect("random"),
            SigningKey::generate().expect("random"),
        );
        let trust = TrustSet::new([a.public_key(), b.public_key()], 2).expect("valid");
        let msg = b"manifest";
        assert!(matches!(
            trust.check(msg, &[a.sign(msg), a.sign(msg)]),
            SignatureCheck::NotEnough { .. }
        ));
        assert!(matches!(
            trust.check(msg, &[a.sign(msg), c.sign(msg)]),
            SignatureCheck::NotEnough { .. }
        ));
        assert!(matches!(
            trust.check(msg, &[c.sign(msg), b.sign(msg), a.sign(msg)]),
            SignatureCheck::Trusted(ids) if ids.len() == 2
        ));
        let mut forged = a.sign(msg);
        forged.signature[0] ^= 1;
        assert_eq!(
            trust.check(msg, &[forged, b.sign(msg)]),
            SignatureCheck::Forged(a.public_key().key_id())
        );
        assert!(matches!(
            trust.check(b"other", &[a.sign(msg), b.sign(msg)]),
            SignatureCheck::Forged(_)
        ));
    }

    #[test]
    fn impossible_thresholds_are_refused() {
        let a = SigningKey::generate().expect("random");
        assert!(TrustSet::new([a.public_key()], 0).is_err());
        assert!(TrustSet::new([a.public_key(), a.public_key()], 2).is_err());
        assert!(TrustSet::new([], 1).is_err());
    }

    #[test]
    fn keys_with_whitespace_around_their_pem_are_read() {
        let key = SigningKey::generate().expect("key");
        let public = key.public_key().to_pem().expect("pem");
        let padded = format!("\n  {}\n\n", public.replace('\n', "\r\n"));
        assert_eq!(
            PublicKey::from_pem(&padded)
                .expect("padded public key")
                .key_id(),
            key.public_key().key_id()
        );
        let private = format!("{}\n\n", key.to_pem().expect("pem").as_str());
        assert_eq!(
            SigningKey::from_pem(&private)
                .expect("padded private key")
                .public_key()
                .key_id(),
            key.public_key().key_id()
        );
    }
}
