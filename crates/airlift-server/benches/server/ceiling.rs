//! The ceiling: the least an HTTP server can do for a check-in. A
//! multi-threaded tokio runtime (as `#[tokio::main]` in `airlift-server`)
//! serving one axum route that reads the request body and answers the
//! fixed JSON body a real check-in without offer gets. It is this bench's
//! binary again, with `--ceiling-server`.

use crate::procs::Guard;
use airlift_protocol::device::CHECK_IN_PATH;
use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::header::CONTENT_TYPE;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// The flag that makes this binary the ceiling server.
pub const FLAG: &str = "--ceiling-server";

/// The ceiling on its own, as a command line (it prints `listening on ADDR`
/// and serves until stopped; `cargo bench` adds `--bench`, which it ignores).
pub const COMMAND: &str = "cargo bench -p airlift-server --bench server -- --ceiling-server";

/// What the real server answers a check-in without offer (poll interval 60 s).
const BODY: &str = r#"{"poll_interval_secs":60}"#;

/// Serves until killed. Prints `listening on ADDR` on stdout when it accepts.
pub fn serve() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = axum::Router::new().route(
            CHECK_IN_PATH,
            axum::routing::post(|_body: Bytes| async {
                ([(CONTENT_TYPE, "application/json")], BODY)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// Starts the ceiling server as a child process and reads its address.
pub fn start() -> Result<(Guard, SocketAddr)> {
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let child = Command::new(exe)
        .arg(FLAG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the ceiling server")?;
    let mut guard = Guard::new("ceiling server", child);
    let stdout = guard.stdout().context("piped stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("ceiling server said {line:?}"))?
        .parse()?;
    Ok((guard, addr))
}
