//! Publishing nudges to an MQTT broker, for fleets that already run one:
//! one message per device, QoS 1, on `<prefix>/devices/<id>/check-in`.
//!
//! Publishing never waits: messages go into the client's queue, and when
//! the broker is away and the queue is full they are dropped (and counted),
//! since the devices poll anyway.
//!
//! With `mqtts://` the connection is TLS: the broker's certificate is
//! checked against its host name and the public roots, or only the CAs of
//! `--mqtt-ca-file`; `--mqtt-client-cert` and `--mqtt-client-key` are
//! presented to a broker that asks (`docs/mtls.md`).

use crate::config::mtls::MqttTls;
use airlift_protocol::push::{nudge_topic, MqttBroker, Nudge, NudgeReason};
use airlift_protocol::DeviceId;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Requests the client queues while the broker is slow or away.
const QUEUE: usize = 16 * 1024;
/// Longest wait between two attempts to reach the broker.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The TLS client configuration for an `mqtts://` broker, made from the
/// `mqtt_*` settings once (at start, so a missing file stops the server
/// with its name).
#[derive(Clone)]
pub struct MqttClientTls(Arc<rustls::ClientConfig>);

impl std::fmt::Debug for MqttClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MqttClientTls(..)")
    }
}

impl MqttClientTls {
    /// Reads the CA file and client certificate `settings` name.
    pub fn new(settings: &MqttTls) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &settings.ca_file {
            Some(path) => {
                for ca in read_certs(path, "mqtt_ca_file")? {
                    roots
                        .add(ca)
                        .map_err(|e| format!("mqtt_ca_file {}: {e}", path.display()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("MQTT TLS: {e}"))?
            .with_root_certificates(roots);
        let config = match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "mqtt_client_cert")?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("mqtt_client_key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("mqtt_client_cert and mqtt_client_key: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Self(Arc::new(config)))
    }
}

fn read_certs(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{setting} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{setting} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// A connection to the broker, kept up by a background task.
#[derive(Debug, Clone)]
pub struct MqttPublisher {
    client: AsyncClient,
    prefix: String,
}

impl MqttPublisher {
    /// Connects (in the background, retrying for ever) as `client_id`;
    /// over TLS with `tls` when the broker is `mqtts://` (the public roots
    /// when `tls` is `None`).
    pub fn start(
        broker: &MqttBroker,
        prefix: &str,
        client_id: &str,
        tls: Option<MqttClientTls>,
    ) -> Result<Self, String> {
        let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
        options.set_keep_alive(Duration::from_secs(30));
        if let Some((user, password)) = &broker.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if broker.tls {
            let tls = match tls {
                Some(tls) => tls,
                None => MqttClientTls::new(&MqttTls::default())?,
            };
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.0),
            ));
        }
        let (client, events) = AsyncClient::new(options, QUEUE);
        let scheme = if broker.tls { "mqtts" } else { "mqtt" };
        tokio::spawn(drive(
            events,
            format!("{scheme}://{}:{}", broker.host, broker.port),
        ));
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
        })
    }

    /// Queues a nudge for each device.
    pub fn publish(&self, devices: &[DeviceId], reason: NudgeReason) {
        let payload = serde_json::to_vec(&Nudge { reason }).unwrap_or_default();
        let mut dropped = 0u64;
        for device in devices {
            let topic = nudge_topic(&self.prefix, *device);
            if self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, payload.clone())
                .is_err()
            {
                dropped += 1;
            }
        }
        let queued = devices.len() as u64 - dropped;
        metrics::counter!("airlift_push_nudges_total", "transport" => "mqtt").increment(queued);
        if dropped > 0 {
            metrics::counter!("airlift_push_nudges_dropped_total", "transport" => "mqtt")
                .increment(dropped);
            tracing::warn!(
                dropped,
                "push: MQTT queue full, nudges dropped (devices will poll)"
            );
        }
    }
}

/// Runs the client's event loop: it connects, sends what is queued, and on
/// an error waits (doubling, capped) before the next attempt.
async fn drive(mut events: EventLoop, broker: String) {
    let mut backoff = Duration::from_millis(250);
    let mut connected = false;
    let mut failures = 0u64;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                tracing::info!(%broker, "push: connected to the MQTT broker");
                metrics::gauge!("airlift_push_mqtt_connected").set(1.0);
                connected = true;
                failures = 0;
                backoff = Duration::from_millis(250);
            }
            Ok(_) => {}
            Err(error) => {
                if connected {
                    tracing::warn!(%broker, %error, "push: lost the MQTT broker");
                } else if failures == 0 {
                    tracing::warn!(%broker, %error, "push: cannot reach the MQTT broker; retrying (devices poll meanwhile)");
                } else {
                    tracing::debug!(%broker, %error, "push: cannot reach the MQTT broker yet");
                }
                metrics::gauge!("airlift_push_mqtt_connected").set(0.0);
                connected = false;
                failures += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_are_read_and_named_when_they_cannot_be() {
        assert!(
            MqttClientTls::new(&MqttTls::default()).is_ok(),
            "public roots"
        );
        let missing = MqttTls {
            ca_file: Some("/nonexistent/broker-ca.pem".into()),
            ..MqttTls::default()
        };
        let error = MqttClientTls::new(&missing).expect_err("missing");
        assert!(error.contains("/nonexistent/broker-ca.pem"), "{error}");
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").expect("write");
        let error = MqttClientTls::new(&MqttTls {
            ca_file: Some(empty),
            ..MqttTls::default()
        })
        .expect_err("empty");
        assert!(error.contains("no PEM certificate"), "{error}");
    }
}
