//! Reading a server's output: its JSON log on stderr (where the ready line
//! says where it listens) and its stdout (where it prints the first admin
//! token), each on a thread of its own to their end, so that the server
//! never blocks writing to a pipe nobody reads.

use super::ServerError;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::Child;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lines kept for a failure message: enough for a startup's whole log.
const TAIL_LINES: usize = 200;

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

/// An [`Echo`] and what it has shown.
#[derive(Debug)]
pub(super) struct LogEcho {
    echo: Echo,
    shown: AtomicUsize,
}

impl LogEcho {
    pub(super) fn new(echo: Echo) -> Self {
        Self {
            echo,
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
            eprintln!("airlift-server: {line}");
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
}

impl Shared {
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
                        let warning = matches!(entry["level"].as_str(), Some("WARN" | "ERROR"));
                        if warning {
                            shared.warnings.fetch_add(1, Ordering::Relaxed);
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
            Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => {
                Err(ServerError::Exited { log: self.tail() })
            }
            Err(RecvTimeoutError::Timeout) => Err(ServerError::NotReady {
                waited: timeout,
                log: self.tail(),
            }),
        }
    }

    pub(super) fn warnings(&self) -> u64 {
        self.shared.warnings.load(Ordering::Relaxed)
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
    fn only_the_first_warnings_are_echoed() {
        let echo = LogEcho::new(Echo::FirstWarnings(1));
        echo.line("info", false);
        echo.line("first warning", true);
        echo.line("second warning", true);
        assert_eq!(echo.shown.load(Ordering::Relaxed), 2, "counted, not shown");
    }
}
