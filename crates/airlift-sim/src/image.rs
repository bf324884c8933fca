//! Slot images the simulator can read a version from.
//!
//! A simulated device "runs" whatever its booted slot holds. So that the
//! simulator can tell which version that is (for its counts, and to make a
//! health check fail on a chosen version), the images of the packages it is
//! fed start with one line, `airlift-sim image VERSION\n`, followed by
//! filler bytes. Build them with [`build`] (or `airlift-sim image`), then
//! package them as usual (`airlift package build --payload
//! image:rootfs=FILE …`). A slot holding anything else runs `unknown`.

use airlift_testkit::packages::PackageBuilder;
use std::io::Read;
use std::path::Path;

/// Why [`signed_package`] could not build a package.
pub use airlift_testkit::packages::PackageError;

/// The first bytes of every simulator image.
pub const MAGIC: &str = "airlift-sim image ";

/// The longest first line [`version_of`] reads.
const MAX_LINE: usize = 128;

/// An image of `size` bytes (at least its first line) saying it is `version`.
/// The filler depends on the version, so two versions' images differ all
/// through (as real ones would, and so that a resumed download that mixed
/// them up could not pass its digest by luck).
pub fn build(version: &str, size: usize) -> Vec<u8> {
    let mut image = format!("{MAGIC}{version}\n").into_bytes();
    let seed = version.bytes().fold(0x9E37_79B9u32, |h, b| {
        h.wrapping_mul(31).wrapping_add(b.into())
    });
    let mut state = seed;
    while image.len() < size {
        // xorshift32: cheap and not compressible to nothing.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        image.push((state >> 7) as u8);
    }
    image
}

/// A signed package named `rootfs`, version `version`, for `device_type`:
/// one raw image payload of `size` bytes made by [`build`], for the slot
/// the simulator writes. What demos and tests feed a fleet.
pub fn signed_package(
    key: &airlift_package::SigningKey,
    version: &str,
    size: usize,
    device_type: &str,
) -> Result<Vec<u8>, PackageError> {
    use airlift_package::{Compression, PayloadSpec, PayloadType};
    // Parsed first so that the image names the version as the manifest
    // will (`2.0.0`, whatever spelling it was given in).
    let version: semver::Version = version
        .parse()
        .map_err(|e| PackageError::Version(format!("{version:?}: {e}")))?;
    let version = version.to_string();
    let spec = PayloadSpec::new(
        PayloadType::Image,
        crate::device::SLOT_TARGET,
        Compression::None,
    );
    PackageBuilder::new("rootfs", &version)
        .signed_by(key)
        .device_type(device_type)
        .payload(spec, &build(&version, size))
        .try_build()
}

/// The version an image's first line names, if it is a simulator image.
pub fn version_of(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(MAX_LINE)];
    let line_end = head.iter().position(|b| *b == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let version = line.strip_prefix(MAGIC)?.trim();
    (!version.is_empty()).then(|| version.to_owned())
}

/// The version the image in the slot file `path` names.
pub fn version_in(path: &Path) -> Option<String> {
    let mut head = Vec::with_capacity(MAX_LINE);
    std::fs::File::open(path)
        .ok()?
        .take(MAX_LINE as u64)
        .read_to_end(&mut head)
        .ok()?;
    version_of(&head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_names_its_version_and_others_name_none() {
        let image = build("2.0.0", 4096);
        assert_eq!(image.len(), 4096);
        assert_eq!(version_of(&image).as_deref(), Some("2.0.0"));
        assert_ne!(build("2.0.1", 4096)[100..], image[100..]);
        assert_eq!(build("1.0.0", 0).len(), MAGIC.len() + 6, "never cut short");
        for other in [
            &b""[..],
            b"airlift-sim image \n",
            b"something else\n",
            &[0xFF; 300],
        ] {
            assert_eq!(version_of(other), None, "{other:?}");
        }
    }
}
