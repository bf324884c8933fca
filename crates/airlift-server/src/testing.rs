//! For other crates' tests (feature `test-server`): a real airlift-server,
//! in-process: its library's `startup::prepare` and
//! `serve` on a runtime in a background thread, bound to 127.0.0.1:0 before
//! the address is handed out (no waiting for readiness), with a fresh data
//! directory, one trusted signing key and a known admin token.
//!
//! Named `InProcessServer` because it is not the process: tests of the
//! real binary, its flags and its log use
//! `airlift_testkit::server::ServerProcess`.

use crate::{Args, Config};
use clap::Parser;
use std::ffi::OsString;
use std::path::Path;
use std::thread::JoinHandle;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// The admin token every test server starts with.
pub const ADMIN_TOKEN: &str = "alt_0000test0000admin0000token0000";

/// A running server; stopped and deleted when dropped.
#[derive(Debug)]
pub struct InProcessServer {
    /// `http://127.0.0.1:PORT`, or `https://…` with `--tls-cert`.
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _data: TempDir,
}

impl InProcessServer {
    /// Starts a server that trusts `trusted`, with more `airlift-server` flags.
    ///
    /// # Panics
    /// When the server cannot start: this is test support.
    #[allow(clippy::expect_used)]
    pub fn start_with(trusted: &Path, flags: &[&str]) -> Self {
        let data = tempfile::tempdir().expect("data directory");
        let mut argv: Vec<OsString> = vec![
            "airlift-server".into(),
            "--data-dir".into(),
            data.path().into(),
            "--trust".into(),
            trusted.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        argv.extend(flags.iter().map(OsString::from));
        let config = Config::from_args(Args::parse_from(argv), Some(ADMIN_TOKEN.into()))
            .expect("valid server configuration");
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let (state, _) = crate::startup::prepare(&config)
                    .await
                    .expect("the server starts");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind a port");
                let address = listener.local_addr().expect("bound address");
                ready_tx
                    .send(address)
                    .expect("the test waits for the address");
                let tls = crate::listen::acceptor_for(&config).expect("TLS certificate and key");
                crate::serve(listener, tls, state, async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("the server runs");
            });
        });
        let address = ready_rx
            .recv()
            .expect("the server thread reports its address (did startup fail?)");
        Self {
            url: format!("{scheme}://{address}"),
            stop: Some(stop_tx),
            thread: Some(thread),
            _data: data,
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
