//! Device configuration end to end: the real server, the real agent binary
//! and its `config` module (a file and a reload command). A tag's desired
//! document reaches every device in it, each writes it and reports it, and
//! the delta empties; a device's own key wins over its tag's; a device
//! offline during the change converges at its next contact; a failing
//! reload command is reported with its reason and retried only after its
//! backoff; oversized and non-JSON documents are refused naming the limit.

use crate::harness::{enrol, Device, Operator, Signer};
use crate::server::{InProcessServer, ADMIN_TOKEN};
use airlift_testkit::postgres::FreshSchema;
use reqwest::blocking::Client;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// A server on SQLite, and one on a fresh PostgreSQL schema when
/// `AIRLIFT_TEST_POSTGRES_URL` is set.
fn servers(signer: &Signer) -> Vec<(InProcessServer, Option<FreshSchema>)> {
    let mut servers = vec![(
        InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]),
        None,
    )];
    if let Some(schema) = FreshSchema::create("shadow") {
        let flags = ["--poll-interval", "1", "--database-url", schema.url()];
        servers.push((
            InProcessServer::start_with(signer.public_key_file(), &flags),
            Some(schema),
        ));
    }
    servers
}

/// The management API call, answered with `expected`.
fn call(
    server: &InProcessServer,
    method: Method,
    path: &str,
    body: Option<&str>,
    expected: StatusCode,
) -> Value {
    let mut request = Client::new()
        .request(method, format!("{}/api/v1{path}", server.url))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().expect("request");
    let status = response.status();
    let text = response.text().expect("body");
    assert_eq!(status, expected, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Gives the device the `[shadow]` module: its file, and `reload` as the
/// reload command; returns the file's path.
fn configure(device: &Device, reload: &str, retry_secs: u64) -> PathBuf {
    let file = device.dir.path().join("app.json");
    let mut config = std::fs::read_to_string(&device.config).expect("agent.toml");
    config.push_str(&format!(
        "[shadow]\nfile = {:?}\nreload_command = [\"sh\", \"-c\", {reload:?}]\nreload_timeout_secs = 10\nretry_min_secs = {retry_secs}\nretry_max_secs = {retry_secs}\n",
        file.display().to_string()
    ));
    std::fs::write(&device.config, config).expect("agent.toml");
    file
}

fn applied(file: &PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(file).expect("the configuration file")).expect("json")
}

#[test]
fn a_tag_document_converges_on_every_device_the_device_wins_and_an_offline_one_catches_up() {
    let signer = Signer::new();
    for (server, _schema) in servers(&signer) {
        let operator = Operator::new(&server);
        let devices: Vec<Device> = (0..3)
            .map(|_| Device::new(&server.url, signer.public_key_file(), &["true"]))
            .collect();
        let mut files = Vec::new();
        let mut ids = Vec::new();
        for device in &devices {
            let reloads = device.dir.path().join("reloads");
            files.push(configure(
                device,
                &format!("echo reloaded >> {}", reloads.display()),
                1,
            ));
            let id = enrol(device, &operator);
            call(
                &server,
                Method::PUT,
                &format!("/devices/{id}/tags"),
                Some(r#"{"tags":["lab"]}"#),
                StatusCode::OK,
            );
            ids.push(id);
        }
        call(
            &server,
            Method::PUT,
            "/shadows/tags/lab",
            Some(r#"{"level":"debug","servers":["a","b"]}"#),
            StatusCode::OK,
        );
        // The device's own key wins over the tag's.
        call(
            &server,
            Method::PATCH,
            &format!("/devices/{}/shadow/desired", ids[0]),
            Some(r#"{"level":"warn"}"#),
            StatusCode::OK,
        );

        // Devices 0 and 1 are online; device 2 is away during the change.
        for device in &devices[..2] {
            device.run_once();
        }
        assert_eq!(
            applied(&files[0]),
            json!({"level": "warn", "servers": ["a", "b"]})
        );
        assert_eq!(
            applied(&files[1]),
            json!({"level": "debug", "servers": ["a", "b"]})
        );
        assert!(!files[2].exists());
        for id in &ids[..2] {
            let shadow = call(
                &server,
                Method::GET,
                &format!("/devices/{id}/shadow"),
                None,
                StatusCode::OK,
            );
            assert_eq!(shadow["delta"], json!({}), "{shadow}");
        }
        let away = call(
            &server,
            Method::GET,
            &format!("/devices/{}/shadow", ids[2]),
            None,
            StatusCode::OK,
        );
        assert_eq!(away["delta"]["level"], "debug");

        // At its next contact it converges too.
        devices[2].run_once();
        assert_eq!(
            applied(&files[2]),
            json!({"level": "debug", "servers": ["a", "b"]})
        );
        let shadow = call(
            &server,
            Method::GET,
            &format!("/devices/{}/shadow", ids[2]),
            None,
            StatusCode::OK,
        );
        assert_eq!(shadow["delta"], json!({}));
        assert_eq!(
            shadow["reported"]["document"],
            json!({"level": "debug", "servers": ["a", "b"]})
        );

        // Unset on the tag: the devices remove the key.
        call(
            &server,
            Method::PATCH,
            "/shadows/tags/lab",
            Some(r#"{"servers":null}"#),
            StatusCode::OK,
        );
        devices[1].run_once();
        assert_eq!(applied(&files[1]), json!({"level": "debug"}));
        let reloads =
            std::fs::read_to_string(devices[1].dir.path().join("reloads")).expect("reloads");
        assert_eq!(reloads.lines().count(), 2, "one reload per change");
        // Converged: another run changes nothing and reloads nothing.
        devices[1].run_once();
        let reloads =
            std::fs::read_to_string(devices[1].dir.path().join("reloads")).expect("reloads");
        assert_eq!(reloads.lines().count(), 2);
    }
}

#[test]
fn a_failing_reload_is_reported_with_its_reason_and_retried_only_after_its_backoff() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let attempts = device.dir.path().join("attempts");
    let file = configure(
        &device,
        &format!(
            "date +%s.%N >> {}; echo cannot parse level >&2; exit 3",
            attempts.display()
        ),
        4,
    );
    let id = enrol(&device, &operator);
    call(
        &server,
        Method::PUT,
        &format!("/devices/{id}/shadow/desired"),
        Some(r#"{"level":"debug"}"#),
        StatusCode::OK,
    );

    let daemon = device.start();
    // Check-ins come every second; a retry waits 2–4 s.
    std::thread::sleep(Duration::from_secs(9));
    drop(daemon);
    let times: Vec<f64> = std::fs::read_to_string(&attempts)
        .expect("attempts")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(times.len() >= 2, "retried: {times:?}");
    assert!(times.len() <= 5, "a retry waits for its backoff: {times:?}");
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= 1.9, "retried too soon: {times:?}");
    }
    let shadow = call(
        &server,
        Method::GET,
        &format!("/devices/{id}/shadow"),
        None,
        StatusCode::OK,
    );
    let reason = shadow["failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exit status: 3") && reason.contains("cannot parse level"),
        "{shadow}"
    );
    assert_eq!(shadow["reported"]["document"], json!({}));
    // The file was put back to what the device reports.
    assert_eq!(applied(&file), json!({}));

    // Fixed: the next contact applies it and the failure is gone.
    let config = std::fs::read_to_string(&device.config).expect("agent.toml");
    let fixed = config.replace("exit 3", "exit 0");
    std::fs::write(&device.config, fixed).expect("agent.toml");
    device.run_once();
    assert_eq!(applied(&file), json!({"level": "debug"}));
    let shadow = call(
        &server,
        Method::GET,
        &format!("/devices/{id}/shadow"),
        None,
        StatusCode::OK,
    );
    assert_eq!(shadow["failure"], Value::Null);
    assert_eq!(shadow["delta"], json!({}));
}

#[test]
fn oversized_and_non_json_documents_are_refused_naming_the_limit() {
    let signer = Signer::new();
    let server = InProcessServer::start_with(signer.public_key_file(), &["--poll-interval", "1"]);
    let big = json!({"blob": "x".repeat(65 * 1024)}).to_string();
    let refused = call(
        &server,
        Method::PUT,
        "/shadows/tags/lab",
        Some(&big),
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("limit is 65536 bytes")),
        "{refused}"
    );
    let refused = call(
        &server,
        Method::PUT,
        "/shadows/tags/lab",
        Some("level=debug"),
        StatusCode::BAD_REQUEST,
    );
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("65536 bytes")),
        "{refused}"
    );
}
