//! Building packages in memory for the tests, with the test kit's
//! `PackageBuilder` (which is built on this crate's writer: an integration
//! test links the same `airlift_package` as the kit does).

use airlift_package::encryption::{Identity, Recipient};
use airlift_package::{
    Compression, Error, Limits, PackageReader, PayloadSpec, PayloadType, SigningKey, TrustSet,
};
use airlift_testkit::packages::PackageBuilder;
use std::io::Read;

pub struct Fixture {
    pub key: SigningKey,
    pub identity: Identity,
}

impl Fixture {
    pub fn new() -> Self {
        Self {
            key: SigningKey::generate().expect("random key"),
            identity: Identity::generate(),
        }
    }

    pub fn recipient(&self) -> Recipient {
        self.identity.to_public()
    }

    pub fn trust(&self) -> TrustSet {
        TrustSet::new([self.key.public_key()], 1).expect("one key, threshold 1")
    }
}

pub struct PayloadInput {
    pub kind: PayloadType,
    pub target: &'static str,
    pub data: Vec<u8>,
    pub compression: Compression,
    pub encrypt: bool,
}

impl PayloadInput {
    pub fn new(
        kind: PayloadType,
        target: &'static str,
        data: Vec<u8>,
        compression: Compression,
    ) -> Self {
        Self {
            kind,
            target,
            data,
            compression,
            encrypt: false,
        }
    }

    pub fn encrypted(mut self) -> Self {
        self.encrypt = true;
        self
    }
}

/// `app 1.2.3` for `board-a`, carrying `payloads` (the encrypted ones to
/// the fixture's recipient), signed by no one yet.
pub fn unsigned<'k>(fixture: &Fixture, payloads: &[PayloadInput]) -> PackageBuilder<'k> {
    let builder = PackageBuilder::new("app", "1.2.3").device_type("board-a");
    payloads.iter().fold(builder, |builder, payload| {
        let spec = PayloadSpec::new(payload.kind.clone(), payload.target, payload.compression);
        if payload.encrypt {
            builder.encrypted_payload(spec, &payload.data, fixture.recipient())
        } else {
            builder.payload(spec, &payload.data)
        }
    })
}

/// [`unsigned`], signed by the fixture's key.
pub fn signed<'k>(fixture: &'k Fixture, payloads: &[PayloadInput]) -> PackageBuilder<'k> {
    unsigned(fixture, payloads).signed_by(&fixture.key)
}

pub fn build(fixture: &Fixture, payloads: &[PayloadInput]) -> Vec<u8> {
    signed(fixture, payloads).build()
}

/// Verifies and decodes every payload; returns the installed bytes.
pub fn read_all(
    file: &[u8],
    trust: &TrustSet,
    identity: Option<&Identity>,
) -> Result<Vec<Vec<u8>>, Error> {
    let identities: Vec<&dyn airlift_package::encryption::IdentityTrait> = match identity {
        Some(identity) => vec![identity],
        None => vec![],
    };
    let mut package = PackageReader::open(file, Limits::default())?.verify(trust)?;
    let mut out = Vec::new();
    while let Some(payload) = package.next_payload()? {
        let mut installed = Vec::new();
        payload.decoded(&identities)?.read_to_end(&mut installed)?;
        out.push(installed);
    }
    package.finish()?;
    Ok(out)
}

/// Bytes that compress a little, like a real filesystem image.
pub fn image_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(4096) {
        if rng.gen_bool(0.5) {
            rng.fill(chunk);
        } else {
            chunk.fill(rng.gen());
        }
    }
    data
}

/// A small package with one payload of every encoding.
pub fn mixed(fixture: &Fixture) -> (Vec<u8>, Vec<Vec<u8>>) {
    let inputs = vec![
        PayloadInput::new(
            PayloadType::Image,
            "rootfs",
            image_bytes(3000, 1),
            Compression::None,
        ),
        PayloadInput::new(
            PayloadType::File,
            "/etc/app.toml",
            b"level = 3\n".repeat(40),
            Compression::Zstd,
        ),
        PayloadInput::new(
            PayloadType::Module("mcu".into()),
            "uart0",
            image_bytes(700, 2),
            Compression::None,
        )
        .encrypted(),
        PayloadInput::new(
            PayloadType::Archive,
            "/opt/app",
            image_bytes(900, 3),
            Compression::Zstd,
        )
        .encrypted(),
    ];
    let expected = inputs.iter().map(|p| p.data.clone()).collect();
    (build(fixture, &inputs), expected)
}
