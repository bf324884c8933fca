//! Installers: how one verified payload's installed bytes become a change on
//! the device that can later be committed or rolled back.
//!
//! Every payload type has an [`Installer`]:
//!
//! | payload type    | installer            | install                                        | commit                     | rollback                          |
//! |-----------------|----------------------|------------------------------------------------|----------------------------|-----------------------------------|
//! | `image`         | [`ImageInstaller`]   | raw bytes into the inactive A/B slot, read back | nothing (boot control's)   | nothing (boot control's)          |
//! | `file`          | [`FileInstaller`]    | atomic replace, old file kept as a backup      | delete the backups         | put the backups back              |
//! | `archive`       | [`ArchiveInstaller`] | tar unpacked beside the directory, then swapped in; old one kept | delete the backups | put the backups back |
//! | `module:<name>` | [`ModuleInstaller`]  | run the module's `download` and `install`      | run the module's `commit`  | run the module's `rollback`       |
//!
//! The bytes an installer receives come from
//! [`PayloadReader::decoded`](airlift_package::PayloadReader::decoded): a
//! `Read` that returns an error instead of end-of-file when they do not match
//! the signed digest. Installers therefore write until end-of-file and make
//! nothing permanent before it: a file's new content stays in a temporary file
//! that is not renamed, an image's slot is half-written but never switched to,
//! a module is killed before it is told to `install`. Nothing is buffered in
//! memory or copied to a temporary file on the way: download → signature check
//! → decrypt → decompress → SHA-256 → write.
//!
//! Installers that change something outside the inactive slot keep a journal
//! in their work directory (see [`journal`]), written atomically, so that
//! [`Installer::commit`] and [`Installer::rollback`] still know what to do
//! after a power cut or a restart of the agent: build a new installer on the
//! same work directory and call them.
//!
//! ```text
//!               install(payload 1..n)         reboot()            commit()
//!   (journal) ───────────────────────▶ staged ─────────▶ trial ──────────▶ (no journal)
//!                                        │                 │
//!                                        └──── rollback() ─┴────────────▶ (no journal)
//! ```
//!
//! [`Installers`] holds one installer per type and routes payloads by their
//! type; the driver uses it rather than the installers one by one.
//!
//! The update module protocol is documented in [`module`].

mod archive;
mod error;
mod file;
mod image;
pub mod journal;
pub mod module;
mod readback;
mod slot_writer;
mod sys;
#[cfg(test)]
mod testutil;

pub use archive::ArchiveInstaller;
pub use error::InstallError;
pub use file::FileInstaller;
pub use image::{ImageInstaller, SlotDevices, SlotWrite, DEFAULT_SLOT_SET};
pub use module::{ModuleInstaller, ModuleState, DEFAULT_MODULE_TIMEOUT};

use airlift_package::{Manifest, PayloadEntry, PayloadType, Verified};
use serde::{Deserialize, Serialize};
use std::io::Read;

/// One payload of a verified package, as handed to an installer. Only a
/// [`Verified`] manifest can make one, so an installer never acts on an
/// unchecked manifest.
#[derive(Debug, Clone, Copy)]
pub struct PayloadRef<'a> {
    manifest: &'a Verified<Manifest>,
    index: usize,
}

impl<'a> PayloadRef<'a> {
    /// Payload `index` of `manifest`, or `None` if the manifest has fewer.
    pub fn new(manifest: &'a Verified<Manifest>, index: usize) -> Option<Self> {
        (index < manifest.payloads.len()).then_some(Self { manifest, index })
    }

    /// The verified manifest the payload belongs to.
    pub fn manifest(&self) -> &'a Manifest {
        self.manifest
    }

    /// The payload's position in the manifest.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The payload's manifest entry: type, target, sizes and digests.
    pub fn entry(&self) -> &'a PayloadEntry {
        &self.manifest.payloads[self.index]
    }

    /// `name version` of the package, as recorded in journals.
    fn package_id(&self) -> journal::PackageId {
        journal::PackageId {
            name: self.manifest.name.clone(),
            version: self.manifest.version.to_string(),
        }
    }
}

/// What must happen before an installed payload takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reboot {
    /// Nothing: the change is live (files, most modules).
    NotNeeded,
    /// The device must boot into the slot that was written (images): the
    /// driver switches boot control to it and reboots.
    Device,
    /// The installer's own reboot step, [`Installer::reboot`], must run (a
    /// module that printed `reboot` in its `install` state, e.g. to restart a
    /// microcontroller it flashed).
    Installer,
}

/// The result of installing one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallOutcome {
    /// What must happen before the payload takes effect.
    pub reboot: Reboot,
    /// Installed bytes written.
    pub bytes: u64,
}

impl InstallOutcome {
    /// Whether any kind of reboot is needed.
    pub fn needs_reboot(&self) -> bool {
        self.reboot != Reboot::NotNeeded
    }
}

/// Installs payloads of one type and later makes them permanent or undoes
/// them.
///
/// The calls for one package are: [`install`](Self::install) for each of its
/// payloads of this type, [`reboot`](Self::reboot) if an outcome asked for
/// [`Reboot::Installer`], then exactly one of [`commit`](Self::commit) or
/// [`rollback`](Self::rollback). Commit and rollback are idempotent and work
/// on a fresh installer over the same work directory, so the driver may
/// repeat them after a crash. After any failed `install` the driver must call
/// `rollback`.
pub trait Installer {
    /// Writes `installed` (the payload's installed bytes) to where the
    /// payload's target says, reading until end-of-file. An error from
    /// `installed` (a digest mismatch, a lost connection) is returned as
    /// [`InstallError::Payload`] and leaves nothing committed.
    fn install(
        &mut self,
        payload: PayloadRef<'_>,
        installed: &mut dyn Read,
    ) -> Result<InstallOutcome, InstallError>;

    /// Performs the installer's own reboot step for payloads whose outcome
    /// was [`Reboot::Installer`]. The default does nothing.
    fn reboot(&mut self) -> Result<(), InstallError> {
        Ok(())
    }

    /// Makes everything installed since the last commit or rollback
    /// permanent.
    fn commit(&mut self) -> Result<(), InstallError>;

    /// Undoes everything installed since the last commit or rollback, as far
    /// as this installer can (an image slot is left as it is: not booting it
    /// is boot control's part).
    fn rollback(&mut self) -> Result<(), InstallError>;
}

/// One installer per payload type, with payloads routed by type.
#[derive(Debug)]
pub struct Installers {
    /// For `image` payloads.
    pub image: ImageInstaller,
    /// For `file` payloads.
    pub file: FileInstaller,
    /// For `archive` payloads.
    pub archive: ArchiveInstaller,
    /// For `module:<name>` payloads.
    pub module: ModuleInstaller,
}

impl Installers {
    /// The installer for payloads of `kind`.
    pub fn for_kind(&mut self, kind: &PayloadType) -> Result<&mut dyn Installer, InstallError> {
        match kind {
            PayloadType::Image => Ok(&mut self.image),
            PayloadType::File => Ok(&mut self.file),
            PayloadType::Archive => Ok(&mut self.archive),
            PayloadType::Module(_) => Ok(&mut self.module),
        }
    }

    fn all(&mut self) -> [&mut dyn Installer; 4] {
        [
            &mut self.image,
            &mut self.file,
            &mut self.archive,
            &mut self.module,
        ]
    }
}

impl Installer for Installers {
    fn install(
        &mut self,
        payload: PayloadRef<'_>,
        installed: &mut dyn Read,
    ) -> Result<InstallOutcome, InstallError> {
        self.for_kind(&payload.entry().kind)?
            .install(payload, installed)
    }

    /// Runs every installer's reboot step.
    fn reboot(&mut self) -> Result<(), InstallError> {
        self.all().into_iter().try_for_each(|i| i.reboot())
    }

    /// Commits every installer, stopping at the first error.
    fn commit(&mut self) -> Result<(), InstallError> {
        self.all().into_iter().try_for_each(|i| i.commit())
    }

    /// Rolls back every installer (modules first, then files, then the
    /// image), going on after an error so that as much as possible is
    /// restored; returns the first error.
    fn rollback(&mut self) -> Result<(), InstallError> {
        let mut first = None;
        for installer in self.all().into_iter().rev() {
            if let Err(e) = installer.rollback() {
                tracing::error!(error = %e, "rollback failed");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::Slot;
    use std::collections::BTreeMap;
    use testutil::Spec;

    #[test]
    fn installers_route_payloads_by_type() -> testutil::Result {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc"))?;
        let slots = SlotDevices {
            a: dir.path().join("a.img"),
            b: dir.path().join("b.img"),
        };
        let mut installers = Installers {
            image: ImageInstaller::new(BTreeMap::from([("rootfs".into(), slots.clone())]), Slot::B),
            file: FileInstaller::new(dir.path().join("work")).with_root(&root),
            archive: ArchiveInstaller::new(dir.path().join("work")).with_root(&root),
            module: ModuleInstaller::new(dir.path().join("modules"), dir.path().join("work")),
        };
        let package = testutil::package(&[
            Spec::plain(PayloadType::Image, "rootfs", b"image"),
            Spec::plain(PayloadType::File, "/etc/motd", b"hello"),
        ])?;
        let outcomes = package.install_all(&mut installers)?;
        assert_eq!(outcomes[0].reboot, Reboot::Device);
        assert_eq!(outcomes[1].reboot, Reboot::NotNeeded);
        assert_eq!(std::fs::read(&slots.b)?, b"image");
        assert_eq!(std::fs::read(root.join("etc/motd"))?, b"hello");
        installers.reboot()?;
        installers.rollback()?;
        assert!(!root.join("etc/motd").exists());

        std::fs::create_dir_all(root.join("opt/app"))?;
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        tar.append_data(&mut header, "version", &b"v2"[..])?;
        let tar = tar.into_inner()?;
        let archive = testutil::package(&[Spec::plain(PayloadType::Archive, "/opt/app", &tar)])?;
        archive.install_all(&mut installers)?;
        assert_eq!(std::fs::read(root.join("opt/app/version"))?, b"v2");
        installers.rollback()?;
        assert!(!root.join("opt/app/version").exists());
        Ok(())
    }

    #[test]
    fn payload_refs_stay_inside_the_manifest() -> testutil::Result {
        let package = testutil::package(&[Spec::plain(PayloadType::File, "/etc/motd", b"x")])?;
        let manifest = package.manifest();
        let payload = PayloadRef::new(&manifest, 0).expect("payload 0");
        assert_eq!(payload.entry().target, "/etc/motd");
        assert_eq!(payload.package_id().to_string(), "testpkg 1.0.0");
        assert!(PayloadRef::new(&manifest, 1).is_none());
        Ok(())
    }
}
