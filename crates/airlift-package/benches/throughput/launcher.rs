//! Timing the measured processes: each is started by a small helper
//! process (the launcher) and reaped with `wait4`, for its wall time and
//! its own peak RSS.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::RUNS;

/// One untimed warm-up run, then the best wall time of `RUNS`, and the
/// largest peak RSS (KiB) any run reached.
pub fn best_of(launcher: &mut Launcher, argv: &[impl AsRef<OsStr>]) -> (Duration, i64) {
    launcher.run(argv);
    let mut best = Duration::MAX;
    let mut peak = 0;
    for _ in 0..RUNS {
        let (time, rss) = launcher.run(argv);
        best = best.min(time);
        peak = peak.max(rss);
    }
    (best, peak)
}

/// Starts and times the measured processes, from a separate small process.
///
/// Linux counts what a process used *before* its `exec` towards its
/// `ru_maxrss`, and `std::process::Command` spawns with `posix_spawn`, whose
/// child shares the parent's address space until `exec`: a child spawned
/// straight from this benchmark reports at least the benchmark's own peak
/// RSS (over 50 MiB once it has built the zstd package). Spawned from the
/// launcher, whose own peak stays at a few MiB, the children report their
/// own peak.
pub struct Launcher {
    process: Child,
    requests: ChildStdin,
    replies: BufReader<ChildStdout>,
}

impl Launcher {
    pub fn start() -> Self {
        let mut process = Command::new(std::env::current_exe().expect("path of this benchmark"))
            .arg("--launcher")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the launcher");
        let requests = process.stdin.take().expect("the launcher's stdin is piped");
        let replies = BufReader::new(process.stdout.take().expect("stdout is piped"));
        Self {
            process,
            requests,
            replies,
        }
    }

    /// Runs `argv` to completion; returns its wall time and peak RSS in KiB.
    pub fn run(&mut self, argv: &[impl AsRef<OsStr>]) -> (Duration, i64) {
        let mut request = Vec::new();
        for (i, arg) in argv.iter().enumerate() {
            if i > 0 {
                request.push(0);
            }
            request.extend_from_slice(arg.as_ref().as_bytes());
        }
        request.push(b'\n');
        self.requests
            .write_all(&request)
            .and_then(|()| self.requests.flush())
            .expect("send a command to the launcher");
        let mut reply = String::new();
        self.replies
            .read_line(&mut reply)
            .expect("read the launcher's reply");
        let shown: Vec<_> = argv.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        let fields: Vec<&str> = reply.split_whitespace().collect();
        match fields[..] {
            ["ok", nanos, kib] => (
                Duration::from_nanos(nanos.parse().expect("nanoseconds")),
                kib.parse().expect("KiB"),
            ),
            _ => panic!("{shown:?} failed: {}", reply.trim()),
        }
    }

    pub fn stop(self) {
        let Self {
            mut process,
            requests,
            replies,
        } = self;
        drop((requests, replies));
        let status = process.wait().expect("wait for the launcher");
        assert!(status.success(), "the launcher failed: {status}");
    }
}

/// The launcher's side: reads commands (arguments separated by NUL, one per
/// line) from stdin, runs each, and answers `ok NANOS PEAK_RSS_KIB` or
/// `failed STATUS`.
pub fn launcher() -> io::Result<()> {
    let mut out = io::stdout().lock();
    for line in io::stdin().lock().split(b'\n') {
        let line = line?;
        let argv: Vec<OsString> = line
            .split(|&b| b == 0)
            .map(|arg| OsString::from_vec(arg.to_vec()))
            .collect();
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        let start = Instant::now();
        // The child is reaped by `wait4`, not `Child::wait`, to get its rusage.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let (status, usage) = wait4(child.id());
        let time = start.elapsed();
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            writeln!(out, "ok {} {}", time.as_nanos(), usage.ru_maxrss)?;
        } else {
            writeln!(out, "failed {status:#x}")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Reaps `pid` with `wait4`, which also reports that one child's resource
/// usage (peak RSS), unlike `getrusage(RUSAGE_CHILDREN)`, which mixes all.
#[allow(unsafe_code)]
fn wait4(pid: u32) -> (libc::c_int, libc::rusage) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits in pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the right type.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            return (status, usage);
        }
        let error = io::Error::last_os_error();
        assert!(
            error.kind() == io::ErrorKind::Interrupted,
            "wait4({pid}) failed: {error}"
        );
    }
}
