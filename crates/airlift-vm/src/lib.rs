//! A real Airlift device in a virtual machine: a bootable x86-64 disk image
//! built from Debian packages only (the Debian kernel, a static busybox,
//! BIOS GRUB with the documented `dist/grub.cfg`), with two root file
//! systems A and B, a boot partition holding `grubenv`, and a data
//! partition; the workspace's `airlift-agent` runs in it as a service. The
//! same builder makes the root file systems that become update payloads
//! (healthy, failing their health check, or never coming up), and [`Vm`]
//! runs the image in QEMU with its console captured.
//!
//! It is the newcomer's first device (`airlift-vm run`, `scripts/vm-device`)
//! and the agent's harshest test (`tests/it`: real GRUB, real reboots,
//! real power cuts). See `docs/vm-device.md`.
//!
//! ```no_run
//! use airlift_vm::{default_cache_dir, ImageBuilder, RootfsSpec};
//!
//! let image = ImageBuilder::new(default_cache_dir(), "target/debug/airlift-agent").build()?;
//! let update = image.rootfs(&RootfsSpec::healthy("2.0.0"))?;
//! println!("boot {} and offer it {}", image.disk.display(), update.display());
//! # Ok::<(), airlift_vm::VmError>(())
//! ```
//!
//! Nothing in the workspace depends on this crate; it uses the test kit
//! (the server process and signed packages of `airlift-vm run`) and
//! `airlift-package` (the release key).

pub mod cache;
mod error;
pub mod grub;
pub mod image;
pub mod kernel;
pub mod lab;
pub mod layout;
pub mod power_cut;
pub mod qemu;
pub mod rootfs;
pub mod tool;
pub mod uboot;

pub use error::VmError;
pub use image::{default_cache_dir, Image, ImageBuilder, FACTORY_VERSION};
pub use qemu::{Accel, Vm, VmConfig};
pub use rootfs::{Health, Init, RootfsSpec};

use airlift_package::Compression;
use std::path::Path;

/// The device type the image's agent reports and its packages list.
pub const DEVICE_TYPE: &str = "airlift-vm";

/// A signed update package for the image's `rootfs` slot holding the root
/// file system `spec`, written to `out`.
pub fn write_package(image: &Image, spec: &RootfsSpec, out: &Path) -> Result<(), VmError> {
    let rootfs = image.rootfs(spec)?;
    let content = std::fs::read(&rootfs).map_err(VmError::io("reading", &rootfs))?;
    let file = tempfile::NamedTempFile::new_in(out.parent().unwrap_or(Path::new(".")))
        .map_err(VmError::io("creating a file beside", out))?;
    airlift_testkit::packages::PackageBuilder::new("rootfs", &spec.version)
        .signed_by(image.key())
        .device_type(DEVICE_TYPE)
        .image(&content, Compression::Zstd)
        .write_to(file.as_file())
        .map_err(|e| VmError::Unexpected {
            program: "the package builder",
            detail: e.to_string(),
        })?;
    file.persist(out)
        .map_err(|e| VmError::io("writing", out)(e.error))?;
    Ok(())
}
