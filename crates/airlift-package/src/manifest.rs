//! The manifest: what a package is, what it fits, and what it carries.

use crate::blocks::{self, BlockIndexRef, WriterBlocks};
use crate::digest::Sha256Digest;
use crate::limits::Limits;
use semver::{Version, VersionReq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The manifest and header format version this crate writes by default:
/// 2, whose signed manifest commits to every block of every payload.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this crate still reads and can write: 1, whose
/// payloads are checked only at their end (for devices with older agents).
pub const MIN_FORMAT_VERSION: u16 = 1;

/// Everything a package says about itself. Signed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MIN_FORMAT_VERSION`] to [`FORMAT_VERSION`]; must equal the header's.
    pub format_version: u16,
    /// The release's name, e.g. `rootfs` or `acme-gateway`.
    pub name: String,
    /// The release's version.
    pub version: Version,
    /// Free text for people; never interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Which devices may install it.
    pub compatible: Compatible,
    /// Software name → version that a device runs once this package is installed.
    #[serde(default)]
    pub provides: BTreeMap<String, Version>,
    /// Anti-rollback counter: a device refuses a package whose
    /// `security_version` is lower than the one it runs.
    pub security_version: u64,
    /// The payloads, in the order their bytes follow in the file.
    pub payloads: Vec<PayloadEntry>,
    /// Format version 2: the block size and SHA-256 of the block index that
    /// follows the signatures. Absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_index: Option<BlockIndexRef>,
}

/// The devices a package is meant for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compatible {
    /// Device types the package fits; at least one.
    pub device_types: Vec<String>,
    /// Hardware revisions it fits; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hardware_revisions: Vec<String>,
    /// Software the device must already run, with the versions it accepts
    /// (e.g. `bootloader: ">=2.0"`), for packages that build on it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requires: BTreeMap<String, VersionReq>,
}

/// One payload: where it goes and what its bytes must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadEntry {
    /// How the agent installs it.
    #[serde(rename = "type")]
    pub kind: PayloadType,
    /// Where it goes: a slot name for images, an absolute path for files and
    /// archives, the module's own argument for modules.
    pub target: String,
    /// The bytes as they are in the package (after compression and encryption).
    pub stored: Blob,
    /// The bytes as they are installed (before compression and encryption).
    pub installed: Blob,
    /// How the stored bytes were compressed.
    pub compression: Compression,
    /// How the stored bytes were encrypted.
    pub encryption: Encryption,
    /// The stored bytes' block digests, when this entry came from
    /// [`encode_payload`](crate::encode_payload): what the signer puts in a
    /// version 2 block index. Never in the JSON.
    #[serde(skip)]
    pub(crate) blocks: WriterBlocks,
}

/// A size and a digest of one byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blob {
    /// Length in bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: Sha256Digest,
}

/// How a payload is installed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PayloadType {
    /// A raw filesystem image written into the inactive A/B slot.
    Image,
    /// A single file, replaced atomically.
    File,
    /// A tar archive unpacked into a directory.
    Archive,
    /// Handed to the external update module of this name.
    Module(String),
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image => f.write_str("image"),
            Self::File => f.write_str("file"),
            Self::Archive => f.write_str("archive"),
            Self::Module(name) => write!(f, "module:{name}"),
        }
    }
}

impl FromStr for PayloadType {
    type Err = ManifestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "image" => Ok(Self::Image),
            "file" => Ok(Self::File),
            "archive" => Ok(Self::Archive),
            other => match other.strip_prefix("module:") {
                Some(name) if is_simple_name(name, 64) => Ok(Self::Module(name.to_owned())),
                _ => Err(ManifestError::PayloadType(other.chars().take(80).collect())),
            },
        }
    }
}

impl Serialize for PayloadType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PayloadType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How stored payload bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Stored as installed.
    None,
    /// One or more zstd frames.
    Zstd,
}

impl FromStr for Compression {
    type Err = ManifestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "zstd" => Ok(Self::Zstd),
            other => Err(ManifestError::Compression(other.to_owned())),
        }
    }
}

/// How stored payload bytes are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    /// Not encrypted.
    None,
    /// An age file (X25519 recipients).
    Age,
}

/// Why a manifest was refused. Each message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// `format_version` is not one this reader knows.
    #[error(
        "manifest format_version {found} is not supported (this reader knows {MIN_FORMAT_VERSION} to {FORMAT_VERSION})"
    )]
    FormatVersion {
        /// The version found.
        found: u16,
    },
    /// The package name is empty, too long or has characters outside `[A-Za-z0-9._+-]`.
    #[error("name {0:?} must be 1–128 characters of A–Z, a–z, 0–9, '.', '_', '+', '-'")]
    Name(String),
    /// No device types, or a malformed one.
    #[error("compatible.device_types: {0}")]
    DeviceTypes(String),
    /// A hardware revision is empty, too long or has odd characters.
    #[error("compatible.hardware_revisions: {0:?} must be 1–128 characters of A–Z, a–z, 0–9, '.', '_', '+', '-'")]
    HardwareRevision(String),
    /// The description is too long or has control characters.
    #[error("description must be at most 4096 bytes without control characters other than newline and tab")]
    Description,
    /// A provided or required software name is malformed.
    #[error("software name {0:?} must be 1–128 characters of A–Z, a–z, 0–9, '.', '_', '+', '-'")]
    SoftwareName(String),
    /// No payloads, or more than the limit.
    #[error("a package carries 1 to {limit} payloads, this one declares {count}")]
    PayloadCount {
        /// Payloads declared.
        count: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A payload type that is not `image`, `file`, `archive` or `module:<name>`.
    #[error("payload type {0:?} is not image, file, archive or module:<name>")]
    PayloadType(String),
    /// A compression that is not `none` or `zstd`.
    #[error("compression {0:?} is not none or zstd")]
    Compression(String),
    /// A target that is empty, too long, or escapes where it must stay.
    #[error("payload {index} target {target:?}: {reason}")]
    Target {
        /// Position of the payload in the manifest.
        index: usize,
        /// The target as given (shortened).
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A size beyond the limit, or sizes/digests that contradict each other.
    #[error("payload {index}: {reason}")]
    Sizes {
        /// Position of the payload in the manifest.
        index: usize,
        reason: String,
    },
    /// The JSON did not parse into a manifest.
    #[error("manifest is not valid: {0}")]
    Json(String),
    /// `block_index` is missing in version 2, present in version 1, or out
    /// of bounds.
    #[error("block_index: {0}")]
    BlockIndex(String),
}

impl Manifest {
    /// Starts a manifest for `name` `version` fitting the given device types.
    pub fn builder<I, S>(
        name: impl Into<String>,
        version: Version,
        device_types: I,
    ) -> ManifestBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let name = name.into();
        let mut provides = BTreeMap::new();
        provides.insert(name.clone(), version.clone());
        ManifestBuilder {
            manifest: Manifest {
                format_version: FORMAT_VERSION,
                name,
                version,
                description: None,
                compatible: Compatible {
                    device_types: device_types.into_iter().map(Into::into).collect(),
                    hardware_revisions: Vec::new(),
                    requires: BTreeMap::new(),
                },
                provides,
                security_version: 0,
                payloads: Vec::new(),
                block_index: None,
            },
        }
    }

    /// Parses manifest bytes and checks them against `limits`.
    pub fn from_json(bytes: &[u8], limits: &Limits) -> Result<Self, ManifestError> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        manifest.validate(limits)?;
        Ok(manifest)
    }

    /// The canonical bytes this crate signs: compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs, strings and maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Sum of all stored payload sizes: the bytes that follow the signatures.
    pub fn stored_len(&self) -> u64 {
        self.payloads.iter().map(|p| p.stored.size).sum()
    }

    /// Checks every rule a well-formed manifest obeys.
    pub fn validate(&self, limits: &Limits) -> Result<(), ManifestError> {
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&self.format_version) {
            return Err(ManifestError::FormatVersion {
                found: self.format_version,
            });
        }
        if !is_simple_name(&self.name, 128) {
            return Err(ManifestError::Name(shorten(&self.name)));
        }
        if self.compatible.device_types.is_empty() {
            return Err(ManifestError::DeviceTypes(
                "at least one device type is required".into(),
            ));
        }
        for device_type in &self.compatible.device_types {
            if !is_simple_name(device_type, 128) {
                return Err(ManifestError::DeviceTypes(format!(
                    "{:?} must be 1–128 characters of A–Z, a–z, 0–9, '.', '_', '+', '-'",
                    shorten(device_type)
                )));
            }
        }
        for revision in &self.compatible.hardware_revisions {
            if !is_simple_name(revision, 128) {
                return Err(ManifestError::HardwareRevision(shorten(revision)));
            }
        }
        if let Some(description) = &self.description {
            if description.len() > 4096
                || description
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                return Err(ManifestError::Description);
            }
        }
        for name in self.provides.keys().chain(self.compatible.requires.keys()) {
            if !is_simple_name(name, 128) {
                return Err(ManifestError::SoftwareName(shorten(name)));
            }
        }
        let count = self.payloads.len();
        if count == 0 || count > limits.max_payloads {
            return Err(ManifestError::PayloadCount {
                count,
                limit: limits.max_payloads,
            });
        }
        let mut total: u64 = 0;
        for (index, payload) in self.payloads.iter().enumerate() {
            payload.validate(index, limits)?;
            total = total
                .checked_add(payload.stored.size)
                .ok_or_else(|| ManifestError::Sizes {
                    index,
                    reason: "stored sizes add up to more than 2^64 bytes".into(),
                })?;
        }
        self.validate_block_index(limits)
    }

    fn validate_block_index(&self, limits: &Limits) -> Result<(), ManifestError> {
        let reference = match (self.format_version, &self.block_index) {
            (1, None) => return Ok(()),
            (1, Some(_)) => {
                return Err(ManifestError::BlockIndex(
                    "format version 1 has no block index".into(),
                ))
            }
            (_, None) => {
                return Err(ManifestError::BlockIndex(
                    "format version 2 needs one: encode every payload with encode_payload (it records the blocks), or build format version 1".into(),
                ))
            }
            (_, Some(reference)) => reference,
        };
        if !blocks::block_size_allowed(reference.block_size, limits) {
            return Err(ManifestError::BlockIndex(format!(
                "block size {} is not a power of two from {} to {} bytes",
                reference.block_size, limits.min_block_size, limits.max_block_size
            )));
        }
        match blocks::index_len(&self.payloads, reference.block_size) {
            Some(len) if len <= u64::from(limits.max_block_index_len) => Ok(()),
            _ => Err(ManifestError::BlockIndex(format!(
                "the payloads need more than {} bytes of index at {} bytes a block; use larger blocks",
                limits.max_block_index_len, reference.block_size
            ))),
        }
    }
}

impl PayloadEntry {
    /// An entry made by hand (most come from
    /// [`encode_payload`](crate::encode_payload)). It carries no block
    /// digests, so a version 2 package can only hold it if it is empty.
    pub fn new(
        kind: PayloadType,
        target: impl Into<String>,
        stored: Blob,
        installed: Blob,
        compression: Compression,
        encryption: Encryption,
    ) -> Self {
        Self {
            kind,
            target: target.into(),
            stored,
            installed,
            compression,
            encryption,
            blocks: WriterBlocks::default(),
        }
    }

    fn validate(&self, index: usize, limits: &Limits) -> Result<(), ManifestError> {
        let target_error = |reason| ManifestError::Target {
            index,
            target: shorten(&self.target),
            reason,
        };
        if self.target.is_empty() {
            return Err(target_error("is empty"));
        }
        if self.target.len() > limits.max_target_len {
            return Err(target_error("is longer than the limit"));
        }
        if self.target.chars().any(char::is_control) {
            return Err(target_error("contains control characters"));
        }
        match &self.kind {
            PayloadType::Image => {
                if !is_simple_name(&self.target, 64) {
                    return Err(target_error(
                        "an image target is a slot name of A–Z, a–z, 0–9, '.', '_', '+', '-'",
                    ));
                }
            }
            PayloadType::File | PayloadType::Archive => {
                check_absolute_path(&self.target).map_err(target_error)?
            }
            PayloadType::Module(_) => {}
        }
        for (what, blob) in [("stored", &self.stored), ("installed", &self.installed)] {
            if blob.size > limits.max_payload_size {
                return Err(ManifestError::Sizes {
                    index,
                    reason: format!(
                        "{what} size {} is larger than the limit of {} bytes",
                        blob.size, limits.max_payload_size
                    ),
                });
            }
        }
        if self.compression == Compression::None
            && self.encryption == Encryption::None
            && self.stored != self.installed
        {
            return Err(ManifestError::Sizes {
                index,
                reason: "neither compressed nor encrypted, yet stored and installed size or digest differ"
                    .into(),
            });
        }
        Ok(())
    }
}

/// An absolute, normalised path: no `.`/`..`/empty components, so a file
/// target can never climb out of where the agent puts it.
fn check_absolute_path(path: &str) -> Result<(), &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("must be an absolute path");
    };
    if rest.is_empty() {
        return Err("must name something below /");
    }
    for component in rest.split('/') {
        match component {
            "" => return Err("has an empty path component (// or a trailing /)"),
            "." | ".." => return Err("has a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

fn is_simple_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Builds a [`Manifest`] step by step.
#[derive(Debug, Clone)]
pub struct ManifestBuilder {
    manifest: Manifest,
}

impl ManifestBuilder {
    /// Sets the free-text description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.manifest.description = Some(text.into());
        self
    }

    /// Restricts the package to these hardware revisions.
    pub fn hardware_revision(mut self, revision: impl Into<String>) -> Self {
        self.manifest
            .compatible
            .hardware_revisions
            .push(revision.into());
        self
    }

    /// Requires installed software `name` to match `req`.
    pub fn requires(mut self, name: impl Into<String>, req: VersionReq) -> Self {
        self.manifest.compatible.requires.insert(name.into(), req);
        self
    }

    /// Replaces the default `provides` (the package's own name and version).
    pub fn provides(mut self, provides: BTreeMap<String, Version>) -> Self {
        self.manifest.provides = provides;
        self
    }

    /// Sets the anti-rollback counter.
    pub fn security_version(mut self, security_version: u64) -> Self {
        self.manifest.security_version = security_version;
        self
    }

    /// Appends a payload.
    pub fn payload(mut self, entry: PayloadEntry) -> Self {
        self.manifest.payloads.push(entry);
        self
    }

    /// Which format version to build: [`FORMAT_VERSION`] by default, 1 for
    /// devices whose agents predate version 2.
    pub fn format_version(mut self, version: u16) -> Self {
        self.manifest.format_version = version;
        self
    }

    /// The manifest; [`Manifest::validate`] runs when it is signed. For
    /// version 2 its `block_index` is computed from the payloads' block
    /// digests, and left out when one lacks them (signing then says so).
    pub fn build(self) -> Manifest {
        let mut manifest = self.manifest;
        manifest.block_index = None;
        if manifest.format_version >= 2 {
            manifest.block_index = blocks::common_block_size(&manifest.payloads).and_then(|size| {
                let index = blocks::build_index(&manifest.payloads, size)?;
                Some(BlockIndexRef {
                    block_size: size,
                    sha256: Sha256Digest::of(&index),
                })
            });
        }
        manifest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: PayloadType, target: &str) -> PayloadEntry {
        let blob = Blob {
            size: 1,
            sha256: Sha256Digest::of(b"x"),
        };
        PayloadEntry::new(
            kind,
            target,
            blob,
            blob,
            Compression::None,
            Encryption::None,
        )
    }

    /// Version 1: these entries are made by hand and carry no blocks.
    fn manifest_with(entry: PayloadEntry) -> Manifest {
        Manifest::builder("app", Version::new(1, 0, 0), ["board"])
            .format_version(1)
            .payload(entry)
            .build()
    }

    #[test]
    fn version_2_needs_a_bounded_block_index_and_version_1_none() {
        let limits = Limits::default();
        let v2 = Manifest::builder("app", Version::new(1, 0, 0), ["board"])
            .payload(entry(PayloadType::Image, "rootfs"))
            .build();
        assert_eq!(v2.format_version, 2);
        assert!(matches!(
            v2.validate(&limits),
            Err(ManifestError::BlockIndex(_))
        ));
        let reference = BlockIndexRef {
            block_size: 1 << 20,
            sha256: Sha256Digest::of(b""),
        };
        let good = Manifest {
            block_index: Some(reference),
            ..v2.clone()
        };
        good.validate(&limits).expect("a 1 MiB block size is fine");
        for block_size in [1000, 1 << 12, 1 << 30] {
            let bad = Manifest {
                block_index: Some(BlockIndexRef {
                    block_size,
                    ..reference
                }),
                ..v2.clone()
            };
            assert!(
                matches!(bad.validate(&limits), Err(ManifestError::BlockIndex(_))),
                "block size {block_size} accepted"
            );
        }
        let mut oversized = good.clone();
        oversized.payloads[0].stored.size = 64 << 30;
        oversized.payloads[0].installed.size = 64 << 30;
        assert!(matches!(
            oversized.validate(&limits),
            Err(ManifestError::BlockIndex(_))
        ));
        let v1_with_index = Manifest {
            format_version: 1,
            ..good
        };
        assert!(matches!(
            v1_with_index.validate(&limits),
            Err(ManifestError::BlockIndex(_))
        ));
    }

    #[test]
    fn payload_type_round_trips_as_text() {
        for text in ["image", "file", "archive", "module:docker-compose"] {
            let kind: PayloadType = text.parse().expect("valid type");
            assert_eq!(kind.to_string(), text);
        }
        assert!("module:".parse::<PayloadType>().is_err());
        assert!("module:../x".parse::<PayloadType>().is_err());
        assert!("rootfs".parse::<PayloadType>().is_err());
    }

    #[test]
    fn file_targets_cannot_escape() {
        for bad in [
            "etc/passwd",
            "/etc/../root/.ssh/authorized_keys",
            "/a//b",
            "/a/./b",
            "/",
            "/a/",
            "/a\u{0}b",
        ] {
            let manifest = manifest_with(entry(PayloadType::File, bad));
            assert!(
                matches!(
                    manifest.validate(&Limits::default()),
                    Err(ManifestError::Target { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        let manifest = manifest_with(entry(PayloadType::File, "/etc/app/config.toml"));
        manifest
            .validate(&Limits::default())
            .expect("a plain absolute path is fine");
    }

    #[test]
    fn image_targets_are_slot_names() {
        assert!(manifest_with(entry(PayloadType::Image, "rootfs"))
            .validate(&Limits::default())
            .is_ok());
        assert!(manifest_with(entry(PayloadType::Image, "/dev/sda2"))
            .validate(&Limits::default())
            .is_err());
    }

    #[test]
    fn plain_payload_sizes_must_agree() {
        let mut e = entry(PayloadType::Image, "rootfs");
        e.installed.size = 2;
        assert!(matches!(
            manifest_with(e).validate(&Limits::default()),
            Err(ManifestError::Sizes { .. })
        ));
    }

    #[test]
    fn payload_count_is_bounded() {
        let mut manifest = manifest_with(entry(PayloadType::Image, "rootfs"));
        let limits = Limits {
            max_payloads: 2,
            ..Limits::default()
        };
        manifest.payloads = vec![entry(PayloadType::Image, "rootfs"); 3];
        assert!(matches!(
            manifest.validate(&limits),
            Err(ManifestError::PayloadCount { count: 3, limit: 2 })
        ));
        manifest.payloads.clear();
        assert!(manifest.validate(&limits).is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let manifest = manifest_with(entry(PayloadType::Image, "rootfs"));
        let mut value = serde_json::to_value(&manifest).expect("serialises");
        value["skip_verification"] = serde_json::Value::Bool(true);
        let bytes = serde_json::to_vec(&value).expect("serialises");
        assert!(matches!(
            Manifest::from_json(&bytes, &Limits::default()),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn json_round_trip() {
        let manifest = manifest_with(entry(PayloadType::Module("mcu".into()), "uart0"));
        let parsed = Manifest::from_json(&manifest.to_json(), &Limits::default()).expect("parses");
        assert_eq!(parsed, manifest);
    }
}
