//! Hostile and broken connections: half-sent heads, silent sockets, stalled
//! uploads, downloads nobody reads, more sockets than the server may hold.
//! Each is closed within its bound and counted, and the server goes on
//! answering everyone else.

use crate::support::*;
use reqwest::StatusCode;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn address(server: &TestServer) -> String {
    server
        .url
        .strip_prefix("http://")
        .expect("plain HTTP")
        .to_owned()
}

/// Reads until the server closes the socket; how long that took.
fn time_until_closed(socket: TcpStream, within: Duration) -> Duration {
    closed_since(socket, Instant::now(), within)
}

/// Reads until the server closes the socket; how long after `started`.
fn closed_since(mut socket: TcpStream, started: Instant, within: Duration) -> Duration {
    socket.set_read_timeout(Some(within)).expect("read timeout");
    let mut buffer = [0u8; 64 * 1024];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!(
                "the server kept the socket open for {:?}: {e}",
                started.elapsed()
            ),
        }
    }
}

#[tokio::test]
async fn half_sent_and_silent_connections_are_closed_after_the_idle_timeout() {
    let server = TestServer::start_with(Backend::Sqlite, &["--idle-timeout", "1"]).await;
    let addr = address(&server);
    let (half, silent, kept_alive) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut half = TcpStream::connect(&addr).expect("connect");
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .expect("half a head");
        let silent = TcpStream::connect(&addr).expect("connect");
        // A finished request, then nothing: idle on a kept-alive connection.
        let mut kept = TcpStream::connect(&addr).expect("connect");
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let limit = Duration::from_secs(10);
        (
            closed_since(half, started, limit),
            closed_since(silent, started, limit),
            closed_since(kept, started, limit),
        )
    })
    .await
    .expect("sockets");
    for (what, took) in [
        ("half a head", half),
        ("nothing", silent),
        ("idle after a request", kept_alive),
    ] {
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{what}: closed after {took:?}, expected about 1 s"
        );
    }
    let response = server
        .client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        server
            .metric("airlift_connection_timeouts_total{kind=\"idle\"}")
            .await
            >= 3.0
    );
}

#[tokio::test]
async fn a_connection_past_the_limit_is_closed_at_once_and_the_server_recovers() {
    let server = TestServer::start_with(Backend::Sqlite, &["--max-connections", "8"]).await;
    let addr = address(&server);
    let held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    // Accepted in order: give the server a moment to take all eight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let one_more = TcpStream::connect(&addr).expect("the kernel still accepts");
    let took =
        tokio::task::spawn_blocking(move || time_until_closed(one_more, Duration::from_secs(5)))
            .await
            .expect("socket");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = server
        .client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .expect("healthz once the sockets are gone");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        server
            .metric("airlift_connections_refused_total{reason=\"limit\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_download_nobody_reads_is_closed_after_the_write_timeout() {
    let server = TestServer::start_with(Backend::Sqlite, &["--write-timeout", "1"]).await;
    let file = build_package_sized(server.signer.key(), "big", "1.0.0", "pi4", 0, 48 << 20);
    let uploaded = server
        .client
        .post(server.api("/packages"))
        .bearer_auth(ADMIN_TOKEN)
        .body(file)
        .send()
        .await
        .expect("upload");
    let package = json_status(uploaded, StatusCode::CREATED).await;
    let id = package["id"].as_str().expect("id").to_owned();
    let addr = address(&server);
    let took = tokio::task::spawn_blocking(move || {
        let mut socket = TcpStream::connect(&addr).expect("connect");
        // A small receive buffer fills at once; then nothing is read.
        write!(
            socket,
            "GET /api/v1/packages/{id}/download HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
        )
        .expect("request");
        std::thread::sleep(Duration::from_secs(4));
        // By now the server gave up writing; what is buffered drains, then EOF.
        time_until_closed(socket, Duration::from_secs(10))
    })
    .await
    .expect("socket");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        server
            .metric("airlift_connection_timeouts_total{kind=\"write\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_stalled_upload_fails_after_the_body_timeout_and_leaves_no_staging_file() {
    let server = TestServer::start_with(Backend::Sqlite, &["--body-timeout", "1"]).await;
    if server.s3.is_some() {
        eprintln!("{BLOBS_VAR}=s3: the staging file is local disk's (s3.rs covers S3)");
        return;
    }
    let addr = address(&server);
    // An upload streams into the local blob store's staging file for it.
    let staging = data_dir(&server).join("blobs/packages");
    let staged = move || -> Vec<String> {
        std::fs::read_dir(&staging)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let staged_now = staged.clone();
    let (answer, staged_meanwhile) = tokio::task::spawn_blocking(move || {
        let mut socket = TcpStream::connect(&addr).expect("connect");
        write!(
            socket,
            "POST /api/v1/packages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
        )
        .expect("head");
        socket.write_all(&[7u8; 1000]).expect("a little of the body");
        std::thread::sleep(Duration::from_millis(400));
        let staged = staged_now();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = String::new();
        let _ = socket.read_to_string(&mut answer);
        (answer, staged)
    })
    .await
    .expect("socket");
    assert!(
        staged_meanwhile.iter().any(|name| name
            .rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))),
        "the upload is staged under a name a sweep recognises: {staged_meanwhile:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("nothing was kept"), "{answer}");
    // The abort removes the staging file right after the answer.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !staged().is_empty() {
        assert!(
            Instant::now() < deadline,
            "staging files left: {:?}",
            staged()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
