//! Signing and checking a device's authentication request.
//!
//! The device signs the exact JSON body bytes with its Ed25519 key and sends
//! the signature, base64, in the `x-airlift-signature` header. The server
//! checks the signature against the public key in the body, then the
//! timestamp and the nonce (replays).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// How far a request's timestamp may be from the server's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The public key in the request is not an Ed25519 SPKI PEM key.
    #[error("public_key is not an Ed25519 public key in PEM form: {0}")]
    PublicKey(String),
    /// The signature header is not base64 of 64 bytes.
    #[error("the x-airlift-signature header must be base64 of a 64-byte Ed25519 signature")]
    SignatureEncoding,
    /// The signature does not verify against the body and key.
    #[error("the request signature does not verify against its public key")]
    BadSignature,
}

/// Signs `body` with `key`; the result goes into the signature header.
pub fn sign_body(key: &SigningKey, body: &[u8]) -> String {
    STANDARD.encode(key.sign(body).to_bytes())
}

/// Parses the PEM public key in a request.
pub fn parse_public_key(pem: &str) -> Result<VerifyingKey, AuthError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| AuthError::PublicKey(e.to_string()))
}

/// A device public key as PEM, for [`crate::device::AuthRequest::public_key`].
pub fn public_key_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(Default::default())
        .unwrap_or_default()
}

/// Checks `signature_b64` over `body` against `key`, strictly.
pub fn verify_body(key: &VerifyingKey, body: &[u8], signature_b64: &str) -> Result<(), AuthError> {
    let bytes = STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| AuthError::SignatureEncoding)?;
    let bytes: [u8; 64] = bytes.try_into().map_err(|_| AuthError::SignatureEncoding)?;
    let signature = ed25519_dalek::Signature::from_bytes(&bytes);
    key.verify_strict(body, &signature)
        .map_err(|_| AuthError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key() -> SigningKey {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).expect("random");
        SigningKey::from_bytes(&seed)
    }

    #[test]
    fn signed_body_verifies_and_tampering_fails() {
        let key = new_key();
        let body = br#"{"nonce":"abc"}"#;
        let signature = sign_body(&key, body);
        let public = parse_public_key(&public_key_pem(&key.verifying_key())).expect("pem");
        assert_eq!(verify_body(&public, body, &signature), Ok(()));
        assert_eq!(
            verify_body(&public, br#"{"nonce":"abd"}"#, &signature),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_body(&public, body, "bm9wZQ=="),
            Err(AuthError::SignatureEncoding)
        );
        let other = new_key();
        assert_eq!(
            verify_body(&other.verifying_key(), body, &signature),
            Err(AuthError::BadSignature)
        );
    }
}
