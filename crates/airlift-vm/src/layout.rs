//! The disk's partition table: where each partition starts, how large it
//! is, and the names GRUB and Linux give it. One table, used by the image
//! builder, the guest's scripts and `dist/grub.cfg` alike (a test checks
//! that the shipped `grub.cfg` names these partitions).

/// Bytes per sector of the virtual disk.
pub const SECTOR: u64 = 512;

/// One partition of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Its GPT name.
    pub name: &'static str,
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// GPT type GUID.
    pub type_guid: &'static str,
    /// GRUB's name for it (`hd0,gpt3`).
    pub grub: &'static str,
    /// Linux's name for it in the VM (`/dev/vda3`).
    pub linux: &'static str,
}

impl Partition {
    /// Its first byte.
    pub const fn offset(&self) -> u64 {
        self.start * SECTOR
    }

    /// Its size in bytes.
    pub const fn bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
}

const BIOS_BOOT_TYPE: &str = "21686148-6449-6E6F-744E-656564454649";
const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const MIB: u64 = 1024 * 1024 / SECTOR;

/// GRUB's core image, read by the boot sector through a block list.
pub const BIOS_BOOT: Partition = Partition {
    name: "bios",
    start: MIB,
    sectors: MIB,
    type_guid: BIOS_BOOT_TYPE,
    grub: "hd0,gpt1",
    linux: "/dev/vda1",
};

/// `grub.cfg` and `grubenv`, at the root of its file system (GRUB's
/// prefix); mounted at `/boot/grub` in the VM.
pub const BOOT: Partition = Partition {
    name: "boot",
    start: 2 * MIB,
    sectors: 8 * MIB,
    type_guid: LINUX_TYPE,
    grub: "hd0,gpt2",
    linux: "/dev/vda2",
};

/// Root file system A (the kernel and initramfs in its `/boot`).
pub const ROOT_A: Partition = Partition {
    name: "root-a",
    start: 10 * MIB,
    sectors: ROOT_MIB * MIB,
    type_guid: LINUX_TYPE,
    grub: "hd0,gpt3",
    linux: "/dev/vda3",
};

/// Root file system B.
pub const ROOT_B: Partition = Partition {
    name: "root-b",
    start: (10 + ROOT_MIB) * MIB,
    sectors: ROOT_MIB * MIB,
    type_guid: LINUX_TYPE,
    grub: "hd0,gpt4",
    linux: "/dev/vda4",
};

/// The agent's data: its key, state and queue; mounted at
/// `/var/lib/airlift`.
pub const DATA: Partition = Partition {
    name: "data",
    start: (10 + 2 * ROOT_MIB) * MIB,
    sectors: 32 * MIB,
    type_guid: LINUX_TYPE,
    grub: "hd0,gpt5",
    linux: "/dev/vda5",
};

/// Size of each root partition, in MiB: small, so that an update's
/// download and write are quick in an emulated machine.
pub const ROOT_MIB: u64 = 56;

/// The partitions in table order.
pub const PARTITIONS: [Partition; 5] = [BIOS_BOOT, BOOT, ROOT_A, ROOT_B, DATA];

/// The disk's size: the last partition plus room for the backup GPT.
pub const DISK_BYTES: u64 = DATA.offset() + DATA.bytes() + MIB * SECTOR;

/// The `sfdisk` script that writes this table.
pub fn sfdisk_script() -> String {
    let mut script = String::from("label: gpt\nunit: sectors\n");
    for p in PARTITIONS {
        script.push_str(&format!(
            "start={}, size={}, type={}, name={}\n",
            p.start, p.sectors, p.type_guid, p.name
        ));
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_each_other_without_overlap() {
        for pair in PARTITIONS.windows(2) {
            assert!(pair[0].start + pair[0].sectors <= pair[1].start, "{pair:?}");
        }
        assert!(DATA.offset() + DATA.bytes() < DISK_BYTES);
    }

    #[test]
    fn the_script_lists_every_partition() {
        let script = sfdisk_script();
        assert!(script.starts_with("label: gpt\n"));
        assert_eq!(
            script.lines().filter(|l| l.starts_with("start=")).count(),
            5
        );
        assert!(script.contains("start=2048, size=2048, type=21686148"));
    }
}
