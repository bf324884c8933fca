use crate::support::*;
use airlift_package::{
    Compression, Encryption, Limits, PackageReader, PayloadType, SigningKey, TrustSet,
};
use proptest::prelude::*;
use std::io::Read;

#[test]
fn every_encoding_round_trips() {
    let fixture = Fixture::new();
    let (file, expected) = mixed(&fixture);
    let installed = read_all(&file, &fixture.trust(), Some(&fixture.identity)).expect("verifies");
    assert_eq!(installed, expected);
}

#[test]
fn inspect_needs_no_key_and_shows_the_manifest() {
    let fixture = Fixture::new();
    let (file, _) = mixed(&fixture);
    let reader = PackageReader::open(&file[..], Limits::default()).expect("opens");
    let manifest = reader.manifest_unverified().expect("parses");
    assert_eq!(manifest.name, "app");
    assert_eq!(manifest.payloads.len(), 4);
    assert_eq!(manifest.payloads[2].encryption, Encryption::Age);
    assert_eq!(manifest.payloads[1].compression, Compression::Zstd);
    assert_eq!(
        reader.signatures()[0].key_id,
        fixture.key.public_key().key_id()
    );
}

#[test]
fn encrypted_payload_needs_the_identity() {
    let fixture = Fixture::new();
    let (file, _) = mixed(&fixture);
    let error = read_all(&file, &fixture.trust(), None).expect_err("no identity");
    assert!(
        error.to_string().contains("payload 2 (uart0) is encrypted"),
        "{error}"
    );
    let stranger = Fixture::new();
    let error =
        read_all(&file, &fixture.trust(), Some(&stranger.identity)).expect_err("wrong identity");
    assert!(
        error.to_string().contains("none of the given identities"),
        "{error}"
    );
}

#[test]
fn encrypted_payload_reveals_nothing_at_rest() {
    let fixture = Fixture::new();
    let secret = b"wifi-psk=correct horse battery staple\n".repeat(20);
    let file = build(
        &fixture,
        &[PayloadInput::new(
            PayloadType::File,
            "/etc/wifi.conf",
            secret.clone(),
            Compression::None,
        )
        .encrypted()],
    );
    assert!(!file.windows(16).any(|w| w == &secret[..16]));
}

#[test]
fn threshold_two_needs_two_trusted_signers() {
    let fixture = Fixture::new();
    let second = SigningKey::generate().expect("random");
    let package = unsigned(
        &fixture,
        &[PayloadInput::new(
            PayloadType::Image,
            "rootfs",
            vec![7; 100],
            Compression::None,
        )],
    );
    let trust = TrustSet::new([fixture.key.public_key(), second.public_key()], 2).expect("valid");
    let both = package
        .clone()
        .signed_by(&fixture.key)
        .signed_by(&second)
        .build();
    read_all(&both, &trust, None).expect("two signatures meet threshold 2");
    let one = package.clone().signed_by(&fixture.key).build();
    let error = read_all(&one, &trust, None).expect_err("one signature is not enough");
    assert!(
        error
            .to_string()
            .contains("1 valid trusted signature(s), 2 needed"),
        "{error}"
    );
    // Key rotation: a device trusting old and new keys accepts either.
    let rotating =
        TrustSet::new([fixture.key.public_key(), second.public_key()], 1).expect("valid");
    read_all(&package.signed_by(&second).build(), &rotating, None).expect("new key accepted");
}

#[test]
fn reader_stops_reading_at_the_declared_size() {
    // An "endless" stream: a valid package followed by infinite bytes.
    let fixture = Fixture::new();
    let file = build(
        &fixture,
        &[PayloadInput::new(
            PayloadType::Image,
            "rootfs",
            vec![1; 5000],
            Compression::None,
        )],
    );
    let endless = (&file[..]).chain(std::io::repeat(0xAA));
    let mut package = PackageReader::open(endless, Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("verifies");
    let mut payload = package.next_payload().expect("ok").expect("one payload");
    let mut bytes = Vec::new();
    payload.read_to_end(&mut bytes).expect("payload verifies");
    assert_eq!(bytes.len(), 5000);
    let error = package.finish().expect_err("trailing data");
    assert!(
        error
            .to_string()
            .contains(&format!("starting at byte {}", file.len())),
        "{error}"
    );
}

#[test]
fn verification_reads_no_payload_byte() {
    // Counting what the reader pulls from the stream before it decides.
    struct Counting<'a> {
        inner: &'a [u8],
        read: usize,
    }
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n;
            Ok(n)
        }
    }
    let fixture = Fixture::new();
    let file = build(
        &fixture,
        &[PayloadInput::new(
            PayloadType::Image,
            "rootfs",
            vec![9; 100_000],
            Compression::None,
        )],
    );
    let mut counting = Counting {
        inner: &file,
        read: 0,
    };
    let reader = PackageReader::open(&mut counting, Limits::default()).expect("opens");
    let payload_offset = reader.payload_offset();
    let stranger = Fixture::new();
    assert!(reader.verify(&stranger.trust()).is_err());
    assert_eq!(counting.read as u64, payload_offset);
}

#[test]
fn payload_file_ranges_are_reported() {
    let fixture = Fixture::new();
    let (file, _) = mixed(&fixture);
    let mut package = PackageReader::open(&file[..], Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("verifies");
    let mut end = 0;
    while let Some(mut payload) = package.next_payload().expect("ok") {
        let range = payload.file_range();
        assert_eq!(range.end - range.start, payload.entry().stored.size);
        std::io::copy(&mut payload, &mut std::io::sink()).expect("verifies");
        end = range.end;
    }
    assert_eq!(end, file.len() as u64);
    package.finish().expect("nothing after");
}

#[test]
fn a_read_resumes_at_a_later_payload_from_the_head_and_the_rest() {
    let fixture = Fixture::new();
    let (file, expected) = mixed(&fixture);
    let package = PackageReader::open(&file[..], Limits::default()).expect("opens");
    let head_len = package.payload_offset() as usize;
    let ranges = package
        .verify(&fixture.trust())
        .expect("verifies")
        .payload_ranges();
    assert_eq!(ranges[0].start, head_len as u64);
    assert_eq!(ranges[3].end, file.len() as u64);

    // The head, then the file from payload 2 on: as an agent resuming.
    let start = ranges[2].start as usize;
    let resumed = [&file[..head_len], &file[start..]].concat();
    let mut package = PackageReader::open(&resumed[..], Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("verifies");
    package.resume_at(2).expect("resumes");
    let mut payload = package.next_payload().expect("ok").expect("payload 2");
    assert_eq!(payload.index(), 2);
    assert_eq!(payload.file_range(), ranges[2]);
    std::io::copy(&mut payload, &mut std::io::sink()).expect("digest holds");
    let last = package.next_payload().expect("ok").expect("payload 3");
    let mut installed = Vec::new();
    last.decoded(&[&fixture.identity])
        .expect("decrypts")
        .read_to_end(&mut installed)
        .expect("digest holds");
    assert_eq!(installed, expected[3]);
    package.finish().expect("nothing after");

    // Resuming once payloads were read, or past the end, is refused.
    let mut package = PackageReader::open(&file[..], Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("verifies");
    assert!(package.resume_at(5).is_err());
    drop(package.next_payload().expect("ok"));
    assert!(package.resume_at(1).is_err());
}

#[test]
fn a_resumed_read_still_checks_what_follows() {
    let fixture = Fixture::new();
    let (file, _) = mixed(&fixture);
    let package = PackageReader::open(&file[..], Limits::default()).expect("opens");
    let head_len = package.payload_offset() as usize;
    let ranges = package
        .verify(&fixture.trust())
        .expect("verifies")
        .payload_ranges();
    let start = ranges[3].start as usize;
    let mut resumed = [&file[..head_len], &file[start..]].concat();
    let last = resumed.len() - 1;
    resumed[last] ^= 0x01;
    let mut package = PackageReader::open(&resumed[..], Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("verifies");
    package.resume_at(3).expect("resumes");
    let error = package.finish().expect_err("payload 3 altered");
    assert!(error.to_string().contains("payload 3"), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("{}..{}", ranges[3].start, ranges[3].end)),
        "the error names the bytes in the original file: {error}"
    );
}

#[test]
fn skipped_payloads_are_still_checked() {
    let fixture = Fixture::new();
    let (mut file, _) = mixed(&fixture);
    let last = file.len() - 1;
    file[last] ^= 0x40;
    let mut package = PackageReader::open(&file[..], Limits::default())
        .expect("opens")
        .verify(&fixture.trust())
        .expect("manifest intact");
    // Take the first payload and ignore the rest: finish() must still catch it.
    drop(package.next_payload().expect("ok"));
    let error = package.finish().expect_err("last payload altered");
    assert!(
        error.to_string().contains("payload 3 (archive /opt/app)"),
        "{error}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn arbitrary_payloads_round_trip(
        data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5000), 1..4),
        zstd in any::<bool>(),
        encrypt in any::<bool>(),
    ) {
        let fixture = Fixture::new();
        let compression = if zstd { Compression::Zstd } else { Compression::None };
        let inputs: Vec<PayloadInput> = data
            .iter()
            .map(|bytes| {
                let input = PayloadInput::new(PayloadType::Image, "rootfs", bytes.clone(), compression);
                if encrypt { input.encrypted() } else { input }
            })
            .collect();
        let file = build(&fixture, &inputs);
        let installed = read_all(&file, &fixture.trust(), Some(&fixture.identity)).expect("verifies");
        prop_assert_eq!(installed, data);
    }
}
