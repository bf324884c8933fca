//! The installers' error: each message names the path, module or target at
//! fault and what failed, so a person can act on it.

use airlift_package::Sha256Digest;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why installing, committing or rolling back failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The payload's installed bytes could not be read: most often the
    /// package reader found that they do not match the signed digest, or the
    /// download broke off. Nothing was committed.
    #[error("reading the installed bytes of payload {index} ({target}): {source}; nothing was committed")]
    Payload {
        /// Position of the payload in the manifest.
        index: usize,
        /// The payload's target.
        target: String,
        /// The reader's error (its message says what did not match).
        #[source]
        source: io::Error,
    },
    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `writing slot`.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// No installer for this payload type on this device.
    #[error("payload type {kind} is not supported by this agent")]
    Unsupported {
        /// The payload type.
        kind: String,
    },
    /// An image payload names a slot set the device has not configured.
    #[error("image target {target:?} is not a slot set of this device (configured: {})", known.join(", "))]
    UnknownSlotSet {
        /// The payload's target.
        target: String,
        /// The slot sets that are configured.
        known: Vec<String>,
    },
    /// The image does not fit the block device of the slot.
    #[error("image for {target} is {size} bytes but slot device {} holds only {capacity}", device.display())]
    ImageTooLarge {
        /// The payload's target.
        target: String,
        /// The slot's block device.
        device: PathBuf,
        /// Installed size of the image.
        size: u64,
        /// Size of the device.
        capacity: u64,
    },
    /// The payload delivered a different number of bytes than the manifest
    /// declares.
    #[error("payload {target}: {actual} bytes were read but the manifest declares {expected}")]
    SizeMismatch {
        /// The payload's target.
        target: String,
        /// Declared installed size.
        expected: u64,
        /// Bytes actually read.
        actual: u64,
    },
    /// After writing, the slot did not read back as the signed bytes.
    #[error("slot {} does not read back as written: its first {size} bytes hash to {actual}, the manifest says {expected}; the storage may be failing", path.display())]
    ReadBack {
        /// The slot's device or file.
        path: PathBuf,
        /// Bytes read back.
        size: u64,
        /// The installed digest from the manifest.
        expected: Sha256Digest,
        /// The digest of what was read back.
        actual: Sha256Digest,
    },
    /// After writing, the slot did not read back as the bytes this process
    /// wrote (each checked against the signed block index before it was
    /// written): compared by a fast hash, see `install/readback.rs`.
    #[error("slot {} does not read back as written: {read} of the {size} bytes written were read back and they differ from what was written (XXH3-128); the storage may be failing", path.display())]
    ReadBackDiffers {
        /// The slot's device or file.
        path: PathBuf,
        /// Bytes written.
        size: u64,
        /// Bytes read back.
        read: u64,
    },
    /// A file target exists but is not a regular file.
    #[error("{} is {found}; a file payload replaces regular files only", path.display())]
    NotRegularFile {
        /// The target path.
        path: PathBuf,
        /// What it is instead (a directory, a symbolic link, …).
        found: &'static str,
    },
    /// An archive target exists but is not a directory.
    #[error("{} is not a directory; an archive payload replaces a directory", path.display())]
    NotDirectory {
        /// The target path.
        path: PathBuf,
    },
    /// An archive payload that cannot be unpacked safely: not a tar
    /// archive, or an entry of a refused kind or outside its directory.
    #[error("archive payload {target}: {reason}; the directory was not changed")]
    Archive {
        /// The payload's target.
        target: String,
        /// What is wrong, naming the entry.
        reason: String,
    },
    /// A file target's directory does not exist.
    #[error("directory {} does not exist; a file payload does not create directories", path.display())]
    MissingDirectory { path: PathBuf },
    /// A journal exists but cannot be read. It is left in place: it lists
    /// what must still be committed or rolled back.
    #[error("journal {} is unreadable ({reason}); it lists changes still to commit or roll back — inspect it, finish them by hand, then remove it", path.display())]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An update is already in progress for another package, or a commit or
    /// rollback was started and must be finished first.
    #[error("journal {} holds {what}; commit or roll it back first", path.display())]
    Pending {
        /// The journal file.
        path: PathBuf,
        /// What it holds, e.g. `an uncommitted install of rootfs 1.2.0`.
        what: String,
    },
    /// A module name that cannot name a file in the modules directory.
    #[error(
        "update module name {name:?} is not allowed: it must not contain '/' or start with '.'"
    )]
    ModuleName {
        /// The name from the payload type.
        name: String,
    },
    /// The module's executable is missing or is not an executable regular
    /// file.
    #[error("update module {} {problem}; install the module on the device", path.display())]
    ModuleUnusable {
        /// Where the module was looked for.
        path: PathBuf,
        /// What is wrong, e.g. `does not exist`.
        problem: String,
    },
    /// The module exited with a failure, or without reading all its input.
    #[error("update module {module} failed in state {state} ({status}){}", stderr_suffix(.stderr))]
    ModuleFailed {
        /// The module's name.
        module: String,
        /// The state it was called for.
        state: &'static str,
        /// How it ended, e.g. `exit status 3`.
        status: String,
        /// The last lines it wrote to standard error.
        stderr: String,
    },
    /// The module ran past its timeout and was killed.
    #[error("update module {module} timed out in state {state} after {}s and was killed{}", timeout.as_secs(), stderr_suffix(.stderr))]
    ModuleTimeout {
        /// The module's name.
        module: String,
        /// The state it was called for.
        state: &'static str,
        /// The timeout in force.
        timeout: Duration,
        /// The last lines it wrote to standard error.
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        "; it wrote nothing to stderr".to_owned()
    } else {
        format!("; last lines of its stderr:\n{}", stderr.trim_end())
    }
}

impl InstallError {
    /// An [`InstallError::Io`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
