//! Listening for "check in now" nudges, on a thread of its own: over the
//! server's push stream (server-sent events) or an MQTT broker.
//!
//! A nudge only rings a bell ([`Ring`]); whoever runs the agent checks in
//! as usual when it rings — a nudge is never acted on by itself, so a forged
//! one costs a check-in and nothing else. The listener reconnects after
//! every loss, backing off exponentially with jitter (capped), and polling
//! goes on meanwhile: push only makes the device hear sooner.

use crate::client::{ClientError, ServerClient};
use airlift_protocol::push::{
    nudge_topic, MqttBroker, KEEPALIVE_SECS, MAX_NUDGE_BYTES, NUDGE_EVENT,
};
use airlift_protocol::DeviceId;
use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// First wait after a lost connection.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A connection that lasted this long was good: the backoff starts over.
const STABLE: Duration = Duration::from_secs(KEEPALIVE_SECS);
/// Silence after which the push stream is taken for dead (the server sends
/// a keep-alive every [`KEEPALIVE_SECS`]).
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(3 * KEEPALIVE_SECS);
/// Largest MQTT packet read: bigger than any nudge, so that junk on the
/// topic is read and ignored rather than breaking the connection.
const MAX_MQTT_PACKET: usize = 64 * 1024;
/// Longest line of the push stream: a nudge is small; anything longer is
/// not our server, and the connection is dropped.
const MAX_LINE: usize = 4 * MAX_NUDGE_BYTES;

/// How the agent hears nudges (`[push]` in the configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case", deny_unknown_fields)]
pub enum PushConfig {
    /// Hold the server's push stream (server-sent events) open [default].
    #[default]
    Events,
    /// Subscribe to `<topic_prefix>/devices/<device id>/check-in` on a broker.
    Mqtt {
        /// `mqtt://[user[:password]@]host[:port]`, or `mqtts://…` for TLS
        /// (checked with the `[tls]` settings, as HTTPS is).
        url: String,
        /// [default: `airlift`]
        #[serde(default = "default_prefix")]
        topic_prefix: String,
    },
    /// Poll only.
    Off,
}

fn default_prefix() -> String {
    airlift_protocol::push::DEFAULT_TOPIC_PREFIX.to_owned()
}

/// Why the listener rang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rang {
    /// The server (or someone claiming to be it) asked for a check-in.
    Nudged,
    /// The push connection came back after a loss: nudges may have been
    /// missed meanwhile.
    Reconnected,
}

/// What the listener calls when it hears something.
pub type Ring = Arc<dyn Fn(Rang) + Send + Sync>;

/// A running listener; dropping it stops the thread (within a few seconds,
/// at its next read or keep-alive).
#[derive(Debug)]
pub struct PushListener {
    stop: Arc<AtomicBool>,
}

impl Drop for PushListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl PushListener {
    /// Starts listening as configured; `None` for [`PushConfig::Off`].
    /// `client` is a session of the device's own ([`ServerClient::fork`]).
    pub fn start(
        config: &PushConfig,
        client: ServerClient,
        ring: Ring,
    ) -> Result<Option<Self>, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = Listener {
            client,
            ring,
            stop: Arc::clone(&stop),
        };
        let body: Box<dyn FnOnce() + Send> = match config {
            PushConfig::Off => return Ok(None),
            PushConfig::Events => Box::new(move || listener.events()),
            PushConfig::Mqtt { url, topic_prefix } => {
                let broker: MqttBroker = url.parse().map_err(|e| format!("push: {e}"))?;
                let prefix = topic_prefix.clone();
                Box::new(move || listener.mqtt(&broker, &prefix))
            }
        };
        std::thread::Builder::new()
            .name("airlift-push".into())
            .stack_size(256 * 1024)
            .spawn(body)
            .map_err(|e| format!("push: starting the listener thread: {e}"))?;
        Ok(Some(Self { stop }))
    }
}

struct Listener {
    client: ServerClient,
    ring: Ring,
    stop: Arc<AtomicBool>,
}

/// Exponential backoff with jitter, capped, for ever.
fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(MIN_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .without_max_times()
        .with_jitter()
        .build()
}

impl Listener {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn ring(&self, rang: Rang) {
        if !self.stopped() {
            (self.ring)(rang);
        }
    }

    /// Sleeps `delay` in short steps, so a stop is noticed.
    fn pause(&self, delay: Duration) {
        let until = Instant::now() + delay;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(250)));
        }
    }

    /// The server's push stream, reconnected for as long as the agent runs.
    fn events(mut self) {
        let mut delays = backoff();
        // Any attempt before this one means nudges may have been missed
        // meanwhile — also while the device was pending and the stream was
        // refused: an operator who accepts it and deploys at once must not
        // wait for the slowed-down poll.
        let mut tried_before = false;
        while !self.stopped() {
            let opened = Instant::now();
            let ended = match self.client.open_push() {
                Ok(stream) => {
                    // The authentication's connection, if the stream did not
                    // reuse it, would sit idle for as long as the stream lasts.
                    self.client.close_idle_connections();
                    tracing::info!("push: listening for nudges on the server's stream");
                    if tried_before {
                        self.ring(Rang::Reconnected);
                    }
                    read_events(stream, &|| self.stopped(), &|| self.ring(Rang::Nudged))
                }
                Err(ClientError::NotAccepted(status)) => Err(format!("the device is {status}")),
                Err(error) => Err(error.to_string()),
            };
            tried_before = true;
            if self.stopped() {
                return;
            }
            if opened.elapsed() >= STABLE {
                delays = backoff();
            }
            let delay = delays.next().unwrap_or(MAX_BACKOFF);
            match ended {
                Ok(()) => tracing::info!(?delay, "push: the server ended the stream; reconnecting"),
                Err(reason) => {
                    tracing::warn!(%reason, ?delay, "push: stream lost; polling meanwhile")
                }
            }
            self.pause(delay);
        }
    }

    /// An MQTT subscription, kept for as long as the agent runs.
    fn mqtt(mut self, broker: &MqttBroker, prefix: &str) {
        let mut delays = backoff();
        // The topic names the device: learn its id first.
        let device = loop {
            if self.stopped() {
                return;
            }
            match self.client.device_id() {
                Some(device) => break device,
                None => {
                    if let Err(error) = self.client.authenticate() {
                        let delay = delays.next().unwrap_or(MAX_BACKOFF);
                        tracing::warn!(%error, ?delay, "push: not authenticated yet");
                        self.pause(delay);
                    }
                }
            }
        };
        self.subscribe(broker, &nudge_topic(prefix, device), device);
    }

    fn subscribe(&self, broker: &MqttBroker, topic: &str, device: DeviceId) {
        use rumqttc::{Client, Event, Incoming, MqttOptions, QoS, RecvTimeoutError};
        let mut options = MqttOptions::new(
            format!("airlift-{device}"),
            broker.host.clone(),
            broker.port,
        );
        options.set_keep_alive(Duration::from_secs(KEEPALIVE_SECS * 2));
        // A clean session: nothing queued while the device was away is
        // replayed (it checks in on every reconnect instead), so a hostile
        // message cannot come back on each reconnect.
        options.set_clean_session(true);
        options.set_max_packet_size(MAX_MQTT_PACKET, MAX_MQTT_PACKET);
        if let Some((user, password)) = &broker.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if broker.tls {
            // The same CA, pins and client certificate as HTTPS.
            let rustls = match self.client.tls() {
                Some(tls) => tls.rustls.clone(),
                None => match crate::tls::public_roots() {
                    Ok(rustls) => rustls,
                    Err(error) => {
                        tracing::warn!(%error, "push: no TLS for the MQTT broker; polling only");
                        return;
                    }
                },
            };
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(rustls),
            ));
        }
        let (client, mut connection) = Client::new(options, 16);
        let mut delays = backoff();
        let mut heard_before = false;
        let mut connected_at = Instant::now();
        while !self.stopped() {
            match connection.recv_timeout(Duration::from_millis(500)) {
                Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                    connected_at = Instant::now();
                    tracing::info!(%topic, "push: subscribed for nudges on the MQTT broker");
                    if let Err(error) = client.try_subscribe(topic, QoS::AtLeastOnce) {
                        tracing::warn!(%error, "push: MQTT subscribe not sent");
                    }
                    if heard_before {
                        self.ring(Rang::Reconnected);
                    }
                    heard_before = true;
                }
                Ok(Ok(Event::Incoming(Incoming::Publish(publish)))) => {
                    if publish.topic == topic && publish.payload.len() <= MAX_NUDGE_BYTES {
                        self.ring(Rang::Nudged);
                    }
                }
                Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Err(error)) => {
                    if connected_at.elapsed() >= STABLE {
                        delays = backoff();
                    }
                    let delay = delays.next().unwrap_or(MAX_BACKOFF);
                    tracing::warn!(%error, ?delay, "push: MQTT broker lost; polling meanwhile");
                    self.pause(delay);
                    // The next receive connects again.
                    connected_at = Instant::now();
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let _ = client.try_disconnect();
    }
}

/// Reads server-sent events until the stream ends (`Ok`) or fails, calling
/// `nudged` for each nudge event. Comment lines (keep-alives) and other
/// events are skipped; an over-long line ends the stream.
fn read_events(
    stream: impl Read,
    stopped: &dyn Fn() -> bool,
    nudged: &dyn Fn(),
) -> Result<(), String> {
    let mut reader = BufReader::with_capacity(1024, stream);
    let mut line = Vec::with_capacity(128);
    let mut event = String::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| e.to_string())?;
        if stopped() {
            return Ok(());
        }
        if read == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            return Err(format!("a push stream line longer than {MAX_LINE} bytes"));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            // The end of an event.
            if event == NUDGE_EVENT {
                nudged();
            }
            event.clear();
        } else if let Some(name) = text.strip_prefix("event:") {
            event = name.trim_start().to_owned();
        }
        // `data:` (the reason, informational), `id:`, `retry:` and comments
        // (`:` keep-alives) change nothing.
    }
}

/// A bell the listener rings and the agent's loop waits on.
#[derive(Debug, Default)]
pub struct Doorbell {
    rung: Mutex<Option<Rang>>,
    bell: Condvar,
}

impl Doorbell {
    /// A [`Ring`] for [`PushListener::start`].
    pub fn ringer(self: &Arc<Self>) -> Ring {
        let bell = Arc::clone(self);
        Arc::new(move |rang| bell.ring(rang))
    }

    /// Rings: the next (or current) [`wait`](Self::wait) returns at once.
    pub fn ring(&self, rang: Rang) {
        let mut rung = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        *rung = Some(rang);
        self.bell.notify_all();
    }

    /// Waits up to `timeout` for a ring; returns it, if one came (and
    /// forgets it: rings while nobody waited count once).
    pub fn wait(&self, timeout: Duration) -> Option<Rang> {
        let rung = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        let (mut rung, _) = self
            .bell
            .wait_timeout_while(rung, timeout, |rung| rung.is_none())
            .unwrap_or_else(|e| e.into_inner());
        rung.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn count(stream: &[u8]) -> (Result<(), String>, usize) {
        let nudges = AtomicUsize::new(0);
        let result = read_events(stream, &|| false, &|| {
            nudges.fetch_add(1, Ordering::SeqCst);
        });
        (result, nudges.load(Ordering::SeqCst))
    }

    #[test]
    fn nudge_events_ring_and_everything_else_is_skipped() {
        let stream = b": keep-alive\n\nevent: check-in\ndata: {\"reason\":\"deployment\"}\n\n\
            event: something-else\ndata: x\n\n\
            data: no event name\n\n\
            event:check-in\r\ndata: {}\r\n\r\n";
        assert_eq!(count(stream), (Ok(()), 2));
        // An event cut before its blank line is not a nudge.
        assert_eq!(count(b"event: check-in\ndata: {}\n"), (Ok(()), 0));
    }

    #[test]
    fn an_overlong_line_ends_the_stream() {
        let mut stream = b"event: check-in\ndata: ".to_vec();
        stream.extend(std::iter::repeat_n(b'x', 10 * MAX_LINE));
        stream.extend(b"\n\n");
        let (result, nudges) = count(&stream);
        assert!(result.expect_err("refused").contains("longer than"));
        assert_eq!(nudges, 0);
    }

    #[test]
    fn rings_while_nobody_waits_count_once() {
        let bell = Arc::new(Doorbell::default());
        assert_eq!(bell.wait(Duration::from_millis(1)), None);
        let ring = bell.ringer();
        ring(Rang::Nudged);
        ring(Rang::Nudged);
        assert_eq!(bell.wait(Duration::ZERO), Some(Rang::Nudged));
        assert_eq!(bell.wait(Duration::from_millis(1)), None);
        let waiter = {
            let bell = Arc::clone(&bell);
            std::thread::spawn(move || bell.wait(Duration::from_secs(30)))
        };
        std::thread::sleep(Duration::from_millis(20));
        bell.ring(Rang::Reconnected);
        assert_eq!(waiter.join().expect("waiter"), Some(Rang::Reconnected));
    }

    #[test]
    fn push_sections_parse() {
        #[derive(Deserialize)]
        struct Wrapper {
            push: PushConfig,
        }
        let parse = |text: &str| toml::from_str::<Wrapper>(text).map(|w| w.push);
        assert_eq!(
            parse("[push]\ntransport = \"events\"").expect("events"),
            PushConfig::Events
        );
        assert_eq!(
            parse("[push]\ntransport = \"mqtt\"\nurl = \"mqtt://b:1883\"").expect("mqtt"),
            PushConfig::Mqtt {
                url: "mqtt://b:1883".into(),
                topic_prefix: "airlift".into()
            }
        );
        assert!(parse("[push]\ntransport = \"carrier-pigeon\"").is_err());
    }
}
