//! Reports that could not be sent yet, queued on disk in order.

use super::record;
use airlift_protocol::device::StatusReport;
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The record kind in each entry's header line.
const KIND: &str = "report";
/// File name suffix of a queued report.
const SUFFIX: &str = ".report";
/// Added to the name of an entry that failed its checksum.
const CORRUPT_SUFFIX: &str = ".corrupt";
/// Digits in an entry's sequence number.
const DIGITS: usize = 20;

/// One step of a deployment, for the server's status endpoint.
/// Local installs have no deployment and are never reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The deployment reported on.
    pub deployment_id: DeploymentId,
    /// The step reached.
    pub state: UpdateState,
    /// Why it failed or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Report {
    /// The request body for
    /// [`status_path`](airlift_protocol::device::status_path)`(self.deployment_id)`.
    pub fn to_status(&self) -> StatusReport {
        StatusReport {
            state: self.state,
            progress: None,
            message: self.message.clone(),
        }
    }
}

/// The position of a report in the [`Outbox`]: its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(u64);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$}", self.0, width = DIGITS)
    }
}

/// Reports waiting to be delivered, oldest first, one file per report in
/// `dir`, named by a zero-padded sequence number (`00000000000000000007.report`).
///
/// Each entry is written atomically (temporary file, `fsync`, `rename`,
/// `fsync` of the directory) with the same checksummed envelope as the state
/// file, so the queue survives restarts and power cuts. An entry that fails
/// its checksum is renamed `….report.corrupt` with a warning — kept for a
/// person, skipped by delivery — rather than dropped or fatal.
///
/// Delivery: [`peek`](Self::peek) the oldest, send it, and
/// [`ack`](Self::ack) it once the server answered — also when it refused it
/// for good (a 404, or a 410 for a cancelled deployment), or the queue would
/// stall on it; stop at the first transient failure so the order holds.
///
/// One `Outbox` per directory: [`push`](Self::push) numbers entries from a
/// counter it keeps, so two writers on one directory could collide.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    /// The next sequence number, once the directory has been scanned.
    next: Option<u64>,
}

/// Why the outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "queueing a report in".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The report could not be encoded (a bug, not a disk problem).
    #[error("encoding a report: {0}")]
    Encode(#[source] serde_json::Error),
}

/// A file in the outbox directory.
struct Entry {
    seq: u64,
    corrupt: bool,
    path: PathBuf,
}

impl Outbox {
    /// The outbox in `dir`, created on the first [`push`](Self::push).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            next: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `report` after every queued one, durably.
    pub fn push(&mut self, report: &Report) -> Result<EntryId, OutboxError> {
        let bytes = record::encode(KIND, report).map_err(OutboxError::Encode)?;
        fs::create_dir_all(&self.dir)
            .map_err(|source| self.io("creating the outbox", self.dir.clone(), source))?;
        let seq = match self.next {
            Some(seq) => seq,
            None => self.entries()?.last().map_or(1, |last| last.seq + 1),
        };
        let id = EntryId(seq);
        let path = self.dir.join(format!("{id}{SUFFIX}"));
        crate::boot::atomic_write(&path, &bytes)
            .map_err(|source| self.io("queueing a report in", path, source))?;
        self.next = Some(seq + 1);
        tracing::debug!(deployment_id = %report.deployment_id, state = %report.state, entry = %id, "report queued");
        Ok(id)
    }

    /// The oldest queued report, if any. Entries that fail their checksum
    /// are set aside on the way, with a warning.
    pub fn peek(&self) -> Result<Option<(EntryId, Report)>, OutboxError> {
        for entry in self.entries()?.into_iter().filter(|e| !e.corrupt) {
            let bytes = record::read(&entry.path)
                .map_err(|source| self.io("reading", entry.path.clone(), source))?;
            // Acknowledged by someone else since the scan.
            let Some(bytes) = bytes else { continue };
            match record::decode(KIND, &bytes) {
                Ok(report) => return Ok(Some((EntryId(entry.seq), report))),
                Err(detail) => self.set_aside(&entry.path, &detail)?,
            }
        }
        Ok(None)
    }

    /// Removes a delivered report. Removing one that is gone already is fine.
    pub fn ack(&self, id: EntryId) -> Result<(), OutboxError> {
        let path = self.dir.join(format!("{id}{SUFFIX}"));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(self.io("removing", path, source)),
        }
        record::sync_dir(&self.dir).map_err(|source| self.io("syncing", self.dir.clone(), source))
    }

    /// How many reports wait (set-aside entries not counted).
    pub fn len(&self) -> Result<usize, OutboxError> {
        Ok(self.entries()?.iter().filter(|e| !e.corrupt).count())
    }

    /// Whether no report waits.
    pub fn is_empty(&self) -> Result<bool, OutboxError> {
        Ok(self.len()? == 0)
    }

    /// The entries, queued and set aside, by sequence number. Other files
    /// (temporary files start with a dot) are not entries.
    fn entries(&self) -> Result<Vec<Entry>, OutboxError> {
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(self.io("listing", self.dir.clone(), source)),
        };
        let mut entries = Vec::new();
        for item in listing {
            let item = item.map_err(|source| self.io("listing", self.dir.clone(), source))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((digits, rest)) = name.split_at_checked(DIGITS) else {
                continue;
            };
            let corrupt = match rest.strip_prefix(SUFFIX) {
                Some("") => false,
                Some(CORRUPT_SUFFIX) => true,
                _ => continue,
            };
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(seq) = digits.parse() else { continue };
            entries.push(Entry {
                seq,
                corrupt,
                path: item.path(),
            });
        }
        entries.sort_by_key(|e| (e.seq, e.corrupt));
        Ok(entries)
    }

    fn set_aside(&self, path: &Path, detail: &str) -> Result<(), OutboxError> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(CORRUPT_SUFFIX);
        let aside = PathBuf::from(aside);
        tracing::warn!(
            entry = %path.display(),
            set_aside = %aside.display(),
            %detail,
            "a queued report is corrupt; it is kept aside and will not be sent"
        );
        fs::rename(path, &aside)
            .and_then(|()| record::sync_dir(&self.dir))
            .map_err(|source| self.io("setting aside", path.to_owned(), source))
    }

    fn io(&self, action: &'static str, path: PathBuf, source: io::Error) -> OutboxError {
        OutboxError::Io {
            action,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn report(state: UpdateState) -> Report {
        Report {
            deployment_id: DeploymentId::new(),
            state,
            message: Some(format!("now {state}")),
        }
    }

    fn names(dir: &Path) -> io::Result<Vec<String>> {
        let mut names = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    #[test]
    fn an_outbox_that_was_never_written_is_empty() -> TestResult {
        let dir = tempfile::tempdir()?;
        let outbox = Outbox::new(dir.path().join("outbox"));
        assert!(outbox.peek()?.is_none());
        assert!(outbox.is_empty()?);
        outbox.ack(EntryId(1))?;
        Ok(())
    }

    #[test]
    fn reports_come_out_in_order_across_restarts() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("outbox");
        let sent = [
            report(UpdateState::Downloading),
            report(UpdateState::Downloaded),
            report(UpdateState::Installing),
            report(UpdateState::Installed),
        ];
        let mut outbox = Outbox::new(&path);
        let first = outbox.push(&sent[0])?;
        let second = outbox.push(&sent[1])?;
        assert!(first < second);

        // A restart: a new outbox on the same directory goes on numbering.
        let mut outbox = Outbox::new(&path);
        outbox.push(&sent[2])?;
        let mut outbox = Outbox::new(&path);
        outbox.push(&sent[3])?;
        assert_eq!(outbox.len()?, 4);
        assert_eq!(
            names(&path)?,
            [
                "00000000000000000001.report",
                "00000000000000000002.report",
                "00000000000000000003.report",
                "00000000000000000004.report",
            ]
        );

        let mut delivered = Vec::new();
        loop {
            // Each delivery from a fresh outbox, as after a restart.
            let outbox = Outbox::new(&path);
            let Some((id, report)) = outbox.peek()? else {
                break;
            };
            // Peeking again without an ack gives the same report.
            assert_eq!(outbox.peek()?, Some((id, report.clone())));
            outbox.ack(id)?;
            outbox.ack(id)?;
            delivered.push(report);
        }
        assert_eq!(delivered, sent);
        assert!(names(&path)?.is_empty());
        Ok(())
    }

    #[test]
    fn numbering_never_reuses_a_queued_number() -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut outbox = Outbox::new(dir.path());
        let a = outbox.push(&report(UpdateState::Downloading))?;
        let b = outbox.push(&report(UpdateState::Downloaded))?;
        outbox.ack(a)?;
        let mut reopened = Outbox::new(dir.path());
        let c = reopened.push(&report(UpdateState::Installing))?;
        assert!(c > b);
        assert_eq!(reopened.peek()?.map(|(id, _)| id), Some(b));
        Ok(())
    }

    #[test]
    fn a_corrupt_entry_is_set_aside_with_the_rest_delivered_in_order() -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut outbox = Outbox::new(dir.path());
        let first = outbox.push(&report(UpdateState::Downloading))?;
        let second = outbox.push(&report(UpdateState::Downloaded))?;
        let third_report = report(UpdateState::Installing);
        let third = outbox.push(&third_report)?;

        // Tear the first and flip a byte in the second.
        let first_path = dir.path().join(format!("{first}{SUFFIX}"));
        let bytes = fs::read(&first_path)?;
        fs::write(&first_path, &bytes[..bytes.len() / 2])?;
        let second_path = dir.path().join(format!("{second}{SUFFIX}"));
        let mut bytes = fs::read(&second_path)?;
        let last = bytes.len() - 3;
        bytes[last] ^= 0x01;
        fs::write(&second_path, bytes)?;

        assert_eq!(outbox.peek()?, Some((third, third_report)));
        assert_eq!(outbox.len()?, 1);
        assert_eq!(
            names(dir.path())?,
            [
                "00000000000000000001.report.corrupt",
                "00000000000000000002.report.corrupt",
                "00000000000000000003.report",
            ]
        );
        outbox.ack(third)?;
        assert!(outbox.peek()?.is_none());

        // New entries are numbered after the set-aside ones (3 was
        // delivered, so it may be used again).
        let mut reopened = Outbox::new(dir.path());
        assert_eq!(reopened.push(&report(UpdateState::Installed))?, EntryId(3));
        Ok(())
    }

    #[test]
    fn foreign_and_temporary_files_are_not_entries() -> TestResult {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join(".00000000000000000001.report.tmp.1.0"), "x")?;
        fs::write(dir.path().join("README"), "x")?;
        fs::write(dir.path().join("1.report"), "x")?;
        fs::write(dir.path().join("0000000000000000000x.report"), "x")?;
        let mut outbox = Outbox::new(dir.path());
        assert!(outbox.peek()?.is_none());
        let only = report(UpdateState::Rebooting);
        let id = outbox.push(&only)?;
        assert_eq!(outbox.peek()?, Some((id, only)));
        Ok(())
    }

    #[test]
    fn a_report_becomes_the_status_request_body() {
        let report = report(UpdateState::RolledBack);
        let status = report.to_status();
        assert_eq!(status.state, UpdateState::RolledBack);
        assert_eq!(status.message, report.message);
        assert_eq!(status.progress, None);
    }
}
