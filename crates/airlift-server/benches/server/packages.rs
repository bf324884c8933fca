//! Packages built for the benchmarks (`server` and `soak`) with the test
//! kit's builder, which signs and writes them with `airlift_package` as the
//! CLI does.

use airlift_package::Compression;
use airlift_testkit::packages::Signer;
use anyhow::Result;
use std::io::BufWriter;
use std::path::Path;

/// A package `bench-os` with one uncompressed image payload of `image`
/// bytes of xorshift noise, signed by `signer` and written to `path`;
/// returns its size.
pub fn build_package(
    signer: &Signer,
    version: &str,
    device_type: &str,
    image: usize,
    path: &Path,
) -> Result<u64> {
    let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let file = signer
        .package("bench-os", version)
        .device_type(device_type)
        .security_version(3)
        .image(&noise(image), Compression::None)
        .write_to(file)?;
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
