//! Format version 2's block index: the index length field and the index in
//! the head, their check against the signed manifest (block size, length
//! derived from the declared sizes, digest), and the per-block checks of
//! every payload's stored bytes.
//!
//! Input layout: one mode byte, then a package. Mode bits:
//! - bit 0: 1 = recommit the manifest's `block_index` digest to the index
//!   the file carries before re-signing, so mutated index and payload bytes
//!   get past the index's own check and reach the per-block checks; 0 =
//!   re-sign only, so the index is checked against the digest as signed;
//! - bits 4..8: log2 of the read buffer size (1 byte to 32 KiB): buffers
//!   smaller than a block take the reader's copying path, larger ones its
//!   direct path.
//!
//! Oracles: a payload read to end-of-file without error has its declared
//! stored size and every block of it hashes to its digest in the file's
//! index; a block that does not match is reported as that block, and
//! exactly the blocks before it were handed out — nothing of it.

#![no_main]

use airlift_package::{Error, PackageReader, Sha256Digest, SigningKey, TrustSet, BLOCK_DIGEST_LEN};
use libfuzzer_sys::fuzz_target;
use std::io::{self, Read};
use std::sync::OnceLock;

struct Fixed {
    key: SigningKey,
    trust: TrustSet,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| Fixed {
        key: airlift_package_fuzz::signing_key(),
        trust: airlift_package_fuzz::trust_set(),
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let fixed = fixed();
    let package = if mode & 1 == 1 {
        airlift_package_fuzz::recommit(data, &fixed.key)
    } else {
        None
    }
    .or_else(|| airlift_package_fuzz::resign(data, &fixed.key))
    .unwrap_or_else(|| data.to_vec());
    let limits = airlift_package_fuzz::payload_limits();
    let reader = match PackageReader::open(&package[..], limits) {
        Ok(reader) => reader,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let index: Vec<u8> = reader.block_index_bytes().to_vec();
    let mut verified = match reader.verify(&fixed.trust) {
        Ok(verified) => verified,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let Some(block_size) = verified
        .manifest()
        .block_index
        .map(|r| r.block_size as usize)
    else {
        return;
    };
    let mut buf = vec![0u8; 1usize << (mode >> 4)];
    let mut first_block = 0usize;
    loop {
        let mut payload = match verified.next_payload() {
            Ok(Some(payload)) => payload,
            Ok(None) => break,
            Err(error) => {
                let _ = error.to_string();
                break;
            }
        };
        let declared = payload.entry().stored.size;
        let mut out = Vec::new();
        match drain(&mut payload, &mut buf, &mut out) {
            Ok(()) => {
                assert_eq!(out.len() as u64, declared, "a payload ended early or late");
                for (k, block) in out.chunks(block_size).enumerate() {
                    let at = (first_block + k) * BLOCK_DIGEST_LEN;
                    assert!(
                        Sha256Digest::of(block).as_bytes()[..] == index[at..at + BLOCK_DIGEST_LEN],
                        "block {k} was handed out but does not match the index"
                    );
                }
            }
            Err(error) => {
                if let Error::BlockMismatch { block, .. } = Error::from(error) {
                    assert_eq!(
                        out.len() as u64,
                        block * block_size as u64,
                        "bytes of a damaged block, or fewer than the blocks before it, were handed out"
                    );
                }
                break;
            }
        }
        first_block += declared.div_ceil(block_size as u64) as usize;
    }
    if let Err(error) = verified.finish() {
        let _ = error.to_string();
    }
});

/// Reads `reader` to its end with `buf`, keeping what comes out.
fn drain(reader: &mut impl Read, buf: &mut [u8], out: &mut Vec<u8>) -> io::Result<()> {
    loop {
        match reader.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
