//! [`FileBootEnv`]: the bootloader environment as a small file, and the
//! bootloader itself as [`FileBootEnv::boot`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::atomic::atomic_write;
use super::vars::{self, BootVars, Writes, BOOTLIMIT, NAMES, SLOT};
use super::{BootControl, BootError, BootOutcome, Slot};

/// The first line of every file, so that a wrong file is refused by name.
const HEADER: &str = "# airlift boot environment (FileBootEnv); written atomically by the agent";

/// The slot the last [`FileBootEnv::boot`] booted: what a real device reads
/// from its kernel command line.
const BOOTED: &str = "airlift_booted";

/// A bootloader environment in a file, with the bootloader's power-up logic.
///
/// The file holds the same variables as a real environment plus
/// `airlift_booted`, one `name=value` a line under a fixed first line:
///
/// ```text
/// # airlift boot environment (FileBootEnv); written atomically by the agent
/// airlift_booted=a
/// airlift_slot=b
/// bootcount=1
/// bootlimit=3
/// upgrade_available=1
/// ```
///
/// Every change replaces the whole file atomically ([`atomic_write`]). A
/// missing, truncated or otherwise unexpected file is an error, never a
/// reason to start afresh: only [`create`](Self::create) makes one.
#[derive(Debug, Clone)]
pub struct FileBootEnv {
    path: PathBuf,
}

/// The file, parsed.
#[derive(Debug)]
struct Loaded {
    /// Every variable, as written.
    raw: BTreeMap<String, String>,
    vars: BootVars,
    booted: Slot,
}

impl FileBootEnv {
    /// Makes a fresh environment at `path` for a device that has just booted
    /// `slot` and boots it again next (no trial, `bootcount=0`, `bootlimit`
    /// unset as on a device that never armed a trial). Refuses to replace an
    /// existing file.
    pub fn create(path: impl Into<PathBuf>, slot: Slot) -> Result<Self, BootError> {
        let env = FileBootEnv { path: path.into() };
        match fs::symlink_metadata(&env.path) {
            Ok(_) => {
                return Err(env.io_error(
                    "creating the boot environment",
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "it already exists; open it instead",
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(env.io_error("creating the boot environment", e)),
        }
        let raw = BTreeMap::from([
            (BOOTED.to_owned(), slot.to_string()),
            (SLOT.to_owned(), slot.to_string()),
            (vars::UPGRADE_AVAILABLE.to_owned(), "0".to_owned()),
            (vars::BOOTCOUNT.to_owned(), "0".to_owned()),
        ]);
        env.write(&raw)?;
        Ok(env)
    }

    /// Opens an existing environment, checking that it is valid.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, BootError> {
        let env = FileBootEnv { path: path.into() };
        env.load()?;
        Ok(env)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The trial-boot variables as the file holds them now.
    pub fn vars(&self) -> Result<BootVars, BootError> {
        Ok(self.load()?.vars)
    }

    /// Sets `bootlimit` (`None` unsets it), as a device's default
    /// environment or a person at the bootloader prompt would.
    pub fn set_bootlimit(&mut self, limit: Option<u32>) -> Result<(), BootError> {
        let mut raw = self.load()?.raw;
        match limit {
            Some(limit) => raw.insert(BOOTLIMIT.to_owned(), limit.to_string()),
            None => raw.remove(BOOTLIMIT),
        };
        self.write(&raw)
    }

    /// Powers the device up: what the bootloader does before the kernel
    /// starts, as U-Boot's bootcount logic does it. During a trial
    /// (`upgrade_available=1`) it counts the boot (`bootcount += 1`) and, once
    /// `bootcount > bootlimit`, falls back instead: `airlift_slot` = the other
    /// slot, `upgrade_available=0`, `bootcount=0`. Then it boots
    /// `airlift_slot` and records it as the running slot. All in one write.
    pub fn boot(&mut self) -> Result<BootOutcome, BootError> {
        let loaded = self.load()?;
        let (writes, outcome) = vars::power_up(&loaded.vars);
        let mut raw = loaded.raw;
        apply(&mut raw, &writes);
        raw.insert(BOOTED.to_owned(), outcome.slot.to_string());
        self.write(&raw)?;
        tracing::info!(
            slot = %outcome.slot,
            trial = outcome.trial,
            fell_back = outcome.fell_back,
            path = %self.path.display(),
            "simulated power-up"
        );
        Ok(outcome)
    }

    fn load(&self) -> Result<Loaded, BootError> {
        let bytes =
            fs::read(&self.path).map_err(|e| self.io_error("reading the boot environment", e))?;
        let invalid = |reason: String| BootError::InvalidEnv {
            location: self.path.display().to_string(),
            reason,
        };
        let text =
            String::from_utf8(bytes).map_err(|_| invalid("it is not UTF-8 text".to_owned()))?;
        let raw = parse(&text).map_err(invalid)?;
        let location = self.path.display().to_string();
        let vars = BootVars::parse(&location, |name| raw.get(name).map(String::as_str))?;
        // `create` writes these and no transition removes them: a file
        // without them was cut short or written by something else.
        for name in [SLOT, vars::UPGRADE_AVAILABLE, vars::BOOTCOUNT, BOOTED] {
            if raw.get(name).is_none_or(String::is_empty) {
                return Err(invalid(format!("{name} is not set")));
            }
        }
        let booted = match raw.get(BOOTED) {
            Some(value) => value
                .parse::<Slot>()
                .map_err(|_| invalid(format!("{BOOTED} is {value:?}; expected `a` or `b`")))?,
            None => return Err(invalid(format!("{BOOTED} is not set"))),
        };
        Ok(Loaded { raw, vars, booted })
    }

    fn write(&self, raw: &BTreeMap<String, String>) -> Result<(), BootError> {
        let mut text = String::from(HEADER);
        text.push('\n');
        for (name, value) in raw {
            text.push_str(name);
            text.push('=');
            text.push_str(value);
            text.push('\n');
        }
        atomic_write(&self.path, text.as_bytes())
            .map_err(|e| self.io_error("writing the boot environment", e))
    }

    fn transition(
        &mut self,
        what: &str,
        plan: impl FnOnce(&Loaded) -> Result<Writes, BootError>,
    ) -> Result<(), BootError> {
        let loaded = self.load()?;
        let writes = plan(&loaded)?;
        if writes.is_empty() {
            return Ok(());
        }
        let mut raw = loaded.raw;
        apply(&mut raw, &writes);
        self.write(&raw)?;
        tracing::info!(path = %self.path.display(), ?writes, "boot environment: {what}");
        Ok(())
    }

    fn io_error(&self, action: &'static str, source: io::Error) -> BootError {
        BootError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

fn apply(raw: &mut BTreeMap<String, String>, writes: &Writes) {
    for (name, value) in writes {
        raw.insert((*name).to_owned(), value.clone());
    }
}

/// The header line, then `name=value` lines of known names, each once, each
/// ending in a newline (so a file cut short is caught).
fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    if !text.ends_with('\n') {
        return Err("it is truncated (the last line has no newline)".to_owned());
    }
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(format!(
            "its first line is not {HEADER:?}: not a FileBootEnv file"
        ));
    }
    let mut raw = BTreeMap::new();
    for (index, line) in lines.enumerate() {
        let number = index + 2;
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {number} is not name=value: {line:?}"));
        };
        if name != BOOTED && !NAMES.contains(&name) {
            return Err(format!("line {number} sets an unknown variable {name:?}"));
        }
        if raw.insert(name.to_owned(), value.to_owned()).is_some() {
            return Err(format!("{name} is set twice (line {number})"));
        }
    }
    Ok(raw)
}

impl BootControl for FileBootEnv {
    fn booted_slot(&self) -> Result<Slot, BootError> {
        Ok(self.load()?.booted)
    }

    fn start_trial(&mut self, slot: Slot) -> Result<(), BootError> {
        self.transition("trial armed", |l| {
            vars::start_trial(&l.vars, l.booted, slot)
        })
    }

    fn commit(&mut self) -> Result<(), BootError> {
        self.transition("trial committed", |l| vars::commit(&l.vars, l.booted))
    }

    fn abandon_trial(&mut self, previous: Slot) -> Result<(), BootError> {
        self.transition("trial abandoned", |_| Ok(vars::abandon_trial(previous)))
    }

    fn trial_pending(&self) -> Result<bool, BootError> {
        Ok(self.load()?.vars.upgrade_available)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::conformance::{self, Harness};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    impl Harness for FileBootEnv {
        fn power_up(&mut self) -> Result<BootOutcome, BootError> {
            self.boot()
        }

        fn set_bootlimit(&mut self, limit: u32) -> Result<(), BootError> {
            FileBootEnv::set_bootlimit(self, Some(limit))
        }

        fn vars(&self) -> Result<BootVars, BootError> {
            FileBootEnv::vars(self)
        }
    }

    fn fresh(dir: &tempfile::TempDir) -> Result<FileBootEnv, BootError> {
        FileBootEnv::create(dir.path().join("bootenv"), Slot::A)
    }

    #[test]
    fn conformance() -> TestResult {
        conformance::run_all(|| {
            let dir = tempfile::tempdir()?;
            let env = fresh(&dir)?;
            Ok((env, dir))
        })
    }

    #[test]
    fn create_writes_the_documented_file_and_refuses_to_replace_one() -> TestResult {
        let dir = tempfile::tempdir()?;
        let env = fresh(&dir)?;
        assert_eq!(
            fs::read_to_string(env.path())?,
            format!(
                "{HEADER}\nairlift_booted=a\nairlift_slot=a\nbootcount=0\nupgrade_available=0\n"
            )
        );
        let err = FileBootEnv::create(env.path(), Slot::B)
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("already exists"));
        assert_eq!(env.booted_slot()?, Slot::A);
        Ok(())
    }

    #[test]
    fn every_fallback_bootlimit_is_honoured_exactly() -> TestResult {
        for limit in [1, 2, 5] {
            let dir = tempfile::tempdir()?;
            let mut env = fresh(&dir)?;
            env.set_bootlimit(Some(limit))?;
            env.start_trial(Slot::B)?;
            for boot in 1..=limit {
                let outcome = env.boot()?;
                assert_eq!(
                    outcome,
                    BootOutcome {
                        slot: Slot::B,
                        trial: true,
                        fell_back: false
                    },
                    "limit {limit}, boot {boot}"
                );
                assert_eq!(env.vars()?.bootcount, boot);
            }
            let outcome = env.boot()?;
            assert_eq!(
                outcome,
                BootOutcome {
                    slot: Slot::A,
                    trial: false,
                    fell_back: true
                },
                "limit {limit}"
            );
            assert_eq!(
                env.vars()?.bootlimit,
                Some(limit),
                "the fallback keeps bootlimit"
            );
        }
        Ok(())
    }

    #[test]
    fn a_missing_file_is_an_error_and_is_not_created() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("absent");
        let err = FileBootEnv::open(&path).err();
        assert!(
            matches!(&err, Some(BootError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        let mut env = FileBootEnv { path: path.clone() };
        assert!(env.boot().is_err());
        assert!(env.start_trial(Slot::B).is_err());
        assert!(!path.exists());
        Ok(())
    }

    #[test]
    fn a_corrupt_file_is_refused_and_left_as_it_is() -> TestResult {
        let dir = tempfile::tempdir()?;
        let good = fs::read_to_string(fresh(&dir)?.path())?;
        let cases: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("truncated", good[..good.len() - 5].to_owned()),
            (
                "no header",
                good.lines().skip(1).map(|l| format!("{l}\n")).collect(),
            ),
            ("garbage", "\u{0}\u{1}binary\n".to_owned()),
            ("not name=value", format!("{good}oops\n")),
            ("unknown variable", format!("{good}bootcmd=run it\n")),
            ("duplicate", format!("{good}bootcount=1\n")),
            ("bad slot", good.replace("airlift_slot=a", "airlift_slot=c")),
            ("no slot", good.replace("airlift_slot=a\n", "")),
            ("no booted slot", good.replace("airlift_booted=a\n", "")),
            ("cut at a line", good.replace("upgrade_available=0\n", "")),
            ("empty count", good.replace("bootcount=0", "bootcount=")),
            (
                "bad flag",
                good.replace("upgrade_available=0", "upgrade_available=true"),
            ),
            ("bad count", good.replace("bootcount=0", "bootcount=-1")),
        ];
        for (what, content) in cases {
            let path = dir.path().join("corrupt");
            fs::write(&path, &content)?;
            let mut env = FileBootEnv { path: path.clone() };
            let err = env.boot().err();
            assert!(
                matches!(&err, Some(BootError::InvalidEnv { location, .. }) if location.contains("corrupt")),
                "{what}: {err:?}"
            );
            assert!(env.trial_pending().is_err(), "{what}");
            assert!(env.booted_slot().is_err(), "{what}");
            assert!(env.start_trial(Slot::B).is_err(), "{what}");
            assert!(env.abandon_trial(Slot::A).is_err(), "{what}");
            assert!(FileBootEnv::open(&path).is_err(), "{what}");
            assert_eq!(
                fs::read_to_string(&path)?,
                content,
                "{what}: the file was changed"
            );
        }
        Ok(())
    }

    #[test]
    fn each_transition_replaces_the_file_whole_and_leaves_no_temp_file() -> TestResult {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir()?;
        let mut env = fresh(&dir)?;
        let mut inode = fs::metadata(env.path())?.ino();
        let mut check = |env: &FileBootEnv| -> TestResult {
            let names: Vec<_> = fs::read_dir(dir.path())?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
            assert_eq!(names, vec![std::ffi::OsString::from("bootenv")]);
            let now = fs::metadata(env.path())?.ino();
            assert_ne!(now, inode, "the file was rewritten in place");
            inode = now;
            FileBootEnv::open(env.path())?;
            Ok(())
        };
        env.start_trial(Slot::B)?;
        check(&env)?;
        env.boot()?;
        check(&env)?;
        env.commit()?;
        check(&env)?;
        env.boot()?;
        check(&env)?;
        Ok(())
    }
}
