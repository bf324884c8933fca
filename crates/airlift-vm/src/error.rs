//! What can go wrong building or running the virtual machine, each case
//! saying what to do about it.

use std::path::PathBuf;

/// Why an image could not be built or a VM not run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A program the builder runs is not installed.
    #[error("{program} is missing (Debian package {package}); run .ci/install-packages")]
    MissingTool {
        /// The program.
        program: String,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// A file the builder needs is not there.
    #[error("{what} not found at {path}: {hint}")]
    MissingInput {
        /// What it is.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
    /// A program failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for the reader.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its error output.
        stderr: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// What a tool printed was not what the builder expects.
    #[error("unexpected output from {program}: {detail}")]
    Unexpected {
        /// The program.
        program: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A file system tree does not fit its partition.
    #[error("{what} needs {needed} bytes but its partition holds {room}; make the partition larger in layout.rs")]
    TooLarge {
        /// What did not fit.
        what: String,
        /// Its size.
        needed: u64,
        /// The partition's size.
        room: u64,
    },
    /// The release key could not be made or read.
    #[error("the release key {path}: {detail}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The VM did not reach a point in time.
    #[error("the VM did not print {wanted:?} within {waited_secs} s; last console lines:\n{tail}")]
    Timeout {
        /// The console text waited for.
        wanted: String,
        /// How long it was given.
        waited_secs: u64,
        /// The console's last lines.
        tail: String,
    },
}

impl VmError {
    /// An I/O error on `path` while doing `action`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| VmError::Io {
            action,
            path,
            source,
        }
    }
}
