//! Running an external program with a timeout, streaming its standard input,
//! collecting the tail of its standard error, and killing its whole process
//! group when it overruns.

use super::sys;
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Lines of standard error kept for error messages.
const STDERR_TAIL_LINES: usize = 20;
/// Longest line kept or matched; longer lines are cut.
const MAX_LINE: u64 = 4096;
/// Characters of one stderr line kept for error messages.
const MAX_TAIL_LINE_CHARS: usize = 300;
/// How long to wait for the output pipes to close once the program has
/// exited (a background process it left may hold them open).
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// How often the exit of the program is polled.
const POLL: Duration = Duration::from_millis(10);

/// How a run ended when the program did run to its end.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    /// Whether a line of standard output was exactly the marker.
    pub marker_seen: bool,
    /// The last lines of standard error.
    pub stderr_tail: String,
    /// Bytes written to the program's standard input.
    pub written: u64,
    /// Whether all of the input was written and standard input closed; false
    /// when the program closed it early.
    pub input_complete: bool,
}

/// Why a run did not end on its own.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The program could not be started.
    Spawn(io::Error),
    /// Reading the input failed; the program was killed.
    Input(io::Error),
    /// The program was killed after the timeout.
    TimedOut { stderr_tail: String },
    /// Waiting for the program failed.
    Wait(io::Error),
}

/// What a run is: the command, its input and limits, and what to log.
pub(crate) struct Run<'a> {
    pub command: Command,
    /// Streamed to standard input, which is closed at its end; `None` gives
    /// the program an empty standard input (`/dev/null`).
    pub input: Option<&'a mut dyn Read>,
    /// How long the program may go without progress: from its start, from
    /// each chunk of input it accepts, and from the end of its input.
    pub timeout: Duration,
    /// A line of standard output to look for.
    pub marker: &'static str,
    /// Shown in log lines.
    pub label: String,
}

#[derive(Debug, Default)]
struct Capture {
    stderr: VecDeque<String>,
    marker_seen: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the program to its end, or kills it on timeout or input error.
pub(crate) fn run(mut run: Run<'_>) -> Result<Finished, RunError> {
    let has_input = run.input.is_some();
    run.command
        .stdin(if has_input {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = spawn(&mut run.command).map_err(RunError::Spawn)?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let capture = Arc::new(Mutex::new(Capture::default()));
    let (pipes_done, pipes_closed) = mpsc::channel::<()>();
    let mut readers = 0;
    if let Some(stdout) = child.stdout.take() {
        readers += 1;
        let (capture, done, label, marker) = (
            Arc::clone(&capture),
            pipes_done.clone(),
            run.label.clone(),
            run.marker,
        );
        thread::spawn(move || {
            read_lines(stdout, |line| {
                tracing::debug!(program = %label, stream = "stdout", "{}", String::from_utf8_lossy(line));
                if line == marker.as_bytes() {
                    lock(&capture).marker_seen = true;
                }
            });
            let _ = done.send(());
        });
    }
    if let Some(stderr) = child.stderr.take() {
        readers += 1;
        let (capture, done, label) = (Arc::clone(&capture), pipes_done.clone(), run.label.clone());
        thread::spawn(move || {
            read_lines(stderr, |line| {
                let text = String::from_utf8_lossy(line);
                tracing::debug!(program = %label, stream = "stderr", "{text}");
                let mut capture = lock(&capture);
                if capture.stderr.len() == STDERR_TAIL_LINES {
                    capture.stderr.pop_front();
                }
                capture
                    .stderr
                    .push_back(text.chars().take(MAX_TAIL_LINE_CHARS).collect());
            });
            let _ = done.send(());
        });
    }
    drop(pipes_done);

    let child = Arc::new(Mutex::new(child));
    let progress = Arc::new(Mutex::new(Instant::now()));
    let timed_out = Arc::new(AtomicBool::new(false));
    let (stop_watchdog, stopped) = mpsc::channel::<()>();
    let watchdog = {
        let (child, progress, timed_out, timeout) = (
            Arc::clone(&child),
            Arc::clone(&progress),
            Arc::clone(&timed_out),
            run.timeout,
        );
        thread::spawn(move || loop {
            let idle = lock(&progress).elapsed();
            let Some(left) = timeout.checked_sub(idle).filter(|d| !d.is_zero()) else {
                timed_out.store(true, Ordering::SeqCst);
                kill(&child, pid);
                return;
            };
            match stopped.recv_timeout(left) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        })
    };

    let mut written = 0;
    let mut input_complete = !has_input;
    let mut input_error = None;
    if let (Some(input), Some(stdin)) = (run.input.take(), stdin) {
        match feed(input, stdin, &progress) {
            Fed::All(n) => {
                written = n;
                input_complete = true;
            }
            Fed::ClosedEarly(n, e) => {
                written = n;
                tracing::debug!(program = %run.label, error = %e, written = n, "standard input closed early");
            }
            Fed::InputFailed(e) => {
                kill(&child, pid);
                input_error = Some(e);
            }
        }
        *lock(&progress) = Instant::now();
    }

    let status = loop {
        match lock(&child).try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        thread::sleep(POLL);
    };
    let _ = stop_watchdog.send(());
    let _ = watchdog.join();
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            kill(&child, pid);
            return Err(RunError::Wait(e));
        }
    };

    let deadline = Instant::now() + PIPE_GRACE;
    for _ in 0..readers {
        let left = deadline.saturating_duration_since(Instant::now());
        if pipes_closed.recv_timeout(left).is_err() {
            tracing::warn!(program = %run.label, "output still open after exit (a background process holds it); not waiting for it");
            break;
        }
    }
    let (marker_seen, stderr_tail) = {
        let capture = lock(&capture);
        let tail: Vec<&str> = capture.stderr.iter().map(String::as_str).collect();
        (capture.marker_seen, tail.join("\n"))
    };

    if let Some(e) = input_error {
        return Err(RunError::Input(e));
    }
    if timed_out.load(Ordering::SeqCst) {
        return Err(RunError::TimedOut { stderr_tail });
    }
    Ok(Finished {
        status,
        marker_seen,
        stderr_tail,
        written,
        input_complete,
    })
}

/// Starts the program, retrying briefly on `ETXTBSY`: a program that was
/// just written (a module being installed or replaced) can be held open for
/// writing for a moment by a process forked elsewhere in the agent.
fn spawn(command: &mut Command) -> io::Result<Child> {
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 5 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(20 * attempts));
            }
            other => return other,
        }
    }
}

/// Kills the program's process group, if the program has not been reaped.
fn kill(child: &Mutex<Child>, pid: u32) {
    let mut child = lock(child);
    if let Ok(None) = child.try_wait() {
        if let Err(e) = sys::kill_process_group(pid) {
            tracing::warn!(pid, error = %e, "killing the process group failed; killing the process");
            let _ = child.kill();
        }
    }
}

enum Fed {
    All(u64),
    ClosedEarly(u64, io::Error),
    InputFailed(io::Error),
}

/// Copies `input` to `stdin` until end-of-file, marking progress per chunk.
fn feed(input: &mut dyn Read, mut stdin: ChildStdin, progress: &Mutex<Instant>) -> Fed {
    let mut buf = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Fed::All(written),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Fed::InputFailed(e),
        };
        if let Err(e) = stdin.write_all(&buf[..n]) {
            return Fed::ClosedEarly(written, e);
        }
        written += n as u64;
        *lock(progress) = Instant::now();
    }
}

/// Calls `on_line` with each line (without its newline) of `pipe`; lines
/// longer than [`MAX_LINE`] come in pieces, and only whole lines are
/// compared to a marker by the callers, so pieces never match it.
fn read_lines(pipe: impl Read, mut on_line: impl FnMut(&[u8])) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    let mut continuation = false;
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                let whole = line.last() == Some(&b'\n');
                if whole {
                    line.pop();
                }
                if continuation {
                    // The tail of a long line: pass it on, but prefixed so
                    // it can never equal a marker.
                    let mut piece = b"...".to_vec();
                    piece.extend_from_slice(&line);
                    on_line(&piece);
                } else {
                    on_line(&line);
                }
                continuation = !whole;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
