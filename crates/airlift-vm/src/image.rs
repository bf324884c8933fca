//! The disk image and the update images, built once per set of inputs
//! into a cache directory named by their hash, so that a second build with
//! the same agent, kernel, scripts and `grub.cfg` costs a hash of the
//! inputs (well under a second).

use crate::kernel::Kernel;
use crate::layout::{self, Partition};
use crate::rootfs::{self, Parts, RootfsSpec};
use crate::{tool, VmError};
use airlift_package::SigningKey;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Changes whenever the builder's own logic changes what it builds.
const BUILDER_VERSION: &str = "airlift-vm image 1";

/// The version the disk image's root file system A holds.
pub const FACTORY_VERSION: &str = "1.0.0";

/// The agent configuration's line naming the running system's version
/// file (the agent reports `VERSION_ID` of `/etc/os-release`).
pub const SYSTEM_VERSION_LINE: &str = "system_version_file = \"/etc/os-release\"";

/// The cache directory when none is given: `AIRLIFT_VM_CACHE`, else
/// `vm/` in Cargo's target directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AIRLIFT_VM_CACHE") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("vm")
}

/// What to build from.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    cache: PathBuf,
    agent: PathBuf,
    kernel_dir: Option<PathBuf>,
    system_version: bool,
}

/// A built disk image, with the key its agent trusts.
pub struct Image {
    /// Its cache directory.
    pub dir: PathBuf,
    /// The raw disk image (never booted itself: each VM boots a
    /// copy-on-write overlay of it).
    pub disk: PathBuf,
    /// The release key's public half (PEM), which the image's agent trusts.
    pub public_key_file: PathBuf,
    key: SigningKey,
    parts: Parts,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("dir", &self.dir)
            .field("disk", &self.disk)
            .finish_non_exhaustive()
    }
}

impl ImageBuilder {
    /// Builds into `cache` (see [`default_cache_dir`]), with the agent
    /// binary at `agent`.
    pub fn new(cache: impl Into<PathBuf>, agent: impl Into<PathBuf>) -> Self {
        ImageBuilder {
            cache: cache.into(),
            agent: agent.into(),
            kernel_dir: std::env::var_os("AIRLIFT_VM_KERNEL_DIR").map(PathBuf::from),
            system_version: true,
        }
    }

    /// Whether the agent's configuration names the running system's version
    /// file ([`SYSTEM_VERSION_LINE`]); on by default.
    pub fn system_version(mut self, on: bool) -> Self {
        self.system_version = on;
        self
    }

    /// The disk image: from the cache when its inputs are unchanged, else
    /// built (some seconds).
    pub fn build(&self) -> Result<Image, VmError> {
        fs::create_dir_all(&self.cache).map_err(VmError::io("creating", &self.cache))?;
        // Paths the user reads: `target/vm/…`, not `crates/airlift-vm/../../target/vm/…`.
        let cache = fs::canonicalize(&self.cache).map_err(VmError::io("resolving", &self.cache))?;
        let kernel = match &self.kernel_dir {
            Some(dir) => Kernel::at(dir)?,
            None => Kernel::newest_in(&cache.join("debian-kernel"))?,
        };
        if !self.agent.is_file() {
            return Err(VmError::MissingInput {
                what: "the airlift-agent binary",
                path: self.agent.clone(),
                hint: "build it first: cargo build --workspace --bins",
            });
        }
        let (key, public_key_file) = release_key(&cache)?;
        let release_pub = fs::read_to_string(&public_key_file)
            .map_err(VmError::io("reading", &public_key_file))?;
        let parts = Parts {
            kernel,
            busybox: PathBuf::from("/bin/busybox"),
            agent: self.agent.clone(),
            grub_editenv: tool::find("grub-editenv")?,
            release_pub,
            system_version_line: if self.system_version {
                SYSTEM_VERSION_LINE.to_owned()
            } else {
                String::new()
            },
        };
        if !parts.busybox.is_file() {
            return Err(VmError::MissingTool {
                program: "/bin/busybox".to_owned(),
                package: "busybox-static",
            });
        }
        let dir = cache.join(inputs_hash(&parts)?);
        let disk = dir.join("disk.img");
        if !disk.is_file() {
            build_disk(&parts, &dir)?;
        }
        crate::cache::mark_used(&dir).map_err(VmError::io("marking as used", &dir))?;
        // Leftovers of earlier agent builds; failing to remove one is no
        // reason to fail this build.
        if let Err(error) = crate::cache::prune(&cache, std::time::SystemTime::now()) {
            eprintln!("airlift-vm: could not prune {}: {error}", cache.display());
        }
        Ok(Image {
            dir,
            disk,
            public_key_file,
            key,
            parts,
        })
    }
}

impl Image {
    /// The kernel the image boots (for [`crate::qemu::accel`]'s probe).
    pub fn kernel(&self) -> PathBuf {
        self.parts.kernel.vmlinuz()
    }

    /// The key that signs update packages this image's agent accepts.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The ext4 image of a root file system as `spec` says (from the
    /// cache, else built): an update package's payload for the `rootfs`
    /// slot, exactly one root partition large.
    pub fn rootfs(&self, spec: &RootfsSpec) -> Result<PathBuf, VmError> {
        let path = self.dir.join(spec.file_name());
        if path.is_file() {
            return Ok(path);
        }
        let work = tempfile::tempdir_in(&self.dir)
            .map_err(VmError::io("creating a directory in", &self.dir))?;
        let tree = work.path().join("root");
        rootfs::fill_root(&self.parts, &self.dir.join("initrd.img"), spec, &tree)?;
        let image = work.path().join("rootfs.ext4");
        rootfs::mkfs(&image, layout::ROOT_A.bytes(), Some(&tree), "rootfs", false)?;
        fs::rename(&image, &path).map_err(VmError::io("renaming into", &path))?;
        Ok(path)
    }
}

/// The release key in `cache` (made on first use), and its public half.
fn release_key(cache: &Path) -> Result<(SigningKey, PathBuf), VmError> {
    let private = cache.join("release.key");
    let public = cache.join("release.pub");
    let key_error = |detail: String| VmError::Key {
        path: private.clone(),
        detail,
    };
    if !private.is_file() {
        let key = SigningKey::generate().map_err(|e| key_error(e.to_string()))?;
        let pem = key.to_pem().map_err(|e| key_error(e.to_string()))?;
        let tmp = cache.join(format!("release.key.{}", std::process::id()));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(VmError::io("creating", &tmp))?;
            file.write_all(pem.as_bytes())
                .map_err(VmError::io("writing", &tmp))?;
        }
        // Another builder may have won the race: keep its key.
        if fs::hard_link(&tmp, &private).is_err() && !private.is_file() {
            return Err(key_error("cannot be created".to_owned()));
        }
        let _ = fs::remove_file(&tmp);
    }
    let pem = fs::read_to_string(&private).map_err(VmError::io("reading", &private))?;
    let key = SigningKey::from_pem(&pem).map_err(|e| key_error(e.to_string()))?;
    let public_pem = key
        .public_key()
        .to_pem()
        .map_err(|e| key_error(e.to_string()))?;
    if fs::read_to_string(&public).ok().as_deref() != Some(public_pem.as_str()) {
        let tmp = cache.join(format!("release.pub.{}", std::process::id()));
        fs::write(&tmp, &public_pem).map_err(VmError::io("writing", &tmp))?;
        fs::rename(&tmp, &public).map_err(VmError::io("renaming into", &public))?;
    }
    Ok((key, public))
}

/// The hash naming the cache directory: everything that ends up in the
/// disk image.
fn inputs_hash(parts: &Parts) -> Result<String, VmError> {
    let mut hash = Sha256::new();
    let mut field = |name: &str, bytes: &[u8]| {
        hash.update((name.len() as u64).to_le_bytes());
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field("builder", BUILDER_VERSION.as_bytes());
    field("layout", layout::sfdisk_script().as_bytes());
    field("grub.cfg", rootfs::GRUB_CFG.as_bytes());
    for (name, text) in rootfs::GUEST_FILES {
        field(name, text.as_bytes());
    }
    field("release.pub", parts.release_pub.as_bytes());
    field("system_version", parts.system_version_line.as_bytes());
    field("kernel", parts.kernel.release.as_bytes());
    for file in [
        &parts.agent,
        &parts.busybox,
        &parts.grub_editenv,
        &parts.kernel.vmlinuz(),
    ] {
        let bytes = fs::read(file).map_err(VmError::io("reading", file))?;
        field(&file.to_string_lossy(), &bytes);
    }
    Ok(hex::encode(&hash.finalize()[..12]))
}

/// Builds the whole disk into `dir` (through a temporary directory, renamed
/// into place at the end so that a half-built image is never used).
fn build_disk(parts: &Parts, dir: &Path) -> Result<(), VmError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let work =
        tempfile::tempdir_in(parent).map_err(VmError::io("creating a directory in", parent))?;
    let out = work.path().join("out");
    fs::create_dir(&out).map_err(VmError::io("creating", &out))?;

    let initrd = out.join("initrd.img");
    let cpio = rootfs::build_initramfs(parts, work.path())?;
    fs::write(&initrd, cpio).map_err(VmError::io("writing", &initrd))?;

    let disk = out.join("disk.img");
    let file = fs::File::create(&disk).map_err(VmError::io("creating", &disk))?;
    file.set_len(layout::DISK_BYTES)
        .map_err(VmError::io("sizing", &disk))?;
    drop(file);
    tool::run(
        tool::command("sfdisk")?
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&disk),
        Some(layout::sfdisk_script().as_bytes()),
    )?;
    crate::grub::install(&disk, work.path())?;

    let boot_tree = work.path().join("boot");
    rootfs::fill_boot(&boot_tree, &parts.grub_editenv)?;
    let boot = work.path().join("boot.ext4");
    rootfs::mkfs(&boot, layout::BOOT.bytes(), Some(&boot_tree), "boot", true)?;
    place(&disk, &boot, layout::BOOT)?;

    let root_tree = work.path().join("root-a");
    let spec = RootfsSpec::healthy(FACTORY_VERSION);
    rootfs::fill_root(parts, &initrd, &spec, &root_tree)?;
    let root = out.join(spec.file_name());
    rootfs::mkfs(
        &root,
        layout::ROOT_A.bytes(),
        Some(&root_tree),
        "rootfs",
        false,
    )?;
    place(&disk, &root, layout::ROOT_A)?;

    let data = work.path().join("data.ext4");
    rootfs::mkfs(&data, layout::DATA.bytes(), None, "data", true)?;
    place(&disk, &data, layout::DATA)?;

    match fs::rename(&out, dir) {
        Ok(()) => Ok(()),
        // Another builder finished the same inputs first: same content.
        Err(_) if dir.join("disk.img").is_file() => Ok(()),
        Err(e) => Err(VmError::io("renaming into", dir)(e)),
    }
}

/// Copies the file system image `fs_image` to `partition`'s place in
/// `disk`, skipping blocks of zeros (the disk file is sparse and new).
fn place(disk: &Path, fs_image: &Path, partition: Partition) -> Result<(), VmError> {
    let mut from = fs::File::open(fs_image).map_err(VmError::io("opening", fs_image))?;
    let size = from
        .metadata()
        .map_err(VmError::io("reading", fs_image))?
        .len();
    if size > partition.bytes() {
        return Err(VmError::TooLarge {
            what: fs_image.display().to_string(),
            needed: size,
            room: partition.bytes(),
        });
    }
    let mut to = fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(VmError::io("opening", disk))?;
    let mut block = vec![0u8; 64 * 1024];
    let mut offset = 0;
    loop {
        let n = from
            .read(&mut block)
            .map_err(VmError::io("reading", fs_image))?;
        if n == 0 {
            break;
        }
        if block[..n].iter().any(|&b| b != 0) {
            to.seek(SeekFrom::Start(partition.offset() + offset))
                .map_err(VmError::io("seeking in", disk))?;
            to.write_all(&block[..n])
                .map_err(VmError::io("writing", disk))?;
        }
        offset += n as u64;
    }
    Ok(())
}
