//! Every kind of damaged or lying package is refused, with a message that
//! says what is wrong.

use crate::support::*;
use airlift_package::{
    Blob, Compression, Error, Limits, PackageReader, PayloadType, Sha256Digest, HEADER_LEN,
};
use proptest::prelude::*;
use std::io::Read;

fn verify_message(file: &[u8], fixture: &Fixture) -> String {
    match read_all(file, &fixture.trust(), Some(&fixture.identity)) {
        Ok(_) => panic!("damaged package accepted"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn every_single_byte_flip_is_caught() {
    let fixture = Fixture::new();
    let (file, _) = mixed(&fixture);
    for position in 0..file.len() {
        for mask in [0x01u8, 0x80] {
            let mut damaged = file.clone();
            damaged[position] ^= mask;
            assert!(
                read_all(&damaged, &fixture.trust(), Some(&fixture.identity)).is_err(),
                "flipping byte {position} with {mask:#x} went unnoticed"
            );
        }
    }
}

#[test]
fn every_truncation_is_caught() {
    let fixture = Fixture::new();
    let (file, _) = mixed(&fixture);
    for len in 0..file.len() {
        let message = verify_message(&file[..len], &fixture);
        assert!(message.contains("truncated"), "cut at {len}: {message}");
    }
}

#[test]
fn appended_bytes_are_caught() {
    let fixture = Fixture::new();
    let (mut file, _) = mixed(&fixture);
    let len = file.len();
    file.extend_from_slice(b"extra");
    let message = verify_message(&file, &fixture);
    assert!(
        message.contains(&format!(
            "unexpected data after the last payload, starting at byte {len}"
        )),
        "{message}"
    );
}

#[test]
fn region_messages_say_what_is_wrong() {
    let fixture = Fixture::new();
    let (file, _) = mixed(&fixture);
    let reader = PackageReader::open(&file[..], Limits::default()).expect("opens");
    let manifest_end = HEADER_LEN + reader.manifest_bytes().len();
    let payloads_start = reader.payload_offset() as usize;
    let manifest = reader.manifest_unverified().expect("parses");

    let flip = |at: usize| {
        let mut damaged = file.clone();
        damaged[at] ^= 0x01;
        verify_message(&damaged, &fixture)
    };
    assert!(flip(0).contains("not an Airlift package"));
    assert!(flip(9).contains("format version"));
    // A longer manifest shifts where the signatures and the block index
    // are read: whichever check runs first refuses it.
    let length_flip = flip(15);
    assert!(
        length_flip.contains("block index") || length_flip.contains("truncated"),
        "{length_flip}"
    );
    assert!(
        flip(HEADER_LEN + 20).contains("does not verify"),
        "{}",
        flip(HEADER_LEN + 20)
    );
    // The key id, then the signature bytes.
    assert!(flip(manifest_end).contains("not signed by enough trusted keys"));
    assert!(flip(manifest_end + 8 + 10).contains("does not verify"));
    // The index length, then the index (format version 2).
    let index_start = manifest_end + 72 + 4;
    assert!(flip(index_start - 2).contains("block index"));
    let index_flip = flip(index_start + 3);
    assert!(
        index_flip.contains("does not match the signed manifest's block_index"),
        "{index_flip}"
    );
    let mut start = payloads_start;
    for (index, entry) in manifest.payloads.iter().enumerate() {
        let end = start + entry.stored.size as usize;
        let message = flip(start + entry.stored.size as usize / 2);
        assert!(message.contains(&format!("payload {index} ")), "{message}");
        // Even for encrypted and compressed payloads, where the decoder
        // chokes first, the message names the stored byte range.
        assert!(
            message.contains(&format!("bytes {start}..{end}")),
            "payload {index}: {message}"
        );
        start = end;
    }
}

#[test]
fn untrusted_signer_is_refused() {
    let fixture = Fixture::new();
    let (file, _) = mixed(&fixture);
    let stranger = Fixture::new();
    let error = read_all(&file, &stranger.trust(), None).expect_err("untrusted");
    assert!(matches!(error, Error::Untrusted { .. }));
    let message = error.to_string();
    assert!(
        message.contains(&fixture.key.public_key().key_id().to_string()),
        "{message}"
    );
}

/// One image payload of `data`, signed by the fixture's key: what a hostile
/// build server edits the manifest entry of (`build_hostile`).
fn one_payload<'k>(
    fixture: &'k Fixture,
    data: Vec<u8>,
    compression: Compression,
) -> airlift_testkit::packages::PackageBuilder<'k> {
    signed(
        fixture,
        &[PayloadInput::new(
            PayloadType::Image,
            "rootfs",
            data,
            compression,
        )],
    )
}

#[test]
fn a_stored_size_larger_than_the_bytes_is_truncation() {
    let fixture = Fixture::new();
    let file = one_payload(&fixture, vec![5; 1000], Compression::None).build_hostile(|entries| {
        entries[0].stored.size = 5000;
        entries[0].installed.size = 5000;
    });
    let message = verify_message(&file, &fixture);
    assert!(message.contains("truncated"), "{message}");
    assert!(message.contains("payload 0 (image rootfs)"), "{message}");
}

#[test]
fn a_stored_size_smaller_than_the_bytes_is_caught() {
    let fixture = Fixture::new();
    let shorter = Blob {
        size: 600,
        sha256: Sha256Digest::of(&[5; 600]),
    };
    let file = one_payload(&fixture, vec![5; 1000], Compression::None).build_hostile(|entries| {
        entries[0].stored = shorter;
        entries[0].installed = shorter;
    });
    // The block index was made from the real bytes, so the first 600 do
    // not match the one block's digest (version 1 would find trailing data).
    let message = verify_message(&file, &fixture);
    assert!(
        message.contains("block 0, bytes") && message.contains("does not match"),
        "{message}"
    );
}

#[test]
fn decompression_bombs_stop_at_the_declared_size() {
    let fixture = Fixture::new();
    // 64 MiB of zeros compresses to a few KiB; the manifest claims 1 KiB.
    let file = one_payload(&fixture, vec![0; 64 << 20], Compression::Zstd)
        .build_hostile(|entries| entries[0].installed.size = 1024);
    let mut package = PackageReader::open(&file[..], Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("signature fine");
    let payload = package.next_payload().expect("ok").expect("one");
    let mut decoded = payload.decoded(&[]).expect("zstd");
    let mut produced = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let error = loop {
        match decoded.read(&mut buf) {
            Ok(0) => panic!("bomb accepted"),
            Ok(n) => produced += n as u64,
            Err(e) => break Error::from(e),
        }
    };
    assert!(
        produced <= 1024 + buf.len() as u64,
        "kept decoding: {produced} bytes"
    );
    assert!(
        error.to_string().contains("manifest declares 1024"),
        "{error}"
    );
}

#[test]
fn installed_digest_lies_are_caught() {
    let fixture = Fixture::new();
    let file = one_payload(&fixture, b"real content".repeat(100), Compression::Zstd).build_hostile(
        |entries| {
            entries[0].installed.sha256 = Sha256Digest::of(b"something else");
        },
    );
    let message = verify_message(&file, &fixture);
    assert!(
        message.contains("installed SHA-256 does not match"),
        "{message}"
    );
}

#[test]
fn digest_error_comes_before_end_of_file() {
    let fixture = Fixture::new();
    let file = build(
        &fixture,
        &[PayloadInput::new(
            PayloadType::Image,
            "rootfs",
            vec![3; 10_000],
            Compression::None,
        )],
    );
    let mut damaged = file.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let mut package = PackageReader::open(&damaged[..], Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("manifest intact");
    let mut payload = package.next_payload().expect("ok").expect("one");
    let mut buf = [0u8; 1000];
    let mut delivered = 0;
    loop {
        match payload.read(&mut buf) {
            Ok(0) => panic!("end of file reported for altered bytes"),
            Ok(n) => delivered += n,
            Err(_) => break,
        }
    }
    // The altered byte's block (here the payload's only one) is never
    // handed out; `blocks::a_flipped_byte_is_caught_in_its_block` has many.
    assert_eq!(delivered, 0);
}

#[test]
fn oversized_manifest_is_refused_before_allocation() {
    let mut file = airlift_package::MAGIC.to_vec();
    file.extend_from_slice(&1u16.to_be_bytes());
    file.extend_from_slice(&1u16.to_be_bytes());
    file.extend_from_slice(&u32::MAX.to_be_bytes());
    let error = PackageReader::open(&file[..], Limits::default()).expect_err("refused");
    assert!(
        error.to_string().contains("manifest length 4294967295"),
        "{error}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_damage_is_always_refused(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
    ) {
        let fixture = FIXTURE.with(|f| f.clone());
        let mut damaged = fixture.1.clone();
        for (index, mask) in &flips {
            let at = index.index(damaged.len());
            damaged[at] ^= mask;
        }
        prop_assume!(damaged != fixture.1);
        prop_assert!(read_all(&damaged, &fixture.0.trust(), Some(&fixture.0.identity)).is_err());
    }
}

thread_local! {
    static FIXTURE: std::rc::Rc<(Fixture, Vec<u8>)> = {
        let fixture = Fixture::new();
        let (file, _) = mixed(&fixture);
        std::rc::Rc::new((fixture, file))
    };
}
