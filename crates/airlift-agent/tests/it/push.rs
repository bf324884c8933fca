//! Push: a real agent daemon hears "check in now" from the server's push
//! stream — across instances on one PostgreSQL, and through the local
//! Mosquitto — falls back to polling when its instance dies, and does
//! nothing but check in when someone else publishes a nudge.
//!
//! Every server here tells devices to poll once an hour, so a device that
//! acts within the test's time did so because it was nudged. The latencies
//! are printed, not asserted.

use crate::harness::{enrol, Daemon, Device, Operator, Packages, Signer};
use crate::server::ADMIN_TOKEN;
use airlift_testkit::postgres::FreshSchema;
use airlift_testkit::server::{self as process, ServerProcess};
use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOUR: u64 = 3600;

/// An `airlift-server` process, built beside the agent (the workspace's
/// tests build it: `cargo test --workspace`).
fn instance(signer: &Signer, data: &Path, poll_secs: u64, flags: &[&str]) -> ServerProcess {
    ServerProcess::builder(process::binary(), data)
        .trust(signer.public_key_file())
        .admin_token(ADMIN_TOKEN)
        .args(["--poll-interval", &poll_secs.to_string()])
        .args(flags)
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Two instances on one fresh PostgreSQL schema, sharing the package
/// store (the directory), telling devices to poll every `poll_secs`.
struct TwoInstances {
    signer: Signer,
    a: ServerProcess,
    b: ServerProcess,
    _data: tempfile::TempDir,
    /// Dropped after the instances (fields drop in order).
    _schema: FreshSchema,
}

/// [`TwoInstances`]; `None` without PostgreSQL (CI always has it).
fn two_instances(poll_secs: u64) -> Option<TwoInstances> {
    let Some(schema) = FreshSchema::create("push") else {
        eprintln!("AIRLIFT_TEST_POSTGRES_URL is not set: skipped (CI sets it)");
        return None;
    };
    let signer = Signer::new();
    let data = tempfile::tempdir().expect("data");
    let flags = ["--database-url", schema.url()];
    let a = instance(&signer, data.path(), poll_secs, &flags);
    let b = instance(&signer, data.path(), poll_secs, &flags);
    Some(TwoInstances {
        signer,
        a,
        b,
        _data: data,
        _schema: schema,
    })
}

/// The local broker, as CI provides it.
fn broker() -> String {
    std::env::var("AIRLIFT_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates a deployment of a fresh package to `device` through `operator`,
/// waits until the device has started on it, and returns how long that took
/// by the server's clock (deployment created → device reported).
fn deploy_and_time(operator: &Operator, signer: &Signer, device: &str, version: &str) -> f64 {
    // The agent checks in at most once a second when nudged, and it has
    // just checked in (at start): let that second pass, as it would have
    // on a device up for a while.
    std::thread::sleep(Duration::from_millis(1100));
    let package = operator.upload(signer.image_package("rootfs", version, 0));
    let deployment = operator.deploy(&package, device);
    let mut started = Value::Null;
    wait_until("the device to start on the deployment", || {
        started = operator.deployment_device(&deployment);
        started["state"] != "pending"
    });
    let detail = operator.deployment(&deployment);
    let time = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
            .expect("rfc3339")
            .timestamp_micros() as f64
            / 1e6
    };
    time(&started["updated_at"]) - time(&detail["created_at"])
}

#[test]
fn a_deployment_created_on_one_instance_reaches_a_device_connected_to_another() {
    let Some(pair) = two_instances(HOUR) else {
        return;
    };
    let (on_a, on_b) = (Operator::at(pair.a.url()), Operator::at(pair.b.url()));

    let device = Device::new(pair.a.url(), pair.signer.public_key_file(), &["true"]);
    let id = enrol(&device, &on_a);
    let daemon = device.start();
    wait_until("the device's push stream on instance A", || {
        pair.a.metric("airlift_push_connections") == 1.0
    });
    assert_eq!(pair.b.metric("airlift_push_connections"), 0.0);

    let latency = deploy_and_time(&on_b, &pair.signer, &id, "2.0.0");
    eprintln!("deployment created on B → device connected to A started: {latency:.3} s");
    assert!(
        daemon.log().contains("push: checking in now"),
        "the agent was not nudged:\n{}",
        daemon.log()
    );
}

/// An enrolled device listening on the broker under `prefix`, its id, and
/// its running daemon, once it has subscribed.
fn mqtt_device(
    url: &str,
    signer: &Signer,
    broker: &str,
    prefix: &str,
    operator: &Operator,
) -> (Device, String, Daemon) {
    let device = Device::new(url, signer.public_key_file(), &["true"]);
    device.set_push(&format!(
        "transport = \"mqtt\"\nurl = \"{broker}\"\ntopic_prefix = \"{prefix}\""
    ));
    let id = enrol(&device, operator);
    let daemon = device.start();
    daemon.wait_for_log("push: subscribed for nudges on the MQTT broker", 1);
    (device, id, daemon)
}

#[test]
fn a_deployment_reaches_a_device_through_the_mqtt_broker() {
    let signer = Signer::new();
    let data = tempfile::tempdir().expect("data");
    let prefix = format!("airlift-test-{}", uuid::Uuid::new_v4().simple());
    let broker = broker();
    let server = instance(
        &signer,
        data.path(),
        HOUR,
        &["--mqtt-url", &broker, "--mqtt-topic-prefix", &prefix],
    );
    let operator = Operator::at(server.url());
    let (_device, id, daemon) = mqtt_device(server.url(), &signer, &broker, &prefix, &operator);
    // Subscribed means the SUBSCRIBE is sent; the server's publisher may
    // still be connecting. An operator's request goes the same way.
    wait_until("the server's MQTT connection", || {
        server.metric("airlift_push_mqtt_connected") == 1.0
    });
    std::thread::sleep(Duration::from_millis(300));
    operator.request_check_in(&id);
    daemon.wait_for_log("push: checking in now", 1);

    let latency = deploy_and_time(&operator, &signer, &id, "2.0.0");
    eprintln!("deployment created → device on MQTT started: {latency:.3} s");
}

#[test]
fn a_forged_nudge_costs_a_check_in_and_nothing_more() {
    use rumqttc::{Client, MqttOptions, QoS};
    let signer = Signer::new();
    let data = tempfile::tempdir().expect("data");
    let prefix = format!("airlift-test-{}", uuid::Uuid::new_v4().simple());
    let broker = broker();
    // The server publishes nothing here: the nudges come from elsewhere.
    let server = instance(&signer, data.path(), HOUR, &[]);
    let operator = Operator::at(server.url());
    let (device, id, daemon) = mqtt_device(server.url(), &signer, &broker, &prefix, &operator);
    wait_until("the first check-in to be recorded", || {
        server.metric("airlift_check_ins_total") >= 1.0
    });
    let before = server.metric("airlift_check_ins_total");
    let slot_b = device.slot(airlift_agent::boot::Slot::B);

    // Someone with access to the broker, but not to the server's keys,
    // publishes "nudges" that claim all sorts of things, and a flood.
    let broker_address: airlift_protocol::push::MqttBroker = broker.parse().expect("url");
    let options = MqttOptions::new("forger", broker_address.host, broker_address.port);
    let (forger, mut connection) = Client::new(options, 64);
    let topic = airlift_protocol::push::nudge_topic(&prefix, id.parse().expect("device id"));
    let forged: [&[u8]; 4] = [
        br#"{"reason":"deployment","install":"http://evil.example/rootfs.img"}"#,
        br#"{"reason":"rollback"}"#,
        b"\xff\xfe not even json",
        &[b'x'; 4096],
    ];
    let started = Instant::now();
    for round in 0..25 {
        let payload = forged[round % forged.len()];
        forger
            .publish(topic.as_str(), QoS::AtLeastOnce, false, payload.to_vec())
            .expect("publish");
    }
    let pump = std::thread::spawn(move || {
        for event in connection.iter().take(200) {
            if event.is_err() {
                break;
            }
        }
    });
    daemon.wait_for_log("push: checking in now", 1);
    std::thread::sleep(Duration::from_secs(3));
    let _ = forger.disconnect();
    let _ = pump.join();

    let after = server.metric("airlift_check_ins_total");
    let elapsed = started.elapsed().as_secs_f64();
    assert!(after > before, "the nudge made the device check in");
    // At most one nudged check-in a second, however many nudges.
    assert!(
        after - before <= elapsed.ceil() + 1.0,
        "{} check-ins in {elapsed:.1} s from 25 forged nudges",
        after - before
    );
    assert_eq!(device.status()["state"], "idle", "{}", daemon.log());
    assert_eq!(
        device.slot(airlift_agent::boot::Slot::B),
        slot_b,
        "slot B untouched"
    );
    assert!(!daemon.log().contains("update offered"));
}

/// A loopback TCP balancer: each connection goes to the first backend that
/// accepts it, in order.
struct Balancer {
    url: String,
    backends: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    fn start(backends: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let backends = Arc::new(Mutex::new(backends));
        let stop = Arc::new(AtomicBool::new(false));
        let (list, stopped) = (Arc::clone(&backends), Arc::clone(&stop));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let targets = list.lock().expect("backends").clone();
                let upstream = targets
                    .iter()
                    .find_map(|t| TcpStream::connect(t.trim_start_matches("http://")).ok());
                let Some(upstream) = upstream else { continue };
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        upstream.try_clone().expect("clone"),
                    ),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self {
            url,
            backends,
            stop,
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

#[test]
fn when_its_instance_dies_the_device_polls_and_reconnects_to_another() {
    // Polling every 2 s here, to see the fallback.
    let Some(mut pair) = two_instances(2) else {
        return;
    };
    let balancer = Balancer::start(vec![pair.a.url().to_owned(), pair.b.url().to_owned()]);
    let on_b = Operator::at(pair.b.url());

    let device = Device::new(&balancer.url, pair.signer.public_key_file(), &["true"]);
    let id = enrol(&device, &Operator::at(pair.a.url()));
    let daemon = device.start();
    wait_until("the push stream on A", || {
        pair.a.metric("airlift_push_connections") == 1.0
    });
    let checked_in = |operator: &Operator| {
        operator.device(&id)["last_check_in"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // A dies (SIGKILL). The device keeps polling — through B, which the
    // balancer now picks — and opens its push stream there.
    pair.a.kill();
    let seen = checked_in(&on_b);
    daemon.wait_for_log("push: stream lost; polling meanwhile", 1);
    wait_until("a check-in through B", || checked_in(&on_b) != seen);
    wait_until("the push stream on B", || {
        pair.b.metric("airlift_push_connections") == 1.0
    });
    assert!(daemon.log().contains("push: listening for nudges"));

    // And B's nudges reach it.
    balancer
        .backends
        .lock()
        .expect("backends")
        .retain(|u| u == pair.b.url());
    let latency = deploy_and_time(&on_b, &pair.signer, &id, "2.0.0");
    eprintln!("after the failover, deployment → device started: {latency:.3} s");
}

#[test]
fn a_device_accepted_and_deployed_to_while_it_waited_hears_it_without_its_slowed_poll() {
    let signer = Signer::new();
    let data = tempfile::tempdir().expect("data");
    let server = instance(&signer, data.path(), HOUR, &[]);
    let operator = Operator::at(server.url());
    let device = Device::new(server.url(), signer.public_key_file(), &["true"]);
    // Polls hourly, and slower still while pending: only push is quick.
    let config = std::fs::read_to_string(&device.config).expect("agent.toml");
    let config = config.replace("poll_interval_secs = 1\n", "poll_interval_secs = 3600\n");
    std::fs::write(&device.config, config).expect("agent.toml");
    let daemon = device.start();
    daemon.wait_for_log(
        "push: stream lost; polling meanwhile reason=the device is pending",
        1,
    );
    let id = operator.accept(&device.serial);
    let package = operator.upload(signer.image_package("rootfs", "2.0.0", 1));
    operator.deploy(&package, &id);
    // The stream opens once the device is accepted: nudges may have been
    // missed while it was refused, so the agent checks in at once.
    daemon.wait_for_log("update offered", 1);
    assert!(
        daemon.log().contains("push: checking in now"),
        "{}",
        daemon.log()
    );
}
