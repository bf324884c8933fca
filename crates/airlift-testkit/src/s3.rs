//! A real S3 server for tests: `s3s-fs` (it checks SigV4 signatures and
//! supports ranges and multipart uploads), started on a free loopback port
//! over a temporary directory, with an access key, a secret key and one
//! bucket; stopped and deleted when dropped.
//!
//! `s3s-fs` is installed by `.ci/install-packages`; without it the tests
//! that need it fail, never skip.
//!
//! ```no_run
//! let s3 = airlift_testkit::s3::S3Server::start();
//! let mut server = std::process::Command::new("airlift-server");
//! server
//!     .envs(s3.env())
//!     .arg("--blob-url")
//!     .arg(s3.url("test-1"))
//!     .arg("--blob-path-style");
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The bucket every server has.
pub const BUCKET: &str = "airlift-test";
/// The access key id the server accepts.
pub const ACCESS_KEY_ID: &str = "airlift-test-key";
/// The secret key the server accepts.
pub const SECRET_ACCESS_KEY: &str = "airlift-test-secret-0123456789";
/// The region requests are signed for (s3s-fs takes any).
pub const REGION: &str = "us-east-1";

/// How long `s3s-fs` may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `s3s-fs`; stopped, and its directory deleted, when dropped.
#[derive(Debug)]
pub struct S3Server {
    endpoint: String,
    child: Child,
    root: tempfile::TempDir,
}

impl S3Server {
    /// Starts `s3s-fs` on `127.0.0.1:0` over a fresh directory holding the
    /// bucket [`BUCKET`], and waits until it says where it listens (no
    /// sleeping).
    ///
    /// # Panics
    /// When `s3s-fs` is not installed (the message says to run
    /// `.ci/install-packages`) or does not start: this is test support.
    #[allow(clippy::expect_used)]
    pub fn start() -> Self {
        let binary = binary().unwrap_or_else(|| {
            panic!(
                "s3s-fs is not installed (not on PATH, nor in ~/.cargo/bin): run .ci/install-packages, \
                 which runs `cargo install s3s-fs --version 0.14.1 --features binary --locked`"
            )
        });
        let root = tempfile::tempdir().expect("a directory for s3s-fs");
        std::fs::create_dir(root.path().join(BUCKET)).expect("the bucket's directory");
        let mut child = Command::new(&binary)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg("0")
            .arg("--access-key")
            .arg(ACCESS_KEY_ID)
            .arg("--secret-key")
            .arg(SECRET_ACCESS_KEY)
            .arg(root.path())
            .env("RUST_LOG", "s3s_fs=info")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let endpoint = match wait_listening(&mut child) {
            Ok(endpoint) => endpoint,
            Err(log) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("s3s-fs did not start:\n{log}");
            }
        };
        Self {
            endpoint,
            child,
            root,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `s3://BUCKET/PREFIX`, for a store that keeps its keys under `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The usual AWS variables that reach this server with its credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
        ]
    }

    /// The files of the objects under `prefix` in the bucket, read from the
    /// server's directory (what a listing through S3 would show, for a
    /// check that needs no client).
    pub fn object_files(&self, prefix: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        collect_files(&self.root.path().join(BUCKET).join(prefix), &mut found);
        found.sort();
        found
    }

    /// Multipart uploads begun and neither completed nor aborted: each
    /// holds a record (`.upload-<id>.json`) in the server's directory until
    /// it ends.
    pub fn unfinished_uploads(&self) -> usize {
        std::fs::read_dir(self.root.path())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.starts_with(".upload-") && n.ends_with(".json"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Where the server keeps its data.
    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s3s-fs` on `PATH`, or in cargo's bin directory (where `cargo install`
/// puts it, which a non-login `PATH` may lack).
fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    on_path
        .into_iter()
        .chain(cargo_home.map(|home| home.join("bin")))
        .map(|dir| dir.join("s3s-fs"))
        .find(|candidate| candidate.is_file())
}

/// Reads the server's log until it says where it listens; the log so far
/// when it exits or takes too long. Keeps draining both pipes afterwards.
fn wait_listening(child: &mut Child) -> Result<String, String> {
    const READY: &str = "server is running at ";
    let (tx, rx) = mpsc::channel::<Result<String, String>>();
    let pipes: [Option<Box<dyn std::io::Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as _),
        child.stderr.take().map(|p| Box::new(p) as _),
    ];
    for pipe in pipes.into_iter().flatten() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let found = line.find(READY).map(|at| {
                    line[at + READY.len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                });
                let _ = tx.send(found.ok_or(line));
            }
        });
    }
    drop(tx);
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(endpoint)) if endpoint.starts_with("http://") => return Ok(endpoint),
            Ok(Ok(other)) => log.push(format!("(unexpected address {other:?})")),
            Ok(Err(line)) => log.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                log.push(format!("(no address after {START_TIMEOUT:?})"));
                return Err(log.join("\n"));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                log.push(format!("(exited: {:?})", child.wait().ok()));
                return Err(log.join("\n"));
            }
        }
    }
}

fn collect_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, found);
        } else {
            found.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_starts_listens_and_stops() {
        let server = S3Server::start();
        assert!(server.endpoint().starts_with("http://127.0.0.1:"));
        let address = server.endpoint().trim_start_matches("http://").to_owned();
        assert!(std::net::TcpStream::connect(&address).is_ok());
        assert!(server.root().join(BUCKET).is_dir());
        assert_eq!(server.unfinished_uploads(), 0);
        assert!(server.object_files("").is_empty());
        let root = server.root().to_owned();
        drop(server);
        assert!(!root.exists(), "its directory is deleted");
        assert!(
            std::net::TcpStream::connect(&address).is_err(),
            "it stopped"
        );
    }
}
