//! The one way the agent runs a child process: health checks, update
//! modules, bootloader tools and `identity_command` all come through
//! [`run`] (only the reboot command does not: see `driver::effects`).
//!
//! A run starts the program in a process group of its own, with standard
//! input from `/dev/null` or streamed from a reader; captures standard
//! output and standard error, each bounded (the tail is kept); and, if it
//! has a timeout, kills the whole group with `SIGKILL` when the program goes
//! that long without progress — so nothing it started outlives it. What
//! counts as a failure is the caller's business: a run that ended reports
//! its exit status, and the errors name the command.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};
use wait_timeout::ChildExt;

/// Bytes of each output stream kept unless a run says otherwise.
pub(crate) const DEFAULT_CAPTURE: usize = 64 * 1024;
/// Longest line logged or compared to a marker; longer lines come in pieces.
const MAX_LINE: u64 = 4096;
/// How long to wait for the output pipes to close once the program has
/// exited (a background process it left may hold them open).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// What to run, and how.
pub(crate) struct Run<'a> {
    command: Command,
    input: Option<&'a mut dyn Read>,
    timeout: Option<Duration>,
    capture: usize,
    merge_stderr: bool,
    marker: Option<&'static str>,
    log_lines: Option<String>,
}

impl<'a> Run<'a> {
    /// Runs `command` (program, arguments, environment and working
    /// directory as the caller set them) with an empty standard input, no
    /// timeout, and [`DEFAULT_CAPTURE`] bytes kept of each output stream.
    pub(crate) fn new(command: Command) -> Self {
        Self {
            command,
            input: None,
            timeout: None,
            capture: DEFAULT_CAPTURE,
            merge_stderr: false,
            marker: None,
            log_lines: None,
        }
    }

    /// Streams `input` to standard input, which is closed at its end.
    pub(crate) fn input(mut self, input: Option<&'a mut dyn Read>) -> Self {
        self.input = input;
        self
    }

    /// How long the program may go without progress before its group is
    /// killed: from its start, from each chunk of input it accepts, and from
    /// the end of its input.
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Keeps the last `bytes` of each output stream.
    pub(crate) fn capture(mut self, bytes: usize) -> Self {
        self.capture = bytes;
        self
    }

    /// Sends standard error into the same pipe as standard output, so that
    /// [`Finished::stdout`] holds both as they were interleaved.
    pub(crate) fn merge_stderr(mut self) -> Self {
        self.merge_stderr = true;
        self
    }

    /// Watches standard output for a line that is exactly `marker`.
    pub(crate) fn marker(mut self, marker: &'static str) -> Self {
        self.marker = Some(marker);
        self
    }

    /// Logs each line of output at debug level, as from `label`.
    pub(crate) fn log_lines(mut self, label: String) -> Self {
        self.log_lines = Some(label);
        self
    }
}

/// The kept tail of one output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Captured {
    /// The last bytes the stream carried.
    pub bytes: Vec<u8>,
    /// Whether earlier bytes were dropped.
    pub truncated: bool,
}

impl Captured {
    /// The bytes, lossily decoded.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// A run that ended on its own (whatever its exit status).
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    /// Standard output (and standard error, if merged).
    pub stdout: Captured,
    /// Standard error, unless merged.
    pub stderr: Captured,
    /// Whether a line of standard output was exactly the marker.
    pub marker_seen: bool,
    /// Bytes written to standard input.
    pub written: u64,
    /// Whether all of the input was written and standard input closed;
    /// false when the program closed it early.
    pub input_complete: bool,
}

/// Why a run did not end on its own. Each names the command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// The program could not be started.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// Reading the input failed; the program was killed.
    #[error("reading the input of `{command}`: {source}")]
    Input {
        command: String,
        #[source]
        source: io::Error,
    },
    /// The program's group was killed after the timeout.
    #[error("`{command}` timed out after {} s", timeout.as_secs())]
    TimedOut {
        command: String,
        timeout: Duration,
        /// What it printed until then.
        stdout: Captured,
        stderr: Captured,
    },
    /// Waiting for the program failed.
    #[error("waiting for `{command}`: {source}")]
    Wait {
        command: String,
        #[source]
        source: io::Error,
    },
}

/// Runs the program to its end, or kills its group on timeout or when the
/// input fails.
pub(crate) fn run(run: Run<'_>) -> Result<Finished, RunError> {
    let Run {
        mut command,
        input,
        timeout,
        capture,
        merge_stderr,
        marker,
        log_lines,
    } = run;
    let command_line = display_command(&command);
    let spawn_error = |source| RunError::Spawn {
        command: command_line.clone(),
        source,
    };
    let merged = configure(&mut command, input.is_some(), merge_stderr).map_err(spawn_error)?;
    let mut child = spawn(&mut command).map_err(spawn_error)?;
    // The command keeps the parent's copies of a merged pipe's write end:
    // they would hold the output open.
    drop(command);
    let stdin = child.stdin.take();
    let watch = LineWatch {
        label: log_lines,
        stream: "stdout",
        marker,
        seen: Arc::new(AtomicBool::new(false)),
    };
    let outputs = Outputs::start(&mut child, merged, capture, watch);

    let progress = Mutex::new(Instant::now());
    let timed_out = AtomicBool::new(false);
    let child = Mutex::new(child);
    let fed = match (input, stdin) {
        (Some(input), Some(stdin)) => {
            feed_watched(&child, input, stdin, timeout, &progress, &timed_out)
        }
        _ => Fed::All(0),
    };
    let mut child = child.into_inner().unwrap_or_else(PoisonError::into_inner);
    let deadline = timeout.map(|t| *lock(&progress) + t);
    let status = wait_until(&mut child, deadline, &timed_out).map_err(|source| {
        kill_group(&mut child);
        RunError::Wait {
            command: command_line.clone(),
            source,
        }
    })?;
    let (stdout, stderr, marker_seen) = outputs.collect(&command_line);

    let (written, input_complete) = match fed {
        Fed::All(n) => (n, true),
        Fed::ClosedEarly(n) => (n, false),
        Fed::InputFailed(source) => {
            return Err(RunError::Input {
                command: command_line,
                source,
            })
        }
    };
    if timed_out.load(Ordering::SeqCst) {
        return Err(RunError::TimedOut {
            command: command_line,
            timeout: timeout.unwrap_or_default(),
            stdout,
            stderr,
        });
    }
    Ok(Finished {
        status,
        stdout,
        stderr,
        marker_seen,
        written,
        input_complete,
    })
}

/// Sets the standard streams and the process group of `command`; with
/// `merge_stderr`, returns the read end of the one output pipe.
fn configure(
    command: &mut Command,
    has_input: bool,
    merge_stderr: bool,
) -> io::Result<Option<std::fs::File>> {
    command
        .stdin(if has_input {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(0);
    if !merge_stderr {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        return Ok(None);
    }
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let write_err = write.try_clone()?;
    command
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write_err));
    Ok(Some(std::fs::File::from(read)))
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits for the program to exit; past `deadline`, kills its group first.
fn wait_until(
    child: &mut Child,
    deadline: Option<Instant>,
    timed_out: &AtomicBool,
) -> io::Result<ExitStatus> {
    if timed_out.load(Ordering::SeqCst) {
        return child.wait();
    }
    let Some(deadline) = deadline else {
        return child.wait();
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if let Some(status) = child.wait_timeout(left)? {
        return Ok(status);
    }
    timed_out.store(true, Ordering::SeqCst);
    kill_group(child);
    child.wait()
}

/// Kills the program's process group — the program was started with
/// `process_group(0)`, so whatever it started dies with it — unless the
/// program has been reaped (then its id may have been reused). Falls back
/// to killing the program alone.
fn kill_group(child: &mut Child) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let pid = child.id();
    let group = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .filter(|p| !p.is_init());
    let killed = match group {
        Some(group) => rustix::process::kill_process_group(group, rustix::process::Signal::KILL)
            .map_err(io::Error::from),
        None => Err(io::Error::other(format!(
            "refusing to kill process group {pid}"
        ))),
    };
    if let Err(e) = killed {
        tracing::warn!(pid, error = %e, "killing the process group failed; killing the process");
        let _ = child.kill();
    }
}

/// How feeding the input ended.
enum Fed {
    All(u64),
    ClosedEarly(u64),
    InputFailed(io::Error),
}

/// Feeds `input` to the program while a watchdog kills its group if it
/// accepts nothing for `timeout`. The program is not reaped meanwhile (only
/// the watchdog may `try_wait` it, under the lock), so its group id stays
/// its own.
fn feed_watched(
    child: &Mutex<Child>,
    input: &mut dyn Read,
    stdin: ChildStdin,
    timeout: Option<Duration>,
    progress: &Mutex<Instant>,
    timed_out: &AtomicBool,
) -> Fed {
    let (stop, stopped) = mpsc::channel::<()>();
    thread::scope(|scope| {
        if let Some(timeout) = timeout {
            scope.spawn(move || loop {
                let idle = lock(progress).elapsed();
                let Some(left) = timeout.checked_sub(idle).filter(|d| !d.is_zero()) else {
                    timed_out.store(true, Ordering::SeqCst);
                    kill_group(&mut lock(child));
                    return;
                };
                match stopped.recv_timeout(left) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            });
        }
        let fed = feed(input, stdin, progress);
        if let Fed::InputFailed(_) = fed {
            kill_group(&mut lock(child));
        }
        *lock(progress) = Instant::now();
        let _ = stop.send(());
        fed
    })
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
            tracing::debug!(error = %e, written, "standard input closed early");
            return Fed::ClosedEarly(written);
        }
        written += n as u64;
        *lock(progress) = Instant::now();
    }
}

/// A bounded buffer keeping the last bytes written to it.
#[derive(Debug)]
struct Tail {
    bytes: VecDeque<u8>,
    cap: usize,
    truncated: bool,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            cap,
            truncated: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.cap {
            self.truncated = true;
            &data[data.len() - self.cap..]
        } else {
            data
        };
        let over = (self.bytes.len() + data.len()).saturating_sub(self.cap);
        if over > 0 {
            self.truncated = true;
            self.bytes.drain(..over);
        }
        self.bytes.extend(data);
    }

    fn take(&mut self) -> Captured {
        Captured {
            bytes: self.bytes.iter().copied().collect(),
            truncated: self.truncated,
        }
    }
}

/// The threads reading the program's output. They are not joined: a
/// background process the program left may hold a pipe open, and the run
/// waits for that only [`PIPE_GRACE`].
struct Outputs {
    stdout: Arc<Mutex<Tail>>,
    stderr: Arc<Mutex<Tail>>,
    marker_seen: Arc<AtomicBool>,
    readers: usize,
    closed: mpsc::Receiver<()>,
}

/// What a reader does with each line besides keeping it.
#[derive(Clone)]
struct LineWatch {
    label: Option<String>,
    stream: &'static str,
    marker: Option<&'static str>,
    seen: Arc<AtomicBool>,
}

impl Outputs {
    fn start(
        child: &mut Child,
        merged: Option<std::fs::File>,
        capture: usize,
        watch: LineWatch,
    ) -> Self {
        let (done, closed) = mpsc::channel::<()>();
        let stdout_tail = Arc::new(Mutex::new(Tail::new(capture)));
        let stderr_tail = Arc::new(Mutex::new(Tail::new(capture)));
        let marker_seen = Arc::clone(&watch.seen);
        let mut readers = 0;
        let stdout: Option<Box<dyn Read + Send>> = match merged {
            Some(merged) => Some(Box::new(merged)),
            None => child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        };
        if let Some(pipe) = stdout {
            readers += 1;
            spawn_reader(pipe, Arc::clone(&stdout_tail), watch.clone(), done.clone());
        }
        if let Some(pipe) = child.stderr.take() {
            readers += 1;
            let watch = LineWatch {
                stream: "stderr",
                marker: None,
                ..watch
            };
            spawn_reader(pipe, Arc::clone(&stderr_tail), watch, done);
        }
        Self {
            stdout: stdout_tail,
            stderr: stderr_tail,
            marker_seen,
            readers,
            closed,
        }
    }

    /// What was captured, once the pipes closed (or the grace ran out).
    fn collect(self, command: &str) -> (Captured, Captured, bool) {
        let deadline = Instant::now() + PIPE_GRACE;
        for _ in 0..self.readers {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.closed.recv_timeout(left).is_err() {
                tracing::warn!(%command, "output still open after exit (a background process holds it); not waiting for it");
                break;
            }
        }
        let stdout = lock(&self.stdout).take();
        let stderr = lock(&self.stderr).take();
        (stdout, stderr, self.marker_seen.load(Ordering::SeqCst))
    }
}

fn spawn_reader(
    pipe: impl Read + Send + 'static,
    tail: Arc<Mutex<Tail>>,
    watch: LineWatch,
    done: mpsc::Sender<()>,
) {
    thread::spawn(move || {
        read_lines(pipe, |raw, line| {
            lock(&tail).push(raw);
            if let Some(label) = &watch.label {
                let stream = watch.stream;
                tracing::debug!(program = %label, stream, "{}", String::from_utf8_lossy(line));
            }
            if watch.marker.is_some_and(|m| m.as_bytes() == line) {
                watch.seen.store(true, Ordering::SeqCst);
            }
        });
        let _ = done.send(());
    });
}

/// Calls `on_line` with each line of `pipe`: the raw bytes read, and the
/// line without its newline. Lines longer than [`MAX_LINE`] come in pieces;
/// every piece after the first is prefixed with `...`, so that no piece can
/// equal a marker.
fn read_lines(pipe: impl Read, mut on_line: impl FnMut(&[u8], &[u8])) {
    let mut reader = BufReader::new(pipe);
    let mut raw = Vec::new();
    let mut continuation = false;
    loop {
        raw.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut raw) {
            Ok(0) => return,
            Ok(_) => {
                let whole = raw.last() == Some(&b'\n');
                let line = if whole {
                    &raw[..raw.len() - 1]
                } else {
                    &raw[..]
                };
                if continuation {
                    let mut piece = b"...".to_vec();
                    piece.extend_from_slice(line);
                    on_line(&raw, &piece);
                } else {
                    on_line(&raw, line);
                }
                continuation = !whole;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The command line of `command`, as a person would type it.
pub(crate) fn display_command(command: &Command) -> String {
    let args: Vec<&OsStr> = command.get_args().collect();
    display(Path::new(command.get_program()), &args)
}

/// `program arg...` as a person would type it, quoting what needs quoting.
pub(crate) fn display(program: &Path, args: &[impl AsRef<OsStr>]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().map(AsRef::as_ref))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The last `lines` lines of `text`, each cut to `chars` characters.
pub(crate) fn last_lines(text: &str, lines: usize, chars: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| line.chars().take(chars).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
