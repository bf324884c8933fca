//! `image` payloads: raw bytes streamed into the inactive slot of an A/B
//! pair, then read back (see [`super::readback`] for which check).

use super::readback::{self, ReadBackCheck, Tally, Written};
use super::slot_writer;
#[cfg(test)]
use super::slot_writer::BUFFER;
use super::{InstallError, InstallOutcome, Installer, PayloadRef, Reboot};
use crate::boot::Slot;
use airlift_package::PayloadEntry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// The slot set used when none is configured.
pub const DEFAULT_SLOT_SET: &str = "rootfs";

/// The two devices (or, for tests and simulation, regular files) of one
/// slot set, e.g. `rootfs` = `/dev/mmcblk0p2` and `/dev/mmcblk0p3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotDevices {
    /// Slot A's block device or file.
    pub a: PathBuf,
    /// Slot B's block device or file.
    pub b: PathBuf,
}

impl SlotDevices {
    /// The device or file of `slot`.
    pub fn path(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }
}

/// Writes `image` payloads into one slot of the slot set their target names.
///
/// A block device is written in place (and refused if the image is larger
/// than the device); a regular file is truncated and rewritten, on a thread
/// of its own beside the download ([`super::slot_writer`]). Every byte is
/// read back from the storage (cached pages dropped) before the slot may
/// boot: the install fails unless it hashes as the bytes this process wrote
/// (a format 2 payload written whole here, each byte checked against the
/// signed block index before it was written; read back stretch by stretch
/// as each is synced) or, wherever this process did not see every byte go
/// in, as the manifest's installed digest (read back after the last byte).
/// The outcome asks for [`Reboot::Device`].
///
/// Commit and rollback do nothing here: the old slot is untouched, and which
/// slot boots is boot control's business.
#[derive(Debug, Clone)]
pub struct ImageInstaller {
    slot_sets: BTreeMap<String, SlotDevices>,
    target: Slot,
    /// Slots this process wrote whole, by path, until they are written
    /// again: what their read-back compares against.
    written: BTreeMap<PathBuf, Written>,
}

impl ImageInstaller {
    /// An installer writing slot `target` — the slot that is not running,
    /// as boot control reports it — of the given slot sets (slot set name,
    /// as used in `image` payload targets → its two devices).
    pub fn new(slot_sets: BTreeMap<String, SlotDevices>, target: Slot) -> Self {
        Self {
            slot_sets,
            target,
            written: BTreeMap::new(),
        }
    }

    /// An installer for the one slot set `rootfs`.
    pub fn rootfs(devices: SlotDevices, target: Slot) -> Self {
        Self::new(
            BTreeMap::from([(DEFAULT_SLOT_SET.to_owned(), devices)]),
            target,
        )
    }

    /// The slot that is written.
    pub fn target(&self) -> Slot {
        self.target
    }

    /// Changes the slot that is written (to the inactive one, after a boot).
    pub fn set_target(&mut self, target: Slot) {
        self.target = target;
    }

    /// The configured slot sets.
    pub fn slot_sets(&self) -> &BTreeMap<String, SlotDevices> {
        &self.slot_sets
    }

    fn device_for(&self, entry: &PayloadEntry) -> Result<&Path, InstallError> {
        self.slot_sets
            .get(&entry.target)
            .map(|devices| devices.path(self.target))
            .ok_or_else(|| InstallError::UnknownSlotSet {
                target: entry.target.clone(),
                known: self.slot_sets.keys().cloned().collect(),
            })
    }
}

impl ImageInstaller {
    /// Writes an image payload into the target slot without reading it
    /// back (that is [`verify`](Self::verify)), for a stream the driver may
    /// have to resume: see [`SlotWrite`].
    pub fn write(
        &mut self,
        payload: PayloadRef<'_>,
        installed: &mut dyn Read,
        progress: SlotWrite<'_>,
    ) -> Result<InstallOutcome, InstallError> {
        let entry = payload.entry();
        let path = self.device_for(entry)?.to_owned();
        tracing::info!(
            target_name = %entry.target,
            slot = %self.target,
            path = %path.display(),
            size = entry.installed.size,
            resumed_at = progress.already,
            "writing image into the inactive slot"
        );
        // Whatever was recorded of this slot no longer holds once a byte of
        // it may have changed.
        self.written.remove(&path);
        let mut tally = Tally::for_write(payload.manifest(), progress.already);
        let mut slot = open_slot(&path, entry, progress.already)?;
        let copied = slot_writer::copy(
            installed,
            slot_writer::Copy {
                slot: &mut slot,
                path: &path,
                payload: payload.index(),
                target: &entry.target,
                size: entry.installed.size,
                already: progress.already,
                sync_every: progress.sync_every,
                synced: progress.synced,
                tally: tally.as_mut(),
            },
        )?;
        let written = copied.installed;
        if !slot
            .metadata()
            .map_err(InstallError::io("inspecting slot", &path))?
            .file_type()
            .is_block_device()
        {
            slot.set_len(written)
                .map_err(InstallError::io("truncating slot file", &path))?;
        }
        slot.sync_all()
            .map_err(InstallError::io("flushing slot", &path))?;
        super::sys::drop_cached_pages(&slot);
        if let Some(tally) = tally {
            self.written.insert(
                path,
                tally.finish(written, entry.installed.sha256, copied.read_back),
            );
        }
        Ok(InstallOutcome {
            reboot: Reboot::Device,
            bytes: written,
        })
    }

    /// Reads the payload's slot back and checks the installed size and
    /// bytes: the step between a written slot and a slot that may boot.
    pub fn verify(&self, payload: PayloadRef<'_>) -> Result<(), InstallError> {
        let entry = payload.entry();
        let path = self.device_for(entry)?;
        let check = self.read_back_check(payload)?;
        match self.written.get(path) {
            // Read back stretch by stretch while it was written.
            Some(written) if check == ReadBackCheck::AsWritten && written.read_back => {}
            Some(written) if check == ReadBackCheck::AsWritten => {
                readback::read_back_written(path, written)?;
            }
            _ => readback::read_back_signed(path, entry.installed.size, &entry.installed.sha256)?,
        }
        tracing::info!(
            path = %path.display(),
            bytes = entry.installed.size,
            check = check.name(),
            "image read back"
        );
        Ok(())
    }

    /// Which check [`verify`](Self::verify) makes for the payload's slot:
    /// as written when this process wrote exactly this payload there whole
    /// (and it was block-verified), else as signed.
    pub(crate) fn read_back_check(
        &self,
        payload: PayloadRef<'_>,
    ) -> Result<ReadBackCheck, InstallError> {
        let entry = payload.entry();
        let path = self.device_for(entry)?;
        Ok(match self.written.get(path) {
            Some(written)
                if written.size == entry.installed.size
                    && written.installed == entry.installed.sha256 =>
            {
                ReadBackCheck::AsWritten
            }
            _ => ReadBackCheck::Signed,
        })
    }

    /// The device or file an image payload is written to.
    pub fn slot_path(&self, payload: PayloadRef<'_>) -> Result<&Path, InstallError> {
        self.device_for(payload.entry())
    }
}

/// How [`ImageInstaller::write`] writes one payload that is part of a
/// resumable stream.
pub struct SlotWrite<'a> {
    /// Installed bytes already in the slot from an interrupted run: the
    /// first `already` bytes of the reader are these bytes, read back from
    /// the slot so that they are hashed with the rest, and are not written
    /// again.
    pub already: u64,
    /// Sync the slot every this many bytes and then tell `synced`.
    pub sync_every: u64,
    /// Told the count of installed bytes that are durably in the slot
    /// (from the thread that writes the slot).
    pub synced: &'a mut (dyn FnMut(u64) -> io::Result<()> + Send),
}

impl std::fmt::Debug for SlotWrite<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotWrite")
            .field("already", &self.already)
            .field("sync_every", &self.sync_every)
            .finish_non_exhaustive()
    }
}

impl SlotWrite<'_> {
    /// A whole write from the first byte, synced only at the end.
    pub fn whole(synced: &mut (dyn FnMut(u64) -> io::Result<()> + Send)) -> SlotWrite<'_> {
        SlotWrite {
            already: 0,
            sync_every: u64::MAX,
            synced,
        }
    }
}

impl Installer for ImageInstaller {
    /// Writes the slot, then reads it back.
    fn install(
        &mut self,
        payload: PayloadRef<'_>,
        installed: &mut dyn Read,
    ) -> Result<InstallOutcome, InstallError> {
        let outcome = self.write(payload, installed, SlotWrite::whole(&mut |_| Ok(())))?;
        self.verify(payload)?;
        Ok(outcome)
    }

    fn commit(&mut self) -> Result<(), InstallError> {
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), InstallError> {
        Ok(())
    }
}

/// Opens a slot for writing: a block device in place, after checking that
/// the image fits; anything else as a regular file (truncated to what it
/// holds once written). Positioned at byte `already`.
fn open_slot(path: &Path, entry: &PayloadEntry, already: u64) -> Result<File, InstallError> {
    let is_block_device = match fs::metadata(path) {
        Ok(meta) => meta.file_type().is_block_device(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(InstallError::io("inspecting slot", path)(e)),
    };
    if !is_block_device {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(already == 0)
            .open(path)
            .map_err(InstallError::io("opening slot file", path))?;
        file.seek(SeekFrom::Start(already))
            .map_err(InstallError::io("seeking in slot file", path))?;
        return Ok(file);
    }
    let mut device = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(InstallError::io("opening slot device", path))?;
    let capacity = device
        .seek(SeekFrom::End(0))
        .and_then(|size| device.rewind().map(|()| size))
        .map_err(InstallError::io("finding the size of slot device", path))?;
    if entry.installed.size > capacity {
        return Err(InstallError::ImageTooLarge {
            target: entry.target.clone(),
            device: path.to_owned(),
            size: entry.installed.size,
            capacity,
        });
    }
    device
        .seek(SeekFrom::Start(already))
        .map_err(InstallError::io("seeking in slot device", path))?;
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::testutil::{self, Spec};
    use airlift_package::{Compression, PayloadType};

    fn slots(dir: &Path) -> SlotDevices {
        SlotDevices {
            a: dir.join("slot-a.img"),
            b: dir.join("slot-b.img"),
        }
    }

    #[test]
    fn writes_the_inactive_slot_and_reads_it_back() -> testutil::Result {
        let dir = tempfile::tempdir()?;
        let devices = slots(dir.path());
        fs::write(&devices.a, b"running system")?;
        fs::write(&devices.b, vec![0xAA; 3 * BUFFER])?;
        let image: Vec<u8> = (0..2 * BUFFER + 123).map(|i| (i % 251) as u8).collect();
        let package = testutil::package(&[Spec::zstd(PayloadType::Image, "rootfs", &image)])?;

        let mut installer = ImageInstaller::rootfs(devices.clone(), Slot::B);
        let outcomes = package.install_all(&mut installer)?;

        assert_eq!(outcomes[0].reboot, Reboot::Device);
        assert_eq!(outcomes[0].bytes, image.len() as u64);
        assert_eq!(
            fs::read(&devices.b)?,
            image,
            "slot file truncated to the image"
        );
        assert_eq!(fs::read(&devices.a)?, b"running system");
        Ok(())
    }

    #[test]
    fn a_resumed_write_keeps_the_slots_prefix_and_reports_synced_progress() -> testutil::Result {
        let dir = tempfile::tempdir()?;
        let devices = slots(dir.path());
        let image: Vec<u8> = (0..3 * BUFFER + 7).map(|i| (i % 253) as u8).collect();
        let package = testutil::package(&[Spec::plain(PayloadType::Image, "rootfs", &image)])?;
        let manifest = package.manifest();
        let payload = PayloadRef::new(&manifest, 0).expect("payload 0");
        // An interrupted run left the first 1.5 buffers, then garbage.
        let already = BUFFER as u64 + 1000;
        let mut left = image[..already as usize].to_vec();
        left.extend_from_slice(&[0xEE; 5000]);
        fs::write(&devices.b, &left)?;

        let mut installer = ImageInstaller::rootfs(devices.clone(), Slot::B);
        let mut synced = Vec::new();
        let mut record = |n: u64| {
            synced.push(n);
            Ok(())
        };
        // The reader hands out the whole payload; the prefix is not rewritten.
        let outcome = installer.write(
            payload,
            &mut &image[..],
            SlotWrite {
                already,
                sync_every: BUFFER as u64 / 2,
                synced: &mut record,
            },
        )?;
        assert_eq!(outcome.bytes, image.len() as u64);
        assert_eq!(fs::read(&devices.b)?, image);
        installer.verify(payload)?;
        assert!(
            synced.len() >= 2 && synced.iter().all(|n| *n > already),
            "progress only past the resumed part: {synced:?}"
        );
        Ok(())
    }

    fn flip(path: &Path, at: usize) -> io::Result<()> {
        let mut bytes = fs::read(path)?;
        bytes[at] ^= 0x01;
        fs::write(path, bytes)
    }

    #[test]
    fn a_whole_write_is_read_back_while_it_is_written_and_not_read_again() -> testutil::Result {
        let dir = tempfile::tempdir()?;
        let devices = slots(dir.path());
        let image: Vec<u8> = (0..2 * BUFFER + 5).map(|i| (i % 241) as u8).collect();
        for spec in [
            Spec::plain(PayloadType::Image, "rootfs", &image),
            Spec::zstd(PayloadType::Image, "rootfs", &image),
        ] {
            let package = testutil::package(&[spec])?;
            let manifest = package.manifest();
            let payload = PayloadRef::new(&manifest, 0).expect("payload 0");
            let mut installer = ImageInstaller::rootfs(devices.clone(), Slot::B);
            package.install_all(&mut installer)?;
            assert_eq!(
                installer.read_back_check(payload)?,
                ReadBackCheck::AsWritten
            );
            let record = installer.written.get(&devices.b).cloned();
            assert!(
                record
                    .as_ref()
                    .is_some_and(|r| r.read_back && r.size == image.len() as u64),
                "{record:?}"
            );
            // The storage was read while writing (the slot writer's tests
            // show a medium that hands back other bytes caught there), so
            // verifying the slot reads nothing again: a byte changed since
            // is not this check's business (see `readback`).
            flip(&devices.b, BUFFER + 3)?;
            installer.verify(payload)?;
            flip(&devices.b, BUFFER + 3)?;
        }
        Ok(())
    }

    #[test]
    fn a_resumed_write_is_read_back_against_the_signed_digest() -> testutil::Result {
        let dir = tempfile::tempdir()?;
        let devices = slots(dir.path());
        let image: Vec<u8> = (0..3 * BUFFER).map(|i| (i % 239) as u8).collect();
        let package = testutil::package(&[Spec::plain(PayloadType::Image, "rootfs", &image)])?;
        let manifest = package.manifest();
        let payload = PayloadRef::new(&manifest, 0).expect("payload 0");
        let already = BUFFER as u64 + 77;
        fs::write(&devices.b, &image[..already as usize])?;

        let mut installer = ImageInstaller::rootfs(devices.clone(), Slot::B);
        let mut ignore = |_| Ok(());
        let resumed = SlotWrite {
            already,
            ..SlotWrite::whole(&mut ignore)
        };
        installer.write(payload, &mut &image[..], resumed)?;
        assert_eq!(installer.read_back_check(payload)?, ReadBackCheck::Signed);
        installer.verify(payload)?;
        // A byte an earlier run wrote, and one this run wrote: both caught.
        for at in [10, already as usize + 10] {
            flip(&devices.b, at)?;
            let error = installer.verify(payload).err();
            assert!(
                matches!(error, Some(InstallError::ReadBack { .. })),
                "byte {at}: {error:?}"
            );
            flip(&devices.b, at)?;
        }
        installer.verify(payload)?;
        Ok(())
    }

    #[test]
    fn a_read_back_in_a_later_run_or_after_a_failed_rewrite_is_against_the_signed_digest(
    ) -> testutil::Result {
        let dir = tempfile::tempdir()?;
        let devices = slots(dir.path());
        let image: Vec<u8> = (0..BUFFER + 9).map(|i| (i % 233) as u8).collect();
        let package = testutil::package(&[Spec::plain(PayloadType::Image, "rootfs", &image)])?;
        let manifest = package.manifest();
        let payload = PayloadRef::new(&manifest, 0).expect("payload 0");
        let mut installer = ImageInstaller::rootfs(devices.clone(), Slot::B);
        package.install_all(&mut installer)?;

        // The agent restarted between writing and reading back.
        let restarted = ImageInstaller::rootfs(devices.clone(), Slot::B);
        assert_eq!(restarted.read_back_check(payload)?, ReadBackCheck::Signed);
        restarted.verify(payload)?;
        flip(&devices.b, 5)?;
        let error = restarted.verify(payload).err();
        assert!(
            matches!(error, Some(InstallError::ReadBack { .. })),
            "{error:?}"
        );
        flip(&devices.b, 5)?;

        // A rewrite that broke off forgets what the first write recorded.
        assert!(package
            .install_all_through(&mut installer, Some(1000))
            .is_err());
        assert_eq!(installer.read_back_check(payload)?, ReadBackCheck::Signed);
        assert!(installer.verify(payload).is_err(), "only 1000 bytes in");
        Ok(())
    }

    #[test]
    fn a_format_1_payload_is_read_back_against_the_signed_digest() -> testutil::Result {
        use airlift_package::{
            encode_payload, EncodeOptions, Limits, Manifest, PackageReader, PackageWriter,
            PayloadSpec, SignedManifest, SigningKey, TrustSet,
        };
        let dir = tempfile::tempdir()?;
        let devices = slots(dir.path());
        let image: Vec<u8> = (0..BUFFER + 3).map(|i| (i % 229) as u8).collect();
        let key = SigningKey::generate()?;
        let spec = PayloadSpec::new(PayloadType::Image, "rootfs", Compression::None);
        let mut stored = Vec::new();
        let entry = encode_payload(&image[..], &spec, &EncodeOptions::default(), &mut stored)?;
        let manifest = Manifest::builder("old", semver::Version::new(1, 0, 0), ["board"])
            .format_version(1)
            .payload(entry)
            .build();
        let signed = SignedManifest::sign(&manifest, &[&key], &Limits::default())?;
        let mut writer = PackageWriter::new(Vec::new(), &signed)?;
        writer.write_payload(&stored[..])?;
        let file = writer.finish()?;
        let trust = TrustSet::new([key.public_key()], 1)?;
        let mut package = PackageReader::open(&file[..], Limits::default())?.verify(&trust)?;
        let verified = package.manifest().clone();
        assert_eq!(verified.format_version, 1);
        let payload = PayloadRef::new(&verified, 0).expect("payload 0");
        let mut installed = package.next_payload()?.expect("payload 0").decoded(&[])?;

        let mut installer = ImageInstaller::rootfs(devices.clone(), Slot::B);
        installer.install(payload, &mut installed)?;
        assert_eq!(installer.read_back_check(payload)?, ReadBackCheck::Signed);
        flip(&devices.b, BUFFER)?;
        let error = installer.verify(payload).err();
        assert!(
            matches!(error, Some(InstallError::ReadBack { .. })),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn a_payload_failing_its_digest_is_an_error_and_never_reported_installed() -> testutil::Result {
        let dir = tempfile::tempdir()?;
        let devices = slots(dir.path());
        let mut package =
            testutil::package(&[Spec::plain(PayloadType::Image, "rootfs", b"image bytes")])?;
        package.corrupt_last_byte();

        let mut installer = ImageInstaller::rootfs(devices, Slot::A);
        let error = package.install_all(&mut installer).err();
        assert!(
            matches!(error, Some(InstallError::Payload { index: 0, .. })),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn refuses_unknown_slot_sets() -> testutil::Result {
        let dir = tempfile::tempdir()?;
        let package = testutil::package(&[Spec::plain(PayloadType::Image, "bootfs", b"x")])?;
        let mut installer = ImageInstaller::rootfs(slots(dir.path()), Slot::A);
        let error = package.install_all(&mut installer).err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("\"bootfs\"") && message.contains("rootfs"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn several_slot_sets_are_written_into_the_same_slot() -> testutil::Result {
        let dir = tempfile::tempdir()?;
        let boot = SlotDevices {
            a: dir.path().join("boot-a"),
            b: dir.path().join("boot-b"),
        };
        let sets = BTreeMap::from([
            ("rootfs".to_owned(), slots(dir.path())),
            ("bootfs".to_owned(), boot.clone()),
        ]);
        let package = testutil::package(&[
            Spec::plain(PayloadType::Image, "rootfs", b"root"),
            Spec::plain(PayloadType::Image, "bootfs", b"boot"),
        ])?;
        let mut installer = ImageInstaller::new(sets, Slot::A);
        package.install_all(&mut installer)?;
        assert_eq!(fs::read(dir.path().join("slot-a.img"))?, b"root");
        assert_eq!(fs::read(&boot.a)?, b"boot");
        assert!(!boot.b.exists());
        Ok(())
    }
}
