//! Test helpers: real signed packages (built by the test kit's
//! `PackageBuilder`), read through the real verifying reader, so installers
//! see exactly what the driver will hand them.

use super::{InstallError, InstallOutcome, Installer, PayloadRef};
use airlift_package::PayloadSpec;
use airlift_package::{
    Compression, Limits, Manifest, PackageReader, PayloadType, SigningKey, TrustSet, Verified,
};
use airlift_testkit::packages::PackageBuilder;
use std::io::Read;

pub(crate) type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One payload to put into a test package.
#[derive(Debug, Clone)]
pub(crate) struct Spec<'a> {
    kind: PayloadType,
    target: &'a str,
    content: &'a [u8],
    compression: Compression,
}

impl<'a> Spec<'a> {
    pub(crate) fn plain(kind: PayloadType, target: &'a str, content: &'a [u8]) -> Self {
        Self {
            kind,
            target,
            content,
            compression: Compression::None,
        }
    }

    pub(crate) fn zstd(kind: PayloadType, target: &'a str, content: &'a [u8]) -> Self {
        Self {
            compression: Compression::Zstd,
            ..Self::plain(kind, target, content)
        }
    }
}

/// A signed package's bytes and the trust set that verifies it.
#[derive(Debug)]
pub(crate) struct TestPackage {
    bytes: Vec<u8>,
    trust: TrustSet,
}

/// A package `testpkg 1.0.0` carrying `specs`.
pub(crate) fn package(specs: &[Spec<'_>]) -> Result<TestPackage> {
    package_version("1.0.0", specs)
}

/// A package `testpkg <version>` carrying `specs`.
pub(crate) fn package_version(version: &str, specs: &[Spec<'_>]) -> Result<TestPackage> {
    let key = SigningKey::generate()?;
    let builder = PackageBuilder::new("testpkg", version)
        .signed_by(&key)
        .device_type("testdevice");
    let builder = specs.iter().fold(builder, |builder, spec| {
        let payload_spec = PayloadSpec::new(spec.kind.clone(), spec.target, spec.compression);
        builder.payload(payload_spec, spec.content)
    });
    Ok(TestPackage {
        bytes: builder.try_build()?,
        trust: TrustSet::new([key.public_key()], 1)?,
    })
}

impl TestPackage {
    /// Flips a bit of the last payload's last stored byte: its reader then
    /// fails the digest check on its final read.
    pub(crate) fn corrupt_last_byte(&mut self) {
        if let Some(last) = self.bytes.last_mut() {
            *last ^= 0x01;
        }
    }

    /// The verified manifest.
    pub(crate) fn manifest(&self) -> Verified<Manifest> {
        PackageReader::open(&self.bytes[..], Limits::default())
            .expect("test package opens")
            .verify(&self.trust)
            .expect("test package verifies")
            .manifest()
            .clone()
    }

    /// Installs every payload with `installer`, in order, through the real
    /// verifying reader, stopping at the first error.
    pub(crate) fn install_all(
        &self,
        installer: &mut dyn Installer,
    ) -> std::result::Result<Vec<InstallOutcome>, InstallError> {
        self.install_all_through(installer, None)
    }

    /// Like [`install_all`](Self::install_all), but each payload's reader
    /// fails after `fail_after` bytes when it is `Some`, the way a broken
    /// download or a decoder choking on altered bytes does.
    pub(crate) fn install_all_through(
        &self,
        installer: &mut dyn Installer,
        fail_after: Option<u64>,
    ) -> std::result::Result<Vec<InstallOutcome>, InstallError> {
        let mut package = PackageReader::open(&self.bytes[..], Limits::default())
            .expect("test package opens")
            .verify(&self.trust)
            .expect("test package verifies");
        let manifest = package.manifest().clone();
        let mut outcomes = Vec::new();
        let mut index = 0;
        while let Some(payload) = package.next_payload().expect("next payload") {
            let installed = payload.decoded(&[]).expect("payload decodes");
            let payload = PayloadRef::new(&manifest, index).expect("payload in manifest");
            let mut installed = FailAfter {
                inner: installed,
                left: fail_after.unwrap_or(u64::MAX),
            };
            outcomes.push(installer.install(payload, &mut installed)?);
            index += 1;
        }
        Ok(outcomes)
    }
}

/// A reader that fails once `left` bytes have been read.
struct FailAfter<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for FailAfter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(
                "connection reset by peer (simulated)",
            ));
        }
        let want = usize::try_from(self.left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}
