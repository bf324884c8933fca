//! The installed record: what the agent installed and committed itself, and
//! the security version it will not go below (anti-rollback).
//!
//! The security version is the device's only defence against a package
//! that is signed but old, so it must fail closed: a missing or damaged
//! record may never read as "security version 0". It is kept twice, in the
//! checksummed envelope of the state file, each copy replaced atomically in
//! turn and carrying a generation number:
//!
//! ```text
//! <data_dir>/
//!   installed.a      copy A: header line with SHA-256, then JSON
//!   installed.b      copy B: the same record, written after A
//!   installed.init   created once both copies were first written
//! ```
//!
//! Reading takes the valid copy with the higher generation, so a power cut
//! between the two writes, or one copy damaged later, loses nothing. When
//! neither copy can be read the record is [`RecordError::Lost`] and installs
//! are refused with that reason (reported to the server) rather than
//! allowed from 0. The marker tells a device that never had a record (the
//! one case that starts at 0: its first start) from one that lost it.
//!
//! A record of an older agent (`installed.json`, unchecksummed) is taken
//! over once, at the first start of this one; if it cannot be read the
//! record is lost, not reset.

use crate::boot::atomic_write;
use crate::machine::record;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The record kind in the copies' header line.
const KIND: &str = "installed";
/// Largest legacy record read (a few hundred bytes in practice).
const MAX_LEGACY: u64 = 1024 * 1024;

/// What the agent installed and committed itself, over `config.installed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRecord {
    /// Incremented by every save; the higher of two valid copies wins.
    #[serde(default)]
    pub generation: u64,
    /// Software name → version committed.
    pub installed: BTreeMap<String, String>,
    /// The highest security version committed: packages below it are
    /// refused.
    pub security_version: u64,
}

/// Why the record cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Neither copy can be read although the record was written before: the
    /// security version is unknown, so nothing may be installed.
    #[error(
        "the installed record in {} is lost ({detail}); refusing to install, since the \
         device's security version is unknown — restore a copy (installed.a or installed.b) \
         or reprovision the device",
        dir.display()
    )]
    Lost {
        /// The data directory.
        dir: PathBuf,
        /// What is wrong with each copy.
        detail: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "saving".
        action: &'static str,
        /// The file.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The record could not be encoded (a bug, not a disk problem).
    #[error("encoding the installed record: {0}")]
    Encode(#[source] serde_json::Error),
}

/// The two copies and the marker in a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledStore {
    dir: PathBuf,
}

impl InstalledStore {
    /// The record kept in `dir` (the data directory); touches nothing.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The two copies, A first.
    pub fn copies(&self) -> [PathBuf; 2] {
        [self.dir.join("installed.a"), self.dir.join("installed.b")]
    }

    /// The marker that says the record was written once.
    pub fn marker(&self) -> PathBuf {
        self.dir.join("installed.init")
    }

    /// Where an older agent kept its unchecksummed record.
    pub fn legacy(&self) -> PathBuf {
        self.dir.join("installed.json")
    }

    /// At start: on a device that never had a record, writes the first one
    /// (taken over from `installed.json` if an older agent left one, else
    /// empty at security version 0) and then the marker. Does nothing once
    /// the marker exists; a lost record stays lost.
    pub fn initialise(&self) -> Result<(), RecordError> {
        if self.marker().exists() {
            return Ok(());
        }
        let first = match self.read_copies()? {
            Copies::Valid(_) => None,
            Copies::Invalid(detail) => return Err(self.lost(detail)),
            Copies::None => Some(self.read_legacy()?),
        };
        if let Some(record) = first {
            self.write_copies(&InstalledRecord {
                generation: 1,
                ..record
            })?;
        }
        let marker = self.marker();
        atomic_write(&marker, b"airlift installed record initialised\n").map_err(|source| {
            RecordError::Io {
                action: "creating",
                path: marker.clone(),
                source,
            }
        })?;
        // The copies hold it now; a stale legacy file would only mislead.
        match std::fs::remove_file(self.legacy()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RecordError::Io {
                    action: "removing",
                    path: self.legacy(),
                    source,
                })
            }
        }
        Ok(())
    }

    /// The record: the valid copy of the higher generation. A device that
    /// never had one (no copy, no marker, no legacy record) reads as empty
    /// at security version 0; one that had one and lost both copies is
    /// [`RecordError::Lost`].
    pub fn load(&self) -> Result<InstalledRecord, RecordError> {
        match self.read_copies()? {
            Copies::Valid(record) => Ok(record),
            Copies::Invalid(detail) => Err(self.lost(detail)),
            Copies::None if self.marker().exists() => {
                Err(self.lost("both copies are missing".into()))
            }
            Copies::None => self.read_legacy(),
        }
    }

    /// Saves `record` as the next generation: copy A, then copy B, each
    /// replaced atomically, so that at every instant one of them holds
    /// either the old record or the new one.
    pub fn save(
        &self,
        record: &InstalledRecord,
        previous_generation: u64,
    ) -> Result<(), RecordError> {
        self.write_copies(&InstalledRecord {
            generation: previous_generation.saturating_add(1),
            ..record.clone()
        })
    }

    fn write_copies(&self, record: &InstalledRecord) -> Result<(), RecordError> {
        let bytes = record::encode(KIND, record).map_err(RecordError::Encode)?;
        for path in self.copies() {
            atomic_write(&path, &bytes).map_err(|source| RecordError::Io {
                action: "saving",
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn read_copies(&self) -> Result<Copies, RecordError> {
        let mut best: Option<InstalledRecord> = None;
        let mut problems = Vec::new();
        for path in self.copies() {
            let bytes = record::read(&path).map_err(|source| RecordError::Io {
                action: "reading",
                path: path.clone(),
                source,
            })?;
            let name = file_name(&path);
            let Some(bytes) = bytes else {
                problems.push(format!("{name} is missing"));
                continue;
            };
            match record::decode::<InstalledRecord>(KIND, &bytes) {
                Ok(copy)
                    if best
                        .as_ref()
                        .is_some_and(|b| b.generation >= copy.generation) => {}
                Ok(copy) => best = Some(copy),
                Err(detail) => problems.push(format!("{name}: {detail}")),
            }
        }
        Ok(match best {
            Some(record) => {
                if !problems.is_empty() {
                    tracing::warn!(problems = %problems.join("; "), "one copy of the installed record is damaged; the other is used and the next save repairs it");
                }
                Copies::Valid(record)
            }
            None if problems.iter().all(|p| p.ends_with("is missing")) => Copies::None,
            None => Copies::Invalid(problems.join("; ")),
        })
    }

    /// An older agent's `installed.json`: absent means empty; present but
    /// unreadable means lost (it may have held a security version).
    fn read_legacy(&self) -> Result<InstalledRecord, RecordError> {
        let path = self.legacy();
        let Some(bytes) = read_bounded(&path)? else {
            return Ok(InstalledRecord::default());
        };
        #[derive(Deserialize)]
        struct Legacy {
            #[serde(default)]
            installed: BTreeMap<String, String>,
            security_version: u64,
        }
        let legacy: Legacy = serde_json::from_slice(&bytes)
            .map_err(|e| self.lost(format!("installed.json does not parse: {e}")))?;
        Ok(InstalledRecord {
            generation: 0,
            installed: legacy.installed,
            security_version: legacy.security_version,
        })
    }

    fn lost(&self, detail: String) -> RecordError {
        RecordError::Lost {
            dir: self.dir.clone(),
            detail,
        }
    }
}

enum Copies {
    /// At least one copy is valid: the higher generation.
    Valid(InstalledRecord),
    /// Neither copy exists.
    None,
    /// A copy exists, and none is valid: what is wrong with each.
    Invalid(String),
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, RecordError> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RecordError::Io {
                action: "reading",
                path: path.to_owned(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_LEGACY)
        .read_to_end(&mut bytes)
        .map_err(|source| RecordError::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        })?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Result = std::result::Result<(), Box<dyn std::error::Error>>;

    fn record(security_version: u64) -> InstalledRecord {
        InstalledRecord {
            generation: 0,
            installed: BTreeMap::from([("rootfs".to_owned(), "2.0.0".to_owned())]),
            security_version,
        }
    }

    /// A store initialised, then saved once at `security_version`.
    fn saved(
        security_version: u64,
    ) -> std::result::Result<(tempfile::TempDir, InstalledStore), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = InstalledStore::new(dir.path());
        store.initialise()?;
        let current = store.load()?;
        store.save(&record(security_version), current.generation)?;
        Ok((dir, store))
    }

    #[test]
    fn a_fresh_device_starts_at_zero_and_marks_it() -> Result {
        let dir = tempfile::tempdir()?;
        let store = InstalledStore::new(dir.path());
        assert_eq!(store.load()?, InstalledRecord::default(), "never written");
        store.initialise()?;
        assert!(store.marker().exists());
        let first = store.load()?;
        assert_eq!((first.generation, first.security_version), (1, 0));
        store.initialise()?; // a second start changes nothing
        assert_eq!(store.load()?, first);
        Ok(())
    }

    #[test]
    fn a_save_reaches_both_copies_with_the_next_generation() -> Result {
        let (_dir, store) = saved(7)?;
        for path in store.copies() {
            let copy: InstalledRecord = record::decode(KIND, &std::fs::read(&path)?)?;
            assert_eq!((copy.generation, copy.security_version), (2, 7));
        }
        Ok(())
    }

    #[test]
    fn either_valid_copy_is_read_and_the_newer_wins() -> Result {
        let (_dir, store) = saved(7)?;
        let [a, b] = store.copies();
        let newer = std::fs::read(&a)?;
        // A power cut between the two writes: A new, B one generation old.
        store.save(&record(9), 2)?;
        std::fs::write(&b, &newer)?;
        let read = store.load()?;
        assert_eq!(
            (read.generation, read.security_version),
            (3, 9),
            "A is newer"
        );

        std::fs::write(&a, b"airlift-installed 1 sha256:00\n{}")?;
        assert_eq!(store.load()?.security_version, 7, "B alone still holds 7");
        std::fs::remove_file(&a)?;
        assert_eq!(store.load()?.security_version, 7, "A deleted: B holds");
        Ok(())
    }

    #[test]
    fn both_copies_deleted_is_lost_not_zero() -> Result {
        let (_dir, store) = saved(7)?;
        for path in store.copies() {
            std::fs::remove_file(path)?;
        }
        let error = store.load().expect_err("lost");
        assert!(matches!(error, RecordError::Lost { .. }), "{error}");
        assert!(error.to_string().contains("refusing to install"), "{error}");
        // A restart does not paper over it.
        store.initialise()?;
        assert!(matches!(store.load(), Err(RecordError::Lost { .. })));
        Ok(())
    }

    #[test]
    fn both_copies_corrupt_is_lost_even_without_the_marker() -> Result {
        let (_dir, store) = saved(7)?;
        for path in store.copies() {
            let mut bytes = std::fs::read(&path)?;
            let last = bytes.len() - 3;
            bytes[last] ^= 0x01;
            std::fs::write(path, bytes)?;
        }
        std::fs::remove_file(store.marker())?;
        let error = store.load().expect_err("lost");
        assert!(error.to_string().contains("checksum"), "{error}");
        assert!(matches!(store.initialise(), Err(RecordError::Lost { .. })));
        assert!(
            !store.marker().exists(),
            "not initialised over a lost record"
        );
        Ok(())
    }

    #[test]
    fn an_older_agents_record_is_taken_over_once() -> Result {
        let dir = tempfile::tempdir()?;
        let store = InstalledStore::new(dir.path());
        std::fs::write(
            store.legacy(),
            br#"{"installed": {"rootfs": "1.0"}, "security_version": 5}"#,
        )?;
        assert_eq!(store.load()?.security_version, 5);
        store.initialise()?;
        assert!(!store.legacy().exists());
        let read = store.load()?;
        assert_eq!((read.generation, read.security_version), (1, 5));
        assert_eq!(
            read.installed.get("rootfs").map(String::as_str),
            Some("1.0")
        );
        Ok(())
    }

    #[test]
    fn a_corrupt_legacy_record_is_lost_not_zero() -> Result {
        let dir = tempfile::tempdir()?;
        let store = InstalledStore::new(dir.path());
        std::fs::write(store.legacy(), b"{\"installed\": {}, \"security_ver")?;
        assert!(matches!(store.load(), Err(RecordError::Lost { .. })));
        assert!(matches!(store.initialise(), Err(RecordError::Lost { .. })));
        assert!(store.legacy().exists(), "left for a person to look at");
        Ok(())
    }
}
