//! Packages built for the benchmark with `airlift_package`, as the CLI
//! builds them.

use airlift_package::{
    encode_payload, Compression, EncodeOptions, Limits, Manifest, PackageWriter, PayloadSpec,
    PayloadType, SignedManifest, SigningKey,
};
use anyhow::Result;
use std::io::BufWriter;
use std::path::Path;

/// A package with one uncompressed image payload of `image` bytes of
/// xorshift noise, written to `path`; returns its size.
pub fn build_package(
    key: &SigningKey,
    version: &str,
    device_type: &str,
    image: usize,
    path: &Path,
) -> Result<u64> {
    let data = noise(image);
    let spec = PayloadSpec::new(PayloadType::Image, "rootfs", Compression::None);
    let mut stored = Vec::with_capacity(image);
    let entry = encode_payload(&data[..], &spec, &EncodeOptions::default(), &mut stored)?;
    drop(data);
    let manifest = Manifest::builder("bench-os", version.parse()?, [device_type])
        .security_version(3)
        .payload(entry)
        .build();
    let signed = SignedManifest::sign(&manifest, &[key], &Limits::default())?;
    let mut file = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut writer = PackageWriter::new(&mut file, &signed)?;
    writer.write_payload(&stored[..])?;
    writer.finish()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(std::fs::metadata(path)?.len())
}

/// `len` bytes of xorshift noise (incompressible, reproducible).
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}
