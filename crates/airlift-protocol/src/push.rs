//! Push: the small "check in now" nudge a server sends to devices that hold
//! a connection, over server-sent events or an MQTT broker.
//!
//! A nudge carries no instruction and no update. A device that receives
//! one checks in as usual, and acts only on what the authenticated,
//! signed check-in answers — so a forged nudge costs a check-in, nothing more.

use crate::DeviceId;
use serde::{Deserialize, Serialize};

/// Path of the device's server-sent events stream of nudges (`GET`, with
/// the device token).
pub const PUSH_PATH: &str = "/api/device/v1/push";
/// The server-sent event name of a nudge.
pub const NUDGE_EVENT: &str = "check-in";
/// The server sends a comment line this often on an idle push stream, so
/// that both ends notice a dead connection.
pub const KEEPALIVE_SECS: u64 = 15;
/// Largest nudge a device reads; anything longer is not one of ours.
pub const MAX_NUDGE_BYTES: usize = 256;
/// Default MQTT topic prefix.
pub const DEFAULT_TOPIC_PREFIX: &str = "airlift";

/// Why the server nudged. Informational: the device checks in whatever it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NudgeReason {
    /// A deployment, or its next phase, now includes the device.
    Deployment,
    /// A deployment the device is in was cancelled or aborted.
    Cancelled,
    /// The device's record changed: accepted, rejected, tagged.
    Device,
    /// An operator asked the device to check in.
    Requested,
}

/// What a nudge says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Nudge {
    /// Why.
    pub reason: NudgeReason,
}

/// The MQTT topic on which a device hears its nudges:
/// `<prefix>/devices/<device id>/check-in`.
pub fn nudge_topic(prefix: &str, device: DeviceId) -> String {
    format!("{}/devices/{device}/check-in", prefix.trim_end_matches('/'))
}

/// An MQTT broker's address, from `mqtt://[user[:password]@]host[:port]`,
/// or `mqtts://…` for MQTT over TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttBroker {
    /// Host name or address.
    pub host: String,
    /// Port (1883 when the URL names none, 8883 with `mqtts://`).
    pub port: u16,
    /// Whether the connection is TLS (`mqtts://`): the broker's certificate
    /// is checked against the host name, as for HTTPS.
    pub tls: bool,
    /// User name and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for MqttBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBroker")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

/// Why a broker URL is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MQTT broker URL {url:?}: {reason} (expected mqtt://[user[:password]@]host[:port], or mqtts://… for TLS)")]
pub struct BrokerUrlError {
    url: String,
    reason: &'static str,
}

impl std::str::FromStr for MqttBroker {
    type Err = BrokerUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let error = |reason| BrokerUrlError {
            url: redact(url),
            reason,
        };
        let (rest, tls) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => return Err(error("only mqtt:// and mqtts:// are supported")),
        };
        let default_port = if tls { 8883 } else { 1883 };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '?', '#']) {
            return Err(error("a broker URL has no path or query"));
        }
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((userinfo, address)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                if user.is_empty() {
                    return Err(error("the user name is empty"));
                }
                (Some((user.to_owned(), password.to_owned())), address)
            }
            None => (None, rest),
        };
        let (host, port) = match address.rsplit_once(':') {
            // `[::1]:1883`, `host:1883`; a bare IPv6 address needs brackets.
            Some((host, port)) if !port.contains(']') => (
                host,
                port.parse()
                    .map_err(|_| error("the port is not a number"))?,
            ),
            _ => (address, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(error("the host is empty"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
            credentials,
        })
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_and_without_port_and_credentials() {
        let broker: MqttBroker = "mqtt://127.0.0.1:1883".parse().expect("url");
        assert_eq!((broker.host.as_str(), broker.port), ("127.0.0.1", 1883));
        assert_eq!(broker.credentials, None);
        let broker: MqttBroker = "mqtt://fleet:s3cret@broker.example.com"
            .parse()
            .expect("url");
        assert_eq!(
            (broker.host.as_str(), broker.port),
            ("broker.example.com", 1883)
        );
        assert_eq!(
            broker.credentials,
            Some(("fleet".to_owned(), "s3cret".to_owned()))
        );
        assert!(!format!("{broker:?}").contains("s3cret"));
        let broker: MqttBroker = "mqtt://[::1]:8883/".parse().expect("url");
        assert_eq!((broker.host.as_str(), broker.port), ("::1", 8883));
        assert!(!broker.tls);
        let broker: MqttBroker = "mqtts://fleet:pw@broker.example.com".parse().expect("url");
        assert_eq!(
            (broker.host.as_str(), broker.port, broker.tls),
            ("broker.example.com", 8883, true)
        );
        let broker: MqttBroker = "mqtts://127.0.0.1:18883".parse().expect("url");
        assert_eq!((broker.port, broker.tls), (18883, true));
    }

    #[test]
    fn bad_broker_urls_say_what_is_wrong_without_the_password() {
        for (url, says) in [
            ("http://broker:1883", "only mqtt://"),
            ("mqtt://broker:port", "not a number"),
            ("mqtt://broker:1883/topic", "no path"),
            ("mqtt://:1883", "host is empty"),
            ("mqtt://:pw@broker", "user name is empty"),
            ("ws://u:hunter2@broker", "only mqtt://"),
        ] {
            let error = url.parse::<MqttBroker>().expect_err(url).to_string();
            assert!(error.contains(says), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn topics_and_nudges_have_a_fixed_shape() {
        let device: DeviceId = "0191d3f6-7a3e-7c4e-8d5a-3b2f1e0d9c8b".parse().expect("id");
        assert_eq!(
            nudge_topic("fleet/", device),
            "fleet/devices/0191d3f6-7a3e-7c4e-8d5a-3b2f1e0d9c8b/check-in"
        );
        let nudge = Nudge {
            reason: NudgeReason::Deployment,
        };
        assert_eq!(
            serde_json::to_string(&nudge).expect("json"),
            r#"{"reason":"deployment"}"#
        );
    }
}
