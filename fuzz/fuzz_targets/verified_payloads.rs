//! The payload side of the reader, which no mutated input could reach past a
//! real signature check: the input's manifest is re-signed with the fuzzers'
//! fixed key, then every payload is read, decoded (zstd, age) or as stored
//! bytes, and the package finished.
//!
//! Input layout: one mode byte, then a package. Mode bits:
//! - bit 0: 0 = read installed bytes through `decoded`, 1 = read stored bytes;
//! - bit 1: 0 = pass the fixed age identity, 1 = pass no identity;
//! - bits 4..8: log2 of the read buffer size (1 byte to 32 KiB; decoded
//!   reads use at least 512 bytes so a 16 MiB payload stays quick).
//!
//! Oracle: whenever a payload reads to end-of-file without error, its bytes
//! must have exactly the size and SHA-256 the signed manifest declares.

#![no_main]

use airlift_package::encryption::{Identity, IdentityTrait};
use airlift_package::{Blob, PackageReader, Sha256Hasher, SigningKey, TrustSet};
use libfuzzer_sys::fuzz_target;
use std::io::{self, Read};
use std::sync::OnceLock;

struct Fixed {
    key: SigningKey,
    trust: TrustSet,
    identity: Identity,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| Fixed {
        key: airlift_package_fuzz::signing_key(),
        trust: airlift_package_fuzz::trust_set(),
        identity: airlift_package_fuzz::identity(),
    })
}

/// Reads `reader` to its end with `buf`, hashing what comes out. `Ok` only
/// if the reader reached end-of-file without an error.
fn drain(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<Blob> {
    let mut hasher = Sha256Hasher::new();
    loop {
        match reader.read(buf) {
            Ok(0) => {
                return Ok(Blob {
                    size: hasher.len(),
                    sha256: hasher.finish(),
                })
            }
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let fixed = fixed();
    let package = airlift_package_fuzz::resign(data, &fixed.key).unwrap_or_else(|| data.to_vec());
    let Ok(reader) = PackageReader::open(&package[..], airlift_package_fuzz::payload_limits())
    else {
        return;
    };
    let mut verified = match reader.verify(&fixed.trust) {
        Ok(verified) => verified,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };

    let stored_mode = mode & 1 == 1;
    let identities: Vec<&dyn IdentityTrait> = if mode & 2 == 0 {
        vec![&fixed.identity]
    } else {
        Vec::new()
    };
    let buf_len = 1usize << (mode >> 4);
    let mut buf = vec![
        0u8;
        if stored_mode {
            buf_len
        } else {
            buf_len.max(512)
        }
    ];

    loop {
        let mut payload = match verified.next_payload() {
            Ok(Some(payload)) => payload,
            Ok(None) => break,
            Err(error) => {
                let _ = error.to_string();
                break;
            }
        };
        let entry = payload.entry().clone();
        let _ = payload.file_range();
        let result = if stored_mode {
            drain(&mut payload, &mut buf).map(|blob| (blob, entry.stored))
        } else {
            match payload.decoded(&identities) {
                Ok(mut decoded) => {
                    drain(&mut decoded, &mut buf).map(|blob| (blob, entry.installed))
                }
                Err(error) => {
                    let _ = error.to_string();
                    continue;
                }
            }
        };
        match result {
            Ok((got, declared)) => {
                assert_eq!(
                    got.size, declared.size,
                    "a payload ended early or late without an error"
                );
                assert!(
                    got.sha256 == declared.sha256,
                    "a payload's bytes do not match its signed digest, yet it read to the end"
                );
            }
            Err(error) => {
                let _ = airlift_package::Error::from(error).to_string();
            }
        }
    }
    if let Err(error) = verified.finish() {
        let _ = error.to_string();
    }
});
