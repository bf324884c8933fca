//! The Airlift update-package format.
//!
//! An Airlift package is one file, readable front to back: a fixed header, the
//! manifest (JSON) and its Ed25519 signatures, then each payload's bytes in
//! manifest order. `docs/package-format.md` at the repository root gives the
//! byte layout; this crate is its reference implementation.
//!
//! This crate owns the manifest types, signing and streaming verification,
//! payload encoding (zstd, age) and the compatibility rules. It must not know
//! about files, sockets, async runtimes, HTTP or databases: everything here
//! takes `Read`/`Write` and returns values, so the server, the agent and the
//! fuzzer share one implementation.
//!
//! The reader hands out no payload byte before the manifest's signatures
//! verify, and a payload reader returns an error instead of end-of-file when
//! the bytes it streamed do not match the signed digest. Packages of format
//! version 2 (what the writer makes by default) go further: the signed
//! manifest commits to a digest of every block of every payload, and no byte
//! of a block is handed out before the whole block matched:
//!
//! ```
//! use airlift_package::{
//!     encode_payload, Compression, EncodeOptions, Limits, Manifest, PackageReader,
//!     PackageWriter, PayloadSpec, PayloadType, SignedManifest, SigningKey, TrustSet,
//! };
//! use std::io::Read;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = SigningKey::generate()?;
//! let content = b"hello, device".to_vec();
//! let spec = PayloadSpec::new(PayloadType::File, "/etc/motd", Compression::Zstd);
//! let mut stored = Vec::new();
//! let entry = encode_payload(&content[..], &spec, &EncodeOptions::default(), &mut stored)?;
//!
//! let manifest = Manifest::builder("motd", "1.0.0".parse()?, ["raspberrypi4"]).payload(entry).build();
//! let signed = SignedManifest::sign(&manifest, &[&key], &Limits::default())?;
//! let mut file = Vec::new();
//! let mut writer = PackageWriter::new(&mut file, &signed)?;
//! writer.write_payload(&stored[..])?;
//! writer.finish()?;
//!
//! let trust = TrustSet::new([key.public_key()], 1)?;
//! let mut package = PackageReader::open(&file[..], Limits::default())?.verify(&trust)?;
//! let mut payload = package.next_payload()?.expect("one payload");
//! let mut installed = Vec::new();
//! payload.decoded(&[])?.read_to_end(&mut installed)?;
//! assert_eq!(installed, content);
//! package.finish()?;
//! # Ok(())
//! # }
//! ```

mod blocks;
mod compat;
mod digest;
mod error;
mod format;
mod keys;
mod limits;
mod manifest;
mod reader;
mod writer;

pub use blocks::{block_size_for, BlockIndexRef, BLOCK_DIGEST_LEN, DEFAULT_BLOCK_SIZE};
pub use compat::{Compatibility, DeviceFacts, Incompatibility};
pub use digest::{Sha256Digest, Sha256Hasher};
pub use error::Error;
pub use format::{HEADER_LEN, MAGIC, SIGNATURE_ENTRY_LEN};
pub use keys::{KeyError, KeyId, ManifestSignature, PublicKey, SigningKey, TrustSet};
pub use limits::Limits;
pub use manifest::{
    Blob, Compatible, Compression, Encryption, Manifest, ManifestBuilder, ManifestError,
    PayloadEntry, PayloadType, FORMAT_VERSION, MIN_FORMAT_VERSION,
};
pub use reader::{DecodedPayload, PackageReader, PayloadReader, Verified, VerifiedPackage};
pub use writer::{encode_payload, EncodeOptions, PackageWriter, PayloadSpec, SignedManifest};

/// The age identity and recipient types used for payload encryption, re-exported
/// so that callers need not depend on `age` themselves.
pub mod encryption {
    pub use age::x25519::{Identity, Recipient};
    pub use age::Identity as IdentityTrait;
}
