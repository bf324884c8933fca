//! The signed trust root and the freshness of offers, end to end: the
//! in-process server signing timestamps with its online key and handing
//! out the roots an operator uploaded, the real agent following them.
//! Each test is named after the attack it defends against (`docs/trust.md`).

use crate::harness::{enrol, image, Device, Operator, Packages, Signer, SPARE_IMAGE};
use crate::server::{InProcessServer, ADMIN_TOKEN};
use airlift_agent::boot::Slot;
use airlift_package::SigningKey;
use airlift_trust::{RoleName, RootDocument};
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// Far enough ahead for any test run.
const EXPIRES: u64 = 4_000_000_000;

/// The offline root key, the server's online key, and the files they live in.
struct Trust {
    dir: TempDir,
    root_key: SigningKey,
    online_key: PathBuf,
}

impl Trust {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("trust directory");
        let online = SigningKey::generate().expect("online key");
        let online_key = dir.path().join("online.key");
        std::fs::write(&online_key, online.to_pem().expect("pem").as_bytes()).expect("online key");
        Self {
            dir,
            root_key: SigningKey::generate().expect("root key"),
            online_key,
        }
    }

    /// The first root: the release key(s) given, threshold `threshold`.
    fn first(&self, release: &[&Signer], threshold: usize) -> RootDocument {
        let online = airlift_package::SigningKey::from_pem(
            &std::fs::read_to_string(&self.online_key).expect("online key"),
        )
        .expect("online key");
        let mut document = RootDocument::first(
            self.root_key.public_key(),
            release[0].key().public_key(),
            online.public_key(),
            EXPIRES,
        );
        for signer in release {
            document.add_key(RoleName::Release, &signer.key().public_key());
        }
        document.set_threshold(RoleName::Release, threshold);
        document
    }

    /// `document` signed by the root key, written to `root-N.json`.
    fn sign(&self, document: &RootDocument) -> PathBuf {
        let mut envelope = document.to_envelope().expect("envelope");
        envelope.sign(&self.root_key);
        let path = self
            .dir
            .path()
            .join(format!("root-{}.json", document.version));
        std::fs::write(&path, envelope.to_bytes()).expect("root file");
        path
    }

    /// A server trusting the release signers for uploads, signing timestamps.
    fn server(&self, release: &[&Signer]) -> InProcessServer {
        let mut flags: Vec<String> = vec!["--poll-interval".into(), "1".into()];
        for signer in &release[1..] {
            flags.push("--trust".into());
            flags.push(signer.public_key_file().display().to_string());
        }
        flags.push("--timestamp-key".into());
        flags.push(self.online_key.display().to_string());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        InProcessServer::start_with(release[0].public_key_file(), &flags)
    }
}

/// Uploads a root as an operator does.
fn upload_root(server: &InProcessServer, root: &Path) -> StatusCode {
    reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/trust/roots", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(std::fs::read(root).expect("root file"))
        .send()
        .expect("upload the root")
        .status()
}

/// A device whose agent starts from `root` (its `trusted_keys` line names
/// `legacy`, which the root makes unused).
fn device_with_root(server: &InProcessServer, legacy: &Signer, root: &Path) -> Device {
    let device = Device::new(&server.url, legacy.public_key_file(), &["true"]);
    device.set_option(&format!("trust_root = {:?}", root.display().to_string()));
    device
}

fn stored_root_version(device: &Device) -> Option<u64> {
    let bytes = std::fs::read(device.dir.path().join("data/root.json")).ok()?;
    airlift_trust::Root::parse(&bytes).ok().map(|r| r.version())
}

#[test]
fn key_rotation_and_revocation_a_revoked_keys_package_is_refused_by_a_device_that_took_the_new_root(
) {
    let (old, new) = (Signer::new(), Signer::new());
    let trust = Trust::new();
    let first = trust.first(&[&old], 1);
    let root1 = trust.sign(&first);
    let server = trust.server(&[&old, &new]);
    let operator = Operator::new(&server);
    assert_eq!(upload_root(&server, &root1), StatusCode::CREATED);
    let device = device_with_root(&server, &old, &root1);
    let device_id = enrol(&device, &operator);
    // Signed with the old key while root 1 trusted it, so the server took
    // it, and deployed before root 2; after root 2 the server refuses such
    // uploads and deployments itself (`airlift-server`'s `release_role`
    // tests): the devices must too.
    let stolen = operator.upload(old.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&stolen, &device_id);

    // Rotation: root 2 trusts the new release key and revokes the old one.
    let mut second = first.next(EXPIRES);
    second.add_key(RoleName::Release, &new.key().public_key());
    second.revoke_key(RoleName::Release, &old.key().public_key().key_id());
    assert_eq!(
        upload_root(&server, &trust.sign(&second)),
        StatusCode::CREATED
    );

    device.run_once();
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "failure", "{message}");
    assert!(message.contains("verify"), "{message}");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");
    assert_eq!(
        stored_root_version(&device),
        Some(2),
        "root 2 taken and stored"
    );

    let released = operator.upload(new.image_package("rootfs", "3.0.0", 1));
    operator.deploy(&released, &device_id);
    device.run_once();
    assert_eq!(
        device.slot(Slot::B),
        image("3.0.0"),
        "the new key's package installs"
    );
}

#[test]
fn key_compromise_below_threshold_one_stolen_release_key_cannot_sign_an_update() {
    let (a, b) = (Signer::new(), Signer::new());
    let trust = Trust::new();
    let root1 = trust.sign(&trust.first(&[&a, &b], 2));
    let server = trust.server(&[&a, &b]);
    let operator = Operator::new(&server);
    // The thief's package reached the server, and a deployment, before it
    // held the root (with the root it refuses one signature itself, at
    // upload and at deployment: `release_role`); the devices are the last
    // line.
    let one = operator.upload(a.image_package("rootfs", "2.0.0", 1));
    // Its trusted_keys (one key, threshold 1) would take the package.
    let device = device_with_root(&server, &a, &root1);
    let device_id = enrol(&device, &operator);
    let deployment = operator.deploy(&one, &device_id);
    assert_eq!(upload_root(&server, &root1), StatusCode::CREATED);

    device.run_once();
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "failure", "{message}");
    assert!(message.contains("verify"), "{message}");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");

    let both = a
        .package("rootfs", "3.0.0")
        .signed_by(b.key())
        .device_type(crate::harness::DEVICE_TYPE)
        .security_version(1)
        .image(&image("3.0.0"), airlift_package::Compression::Zstd)
        .build();
    let both = operator.upload(both);
    operator.deploy(&both, &device_id);
    device.run_once();
    assert_eq!(
        device.slot(Slot::B),
        image("3.0.0"),
        "two signatures install"
    );
}

#[test]
fn fast_forward_by_a_leaked_key_is_recovered_by_root_rotation() {
    let (leaked, replacement) = (Signer::new(), Signer::new());
    let trust = Trust::new();
    let first = trust.first(&[&leaked], 1);
    let root1 = trust.sign(&first);
    let server = trust.server(&[&leaked, &replacement]);
    let operator = Operator::new(&server);
    assert_eq!(upload_root(&server, &root1), StatusCode::CREATED);
    let device = device_with_root(&server, &leaked, &root1);
    let device_id = enrol(&device, &operator);

    // The leaked key pushes an absurd security version, and it sticks.
    let absurd = operator.upload(leaked.image_package("rootfs", "2.0.0", 1_000_000));
    operator.deploy(&absurd, &device_id);
    device.run_once();
    assert_eq!(device.power_up().slot, Slot::B);
    device.run_once(); // committed
    assert_eq!(device.status()["state"], "idle");

    // Recovery: root 2 revokes the leaked key and resets the floor.
    let mut second = first.next(EXPIRES);
    second.add_key(RoleName::Release, &replacement.key().public_key());
    second.revoke_key(RoleName::Release, &leaked.key().public_key().key_id());
    second.security_version_reset = Some(4);
    assert_eq!(
        upload_root(&server, &trust.sign(&second)),
        StatusCode::CREATED
    );

    // The device takes root 2 at its next check-in (at start, then
    // hourly), and reports the lowered security version.
    device.run_once();
    assert_eq!(stored_root_version(&device), Some(2));
    assert_eq!(operator.device(&device_id)["security_version"], 4);
    let fixed = operator.upload(replacement.image_package("rootfs", "3.0.0", 5));
    let deployment = operator.deploy(&fixed, &device_id);
    device.run_once();
    let (state, message) = operator.device_state(&deployment);
    assert_ne!(state, "failure", "{message}");
    assert_eq!(
        device.slot(Slot::A),
        image("3.0.0"),
        "installed into the other slot"
    );
    assert_eq!(stored_root_version(&device), Some(2));
}

#[test]
fn rollback_attack_an_offer_older_than_one_already_seen_is_refused() {
    let release = Signer::new();
    let trust = Trust::new();
    let root1 = trust.sign(&trust.first(&[&release], 1));
    let server = trust.server(&[&release]);
    let operator = Operator::new(&server);
    assert_eq!(upload_root(&server, &root1), StatusCode::CREATED);
    let device = device_with_root(&server, &release, &root1);
    let device_id = enrol(&device, &operator);
    // The device has taken a timestamp newer than anything this server
    // signs now (as from the genuine server, before an attacker replays).
    let future_millis: u64 = 9_000_000_000_000;
    std::fs::write(
        device.dir.path().join("data/timestamp.json"),
        format!("{{\"version\":{future_millis}}}"),
    )
    .expect("timestamp record");

    let package = operator.upload(release.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&package, &device_id);
    device.run_once();
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "failure", "{message}");
    assert!(message.contains("older than"), "{message}");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");
}

#[test]
fn an_offer_without_a_timestamp_is_refused_by_a_device_with_a_root() {
    let release = Signer::new();
    let trust = Trust::new();
    let root1 = trust.sign(&trust.first(&[&release], 1));
    // No --timestamp-key: offers carry no timestamp.
    let server = InProcessServer::start_with(release.public_key_file(), &["--poll-interval", "1"]);
    let operator = Operator::new(&server);
    let device = device_with_root(&server, &release, &root1);
    let device_id = enrol(&device, &operator);
    let package = operator.upload(release.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&package, &device_id);
    device.run_once();
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "failure", "{message}");
    assert!(message.contains("timestamp"), "{message}");
}

#[test]
fn the_server_stores_only_a_root_that_follows_the_chain() {
    let release = Signer::new();
    let trust = Trust::new();
    let first = trust.first(&[&release], 1);
    let server = trust.server(&[&release]);
    let mut unsigned = first.to_envelope().expect("envelope");
    let path = trust.dir.path().join("unsigned.json");
    std::fs::write(&path, unsigned.to_bytes()).expect("write");
    assert_eq!(
        upload_root(&server, &path),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    unsigned.sign(&trust.root_key);
    std::fs::write(&path, unsigned.to_bytes()).expect("write");
    assert_eq!(upload_root(&server, &path), StatusCode::CREATED);
    // Version 3 cannot follow version 1; version 2 by a stranger neither.
    let mut third = first.next(EXPIRES).next(EXPIRES);
    third.version = 3;
    assert_eq!(
        upload_root(&server, &trust.sign(&third)),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let stranger = Trust::new();
    let second = stranger.sign(&first.next(EXPIRES));
    assert_eq!(
        upload_root(&server, &second),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

/// A man in the middle for the freeze attack: it passes every request to
/// the server, but while `recording` it keeps the first check-in answer
/// that carries an offer and answers the device 503 instead; while
/// `replaying` it answers every check-in with that recorded answer.
struct ReplayProxy {
    url: String,
    mode: std::sync::Arc<std::sync::Mutex<(Mode, Option<Vec<u8>>)>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Recording,
    Replaying,
}

impl ReplayProxy {
    fn start(upstream: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let mode = std::sync::Arc::new(std::sync::Mutex::new((Mode::Recording, None)));
        let shared = mode.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (upstream, shared) = (upstream.clone(), shared.clone());
                std::thread::spawn(move || {
                    let _ = relay(stream, &upstream, &shared);
                });
            }
        });
        Self { url, mode }
    }

    fn replay(&self) {
        let mut mode = self.mode.lock().expect("proxy mode");
        assert!(mode.1.is_some(), "no offer was recorded");
        mode.0 = Mode::Replaying;
    }
}

/// One request, one answer, then the connection closes.
fn relay(
    mut client: std::net::TcpStream,
    upstream: &str,
    shared: &std::sync::Mutex<(Mode, Option<Vec<u8>>)>,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(&line);
        }
        if end {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let check_in = head.starts_with("POST /api/device/v1/check-in");
    if check_in {
        let state = shared.lock().expect("proxy mode");
        if let (Mode::Replaying, Some(answer)) = (state.0, &state.1) {
            return client.write_all(answer);
        }
    }
    let mut server = std::net::TcpStream::connect(upstream)?;
    let head = head.replacen("\r\n", "\r\nconnection: close\r\n", 1);
    server.write_all(head.as_bytes())?;
    server.write_all(&body)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    if check_in && String::from_utf8_lossy(&answer).contains("\"timestamp\"") {
        let mut state = shared.lock().expect("proxy mode");
        if state.0 == Mode::Recording {
            state.1.get_or_insert(answer);
            return client.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            );
        }
    }
    client.write_all(&answer)
}

#[test]
fn indefinite_freeze_an_expired_offer_replayed_is_refused() {
    let release = Signer::new();
    let trust = Trust::new();
    let root1 = trust.sign(&trust.first(&[&release], 1));
    let online = trust.online_key.display().to_string();
    let server = InProcessServer::start_with(
        release.public_key_file(),
        &[
            "--poll-interval",
            "1",
            "--timestamp-key",
            &online,
            "--timestamp-expiry",
            "2s",
        ],
    );
    let operator = Operator::new(&server);
    assert_eq!(upload_root(&server, &root1), StatusCode::CREATED);
    let proxy = ReplayProxy::start(&server.url);
    let device = Device::new(&proxy.url, release.public_key_file(), &["true"]);
    device.set_option(&format!("trust_root = {:?}", root1.display().to_string()));
    let device_id = enrol(&device, &operator);
    let package = operator.upload(release.image_package("rootfs", "2.0.0", 1));
    let deployment = operator.deploy(&package, &device_id);

    device.run_once(); // the offer is recorded; the device hears 503
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE);
    std::thread::sleep(std::time::Duration::from_secs(3));
    proxy.replay();
    device.run_once(); // the frozen offer, expired
    let (state, message) = operator.device_state(&deployment);
    assert_eq!(state, "failure", "{message}");
    assert!(message.contains("expired"), "{message}");
    assert_eq!(device.slot(Slot::B), SPARE_IMAGE, "slot B untouched");
}
