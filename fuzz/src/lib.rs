//! Shared pieces of the `airlift-package` fuzz targets: a fixed signing key,
//! a fixed age identity, and re-signing of arbitrary manifest bytes so that
//! the fuzzer can reach the payload and decoder code behind the signature
//! check.
//!
//! Everything here is deterministic, so a crashing input reproduces on any
//! machine and the seed corpus (see `examples/seeds.rs`) stays valid.

use airlift_package::encryption::{Identity, Recipient};
use airlift_package::{Limits, PublicKey, SigningKey, TrustSet, HEADER_LEN, SIGNATURE_ENTRY_LEN};
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};

/// The seed of the fuzzers' one signing key. Not a secret: it only signs
/// fuzz inputs.
pub const SIGNING_SEED: [u8; 32] = *b"airlift-fuzz-fixed-signing-seed!";

/// The fuzzers' age identity, generated once with `age` and written down.
/// Not a secret: it only decrypts fuzz inputs.
pub const AGE_IDENTITY: &str =
    "AGE-SECRET-KEY-1CHRYP2V8G0C0G8KZXV5E2VEN5A788JLV98UGFTT846V20UFZFZVQ4YQ59V";

/// The signing key made from [`SIGNING_SEED`]. The library only makes keys
/// at random or from PEM, so the PEM is built here.
pub fn signing_key() -> SigningKey {
    let pem = ed25519_dalek::SigningKey::from_bytes(&SIGNING_SEED)
        .to_pkcs8_pem(LineEnding::LF)
        .expect("a fixed Ed25519 key encodes as PKCS#8");
    SigningKey::from_pem(&pem).expect("the library reads the PKCS#8 PEM it is given")
}

/// The public half of [`signing_key`].
pub fn public_key() -> PublicKey {
    signing_key().public_key()
}

/// A trust set of [`public_key`] alone, threshold 1.
pub fn trust_set() -> TrustSet {
    TrustSet::new([public_key()], 1).expect("one key, threshold one")
}

/// The age identity from [`AGE_IDENTITY`].
pub fn identity() -> Identity {
    AGE_IDENTITY
        .parse()
        .expect("the hard-coded age identity parses")
}

/// The recipient matching [`identity`].
pub fn recipient() -> Recipient {
    identity().to_public()
}

/// Limits for the payload fuzzer: the defaults, except that a single payload
/// may declare at most 16 MiB, so that a tiny input cannot legitimately make
/// the decoder produce gigabytes (which the library allows up to the declared
/// size, and which would only slow the fuzzer down).
pub fn payload_limits() -> Limits {
    Limits {
        max_payload_size: 16 * 1024 * 1024,
        ..Limits::default()
    }
}

/// If `data` holds a header and a complete manifest, returns the package with
/// its signature block replaced by one valid signature of the manifest bytes
/// by [`signing_key`] (and the header's signature count set to 1); the bytes
/// after the old signature block follow unchanged. Otherwise `None`.
///
/// Only the length fields are read; magic and version are left as the
/// fuzzer wrote them, so the header checks still run.
pub fn resign(data: &[u8], key: &SigningKey) -> Option<Vec<u8>> {
    let header = data.get(..HEADER_LEN)?;
    let signature_count = usize::from(u16::from_be_bytes([header[10], header[11]]));
    let manifest_len = usize::try_from(u32::from_be_bytes([
        header[12], header[13], header[14], header[15],
    ]))
    .ok()?;
    let manifest_end = HEADER_LEN.checked_add(manifest_len)?;
    let manifest = data.get(HEADER_LEN..manifest_end)?;
    // A truncated signature block: re-sign and treat what is left as payloads.
    let payloads_start = manifest_end
        .saturating_add(signature_count.saturating_mul(SIGNATURE_ENTRY_LEN))
        .min(data.len());

    let signature = key.sign(manifest);
    let mut out = Vec::with_capacity(data.len() + SIGNATURE_ENTRY_LEN);
    out.extend_from_slice(&header[..10]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&header[12..]);
    out.extend_from_slice(manifest);
    out.extend_from_slice(signature.key_id.as_bytes());
    out.extend_from_slice(&signature.signature);
    out.extend_from_slice(&data[payloads_start..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_package::{
        encode_payload, Compression, EncodeOptions, Manifest, PackageReader, PackageWriter,
        PayloadSpec, PayloadType, SignedManifest,
    };
    use std::io::Read;

    #[test]
    fn fixed_key_and_identity_are_stable() {
        assert_eq!(signing_key().public_key(), public_key());
        assert_eq!(recipient().to_string(), identity().to_public().to_string());
    }

    #[test]
    fn resigned_packages_verify_and_decrypt() {
        let stranger = SigningKey::generate().expect("random key");
        let options = EncodeOptions {
            recipients: vec![recipient()],
            zstd_workers: 0,
            ..EncodeOptions::default()
        };
        let content = b"payload bytes".repeat(50);
        let mut stored = Vec::new();
        let entry = encode_payload(
            &content[..],
            &PayloadSpec::new(PayloadType::File, "/etc/x", Compression::Zstd),
            &options,
            &mut stored,
        )
        .expect("encodes");
        let manifest = Manifest::builder("t", "1.0.0".parse().expect("semver"), ["b"])
            .payload(entry)
            .build();
        // Two signatures by a key nobody trusts.
        let signed = SignedManifest::sign(&manifest, &[&stranger, &stranger], &Limits::default())
            .expect("signs");
        let mut file = Vec::new();
        let mut writer = PackageWriter::new(&mut file, &signed).expect("writes");
        writer.write_payload(&stored[..]).expect("matches");
        writer.finish().expect("complete");

        let trust = trust_set();
        assert!(PackageReader::open(&file[..], Limits::default())
            .expect("opens")
            .verify(&trust)
            .is_err());
        let resigned = resign(&file, &signing_key()).expect("header and manifest are there");
        assert_eq!(resigned.len(), file.len() - SIGNATURE_ENTRY_LEN);
        let mut package = PackageReader::open(&resigned[..], payload_limits())
            .expect("opens")
            .verify(&trust)
            .expect("verifies after re-signing");
        let identity = identity();
        let mut installed = Vec::new();
        package
            .next_payload()
            .expect("readable")
            .expect("one payload")
            .decoded(&[&identity])
            .expect("decodes")
            .read_to_end(&mut installed)
            .expect("reads");
        assert_eq!(installed, content);
        package.finish().expect("nothing left over");

        assert!(resign(&file[..20], &signing_key()).is_none());
    }
}
