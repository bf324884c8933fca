//! The on-disk envelope of the agent's records (the state file, queued
//! reports): one header line with the record kind, the format version and
//! the SHA-256 of the body, then the body as JSON.
//!
//! ```text
//! airlift-state 1 sha256:5d41402abc4b2a76b9719d911017c592ae2f0e1a9d8a1f5e0a4d7e5c3b2a1f00
//! {
//!   "state": "downloading",
//!   ...
//! }
//! ```
//!
//! The header must be exactly what the body's digest gives (lowercase hex,
//! single spaces), so any torn write, truncation or flipped bit — in the body
//! or in the header — is detected.

use airlift_package::Sha256Digest;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The only format version written and read.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Larger records are damaged by definition: a state or a report is a few
/// KiB (messages are capped at 16 KiB).
const MAX_RECORD: u64 = 1024 * 1024;

/// The record's bytes: header line, then the pretty JSON body and a newline.
pub(crate) fn encode<T: Serialize>(kind: &str, value: &T) -> serde_json::Result<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value)?;
    body.push(b'\n');
    let mut bytes = header(kind, &body).into_bytes();
    bytes.push(b'\n');
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// The value in a record, or what is wrong with it.
pub(crate) fn decode<T: DeserializeOwned>(kind: &str, bytes: &[u8]) -> Result<T, String> {
    let newline = bytes
        .iter()
        .take(256)
        .position(|&b| b == b'\n')
        .ok_or_else(|| format!("no header line ({} bytes)", bytes.len()))?;
    let (line, body) = (&bytes[..newline], &bytes[newline + 1..]);
    let line = std::str::from_utf8(line).map_err(|_| "the header is not text".to_owned())?;
    let mut words = line.split(' ');
    let magic = format!("airlift-{kind}");
    if words.next() != Some(magic.as_str()) {
        return Err(format!("the header does not start with `{magic}`"));
    }
    let version = words.next().unwrap_or_default();
    if version != FORMAT_VERSION.to_string() {
        return Err(format!(
            "format version {version:?}; this agent reads version {FORMAT_VERSION}"
        ));
    }
    if line != header(kind, body) {
        return Err(format!(
            "checksum mismatch: the record is torn or damaged ({} bytes)",
            bytes.len()
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| format!("the checksum matches but the content does not parse: {e}"))
}

fn header(kind: &str, body: &[u8]) -> String {
    format!(
        "airlift-{kind} {FORMAT_VERSION} sha256:{}",
        Sha256Digest::of(body)
    )
}

/// The whole file, or `None` if it does not exist. A file larger than any
/// record is returned cut, so that it fails its checksum.
pub(crate) fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_RECORD).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Makes creations, renames and removals in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory `path` is in (`.` for a bare file name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_every_bit_flip_and_cut() -> Result<(), Box<dyn std::error::Error>> {
        let value = serde_json::json!({"state": "idle", "note": "héllo"});
        let bytes = encode("test", &value)?;
        assert_eq!(decode::<serde_json::Value>("test", &bytes)?, value);
        assert!(decode::<serde_json::Value>("other", &bytes).is_err());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[i] ^= 1 << bit;
                assert!(
                    decode::<serde_json::Value>("test", &flipped).is_err(),
                    "flip of bit {bit} in byte {i} went unnoticed"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(decode::<serde_json::Value>("test", &bytes[..len]).is_err());
        }
        Ok(())
    }

    #[test]
    fn a_newer_format_is_named() -> Result<(), Box<dyn std::error::Error>> {
        let bytes = encode("test", &1)?;
        let text = String::from_utf8(bytes)?.replacen(" 1 ", " 2 ", 1);
        let error = decode::<u32>("test", text.as_bytes()).expect_err("version 2");
        assert!(error.contains("format version \"2\""), "{error}");
        Ok(())
    }
}
