//! The Debian kernel the VM boots, unpacked (not installed) by
//! `.ci/install-packages` with `apt-get download` and `dpkg -x`, and the
//! modules an initramfs must load for the VM's disk, file systems and
//! network, in dependency order as `modules.dep` says.

use crate::{tool, VmError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The drivers the VM needs that Debian builds as modules: the virtio disk
/// and network on PCI, and ext4 with the CRC32C its checksums need.
pub const NEEDED_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "crc32c_generic",
    "ext4",
];

/// An unpacked Debian kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The directory `dpkg -x` unpacked into.
    pub root: PathBuf,
    /// Its release, e.g. `6.1.0-57-amd64`.
    pub release: String,
}

impl Kernel {
    /// The kernel unpacked at `dir` (holding `boot/vmlinuz-RELEASE` and
    /// `lib/modules/RELEASE`).
    pub fn at(dir: &Path) -> Result<Self, VmError> {
        let boot = dir.join("boot");
        let entries = std::fs::read_dir(&boot).map_err(VmError::io("listing", &boot))?;
        let release = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("vmlinuz-"))
                    .map(str::to_owned)
            })
            .max()
            .ok_or(VmError::MissingInput {
                what: "a kernel (boot/vmlinuz-*)",
                path: boot,
                hint: "run .ci/install-packages, which unpacks Debian's kernel there",
            })?;
        Ok(Kernel {
            root: dir.to_owned(),
            release,
        })
    }

    /// The newest kernel unpacked under `dir` (one directory per release,
    /// as `.ci/install-packages` makes them).
    pub fn newest_in(dir: &Path) -> Result<Self, VmError> {
        let missing = || {
            VmError::MissingInput {
            what: "an unpacked Debian kernel",
            path: dir.to_owned(),
            hint: "run .ci/install-packages (or set AIRLIFT_VM_KERNEL_DIR to a `dpkg -x` of linux-image-*-amd64)",
        }
        };
        let entries = std::fs::read_dir(dir).map_err(|_| missing())?;
        let newest = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("boot").is_dir())
            .max()
            .ok_or_else(missing)?;
        Self::at(&newest)
    }

    /// The kernel image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// `lib/modules/RELEASE`.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    /// The files of `wanted` and of every module they need, each after the
    /// ones it needs. Runs `depmod` once if the unpacked kernel has no
    /// `modules.dep` yet (`dpkg -x` runs no maintainer scripts).
    pub fn modules_in_load_order(&self, wanted: &[&str]) -> Result<Vec<PathBuf>, VmError> {
        let dep_file = self.modules_dir().join("modules.dep");
        if !dep_file.is_file() {
            tool::run(
                tool::command("depmod")?
                    .arg("-b")
                    .arg(&self.root)
                    .arg(&self.release),
                None,
            )?;
        }
        let text = std::fs::read_to_string(&dep_file).map_err(VmError::io("reading", &dep_file))?;
        let order = load_order(&text, wanted)?;
        Ok(order
            .into_iter()
            .map(|m| self.modules_dir().join(m))
            .collect())
    }
}

/// `modules.dep`'s lines as module path → the paths it needs.
fn parse_dep(text: &str) -> BTreeMap<&str, Vec<&str>> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, needs)| (module.trim(), needs.split_whitespace().collect()))
        .collect()
}

/// A module's name from its path: `kernel/fs/ext4/ext4.ko` → `ext4`
/// (dashes read as underscores, as the kernel does).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The paths of `wanted` and their dependencies, each after what it needs.
fn load_order(dep_text: &str, wanted: &[&str]) -> Result<Vec<String>, VmError> {
    let deps = parse_dep(dep_text);
    let by_name: BTreeMap<String, &str> = deps.keys().map(|p| (module_name(p), *p)).collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in wanted {
        let path = by_name
            .get(&name.replace('-', "_"))
            .ok_or_else(|| VmError::Unexpected {
                program: "depmod",
                detail: format!("modules.dep lists no module {name}"),
            })?;
        visit(path, &deps, &mut seen, &mut order);
    }
    Ok(order)
}

fn visit<'a>(
    path: &'a str,
    deps: &BTreeMap<&'a str, Vec<&'a str>>,
    seen: &mut BTreeSet<&'a str>,
    order: &mut Vec<String>,
) {
    if !seen.insert(path) {
        return;
    }
    for need in deps.get(path).into_iter().flatten() {
        visit(need, deps, seen, order);
    }
    order.push(path.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
        kernel/fs/jbd2/jbd2.ko:\n\
        kernel/fs/mbcache.ko:\n\
        kernel/lib/crc16.ko:\n\
        kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
        kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko\n\
        kernel/drivers/virtio/virtio.ko:\n";

    #[test]
    fn every_module_comes_after_what_it_needs_and_once() {
        let order = load_order(DEP, &["virtio_blk", "ext4"]).expect("known modules");
        let position = |m: &str| order.iter().position(|p| p.ends_with(m)).expect(m);
        assert!(position("/virtio.ko") < position("/virtio_ring.ko"));
        assert!(position("/virtio_ring.ko") < position("/virtio_blk.ko"));
        assert!(position("/jbd2.ko") < position("/ext4.ko"));
        assert_eq!(order.len(), 7);
    }

    #[test]
    fn an_unknown_module_is_named() {
        let error = load_order(DEP, &["e1000"]).expect_err("not listed");
        assert!(error.to_string().contains("e1000"), "{error}");
    }
}
