//! Format version 2's block index: payloads round-trip block by block, a
//! damaged block is caught as that block before any byte of it (or after
//! it) is handed out, a hostile index is refused, and version 1 is still
//! read.

use crate::support::*;
use airlift_package::{
    encode_payload, BlockIndexRef, Compression, EncodeOptions, Error, Limits, Manifest,
    PackageReader, PackageWriter, PayloadSpec, PayloadType, Sha256Digest, SignedManifest,
    BLOCK_DIGEST_LEN, FORMAT_VERSION,
};
use std::io::{self, Read};

/// The smallest block size the default limits allow.
const BLOCK: u32 = 64 * 1024;
const BLOCK_LEN: usize = BLOCK as usize;

struct Input {
    kind: PayloadType,
    target: &'static str,
    data: Vec<u8>,
    compression: Compression,
}

fn input(target: &'static str, data: Vec<u8>, compression: Compression) -> Input {
    let kind = if target.starts_with('/') {
        PayloadType::File
    } else {
        PayloadType::Image
    };
    Input {
        kind,
        target,
        data,
        compression,
    }
}

/// A package of `inputs` in format `version`, in blocks of `block_size`.
fn package(fixture: &Fixture, inputs: &[Input], version: u16, block_size: u32) -> Vec<u8> {
    let options = EncodeOptions {
        zstd_workers: 0,
        block_size,
        ..EncodeOptions::default()
    };
    let mut builder = Manifest::builder("app", "1.2.3".parse().expect("semver"), ["board-a"])
        .format_version(version);
    let mut stored = Vec::new();
    for input in inputs {
        let spec = PayloadSpec::new(input.kind.clone(), input.target, input.compression);
        let mut bytes = Vec::new();
        let entry = encode_payload(&input.data[..], &spec, &options, &mut bytes).expect("encodes");
        builder = builder.payload(entry);
        stored.push(bytes);
    }
    let signed =
        SignedManifest::sign(&builder.build(), &[&fixture.key], &Limits::default()).expect("signs");
    let mut writer = PackageWriter::new(Vec::new(), &signed).expect("writes the head");
    for bytes in &stored {
        writer.write_payload(&bytes[..]).expect("matches its entry");
    }
    let file = writer.finish().expect("complete");
    assert_eq!(file.len() as u64, signed.package_len());
    file
}

/// Five full blocks and a partial one, raw; and a zstd payload after it.
fn two_payloads() -> Vec<Input> {
    vec![
        input(
            "rootfs",
            image_bytes(5 * BLOCK_LEN + 100, 7),
            Compression::None,
        ),
        input(
            "/etc/app.conf",
            image_bytes(3 * BLOCK_LEN, 8),
            Compression::Zstd,
        ),
    ]
}

/// Reads the first payload's stored bytes with `buf_len`-byte reads into
/// `sink`; returns the error that ended it, if any.
fn read_first(file: &[u8], fixture: &Fixture, buf_len: usize, sink: &mut Vec<u8>) -> Option<Error> {
    let mut package = PackageReader::open(file, Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("verifies");
    let mut payload = package.next_payload().expect("ok").expect("one payload");
    let mut buf = vec![0u8; buf_len];
    loop {
        match payload.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => sink.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Error::from(e)),
        }
    }
}

#[test]
fn version_2_round_trips_block_by_block() {
    let fixture = Fixture::new();
    let inputs = two_payloads();
    let file = package(&fixture, &inputs, FORMAT_VERSION, BLOCK);
    let reader = PackageReader::open(&file[..], Limits::default()).expect("opens");
    assert_eq!(reader.format_version(), 2);
    // Six blocks, then three or fewer (zstd of half-random bytes).
    let index_len = reader.block_index_bytes().len();
    assert!(index_len > 6 * BLOCK_DIGEST_LEN && index_len <= 9 * BLOCK_DIGEST_LEN);
    let manifest = reader.manifest_unverified().expect("parses");
    let reference = manifest.block_index.expect("version 2 has one");
    assert_eq!(reference.block_size, BLOCK);
    assert_eq!(
        reference.sha256,
        Sha256Digest::of(reader.block_index_bytes())
    );
    let json = String::from_utf8(reader.manifest_bytes().to_vec()).expect("utf-8");
    assert!(
        json.contains(r#""block_index":{"block_size":65536,"sha256":""#),
        "{json}"
    );

    let installed = read_all(&file, &fixture.trust(), None).expect("verifies");
    assert_eq!(installed[0], inputs[0].data);
    assert_eq!(installed[1], inputs[1].data);
    // Reads smaller than a block, one block, and larger than a block.
    for buf_len in [1000, BLOCK_LEN, 3 * BLOCK_LEN] {
        let mut sink = Vec::new();
        assert!(read_first(&file, &fixture, buf_len, &mut sink).is_none());
        assert_eq!(sink, inputs[0].data, "reads of {buf_len}");
    }
}

#[test]
fn version_1_is_still_read() {
    let fixture = Fixture::new();
    let inputs = two_payloads();
    let file = package(&fixture, &inputs, 1, BLOCK);
    let reader = PackageReader::open(&file[..], Limits::default()).expect("opens");
    assert_eq!(reader.format_version(), 1);
    assert!(reader.block_index_bytes().is_empty());
    let manifest = reader.manifest_unverified().expect("parses");
    assert_eq!(manifest.block_index, None);
    assert!(!String::from_utf8_lossy(reader.manifest_bytes()).contains("block_index"));
    let installed = read_all(&file, &fixture.trust(), None).expect("verifies");
    assert_eq!(installed[0], inputs[0].data);

    // And its damage is still caught, at the payload's end.
    let mut damaged = file.clone();
    let at = PackageReader::open(&file[..], Limits::default())
        .expect("opens")
        .payload_offset() as usize
        + 2 * BLOCK_LEN;
    damaged[at] ^= 1;
    let mut sink = Vec::new();
    let error = read_first(&damaged, &fixture, BLOCK_LEN, &mut sink).expect("caught");
    assert!(
        matches!(error, Error::DigestMismatch { index: 0, .. }),
        "{error}"
    );
}

#[test]
fn a_flipped_byte_is_caught_in_its_block_before_any_of_it_is_handed_out() {
    let fixture = Fixture::new();
    let inputs = two_payloads();
    let file = package(&fixture, &inputs, FORMAT_VERSION, BLOCK);
    let start = PackageReader::open(&file[..], Limits::default())
        .expect("opens")
        .payload_offset() as usize;
    for block in [0usize, 3, 5] {
        let at = start + block * BLOCK_LEN + 17;
        let mut damaged = file.clone();
        damaged[at] ^= 0x40;
        for buf_len in [1000, BLOCK_LEN, 4 * BLOCK_LEN] {
            let mut sink = Vec::new();
            let error = read_first(&damaged, &fixture, buf_len, &mut sink).expect("caught");
            let Error::BlockMismatch {
                index,
                block: reported,
                start: from,
                end,
                ..
            } = &error
            else {
                panic!("not a block mismatch: {error}");
            };
            assert_eq!((*index, *reported), (0, block as u64), "{error}");
            let expected_end = (start + (block + 1) * BLOCK_LEN).min(start + 5 * BLOCK_LEN + 100);
            assert_eq!(
                (*from, *end),
                ((start + block * BLOCK_LEN) as u64, expected_end as u64)
            );
            assert_eq!(error.damaged_range(), Some(*from..*end));
            assert!((*from..*end).contains(&(at as u64)));
            // The sink got exactly the blocks before, nothing of this one.
            assert_eq!(sink.len(), block * BLOCK_LEN, "reads of {buf_len}");
            assert_eq!(sink, inputs[0].data[..block * BLOCK_LEN]);
            let message = error.to_string();
            assert!(
                message.contains(&format!("block {block}, bytes {from}..{end}")),
                "{message}"
            );
        }
    }
}

#[test]
fn a_damaged_compressed_block_is_named_before_the_decoder_sees_it() {
    let fixture = Fixture::new();
    let inputs = two_payloads();
    let file = package(&fixture, &inputs, FORMAT_VERSION, BLOCK);
    let package_reader = PackageReader::open(&file[..], Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("verifies");
    let second = package_reader.payload_ranges()[1].clone();
    drop(package_reader);
    let mut damaged = file.clone();
    damaged[second.start as usize + BLOCK_LEN + 5] ^= 1;
    let error = read_all(&damaged, &fixture.trust(), None).expect_err("caught");
    assert!(
        matches!(
            error,
            Error::BlockMismatch {
                index: 1,
                block: 1,
                ..
            }
        ),
        "{error}"
    );
}

/// The file offset of the index length field and of the index.
fn index_offsets(file: &[u8]) -> (usize, usize) {
    let reader = PackageReader::open(file, Limits::default()).expect("opens");
    let index_start = reader.payload_offset() as usize - reader.block_index_bytes().len();
    (index_start - 4, index_start)
}

#[test]
fn a_truncated_index_is_refused() {
    let fixture = Fixture::new();
    let file = package(&fixture, &two_payloads(), FORMAT_VERSION, BLOCK);
    let (length_at, index_at) = index_offsets(&file);
    for cut in [length_at + 2, index_at, index_at + 40] {
        let error = PackageReader::open(&file[..cut], Limits::default()).expect_err("cut");
        assert!(
            matches!(&error, Error::Truncated { part, .. } if part.contains("block index")),
            "cut at {cut}: {error}"
        );
    }
}

#[test]
fn an_oversized_or_misshapen_index_is_refused_before_it_is_read() {
    let fixture = Fixture::new();
    let file = package(&fixture, &two_payloads(), FORMAT_VERSION, BLOCK);
    let (length_at, _) = index_offsets(&file);
    for bad_len in [u32::MAX, 1024 * 1024 + 32, 33] {
        let mut damaged = file.clone();
        damaged[length_at..length_at + 4].copy_from_slice(&bad_len.to_be_bytes());
        let error = PackageReader::open(&damaged[..], Limits::default()).expect_err("refused");
        assert!(
            matches!(error, Error::BadBlockIndex(_)),
            "{bad_len}: {error}"
        );
    }
}

#[test]
fn an_index_longer_than_the_declared_sizes_need_is_refused() {
    let fixture = Fixture::new();
    let file = package(&fixture, &two_payloads(), FORMAT_VERSION, BLOCK);
    let (length_at, index_at) = index_offsets(&file);
    let len = u32::from_be_bytes(file[length_at..index_at].try_into().expect("4 bytes"));
    // One digest more, inserted at the index's end: the head still parses.
    let mut longer = file[..length_at].to_vec();
    longer.extend_from_slice(&(len + 32).to_be_bytes());
    longer.extend_from_slice(&file[index_at..index_at + len as usize]);
    longer.extend_from_slice(&[0u8; 32]);
    longer.extend_from_slice(&file[index_at + len as usize..]);
    let error = PackageReader::open(&longer[..], Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("signed payload sizes need"), "{message}");
}

#[test]
fn a_block_size_outside_the_limits_or_unlike_the_blocks_is_refused() {
    let fixture = Fixture::new();
    // The reader's limits decide: a device may refuse small blocks.
    let file = package(&fixture, &two_payloads(), FORMAT_VERSION, BLOCK);
    let strict = Limits {
        min_block_size: 1024 * 1024,
        ..Limits::default()
    };
    let error = PackageReader::open(&file[..], strict)
        .expect("opens")
        .verify(&fixture.trust())
        .expect_err("refused");
    assert!(error.to_string().contains("block size 65536"), "{error}");

    // A writer cannot sign blocks of one size as another.
    let options = EncodeOptions {
        zstd_workers: 0,
        block_size: BLOCK,
        ..EncodeOptions::default()
    };
    let spec = PayloadSpec::new(PayloadType::Image, "rootfs", Compression::None);
    let entry = encode_payload(
        &image_bytes(3 * BLOCK_LEN, 1)[..],
        &spec,
        &options,
        io::sink(),
    )
    .expect("encodes");
    let mut manifest = Manifest::builder("app", "1.2.3".parse().expect("semver"), ["board-a"])
        .payload(entry)
        .build();
    let reference = manifest.block_index.expect("blocks recorded");
    manifest.block_index = Some(BlockIndexRef {
        block_size: 2 * BLOCK,
        ..reference
    });
    let error =
        SignedManifest::sign(&manifest, &[&fixture.key], &Limits::default()).expect_err("refused");
    assert!(matches!(error, Error::BadBlockIndex(_)), "{error}");

    // Nor mix payloads encoded with different block sizes.
    let other = EncodeOptions {
        block_size: 2 * BLOCK,
        ..options
    };
    let a = encode_payload(&[1u8; 10][..], &spec, &other, io::sink()).expect("encodes");
    let b = encode_payload(
        &[2u8; 10][..],
        &spec,
        &EncodeOptions {
            zstd_workers: 0,
            block_size: BLOCK,
            ..EncodeOptions::default()
        },
        io::sink(),
    )
    .expect("encodes");
    let mixed = Manifest::builder("app", "1.2.3".parse().expect("semver"), ["board-a"])
        .payload(a)
        .payload(b)
        .build();
    assert_eq!(mixed.block_index, None);
    assert!(SignedManifest::sign(&mixed, &[&fixture.key], &Limits::default()).is_err());
}

#[test]
fn a_resumed_version_2_read_checks_the_blocks_it_reads() {
    let fixture = Fixture::new();
    let inputs = two_payloads();
    let file = package(&fixture, &inputs, FORMAT_VERSION, BLOCK);
    let reader = PackageReader::open(&file[..], Limits::default()).expect("opens");
    let head_len = reader.payload_offset() as usize;
    let ranges = reader
        .verify(&fixture.trust())
        .expect("verifies")
        .payload_ranges();
    let start = ranges[1].start as usize;
    let mut resumed = [&file[..head_len], &file[start..]].concat();
    let mut package = PackageReader::open(&resumed[..], Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("verifies");
    package.resume_at(1).expect("resumes");
    let mut installed = Vec::new();
    package
        .next_payload()
        .expect("ok")
        .expect("payload 1")
        .decoded(&[])
        .expect("decodes")
        .read_to_end(&mut installed)
        .expect("blocks match");
    assert_eq!(installed, inputs[1].data);
    package.finish().expect("nothing after");

    let last = resumed.len() - 1;
    resumed[last] ^= 1;
    let mut package = PackageReader::open(&resumed[..], Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("verifies");
    package.resume_at(1).expect("resumes");
    let error = package.finish().expect_err("altered");
    let range = error.damaged_range().expect("names the bytes");
    assert!(
        range.start >= ranges[1].start && range.end == ranges[1].end,
        "{error}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Any payload length, any damaged byte, any read size: the error names
    /// the damaged byte's block, and the reader handed out exactly the
    /// blocks before it.
    #[test]
    fn any_damaged_byte_is_caught_in_its_block(
        len in 1usize..(4 * BLOCK_LEN),
        damage in 0usize..(4 * BLOCK_LEN),
        buf_len in 1usize..(2 * BLOCK_LEN),
    ) {
        let fixture = Fixture::new();
        let data = image_bytes(len, len as u64);
        let file = package(
            &fixture,
            &[input("rootfs", data.clone(), Compression::None)],
            FORMAT_VERSION,
            BLOCK,
        );
        let start = PackageReader::open(&file[..], Limits::default())
            .expect("opens")
            .payload_offset() as usize;
        let at = damage % len;
        let mut damaged = file;
        damaged[start + at] ^= 0x10;
        let mut sink = Vec::new();
        let error = read_first(&damaged, &fixture, buf_len, &mut sink).expect("caught");
        let block = at / BLOCK_LEN;
        let is_block_mismatch = matches!(
            error,
            Error::BlockMismatch { index: 0, block: reported, .. } if reported == block as u64
        );
        proptest::prop_assert!(is_block_mismatch, "{}", error);
        proptest::prop_assert_eq!(&sink[..], &data[..block * BLOCK_LEN]);
    }
}

/// A medium that serves a damaged copy of the package until the reader's
/// refetch hook asks for a range again, then serves the good bytes from
/// there (as a downloader re-requesting with `Range` would).
struct Refetching {
    damaged: Vec<u8>,
    good: Vec<u8>,
    position: usize,
    /// Set by the hook: the offset to serve the good bytes from next.
    rewind: std::sync::Arc<std::sync::Mutex<Option<u64>>>,
    fixed: bool,
}

impl Read for Refetching {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(offset) = self.rewind.lock().ok().and_then(|mut r| r.take()) {
            self.position = offset as usize;
            self.fixed = true;
        }
        let source = if self.fixed {
            &self.good
        } else {
            &self.damaged
        };
        let n = buf.len().min(source.len() - self.position);
        buf[..n].copy_from_slice(&source[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[test]
fn a_damaged_block_is_read_again_when_the_refetch_hook_asks_and_never_handed_out() {
    let fixture = Fixture::new();
    let inputs = two_payloads();
    let file = package(&fixture, &inputs, FORMAT_VERSION, BLOCK);
    let start = PackageReader::open(&file[..], Limits::default())
        .expect("opens")
        .payload_offset() as usize;
    let mut damaged = file.clone();
    damaged[start + 3 * BLOCK_LEN + 9] ^= 0x04;
    for allow in [true, false] {
        let rewind = std::sync::Arc::default();
        let medium = Refetching {
            damaged: damaged.clone(),
            good: file.clone(),
            position: 0,
            rewind: std::sync::Arc::clone(&rewind),
            fixed: false,
        };
        let mut package = PackageReader::open(medium, Limits::default())
            .expect("opens")
            .verify(&fixture.trust())
            .expect("verifies");
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&asked);
        package.refetch_damaged_blocks(move |error: &Error| {
            let range = error
                .damaged_range()
                .expect("a block mismatch names its bytes");
            if let Ok(mut seen) = seen.lock() {
                seen.push(range.clone());
            }
            if allow {
                if let Ok(mut rewind) = rewind.lock() {
                    *rewind = Some(range.start);
                }
            }
            allow
        });
        let mut installed = Vec::new();
        let result = package
            .next_payload()
            .expect("ok")
            .expect("payload 0")
            .decoded(&[])
            .expect("decodes")
            .read_to_end(&mut installed);
        let block = (start + 3 * BLOCK_LEN) as u64..(start + 4 * BLOCK_LEN) as u64;
        assert_eq!(*asked.lock().expect("lock"), vec![block], "asked once");
        if allow {
            result.expect("the block read again matched");
            assert_eq!(installed, inputs[0].data);
            package.finish().expect("the rest reads as signed");
        } else {
            let error = Error::from(result.expect_err("refused"));
            assert!(
                matches!(error, Error::BlockMismatch { block: 3, .. }),
                "{error}"
            );
            assert_eq!(installed, inputs[0].data[..3 * BLOCK_LEN], "nothing of it");
        }
    }
}
