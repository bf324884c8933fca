//! The state file: the machine's [`State`], saved atomically after every
//! step that changes it.

use super::record;
use super::types::State;
use std::io;
use std::path::{Path, PathBuf};

/// The record kind in the file's header line.
const KIND: &str = "state";

/// The agent's state on disk.
///
/// [`save`](Self::save) replaces the file atomically — a temporary file in
/// the same directory, `fsync`, `rename` over the target, `fsync` of the
/// directory — so a power cut leaves the old state or the new one. The file
/// carries a format version and the SHA-256 of its content, so a torn or
/// damaged file is [`StateError::Corrupt`], never a silent reset to `Idle`.
///
/// What a corrupt file means is the driver's call, and it must not be
/// "start afresh": during a trial boot (a trial is pending and the running
/// slot is not the one the bootloader falls back to) it means **roll back**
/// — abandon the trial and reboot — since nothing vouches for the running
/// version. Otherwise the old version runs and the driver may
/// [`set_aside`](Self::set_aside) the file and start from `Idle`.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or renaming the file failed.
    #[error("{action} the agent state {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "saving".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file exists but is not a state this agent wrote: torn, truncated,
    /// damaged, or of an unknown format version. It is left as it is.
    #[error("the agent state {} is corrupt: {detail}", path.display())]
    Corrupt {
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The state could not be encoded (a bug, not a disk problem).
    #[error("encoding the agent state: {0}")]
    Encode(#[source] serde_json::Error),
}

impl StateFile {
    /// The state file at `path`. Its directory must exist; nothing is read
    /// or written yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state; `Ok(None)` if there is no file (the machine is
    /// [`State::Idle`]), [`StateError::Corrupt`] if the file cannot be trusted.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let bytes = record::read(&self.path).map_err(|source| self.io("reading", source))?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        record::decode(KIND, &bytes)
            .map(Some)
            .map_err(|detail| StateError::Corrupt {
                path: self.path.clone(),
                detail,
            })
    }

    /// Replaces the saved state with `state`, durably.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let bytes = record::encode(KIND, state).map_err(StateError::Encode)?;
        crate::boot::atomic_write(&self.path, &bytes)
            .map_err(|source| self.io("saving", source))?;
        crate::fault::state_saved();
        Ok(())
    }

    /// Moves the file out of the way, for a person to look at, as
    /// `NAME.corrupt.N` beside it (the first free `N`), and returns the new
    /// path. The next [`load`](Self::load) finds no file.
    pub fn set_aside(&self) -> Result<PathBuf, StateError> {
        let name = self
            .path
            .file_name()
            .ok_or_else(|| self.io("setting aside", io::ErrorKind::InvalidInput.into()))?;
        for n in 1u32.. {
            let mut aside = name.to_owned();
            aside.push(format!(".corrupt.{n}"));
            let aside = self.path.with_file_name(aside);
            if aside.symlink_metadata().is_ok() {
                continue;
            }
            std::fs::rename(&self.path, &aside)
                .and_then(|()| record::sync_dir(record::parent(&self.path)))
                .map_err(|source| self.io("setting aside", source))?;
            return Ok(aside);
        }
        Err(self.io("setting aside", io::ErrorKind::AlreadyExists.into()))
    }

    fn io(&self, action: &'static str, source: io::Error) -> StateError {
        StateError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::test_support::representative_states;
    use std::fs;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn names(dir: &Path) -> io::Result<Vec<String>> {
        let mut names = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    #[test]
    fn a_missing_file_is_none() -> TestResult {
        let dir = tempfile::tempdir()?;
        assert_eq!(StateFile::new(dir.path().join("state")).load()?, None);
        let nowhere = StateFile::new(dir.path().join("no-such-dir").join("state"));
        assert_eq!(nowhere.load()?, None);
        Ok(())
    }

    #[test]
    fn every_state_round_trips_and_no_temporary_file_is_left() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = StateFile::new(dir.path().join("state"));
        for state in representative_states() {
            file.save(&state)?;
            assert_eq!(file.load()?, Some(state));
            assert_eq!(names(dir.path())?, ["state"]);
        }
        Ok(())
    }

    #[test]
    fn the_file_is_readable_json_after_a_header() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = StateFile::new(dir.path().join("state"));
        let state = representative_states()
            .into_iter()
            .find(|s| s.name() == "downloading")
            .ok_or("no downloading state")?;
        file.save(&state)?;
        let text = fs::read_to_string(file.path())?;
        let (header, body) = text.split_once('\n').ok_or("no header")?;
        assert!(header.starts_with("airlift-state 1 sha256:"), "{header}");
        let json: serde_json::Value = serde_json::from_str(body)?;
        assert_eq!(json["state"], "downloading");
        assert!(json["offset"].is_u64());
        Ok(())
    }

    fn assert_corrupt(file: &StateFile, what: &str) {
        match file.load() {
            Err(StateError::Corrupt { path, detail }) => {
                assert_eq!(path, file.path(), "{what}");
                assert!(!detail.is_empty(), "{what}");
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn torn_truncated_flipped_or_foreign_files_are_corrupt_never_reset() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = StateFile::new(dir.path().join("state"));
        let state = representative_states()
            .into_iter()
            .find(|s| s.name() == "verifying")
            .ok_or("no verifying state")?;
        file.save(&state)?;
        let good = fs::read(file.path())?;

        for len in [0, 1, 20, good.len() / 2, good.len() - 2, good.len() - 1] {
            fs::write(file.path(), &good[..len])?;
            assert_corrupt(&file, &format!("cut to {len} bytes"));
        }
        for i in (0..good.len()).step_by(7) {
            let mut flipped = good.clone();
            flipped[i] ^= 0x10;
            fs::write(file.path(), &flipped)?;
            assert_corrupt(&file, &format!("bit flipped in byte {i}"));
        }
        let mut longer = good.clone();
        longer.extend_from_slice(b"\0\0\0\0");
        fs::write(file.path(), &longer)?;
        assert_corrupt(&file, "zeros appended");
        fs::write(file.path(), br#"{"state":"idle"}"#)?;
        assert_corrupt(&file, "plain JSON without a header");

        // A good checksum over content that is not a state.
        let foreign = record::encode(KIND, &serde_json::json!({"state": "dancing"}))?;
        fs::write(file.path(), foreign)?;
        assert_corrupt(&file, "unknown state");

        // The file is left where it is for the driver to decide.
        assert!(file.path().exists());
        Ok(())
    }

    #[test]
    fn set_aside_keeps_every_corrupt_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = StateFile::new(dir.path().join("state"));
        fs::write(file.path(), "garbage 1")?;
        let first = file.set_aside()?;
        assert_eq!(file.load()?, None);
        fs::write(file.path(), "garbage 2")?;
        let second = file.set_aside()?;
        assert_ne!(first, second);
        assert_eq!(fs::read_to_string(first)?, "garbage 1");
        assert_eq!(fs::read_to_string(second)?, "garbage 2");
        assert_eq!(names(dir.path())?, ["state.corrupt.1", "state.corrupt.2"]);
        file.save(&State::Idle)?;
        assert_eq!(file.load()?, Some(State::Idle));
        Ok(())
    }

    #[test]
    fn saving_into_a_missing_directory_is_an_io_error() {
        let file = StateFile::new("/nonexistent-airlift-test-dir/state");
        assert!(matches!(
            file.save(&State::Idle),
            Err(StateError::Io {
                action: "saving",
                ..
            })
        ));
    }
}
