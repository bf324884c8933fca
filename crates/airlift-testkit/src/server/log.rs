//! Reading a server's output: its JSON log on stderr (where the ready line
//! says where it listens) and its stdout (where it prints the first admin
//! token), each on a thread of its own to their end, so that the server
//! never blocks writing to a pipe nobody reads.

use super::ServerError;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::Child;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lines kept for a failure message: enough for a startup's whole log.
const TAIL_LINES: usize = 200;
/// Distinct warning and error messages tallied; later new ones are only
/// counted in [`ServerProcess::warnings`](super::ServerProcess::warnings).
const MESSAGES_KEPT: usize = 200;
/// Characters kept of each tallied message's first line.
const FIRST_LINE_CHARS: usize = 600;

/// Warnings and errors by `(level, message)`: how many, and the first such
/// line (cut to 600 characters).
pub type Tally = BTreeMap<(String, String), (u64, String)>;

/// Which of the server's lines are copied to this process's stderr, as
/// they come, prefixed `airlift-server: `.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// None: they are kept for [`ServerProcess::log_tail`](super::ServerProcess::log_tail)
    /// and failure messages only.
    Off,
    /// Every line.
    All,
    /// The first this many warnings and errors (a benchmark shows a few,
    /// then only counts them).
    FirstWarnings(usize),
}

impl Echo {
    /// [`Echo::All`] when `AIRLIFT_TEST_SERVER_LOG` is set, else
    /// [`Echo::Off`]: a developer chasing a failure sees everything
    /// without changing a test.
    pub fn from_env() -> Self {
        if std::env::var_os("AIRLIFT_TEST_SERVER_LOG").is_some() {
            Echo::All
        } else {
            Echo::Off
        }
    }
}

/// An [`Echo`], the prefix it shows lines with, and what it has shown.
#[derive(Debug)]
pub(super) struct LogEcho {
    echo: Echo,
    prefix: String,
    shown: AtomicUsize,
}

impl LogEcho {
    /// Lines prefixed `airlift-server: `, or `airlift-server LABEL: ` to
    /// tell several servers apart.
    pub(super) fn new(echo: Echo, label: Option<&str>) -> Self {
        let prefix = match label {
            Some(label) => format!("airlift-server {label}: "),
            None => "airlift-server: ".to_owned(),
        };
        Self {
            echo,
            prefix,
            shown: AtomicUsize::new(0),
        }
    }

    fn line(&self, line: &str, warning: bool) {
        let show = match self.echo {
            Echo::Off => false,
            Echo::All => true,
            Echo::FirstWarnings(n) => warning && self.shown.fetch_add(1, Ordering::Relaxed) < n,
        };
        if show {
            eprintln!("{}{line}", self.prefix);
        }
    }
}

/// Where the ready line said the server listens.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ready {
    pub(super) addr: SocketAddr,
    tls: bool,
}

impl Ready {
    pub(super) fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

/// What the stderr thread tells the starter.
#[derive(Debug)]
enum Event {
    Ready(Ready),
    /// Stderr ended: the process is gone.
    Closed,
}

/// What the reader threads share with the [`ServerProcess`](super::ServerProcess).
#[derive(Debug, Default)]
struct Shared {
    tail: Mutex<VecDeque<String>>,
    warnings: AtomicU64,
    tally: Mutex<Tally>,
}

impl Shared {
    fn tally(&self, level: &str, message: &str, line: &str) {
        let Ok(mut tally) = self.tally.lock() else {
            return;
        };
        let key = (level.to_owned(), message.to_owned());
        if let Some(entry) = tally.get_mut(&key) {
            entry.0 += 1;
        } else if tally.len() < MESSAGES_KEPT {
            tally.insert(key, (1, line.chars().take(FIRST_LINE_CHARS).collect()));
        }
    }

    fn keep(&self, line: String) {
        if let Ok(mut tail) = self.tail.lock() {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

/// The threads reading one process's output.
#[derive(Debug)]
pub(super) struct LogReader {
    shared: Arc<Shared>,
    events: Mutex<Receiver<Event>>,
}

impl LogReader {
    /// Takes `child`'s piped stderr and stdout and reads them.
    pub(super) fn start(child: &mut Child, echo: LogEcho) -> Self {
        let shared = Arc::new(Shared::default());
        let echo = Arc::new(echo);
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let (shared, echo) = (Arc::clone(&shared), Arc::clone(&echo));
            std::thread::spawn(move || {
                for line in lines(stdout) {
                    echo.line(&line, false);
                    shared.keep(format!("stdout: {line}"));
                }
            });
        }
        match child.stderr.take() {
            Some(stderr) => {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    for line in lines(stderr) {
                        let entry: serde_json::Value =
                            serde_json::from_str(&line).unwrap_or_default();
                        if let Some(ready) = ready(&entry) {
                            let _ = tx.send(Event::Ready(ready));
                        }
                        let level = entry["level"].as_str();
                        let warning = matches!(level, Some("WARN" | "ERROR"));
                        if warning {
                            shared.warnings.fetch_add(1, Ordering::Relaxed);
                            let message = entry["fields"]["message"].as_str().unwrap_or_default();
                            shared.tally(level.unwrap_or_default(), message, &line);
                        }
                        echo.line(&line, warning);
                        shared.keep(line);
                    }
                    let _ = tx.send(Event::Closed);
                });
            }
            None => {
                let _ = tx.send(Event::Closed);
            }
        }
        Self {
            shared,
            events: Mutex::new(rx),
        }
    }

    /// Waits for the ready line; fails as soon as the process is gone.
    pub(super) fn wait_ready(&self, timeout: Duration) -> Result<Ready, ServerError> {
        let answer = match self.events.lock() {
            Ok(events) => events.recv_timeout(timeout),
            Err(_) => Err(RecvTimeoutError::Disconnected),
        };
        match answer {
            Ok(Event::Ready(ready)) => Ok(ready),
            Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => Err(ServerError::Exited {
                code: None,
                log: self.tail(),
            }),
            Err(RecvTimeoutError::Timeout) => Err(ServerError::NotReady {
                waited: timeout,
                log: self.tail(),
            }),
        }
    }

    pub(super) fn warnings(&self) -> u64 {
        self.shared.warnings.load(Ordering::Relaxed)
    }

    pub(super) fn tally(&self) -> Tally {
        self.shared
            .tally
            .lock()
            .map(|tally| tally.clone())
            .unwrap_or_default()
    }

    pub(super) fn tail(&self) -> String {
        self.shared
            .tail
            .lock()
            .map(|tail| tail.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

/// Lines of `stream` until it ends, lossily decoded (a log line is for
/// people, and one bad byte must not stop the reading).
fn lines(stream: impl Read) -> impl Iterator<Item = String> {
    BufReader::new(stream)
        .split(b'\n')
        .map_while(Result::ok)
        .map(|line| String::from_utf8_lossy(&line).trim_end().to_owned())
}

/// The address (and scheme) of a ready line.
fn ready(entry: &serde_json::Value) -> Option<Ready> {
    if entry["fields"]["message"] != "airlift-server ready" {
        return None;
    }
    Some(Ready {
        addr: entry["fields"]["listen"].as_str()?.parse().ok()?,
        tls: entry["fields"]["tls"] == true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_gives_the_address_and_scheme() {
        let line = r#"{"level":"INFO","fields":{"message":"airlift-server ready","listen":"127.0.0.1:4242","tls":true}}"#;
        let ready = ready(&serde_json::from_str(line).expect("json")).expect("ready");
        assert_eq!(ready.url(), "https://127.0.0.1:4242");
        let other = r#"{"level":"INFO","fields":{"message":"migrated"}}"#;
        assert!(super::ready(&serde_json::from_str(other).expect("json")).is_none());
    }

    #[test]
    fn warnings_are_tallied_by_level_and_message_with_their_first_line() {
        let shared = Shared::default();
        shared.tally("WARN", "slow", "first slow line");
        shared.tally("WARN", "slow", "second slow line");
        shared.tally("ERROR", "slow", "an error");
        let tally = shared.tally.lock().expect("lock").clone();
        assert_eq!(
            tally[&("WARN".to_owned(), "slow".to_owned())],
            (2, "first slow line".to_owned())
        );
        assert_eq!(tally[&("ERROR".to_owned(), "slow".to_owned())].0, 1);
        for i in 0..MESSAGES_KEPT + 10 {
            shared.tally("WARN", &format!("message {i}"), "line");
        }
        assert_eq!(shared.tally.lock().expect("lock").len(), MESSAGES_KEPT);
    }

    #[test]
    fn only_the_first_warnings_are_echoed() {
        let echo = LogEcho::new(Echo::FirstWarnings(1), None);
        echo.line("info", false);
        echo.line("first warning", true);
        echo.line("second warning", true);
        assert_eq!(echo.shown.load(Ordering::Relaxed), 2, "counted, not shown");
    }
}
