//! Writes the seed corpus: a few valid packages signed with the fuzzers'
//! fixed key, into `corpus/package_reader/` and (with mode-byte prefixes)
//! `corpus/verified_payloads/`; and packages cut into small blocks (format
//! version 2, 256-byte blocks) into `corpus/block_index/`.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```

use airlift_package::{
    encode_payload, Blob, Compression, EncodeOptions, Encryption, Manifest, PackageWriter,
    PayloadEntry, PayloadSpec, PayloadType, Sha256Digest, SignedManifest, DEFAULT_BLOCK_SIZE,
    FORMAT_VERSION,
};
use std::fs;
use std::path::Path;

/// Mode bytes written in front of each package for `verified_payloads`
/// (see that target's docs): decoded with identity and 512-byte reads,
/// stored with 16-byte reads, decoded with 4 KiB reads, decoded without
/// an identity.
const MODES: [u8; 4] = [0x00, 0x41, 0xc0, 0x02];

/// Mode bytes for `block_index`: re-signed only with 64-byte reads;
/// recommitted with 16-byte, 256-byte (one block) and 32 KiB reads.
const BLOCK_MODES: [u8; 4] = [0x60, 0x41, 0x81, 0xf1];

struct Payload {
    entry: PayloadEntry,
    stored: Vec<u8>,
}

fn content(len: usize, salt: u8) -> Vec<u8> {
    // Half text (compresses), half a cheap pseudo-random walk (does not).
    let text = b"airlift update payload line: the quick brown fox jumps over the lazy dog\n";
    let mut out: Vec<u8> = text.iter().copied().cycle().take(len / 2).collect();
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(salt);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(x as u8);
    }
    out
}

fn encode(
    kind: PayloadType,
    target: &str,
    compression: Compression,
    encrypt: bool,
    data: &[u8],
) -> Payload {
    encode_in_blocks(kind, target, compression, encrypt, data, DEFAULT_BLOCK_SIZE)
}

fn encode_in_blocks(
    kind: PayloadType,
    target: &str,
    compression: Compression,
    encrypt: bool,
    data: &[u8],
    block_size: u32,
) -> Payload {
    let options = EncodeOptions {
        zstd_level: 3,
        zstd_workers: 0,
        recipients: if encrypt {
            vec![airlift_package_fuzz::recipient()]
        } else {
            Vec::new()
        },
        block_size,
    };
    let mut stored = Vec::new();
    let entry = encode_payload(
        data,
        &PayloadSpec::new(kind, target, compression),
        &options,
        &mut stored,
    )
    .expect("encoding into memory works");
    Payload { entry, stored }
}

/// A zstd payload of two concatenated frames, which the format allows.
fn two_frames(data: &[u8]) -> Payload {
    let (a, b) = data.split_at(data.len() / 2);
    let mut stored = zstd::encode_all(a, 1).expect("zstd in memory");
    stored.extend(zstd::encode_all(b, 19).expect("zstd in memory"));
    let blob = |bytes: &[u8]| Blob {
        size: bytes.len() as u64,
        sha256: Sha256Digest::of(bytes),
    };
    Payload {
        entry: PayloadEntry::new(
            PayloadType::Archive,
            "/opt/app",
            blob(&stored),
            blob(data),
            Compression::Zstd,
            Encryption::None,
        ),
        stored,
    }
}

// Not the test kit's `PackageBuilder`: the fuzz crate is outside the workspace
// (cargo-fuzz builds it with its own flags), and these seeds need the fuzzers'
// fixed key, encrypted payloads and hand-made entries, which the kit does not make.
fn package(payloads: &[Payload]) -> Vec<u8> {
    package_in_format(payloads, FORMAT_VERSION)
}

/// A hand-made entry carries no block digests: only version 1 holds it.
fn package_in_format(payloads: &[Payload], format_version: u16) -> Vec<u8> {
    let key = airlift_package_fuzz::signing_key();
    let mut builder = Manifest::builder("fuzz-seed", "1.2.3".parse().expect("semver"), ["board"])
        .description("seed package for the fuzzers")
        .security_version(7)
        .format_version(format_version);
    for payload in payloads {
        builder = builder.payload(payload.entry.clone());
    }
    let limits = airlift_package_fuzz::payload_limits();
    let signed =
        SignedManifest::sign(&builder.build(), &[&key], &limits).expect("a valid manifest signs");
    let mut file = Vec::new();
    let mut writer = PackageWriter::new(&mut file, &signed).expect("writes to memory");
    for payload in payloads {
        writer
            .write_payload(&payload.stored[..])
            .expect("payload matches its entry");
    }
    writer.finish().expect("every payload written");
    file
}

/// Each seed package by name: one per kind of payload coding, and one of
/// several payloads.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let small = content(600, 1);
    let medium = content(3000, 2);
    vec![
        (
            "plain",
            package(&[encode(
                PayloadType::File,
                "/etc/motd",
                Compression::None,
                false,
                &small,
            )]),
        ),
        (
            "zstd",
            package(&[encode(
                PayloadType::Image,
                "rootfs",
                Compression::Zstd,
                false,
                &medium,
            )]),
        ),
        (
            "age",
            package(&[encode(
                PayloadType::File,
                "/etc/secret",
                Compression::None,
                true,
                &small,
            )]),
        ),
        (
            "age-zstd",
            package(&[encode(
                PayloadType::Image,
                "rootfs",
                Compression::Zstd,
                true,
                &medium,
            )]),
        ),
        (
            "zstd-two-frames",
            package_in_format(&[two_frames(&medium)], 1),
        ),
        (
            "plain-v1",
            package_in_format(
                &[encode(
                    PayloadType::File,
                    "/etc/motd",
                    Compression::None,
                    false,
                    &small,
                )],
                1,
            ),
        ),
        (
            "multi",
            package(&[
                encode(
                    PayloadType::File,
                    "/etc/motd",
                    Compression::None,
                    false,
                    &small,
                ),
                encode(
                    PayloadType::Image,
                    "rootfs",
                    Compression::Zstd,
                    false,
                    &medium,
                ),
                encode(
                    PayloadType::Module("mcu".into()),
                    "uart0",
                    Compression::Zstd,
                    true,
                    &small,
                ),
                encode(
                    PayloadType::Archive,
                    "/opt/empty",
                    Compression::None,
                    false,
                    b"",
                ),
            ]),
        ),
    ]
}

/// Packages in 256-byte blocks: several blocks a payload, each block
/// size's edge (a payload of exactly one block, an empty one) included.
fn block_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let small = airlift_package_fuzz::SMALL_BLOCK_SIZE;
    let blocks = |kind, target, compression, encrypt, data: &[u8]| {
        encode_in_blocks(kind, target, compression, encrypt, data, small)
    };
    vec![
        (
            "blocks-plain",
            package(&[blocks(
                PayloadType::Image,
                "rootfs",
                Compression::None,
                false,
                &content(3000, 3),
            )]),
        ),
        (
            "blocks-multi",
            package(&[
                blocks(
                    PayloadType::File,
                    "/etc/one-block",
                    Compression::None,
                    false,
                    &content(small as usize, 4),
                ),
                blocks(
                    PayloadType::Archive,
                    "/opt/empty",
                    Compression::None,
                    false,
                    b"",
                ),
                blocks(
                    PayloadType::Image,
                    "rootfs",
                    Compression::Zstd,
                    true,
                    &content(5000, 5),
                ),
            ]),
        ),
    ]
}

fn main() {
    let seeds = seeds();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let reader_dir = corpus.join("package_reader");
    let payload_dir = corpus.join("verified_payloads");
    let block_dir = corpus.join("block_index");
    for dir in [&reader_dir, &payload_dir, &block_dir] {
        fs::create_dir_all(dir).expect("create corpus directory");
    }
    for (name, bytes) in block_seeds().iter().chain(&seeds) {
        for mode in BLOCK_MODES {
            let mut prefixed = vec![mode];
            prefixed.extend_from_slice(bytes);
            fs::write(block_dir.join(format!("seed-{name}-{mode:02x}")), prefixed)
                .expect("write seed");
        }
    }
    for (name, bytes) in &seeds {
        fs::write(reader_dir.join(format!("seed-{name}")), bytes).expect("write seed");
        for mode in MODES {
            let mut prefixed = vec![mode];
            prefixed.extend_from_slice(bytes);
            fs::write(
                payload_dir.join(format!("seed-{name}-{mode:02x}")),
                prefixed,
            )
            .expect("write seed");
        }
        println!("{name}: {} bytes", bytes.len());
    }
    println!("seeds written under {}", corpus.display());
}
