//! Signed update packages for tests, benchmarks and the simulator: a
//! release key with its public key file ([`Signer`]), and a builder
//! ([`PackageBuilder`]) that encodes payloads, signs the manifest and
//! writes the package with `airlift-package`'s own writer — or, for tests
//! of what a hostile build server could send, past its checks
//! ([`PackageBuilder::build_hostile`]).
//!
//! ```
//! use airlift_package::Compression;
//! use airlift_testkit::packages::{image, Signer};
//!
//! let signer = Signer::new();
//! let package = signer
//!     .package("rootfs", "2.0.0")
//!     .device_type("pi4")
//!     .image(&image("2.0.0", 4096), Compression::Zstd)
//!     .build();
//! assert!(package.starts_with(b"AIRLIFT"));
//! ```

use airlift_package::encryption::Recipient;
use airlift_package::{
    encode_payload, Compression, EncodeOptions, Limits, Manifest, PackageWriter, PayloadEntry,
    PayloadSpec, PayloadType, SignedManifest, SigningKey,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The device type of a package whose builder was given none.
pub const DEVICE_TYPE: &str = "test-board";

/// `size` bytes of image for `version`: the same for the same arguments,
/// different all through for another version (so that a resumed download
/// that mixed two up cannot pass a digest by luck), and not compressible
/// to nothing.
pub fn image(version: &str, size: usize) -> Vec<u8> {
    let seed = version
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    (0..size as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Why a package could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The version is not semver.
    #[error("not a version: {0}")]
    Version(String),
    /// Encoding, signing or writing failed.
    #[error(transparent)]
    Package(#[from] airlift_package::Error),
}

/// A release signing key and its public key in a PEM file of its own
/// (what `airlift-server --trust` and an agent's `trusted_keys` read),
/// deleted when this is dropped.
#[derive(Debug)]
pub struct Signer {
    key: SigningKey,
    public: PathBuf,
    _dir: TempDir,
}

impl Signer {
    /// A new key.
    ///
    /// # Panics
    /// When no key or file can be made: this is test support.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a directory for the public key");
        let key = SigningKey::generate().expect("a signing key");
        let public = dir.path().join("release.pub");
        std::fs::write(&public, key.public_key().to_pem().expect("PEM")).expect("the public key");
        Self {
            key,
            public,
            _dir: dir,
        }
    }

    /// The private key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key's PEM file.
    pub fn public_key_file(&self) -> &Path {
        &self.public
    }

    /// A package named `name` at `version`, signed by this key.
    pub fn package(&self, name: &str, version: &str) -> PackageBuilder<'_> {
        PackageBuilder::new(name, version).signed_by(&self.key)
    }
}

impl Default for Signer {
    fn default() -> Self {
        Self::new()
    }
}

/// A package to build: its manifest's fields, its payloads, its signers.
#[derive(Debug, Clone)]
pub struct PackageBuilder<'k> {
    name: String,
    version: String,
    device_types: Vec<String>,
    security_version: u64,
    payloads: Vec<Payload>,
    keys: Vec<&'k SigningKey>,
    block_size: Option<u32>,
    hardware_revisions: Vec<String>,
    requires: Vec<(String, semver::VersionReq)>,
}

/// One payload to encode: what it is, its content, and whom it is
/// encrypted to (no one: not encrypted).
#[derive(Clone)]
struct Payload {
    spec: PayloadSpec,
    content: Vec<u8>,
    recipients: Vec<Recipient>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("spec", &self.spec)
            .field("content", &self.content.len())
            .field("recipients", &self.recipients.len())
            .finish()
    }
}

impl<'k> PackageBuilder<'k> {
    /// A package named `name` at `version`, with no payload and no signer
    /// yet.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            device_types: Vec::new(),
            security_version: 0,
            payloads: Vec::new(),
            keys: Vec::new(),
            block_size: None,
            hardware_revisions: Vec::new(),
            requires: Vec::new(),
        }
    }

    /// The block size of its block index (the package format's default
    /// unless set): an agent verifies, writes and checkpoints a download
    /// a block at a time, so a test that cuts a download short uses small
    /// blocks to have checkpoints inside a small image.
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.block_size = Some(block_size);
        self
    }

    /// One more signature, by `key`.
    pub fn signed_by(mut self, key: &'k SigningKey) -> Self {
        self.keys.push(key);
        self
    }

    /// One more device type it is for ([`DEVICE_TYPE`] if none is given).
    pub fn device_type(mut self, device_type: &str) -> Self {
        self.device_types.push(device_type.to_owned());
        self
    }

    /// One more hardware revision it fits (any, if none is given).
    pub fn hardware_revision(mut self, revision: &str) -> Self {
        self.hardware_revisions.push(revision.to_owned());
        self
    }

    /// Software the device must already run: `name` at a version
    /// matching `requirement`.
    pub fn requires(mut self, name: &str, requirement: semver::VersionReq) -> Self {
        self.requires.push((name.to_owned(), requirement));
        self
    }

    /// Its security version (0 unless set).
    pub fn security_version(mut self, security_version: u64) -> Self {
        self.security_version = security_version;
        self
    }

    /// One more payload: `content`, to be installed as `spec` says.
    pub fn payload(mut self, spec: PayloadSpec, content: &[u8]) -> Self {
        self.payloads.push(Payload {
            spec,
            content: content.to_vec(),
            recipients: Vec::new(),
        });
        self
    }

    /// One more payload, encrypted (age) to `recipient`.
    pub fn encrypted_payload(
        mut self,
        spec: PayloadSpec,
        content: &[u8],
        recipient: Recipient,
    ) -> Self {
        self.payloads.push(Payload {
            spec,
            content: content.to_vec(),
            recipients: vec![recipient],
        });
        self
    }

    /// One more payload: an image for the `rootfs` slot.
    pub fn image(self, content: &[u8], compression: Compression) -> Self {
        self.payload(
            PayloadSpec::new(PayloadType::Image, "rootfs", compression),
            content,
        )
    }

    /// The package file.
    ///
    /// # Panics
    /// When it cannot be built (a version that is not semver, …): this is
    /// test support; see [`try_build`](Self::try_build).
    pub fn build(&self) -> Vec<u8> {
        self.try_build()
            .unwrap_or_else(|e| panic!("building {} {}: {e}", self.name, self.version))
    }

    /// The package file, or why it cannot be built.
    pub fn try_build(&self) -> Result<Vec<u8>, PackageError> {
        self.write_to(Vec::new())
    }

    /// Writes the package into `out` (a file, for a package too large to
    /// hold twice) and gives `out` back. The encoded payloads are held in
    /// memory until the signed manifest, which comes first, is written.
    pub fn write_to<W: Write>(&self, out: W) -> Result<W, PackageError> {
        let (signed, stored) = self.sign(|_| {})?;
        let mut writer = PackageWriter::new(out, &signed)?;
        for payload in &stored {
            writer.write_payload(&payload[..])?;
        }
        Ok(writer.finish()?)
    }

    /// What a hostile build server could send: the manifest signed after
    /// `edit` changed its payload entries, followed by the real stored
    /// bytes — written past the writer's checks, which would refuse the
    /// mismatch.
    ///
    /// # Panics
    /// When it cannot be built: this is test support.
    pub fn build_hostile(&self, edit: impl FnOnce(&mut [PayloadEntry])) -> Vec<u8> {
        let built = self.sign(edit).and_then(|(signed, stored)| {
            let mut file = Vec::new();
            // Writes the header, manifest and signatures only.
            PackageWriter::new(&mut file, &signed)?;
            stored.iter().for_each(|p| file.extend_from_slice(p));
            Ok(file)
        });
        built.unwrap_or_else(|e| panic!("building {} {}: {e}", self.name, self.version))
    }

    /// Encodes the payloads, lets `edit` change their entries, and signs
    /// the manifest; returns it with the stored payload bytes.
    fn sign(
        &self,
        edit: impl FnOnce(&mut [PayloadEntry]),
    ) -> Result<(SignedManifest, Vec<Vec<u8>>), PackageError> {
        let version: semver::Version = self
            .version
            .parse()
            .map_err(|e| PackageError::Version(format!("{:?}: {e}", self.version)))?;
        let mut entries = Vec::new();
        let mut stored = Vec::new();
        for payload in &self.payloads {
            let defaults = EncodeOptions::default();
            let options = EncodeOptions {
                recipients: payload.recipients.clone(),
                block_size: self.block_size.unwrap_or(defaults.block_size),
                ..defaults
            };
            let mut bytes = Vec::new();
            entries.push(encode_payload(
                &payload.content[..],
                &payload.spec,
                &options,
                &mut bytes,
            )?);
            stored.push(bytes);
        }
        edit(&mut entries);
        let device_types = if self.device_types.is_empty() {
            vec![DEVICE_TYPE.to_owned()]
        } else {
            self.device_types.clone()
        };
        let mut builder = Manifest::builder(&self.name, version, device_types)
            .security_version(self.security_version);
        for revision in &self.hardware_revisions {
            builder = builder.hardware_revision(revision.clone());
        }
        for (name, requirement) in &self.requires {
            builder = builder.requires(name.clone(), requirement.clone());
        }
        let manifest = entries
            .into_iter()
            .fold(builder, |builder, entry| builder.payload(entry));
        let signed = SignedManifest::sign(&manifest.build(), &self.keys, &Limits::default())?;
        Ok((signed, stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_package::{PackageReader, TrustSet};

    #[test]
    fn a_package_verifies_against_its_signer_and_carries_what_it_was_given() {
        let signer = Signer::new();
        let content = image("2.0.0", 10_000);
        let file = signer
            .package("rootfs", "2.0.0")
            .security_version(3)
            .image(&content, Compression::Zstd)
            .payload(
                PayloadSpec::new(PayloadType::File, "/etc/app.conf", Compression::None),
                b"x = 1\n",
            )
            .build();
        let trust = TrustSet::new([signer.key().public_key()], 1).expect("trust");
        let reader = PackageReader::open(&file[..], Limits::default()).expect("opens");
        let verified = reader.verify(&trust).expect("verifies");
        let manifest = verified.manifest();
        assert_eq!(manifest.security_version, 3);
        assert_eq!(
            manifest.compatible.device_types,
            vec![DEVICE_TYPE.to_owned()]
        );
        assert_eq!(manifest.payloads.len(), 2);
        assert!(signer.public_key_file().exists());
    }

    #[test]
    fn a_hostile_package_is_signed_over_the_edited_entries() {
        let signer = Signer::new();
        let honest = signer
            .package("rootfs", "1.0.0")
            .image(&image("1.0.0", 5000), Compression::Zstd);
        let file = honest.build_hostile(|entries| entries[0].installed.size += 1);
        let reader = PackageReader::open(&file[..], Limits::default()).expect("opens");
        let manifest = reader.manifest_unverified().expect("manifest");
        assert_eq!(manifest.payloads[0].installed.size, 5001);
        let stored = manifest.payloads[0].stored.size as usize;
        assert_eq!(file.len(), reader.payload_offset() as usize + stored);
    }

    #[test]
    fn an_encrypted_payload_decodes_with_its_identity_only() {
        use airlift_package::encryption::{Identity, IdentityTrait};
        use std::io::Read;
        let signer = Signer::new();
        let identity = Identity::generate();
        let spec = PayloadSpec::new(PayloadType::File, "/etc/secret", Compression::Zstd);
        let file = signer
            .package("app", "1.0.0")
            .encrypted_payload(spec, b"the secret", identity.to_public())
            .write_to(Vec::new())
            .expect("builds");
        assert!(!file.windows(10).any(|w| w == b"the secret"), "encrypted");
        let trust = TrustSet::new([signer.key().public_key()], 1).expect("trust");
        let open = || {
            PackageReader::open(&file[..], Limits::default())
                .expect("opens")
                .verify(&trust)
                .expect("verifies")
        };
        let mut package = open();
        let payload = package.next_payload().expect("read").expect("a payload");
        let identities: Vec<&dyn IdentityTrait> = vec![&identity];
        let mut content = Vec::new();
        payload
            .decoded(&identities)
            .expect("decrypts")
            .read_to_end(&mut content)
            .expect("reads");
        assert_eq!(content, b"the secret");
        let mut package = open();
        let payload = package.next_payload().expect("read").expect("a payload");
        assert!(payload.decoded(&[]).is_err(), "no identity, no content");
    }

    #[test]
    fn images_differ_by_version_and_repeat_by_arguments() {
        assert_eq!(image("1.0.0", 64), image("1.0.0", 64));
        assert_ne!(image("1.0.0", 64)[1..], image("1.0.1", 64)[1..]);
        assert_eq!(image("1.0.0", 0).len(), 0);
    }

    #[test]
    fn a_bad_version_is_an_error_not_a_panic() {
        let error = PackageBuilder::new("rootfs", "two")
            .try_build()
            .expect_err("not semver");
        assert!(matches!(error, PackageError::Version(_)), "{error}");
    }
}
