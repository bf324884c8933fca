//! Shared pieces of the `airlift-package` fuzz targets: a fixed signing key,
//! a fixed age identity, and re-signing of arbitrary manifest bytes so that
//! the fuzzer can reach the payload and decoder code behind the signature
//! check.
//!
//! Everything here is deterministic, so a crashing input reproduces on any
//! machine and the seed corpus (see `examples/seeds.rs`) stays valid.

use airlift_package::encryption::{Identity, Recipient};
use airlift_package::{
    Limits, PackageReader, PublicKey, Sha256Digest, SigningKey, TrustSet, HEADER_LEN,
    SIGNATURE_ENTRY_LEN,
};
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
///
/// Blocks may be as small as 64 bytes, so that the small seed packages of
/// the block-index fuzzer have many blocks each.
pub fn payload_limits() -> Limits {
    Limits {
        max_payload_size: 16 * 1024 * 1024,
        min_block_size: SMALL_BLOCK_SIZE / 4,
        ..Limits::default()
    }
}

/// The block size of the block-index fuzzer's seeds.
pub const SMALL_BLOCK_SIZE: u32 = 256;

/// If `data` opens as a format version 2 package whose manifest parses,
/// returns it with the manifest's `block_index` digest set to the SHA-256
/// of the index bytes the file carries, signed by `key` alone. Mutated
/// index and payload bytes then get past the index's own check and reach
/// the per-block checks. Otherwise `None`.
pub fn recommit(data: &[u8], key: &SigningKey) -> Option<Vec<u8>> {
    let reader = PackageReader::open(data, payload_limits()).ok()?;
    if reader.format_version() < 2 {
        return None;
    }
    let index = reader.block_index_bytes();
    let mut manifest = reader.manifest_unverified().ok()?;
    manifest.block_index.as_mut()?.sha256 = Sha256Digest::of(index);
    let json = manifest.to_json();
    let json_len = u32::try_from(json.len()).ok()?;
    let head_len = usize::try_from(reader.payload_offset()).ok()?;
    // The index length field (4 bytes) and the index end the head.
    let index_start = head_len.checked_sub(4 + index.len())?;
    let signature = key.sign(&json);
    let mut out = Vec::with_capacity(data.len() + json.len());
    out.extend_from_slice(&data[..10]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&json_len.to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(signature.key_id.as_bytes());
    out.extend_from_slice(&signature.signature);
    out.extend_from_slice(data.get(index_start..)?);
    Some(out)
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
        encode_payload, Compression, EncodeOptions, Error, Manifest, PackageReader, PackageWriter,
        PayloadSpec, PayloadType, SignedManifest, VerifiedPackage,
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

    #[test]
    fn recommitted_packages_verify_with_an_altered_index() {
        let options = EncodeOptions {
            zstd_workers: 0,
            block_size: SMALL_BLOCK_SIZE,
            ..EncodeOptions::default()
        };
        let content = b"block bytes ".repeat(100);
        let mut stored = Vec::new();
        let entry = encode_payload(
            &content[..],
            &PayloadSpec::new(PayloadType::File, "/etc/x", Compression::None),
            &options,
            &mut stored,
        )
        .expect("encodes");
        let manifest = Manifest::builder("t", "1.0.0".parse().expect("semver"), ["b"])
            .payload(entry)
            .build();
        let signed =
            SignedManifest::sign(&manifest, &[&signing_key()], &payload_limits()).expect("signs");
        let mut file = Vec::new();
        let mut writer = PackageWriter::new(&mut file, &signed).expect("writes");
        writer.write_payload(&stored[..]).expect("matches");
        writer.finish().expect("complete");
        let head_len = PackageReader::open(&file[..], payload_limits())
            .expect("opens")
            .payload_offset() as usize;

        // Damage the second of the index's five digests (1200 bytes in
        // 256-byte blocks): the signed digest no longer matches, until the
        // manifest is recommitted to the altered index.
        let mut altered = file.clone();
        altered[head_len - 4 * 32] ^= 1;
        fn open(bytes: &[u8]) -> Result<VerifiedPackage<&[u8]>, Error> {
            PackageReader::open(bytes, payload_limits())
                .expect("opens")
                .verify(&trust_set())
        }
        assert!(open(&altered).is_err());
        let recommitted = recommit(&altered, &signing_key()).expect("a version 2 package");
        let mut package = open(&recommitted).expect("verifies after recommitting");
        let mut out = Vec::new();
        let error = package
            .next_payload()
            .expect("readable")
            .expect("one payload")
            .read_to_end(&mut out)
            .expect_err("block 1 no longer matches its digest");
        assert!(error.to_string().contains("block 1,"), "{error}");
        assert_eq!(out.len(), SMALL_BLOCK_SIZE as usize, "block 0 only");
    }
}
