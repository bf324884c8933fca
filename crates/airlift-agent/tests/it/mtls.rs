//! Mutual TLS end to end (`docs/mtls.md`): the real agent, holding only a
//! certificate from the fleet CA (`[tls] auth = "certificate"`), is
//! admitted and updated by a server that takes certificates alone; and
//! `mqtts://` push through a Mosquitto started here with a TLS listener
//! that requires client certificates. Certificates are made by `rcgen`.

use crate::harness::{enrol, Device, Operator, Packages, Signer};
use crate::server::{InProcessServer, ADMIN_TOKEN};
use airlift_agent::boot::Slot;
use airlift_testkit::server::{self as process, ServerProcess};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A certificate authority made for the test.
struct Authority {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Authority {
    fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { cert, key }
    }

    /// A leaf named `common_name`, for `names` (a server) or for client
    /// authentication (no names): its certificate and key files in `dir`.
    fn issue(&self, dir: &Path, common_name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("leaf");
        let (cert_path, key_path) = (
            dir.join(format!("{common_name}.pem")),
            dir.join(format!("{common_name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("key");
        (cert_path, key_path)
    }

    /// The CA certificate's file in `dir`.
    fn file(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.cert.pem()).expect("CA certificate");
        path
    }
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Appends a `[tls]` section to the device's `agent.toml`.
fn set_tls(device: &Device, ca: &Path, cert: &Path, key: &Path, auth: &str) {
    let mut config = std::fs::read_to_string(&device.config).expect("agent.toml");
    config.push_str(&format!(
        "[tls]\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}\nauth = \"{auth}\"\n",
        text(ca),
        text(cert),
        text(key),
    ));
    std::fs::write(&device.config, config).expect("agent.toml");
}

#[test]
fn a_device_with_only_a_fleet_certificate_is_admitted_and_updated() {
    let pki = tempfile::tempdir().expect("pki");
    let (server_ca, fleet) = (Authority::new("Server CA"), Authority::new("Fleet CA"));
    let (server_cert, server_key) = server_ca.issue(pki.path(), "server", &["127.0.0.1"]);
    let fleet_ca = fleet.file(pki.path(), "fleet-ca.pem");
    let signer = Signer::new();
    let server = InProcessServer::start_with(
        signer.public_key_file(),
        &[
            "--poll-interval",
            "1",
            "--tls-cert",
            &text(&server_cert),
            "--tls-key",
            &text(&server_key),
            "--client-ca",
            &text(&fleet_ca),
            "--device-auth",
            "certificate",
        ],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let root = reqwest::Certificate::from_pem(server_ca.cert.pem().as_bytes()).expect("CA");
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(root)
        .build()
        .expect("client");
    // The operator has a token and no client certificate.
    let operator = Operator::with_client(&server.url, http);

    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let (cert, key) = fleet.issue(pki.path(), "device-0042", &[]);
    let server_ca_file = server_ca.file(pki.path(), "server-ca.pem");
    set_tls(&device, &server_ca_file, &cert, &key, "certificate");
    let device_id = enrol(&device, &operator);
    let record = operator.device(&device_id);
    assert_eq!(record["identity"]["certificate_cn"], "device-0042");
    assert_eq!(record["identity"]["serial"], device.serial.as_str());

    let (file, image) = signer.raw_package("2.0.0", 256 * 1024);
    let package = operator.upload(file);
    let deployment = operator.deploy(&package, &device_id);
    device.run_once();
    assert_eq!(device.slot(Slot::B), image);
    assert_eq!(device.power_up().slot, Slot::B);
    device.run_once();
    assert_eq!(operator.device_state(&deployment).0, "success");
}

#[test]
fn a_device_whose_certificate_another_ca_issued_never_gets_in() {
    let pki = tempfile::tempdir().expect("pki");
    let (server_ca, fleet) = (Authority::new("Server CA"), Authority::new("Fleet CA"));
    let (server_cert, server_key) = server_ca.issue(pki.path(), "server", &["127.0.0.1"]);
    let signer = Signer::new();
    let server = InProcessServer::start_with(
        signer.public_key_file(),
        &[
            "--tls-cert",
            &text(&server_cert),
            "--tls-key",
            &text(&server_key),
            "--client-ca",
            &text(&fleet.file(pki.path(), "fleet-ca.pem")),
        ],
    );
    let stranger = Authority::new("Stranger CA");
    let device = Device::new(&server.url, signer.public_key_file(), &["true"]);
    let (cert, key) = stranger.issue(pki.path(), "device-0042", &[]);
    set_tls(
        &device,
        &server_ca.file(pki.path(), "server-ca.pem"),
        &cert,
        &key,
        "certificate",
    );
    let run = device.agent(&["run", "--once"]);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(!log.contains("pending"), "never admitted: {log}");
    let root = reqwest::Certificate::from_pem(server_ca.cert.pem().as_bytes()).expect("CA");
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(root)
        .build()
        .expect("client");
    let devices: serde_json::Value = http
        .get(format!("{}/api/v1/devices", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .expect("management API without a client certificate")
        .json()
        .expect("devices");
    assert_eq!(devices["total"], 0, "{devices}");
}

/// A Mosquitto on a free loopback port with one TLS listener that requires
/// a client certificate from `clients`; killed when dropped.
struct TlsBroker {
    child: std::process::Child,
    url: String,
}

impl TlsBroker {
    /// `None` when Mosquitto is not installed (CI installs it).
    fn start(dir: &Path, server: &Authority, clients: &Authority) -> Option<Self> {
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.exists())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let (cert, key) = server.issue(dir, "broker", &["127.0.0.1"]);
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nrequire_certificate true\n\
                 cafile {}\ncertfile {}\nkeyfile {}\n",
                text(&clients.file(dir, "clients-ca.pem")),
                text(&cert),
                text(&key),
            ),
        )
        .expect("mosquitto.conf");
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let broker = Self {
            child,
            url: format!("mqtts://127.0.0.1:{port}"),
        };
        wait_until("the broker's TLS listener", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(broker)
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_mqtts_nudge_reaches_a_device_through_a_broker_that_requires_client_certificates() {
    let pki = tempfile::tempdir().expect("pki");
    let (broker_ca, clients) = (Authority::new("Broker CA"), Authority::new("Clients CA"));
    let Some(broker) = TlsBroker::start(pki.path(), &broker_ca, &clients) else {
        eprintln!("mosquitto is not installed: skipped (CI installs it)");
        return;
    };
    let broker_ca_file = broker_ca.file(pki.path(), "broker-ca.pem");
    let (server_cert, server_key) = clients.issue(pki.path(), "airlift-server", &[]);
    let prefix = format!("airlift-test-{}", uuid::Uuid::new_v4().simple());
    let signer = Signer::new();
    let data = tempfile::tempdir().expect("data");
    // Devices poll once an hour: acting within the test means nudged.
    let server = ServerProcess::builder(process::binary(), data.path())
        .trust(signer.public_key_file())
        .admin_token(ADMIN_TOKEN)
        .args(["--poll-interval", "3600", "--mqtt-url", &broker.url])
        .args(["--mqtt-topic-prefix", &prefix])
        .args(["--mqtt-ca-file", &text(&broker_ca_file)])
        .args(["--mqtt-client-cert", &text(&server_cert)])
        .args(["--mqtt-client-key", &text(&server_key)])
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let operator = Operator::at(server.url());
    let device = Device::new(server.url(), signer.public_key_file(), &["true"]);
    device.set_push(&format!(
        "transport = \"mqtt\"\nurl = \"{}\"\ntopic_prefix = \"{prefix}\"",
        broker.url
    ));
    let (cert, key) = clients.issue(pki.path(), "device-0042", &[]);
    set_tls(&device, &broker_ca_file, &cert, &key, "key");
    let id = enrol(&device, &operator);
    let daemon = device.start();
    daemon.wait_for_log("push: subscribed for nudges on the MQTT broker", 1);
    wait_until("the server's mqtts connection", || {
        server.metric("airlift_push_mqtt_connected") == 1.0
    });
    std::thread::sleep(Duration::from_millis(300));
    operator.request_check_in(&id);
    daemon.wait_for_log("push: checking in now", 1);
}
