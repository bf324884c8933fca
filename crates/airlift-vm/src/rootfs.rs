//! The VM's file systems, filled from a directory tree without mounting
//! anything (`mkfs.ext4 -d`): the root file systems (the kernel and its
//! initramfs, busybox as init, the agent with its libraries, `grub-editenv`,
//! the scripts), the boot partition (`grub.cfg`, `grubenv`) and the empty
//! data partition.

use crate::kernel::{Kernel, NEEDED_MODULES};
use crate::layout;
use crate::{tool, VmError};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a root file system holds, beyond what every one has.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RootfsSpec {
    /// `VERSION_ID` in its `/etc/os-release`: the version the running
    /// system reports.
    pub version: String,
    /// Whether its health check passes.
    pub health: Health,
    /// What its `/sbin/init` does.
    pub init: Init,
}

impl RootfsSpec {
    /// A healthy system at `version`.
    pub fn healthy(version: &str) -> Self {
        RootfsSpec {
            version: version.to_owned(),
            health: Health::Passes,
            init: Init::Busybox,
        }
    }

    /// A file name for its image, unique per spec.
    pub fn file_name(&self) -> String {
        let health = match self.health {
            Health::Passes => "healthy",
            Health::Fails => "unhealthy",
        };
        let init = match self.init {
            Init::Busybox => "boots",
            Init::ExitsAtOnce => "init-exits",
        };
        format!("rootfs-{}-{health}-{init}.ext4", self.version)
    }
}

/// The outcome of the image's health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// It passes once the system is up.
    Passes,
    /// It always fails (the image carries `/etc/airlift/unhealthy`).
    Fails,
}

/// The image's `/sbin/init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Init {
    /// busybox init, running `/etc/init.d/rcS` and the agent.
    Busybox,
    /// A script that exits at once: the kernel panics and the VM resets.
    ExitsAtOnce,
}

/// The guest's scripts and configuration, part of the image's cache key.
pub const GUEST_FILES: &[(&str, &str)] = &[
    ("initramfs-init", include_str!("../files/initramfs-init")),
    ("inittab", include_str!("../files/inittab")),
    ("rcS", include_str!("../files/rcS")),
    ("run-agent", include_str!("../files/run-agent")),
    ("shutdown", include_str!("../files/shutdown")),
    ("identity", include_str!("../files/identity")),
    ("health-check", include_str!("../files/health-check")),
    ("init-exits", include_str!("../files/init-exits")),
    (
        "agent-device.toml",
        include_str!("../files/agent-device.toml"),
    ),
];

/// The documented `grub.cfg`, installed as it is.
pub const GRUB_CFG: &str = include_str!("../../../dist/grub.cfg");

fn guest_file(name: &str) -> &'static str {
    GUEST_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, text)| text)
}

/// The programs and files every root file system is made of.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The kernel.
    pub kernel: Kernel,
    /// A static busybox.
    pub busybox: PathBuf,
    /// The `airlift-agent` binary.
    pub agent: PathBuf,
    /// `grub-editenv`.
    pub grub_editenv: PathBuf,
    /// The release public key (PEM) the agent trusts.
    pub release_pub: String,
    /// The `system_version_file` line of the agent's configuration, or
    /// nothing for an agent without that key.
    pub system_version_line: String,
}

/// Writes `text` to `path` with `mode`.
fn write(path: &Path, text: &str, mode: u32) -> Result<(), VmError> {
    fs::write(path, text).map_err(VmError::io("writing", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(VmError::io("chmod", path))
}

fn copy(from: &Path, to: &Path) -> Result<(), VmError> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(VmError::io("creating", parent))?;
    }
    fs::copy(from, to).map_err(VmError::io("copying", from))?;
    Ok(())
}

fn mkdirs(root: &Path, dirs: &[&str]) -> Result<(), VmError> {
    for dir in dirs {
        let path = root.join(dir);
        fs::create_dir_all(&path).map_err(VmError::io("creating", &path))?;
    }
    Ok(())
}

/// busybox at `root/bin/busybox` and a link for each of its applets.
fn install_busybox(root: &Path, busybox: &Path, only: Option<&[&str]>) -> Result<(), VmError> {
    copy(busybox, &root.join("bin/busybox"))?;
    let listing = tool::run(std::process::Command::new(busybox).arg("--list-full"), None)?;
    for applet in String::from_utf8_lossy(&listing).lines() {
        let name = applet.rsplit('/').next().unwrap_or(applet);
        if only.is_some_and(|only| !only.contains(&name)) {
            continue;
        }
        let link = match only {
            Some(_) => root.join("bin").join(name),
            None => root.join(applet),
        };
        if link.exists() || name == "busybox" {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(VmError::io("creating", parent))?;
        }
        symlink("/bin/busybox", &link).map_err(VmError::io("linking", &link))?;
    }
    Ok(())
}

/// A program and the shared libraries it loads, at their own paths.
fn install_program(root: &Path, program: &Path, to: &str, strip: bool) -> Result<(), VmError> {
    let target = root.join(to.trim_start_matches('/'));
    if strip {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(VmError::io("creating", parent))?;
        }
        tool::run(
            tool::command("strip")?
                .arg("--strip-debug")
                .arg("-o")
                .arg(&target)
                .arg(program),
            None,
        )?;
    } else {
        copy(program, &target)?;
    }
    for library in tool::shared_libraries(program)? {
        let inside = root.join(library.strip_prefix("/").unwrap_or(&library));
        if !inside.exists() {
            copy(&library, &inside)?;
        }
    }
    Ok(())
}

/// The initramfs: busybox, the modules and `/init`, as a `newc` cpio.
pub fn build_initramfs(parts: &Parts, work: &Path) -> Result<Vec<u8>, VmError> {
    let root = work.join("initramfs");
    mkdirs(&root, &["bin", "modules", "proc", "sys", "dev", "newroot"])?;
    let applets = [
        "sh",
        "mount",
        "umount",
        "insmod",
        "cat",
        "usleep",
        "sleep",
        "reboot",
        "switch_root",
    ];
    install_busybox(&root, &parts.busybox, Some(&applets))?;
    let mut order = String::new();
    for module in parts.kernel.modules_in_load_order(NEEDED_MODULES)? {
        let name = module
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        copy(&module, &root.join("modules").join(&name))?;
        order.push_str(&name);
        order.push('\n');
    }
    write(&root.join("modules/order"), &order, 0o644)?;
    write(&root.join("init"), guest_file("initramfs-init"), 0o755)?;
    cpio_newc(&root)
}

/// `root`'s tree as a `newc` cpio archive, owned by root, in a stable order.
fn cpio_newc(root: &Path) -> Result<Vec<u8>, VmError> {
    let mut names = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let dir = root.join(&relative);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(VmError::io("listing", &dir))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = relative.join(entry.file_name());
            names.push(path.to_string_lossy().into_owned());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    let list = names.join("\n") + "\n";
    tool::run(
        tool::command("cpio")?
            .args(["-o", "-H", "newc", "--quiet", "-R", "0:0"])
            .current_dir(root),
        Some(list.as_bytes()),
    )
}

/// The tree of a root file system for `spec`, in `root`.
pub fn fill_root(
    parts: &Parts,
    initramfs: &Path,
    spec: &RootfsSpec,
    root: &Path,
) -> Result<(), VmError> {
    mkdirs(
        root,
        &[
            "bin",
            "sbin",
            "usr/bin",
            "usr/sbin",
            "usr/lib/airlift",
            "etc/airlift",
            "etc/init.d",
            "proc",
            "sys",
            "dev",
            "run",
            "tmp",
            "boot/grub",
            "var/lib/airlift",
            "root",
        ],
    )?;
    install_busybox(root, &parts.busybox, None)?;
    install_program(root, &parts.agent, "/usr/bin/airlift-agent", true)?;
    install_program(root, &parts.grub_editenv, "/usr/bin/grub-editenv", false)?;
    copy(&parts.kernel.vmlinuz(), &root.join("boot/vmlinuz"))?;
    copy(initramfs, &root.join("boot/initrd.img"))?;

    write(&root.join("etc/inittab"), guest_file("inittab"), 0o644)?;
    let rcs = guest_file("rcS")
        .replace("@BOOT_DEV@", layout::BOOT.linux)
        .replace("@DATA_DEV@", layout::DATA.linux);
    write(&root.join("etc/init.d/rcS"), &rcs, 0o755)?;
    for script in ["run-agent", "shutdown", "identity", "health-check"] {
        write(
            &root.join("usr/lib/airlift").join(script),
            guest_file(script),
            0o755,
        )?;
    }
    let config = guest_file("agent-device.toml")
        .replace("@SYSTEM_VERSION@", &parts.system_version_line)
        .replace("@ROOT_A_DEV@", layout::ROOT_A.linux)
        .replace("@ROOT_B_DEV@", layout::ROOT_B.linux);
    write(&root.join("etc/airlift/agent-device.toml"), &config, 0o644)?;
    let agent_toml = root.join("etc/airlift/agent.toml");
    symlink("/run/airlift/agent.toml", &agent_toml).map_err(VmError::io("linking", &agent_toml))?;
    write(
        &root.join("etc/airlift/release.pub"),
        &parts.release_pub,
        0o644,
    )?;
    let os_release = format!(
        "NAME=\"Airlift VM\"\nID=airlift-vm\nVERSION_ID={v}\nPRETTY_NAME=\"Airlift VM {v}\"\n",
        v = spec.version
    );
    write(&root.join("etc/os-release"), &os_release, 0o644)?;
    write(&root.join("etc/hostname"), "airlift-vm\n", 0o644)?;
    if spec.health == Health::Fails {
        let reason = format!("image {} is built to fail its health check\n", spec.version);
        write(&root.join("etc/airlift/unhealthy"), &reason, 0o644)?;
    }
    if spec.init == Init::ExitsAtOnce {
        let init = root.join("sbin/init");
        let _ = fs::remove_file(&init);
        write(&init, guest_file("init-exits"), 0o755)?;
    }
    Ok(())
}

/// The tree's size in bytes (file contents), to check it fits.
fn tree_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// An ext4 image of `bytes` at `image` holding `tree` (or empty), with
/// `label`; root file systems have no journal (they are mounted read-only).
pub fn mkfs(
    image: &Path,
    bytes: u64,
    tree: Option<&Path>,
    label: &str,
    journal: bool,
) -> Result<(), VmError> {
    if let Some(tree) = tree {
        // Leave room for the file system's own metadata.
        let needed = tree_bytes(tree);
        if needed > bytes / 10 * 9 {
            return Err(VmError::TooLarge {
                what: format!("the {label} file system"),
                needed,
                room: bytes,
            });
        }
    }
    let file = fs::File::create(image).map_err(VmError::io("creating", image))?;
    file.set_len(bytes).map_err(VmError::io("sizing", image))?;
    drop(file);
    let mut mkfs = tool::command("mkfs.ext4")?;
    mkfs.args(["-q", "-F", "-b", "4096", "-m", "0", "-L", label]);
    if !journal {
        mkfs.args(["-O", "^has_journal"]);
    }
    if let Some(tree) = tree {
        mkfs.arg("-d").arg(tree);
    }
    mkfs.arg(image);
    tool::run(&mut mkfs, None)?;
    Ok(())
}

/// The boot partition's tree: `grub.cfg` and a `grubenv` that boots slot A.
pub fn fill_boot(root: &Path, grub_editenv: &Path) -> Result<(), VmError> {
    fs::create_dir_all(root).map_err(VmError::io("creating", root))?;
    write(&root.join("grub.cfg"), GRUB_CFG, 0o644)?;
    let grubenv = root.join("grubenv");
    tool::run(
        std::process::Command::new(grub_editenv)
            .arg(&grubenv)
            .arg("create"),
        None,
    )?;
    tool::run(
        std::process::Command::new(grub_editenv)
            .arg(&grubenv)
            .args([
                "set",
                "airlift_slot=a",
                "upgrade_available=0",
                "bootcount=0",
            ]),
        None,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_grub_cfg_names_the_layouts_partitions() {
        for p in [layout::ROOT_A, layout::ROOT_B] {
            assert!(GRUB_CFG.contains(&format!("={}\n", p.grub)), "{}", p.grub);
            assert!(GRUB_CFG.contains(&format!("={}\n", p.linux)), "{}", p.linux);
        }
    }

    #[test]
    fn each_spec_has_its_own_file() {
        let good = RootfsSpec::healthy("2.0.0");
        let sick = RootfsSpec {
            health: Health::Fails,
            ..good.clone()
        };
        assert_ne!(good.file_name(), sick.file_name());
    }
}
