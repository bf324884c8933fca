//! Arbitrary bytes into `PackageReader::open`, the unverified manifest
//! parser and signature verification against a fixed trust set.
//!
//! Inputs that verify (the seed corpus does, and mutations of its payload
//! bytes keep doing so) also have their payloads read as stored bytes.

#![no_main]

use airlift_package::{Limits, PackageReader, TrustSet};
use libfuzzer_sys::fuzz_target;
use std::io::Read;
use std::sync::OnceLock;

fn trust() -> &'static TrustSet {
    static TRUST: OnceLock<TrustSet> = OnceLock::new();
    TRUST.get_or_init(airlift_package_fuzz::trust_set)
}

fuzz_target!(|data: &[u8]| {
    let reader = match PackageReader::open(data, Limits::default()) {
        Ok(reader) => reader,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let _ = reader.payload_offset();
    let _ = reader.signatures().len();
    if let Err(error) = reader.manifest_unverified() {
        let _ = error.to_string();
    }
    let mut package = match reader.verify(trust()) {
        Ok(package) => package,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let mut buf = vec![0u8; 4096];
    while let Ok(Some(mut payload)) = package.next_payload() {
        let _ = payload.file_range();
        loop {
            match payload.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    if let Err(error) = package.finish() {
        let _ = error.to_string();
    }
});
