//! Publishing nudges to an MQTT broker, for fleets that already run one:
//! one message per device, QoS 1, on `<prefix>/devices/<id>/check-in`.
//!
//! Publishing never waits: messages go into the client's queue, and when
//! the broker is away and the queue is full they are dropped (and counted),
//! since the devices poll anyway.

use airlift_protocol::push::{nudge_topic, MqttBroker, Nudge, NudgeReason};
use airlift_protocol::DeviceId;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};
use std::time::Duration;

/// Requests the client queues while the broker is slow or away.
const QUEUE: usize = 16 * 1024;
/// Longest wait between two attempts to reach the broker.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A connection to the broker, kept up by a background task.
#[derive(Debug, Clone)]
pub struct MqttPublisher {
    client: AsyncClient,
    prefix: String,
}

impl MqttPublisher {
    /// Connects (in the background, retrying for ever) as `client_id`.
    pub fn start(broker: &MqttBroker, prefix: &str, client_id: &str) -> Self {
        let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
        options.set_keep_alive(Duration::from_secs(30));
        if let Some((user, password)) = &broker.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        let (client, events) = AsyncClient::new(options, QUEUE);
        tokio::spawn(drive(events, format!("{}:{}", broker.host, broker.port)));
        Self {
            client,
            prefix: prefix.to_owned(),
        }
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
