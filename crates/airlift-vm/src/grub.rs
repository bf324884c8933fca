//! BIOS GRUB installed by hand, as `grub-bios-setup` would, on a disk
//! image file: `grub-install` cannot be used on an image (it probes the
//! file system of its boot directory through a block device), and loop
//! devices need privileges a CI run may not have.
//!
//! 1. `grub-mkimage` builds the core image with the modules `grub.cfg`
//!    uses and the boot partition as its prefix;
//! 2. the core image goes into the BIOS boot partition, and its first
//!    sector (`diskboot.img`) gets the block list of the rest: at byte
//!    0x1F4, `u64` first sector, `u16` sector count, `u16` load segment;
//! 3. `boot.img`'s code goes over the protective MBR (the partition table
//!    is kept), pointing at the core image's first sector (`u64` at 0x5C).

use crate::layout::{self, SECTOR};
use crate::{tool, VmError};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Where Debian's `grub-pc-bin` keeps the BIOS GRUB modules.
pub const I386_PC: &str = "/usr/lib/grub/i386-pc";

/// The modules the core image holds: what `dist/grub.cfg` uses, and
/// reading an ext4 partition on a GPT disk through the BIOS.
const MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "ext2",
    "normal",
    "configfile",
    "linux",
    "loadenv",
    "test",
    "echo",
    "serial",
    "terminal",
];

/// Byte offset of the block list in the core image's first sector.
const BLOCKLIST: usize = 0x1F4;
/// Byte offset of the core image's sector in `boot.img`.
const KERNEL_SECTOR: usize = 0x5C;
/// The bytes of `boot.img` that are code (the rest of the MBR is the disk
/// signature and the partition table).
const BOOT_CODE: usize = 440;

/// Builds the core image in `work` and installs it, with `boot.img`, on
/// `disk`, whose partition table is already written.
pub fn install(disk: &Path, work: &Path) -> Result<(), VmError> {
    let modules = Path::new(I386_PC);
    let boot_img_path = modules.join("boot.img");
    if !boot_img_path.is_file() {
        return Err(VmError::MissingTool {
            program: boot_img_path.display().to_string(),
            package: "grub-pc-bin",
        });
    }
    let core_path = work.join("core.img");
    let prefix = format!("({})", layout::BOOT.grub);
    tool::run(
        tool::command("grub-mkimage")?
            .args(["-O", "i386-pc", "-d"])
            .arg(modules)
            .arg("-o")
            .arg(&core_path)
            .args(["-p", &prefix])
            .args(MODULES),
        None,
    )?;
    let mut core = std::fs::read(&core_path).map_err(VmError::io("reading", &core_path))?;
    let sector = SECTOR as usize;
    core.resize(core.len().div_ceil(sector) * sector, 0);
    if core.len() as u64 > layout::BIOS_BOOT.bytes() {
        return Err(VmError::TooLarge {
            what: "GRUB's core image".to_owned(),
            needed: core.len() as u64,
            room: layout::BIOS_BOOT.bytes(),
        });
    }
    let first = layout::BIOS_BOOT.start;
    let rest = u16::try_from(core.len() / sector - 1).map_err(|_| VmError::Unexpected {
        program: "grub-mkimage",
        detail: "a core image of more than 65535 sectors".to_owned(),
    })?;
    core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(first + 1).to_le_bytes());
    core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&rest.to_le_bytes());
    core[BLOCKLIST + 10..BLOCKLIST + 12].copy_from_slice(&0x0820u16.to_le_bytes());

    let boot_img = std::fs::read(&boot_img_path).map_err(VmError::io("reading", &boot_img_path))?;
    if boot_img.len() != sector {
        return Err(VmError::Unexpected {
            program: "grub-pc-bin",
            detail: format!("{} is not one sector", boot_img_path.display()),
        });
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(VmError::io("opening", disk))?;
    let mut mbr = vec![0u8; sector];
    file.read_exact(&mut mbr)
        .map_err(VmError::io("reading the MBR of", disk))?;
    mbr[..BOOT_CODE].copy_from_slice(&boot_img[..BOOT_CODE]);
    mbr[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&first.to_le_bytes());
    file.seek(SeekFrom::Start(0))
        .map_err(VmError::io("seeking in", disk))?;
    file.write_all(&mbr)
        .map_err(VmError::io("writing the MBR of", disk))?;
    file.seek(SeekFrom::Start(layout::BIOS_BOOT.offset()))
        .map_err(VmError::io("seeking in", disk))?;
    file.write_all(&core)
        .map_err(VmError::io("writing GRUB's core image to", disk))?;
    Ok(())
}
