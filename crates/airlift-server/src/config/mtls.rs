//! Mutual TLS settings (`docs/mtls.md`): whether the HTTPS listener asks
//! clients for a certificate from a fleet CA and how devices must
//! authenticate, and how the server reaches an `mqtts://` broker.
//!
//! Client certificates are *offered*, never required, at the TLS layer:
//! the management API, the dashboard and the probes serve operators and
//! load balancers, who hold tokens, not device certificates. A certificate
//! that is presented must verify against the fleet CA (a stranger's or an
//! expired one fails the handshake); whether the device API insists on one
//! is [`DeviceAuth`].

use super::ConfigError;
use crate::push::mqtt::MqttClientTls;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How devices prove who they are on the device API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAuth {
    /// A request signed with the device's Ed25519 key (`/auth`) only;
    /// client certificates play no part in device authentication.
    Key,
    /// The TLS client certificate only (`/auth/certificate`); every device
    /// request must come over a connection that presents it.
    Certificate,
    /// Either; a device registered by its certificate must still present
    /// it on every request.
    Either,
}

impl DeviceAuth {
    /// Whether devices may authenticate by certificate.
    pub fn allows_certificate(self) -> bool {
        matches!(self, Self::Certificate | Self::Either)
    }

    /// Whether devices may authenticate by their Ed25519 key.
    pub fn allows_key(self) -> bool {
        matches!(self, Self::Key | Self::Either)
    }
}

/// The fleet CA the listener verifies client certificates against, and
/// the device authentication policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM file of the CA certificates that issue device certificates.
    pub client_ca: Option<PathBuf>,
    /// How devices authenticate.
    pub device_auth: DeviceAuth,
}

/// Checks `client_ca` and `device_auth` against each other and against
/// whether the server serves TLS at all.
pub fn client_auth(
    client_ca: Option<&Path>,
    device_auth: Option<DeviceAuth>,
    serves_tls: bool,
) -> Result<ClientAuth, ConfigError> {
    if client_ca.is_some() && !serves_tls {
        return Err(ConfigError::Invalid(
            "client_ca (--client-ca, AIRLIFT_CLIENT_CA) needs tls_cert and tls_key: client certificates are asked for in the TLS handshake".into(),
        ));
    }
    let default = if client_ca.is_some() {
        DeviceAuth::Either
    } else {
        DeviceAuth::Key
    };
    let device_auth = device_auth.unwrap_or(default);
    if device_auth.allows_certificate() && client_ca.is_none() {
        return Err(ConfigError::Invalid(
            "device_auth = certificate or either (--device-auth) needs client_ca (--client-ca FILE): the fleet CA that issues device certificates".into(),
        ));
    }
    Ok(ClientAuth {
        client_ca: client_ca.map(Path::to_path_buf),
        device_auth,
    })
}

/// How the server's MQTT connection trusts an `mqtts://` broker and what
/// it presents to it; all empty for the web PKI and no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttTls {
    /// PEM CA certificates trusted instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the broker, with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PKCS#8 PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// Checks the `mqtt_*` TLS settings (they need an `mqtts://` broker, and a
/// client certificate goes with its key) and, for an `mqtts://` broker,
/// reads their files into the connection's TLS configuration.
pub fn mqtt_tls(
    tls_broker: Option<bool>,
    ca_file: Option<&Path>,
    client_cert: Option<&Path>,
    client_key: Option<&Path>,
) -> Result<Option<MqttClientTls>, ConfigError> {
    let settings = MqttTls {
        ca_file: ca_file.map(Path::to_path_buf),
        client_cert: client_cert.map(Path::to_path_buf),
        client_key: client_key.map(Path::to_path_buf),
    };
    if settings.client_cert.is_some() != settings.client_key.is_some() {
        return Err(ConfigError::Invalid(
            "mqtt_client_cert and mqtt_client_key go together: give both or neither".into(),
        ));
    }
    if settings != MqttTls::default() && tls_broker != Some(true) {
        return Err(ConfigError::Invalid(
            "mqtt_ca_file, mqtt_client_cert and mqtt_client_key need an mqtts:// broker (--mqtt-url mqtts://…)".into(),
        ));
    }
    if tls_broker != Some(true) {
        return Ok(None);
    }
    MqttClientTls::new(&settings)
        .map(Some)
        .map_err(ConfigError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_auth_default_follows_the_client_ca() {
        let ca = Path::new("fleet-ca.pem");
        assert_eq!(
            client_auth(None, None, false).expect("plain").device_auth,
            DeviceAuth::Key
        );
        assert_eq!(
            client_auth(Some(ca), None, true).expect("ca").device_auth,
            DeviceAuth::Either
        );
        let strict = client_auth(Some(ca), Some(DeviceAuth::Certificate), true).expect("strict");
        assert!(!strict.device_auth.allows_key());
        assert!(strict.device_auth.allows_certificate());
    }

    #[test]
    fn certificates_need_tls_and_a_ca() {
        let ca = Path::new("fleet-ca.pem");
        let error = client_auth(Some(ca), None, false).expect_err("no TLS");
        assert!(error.to_string().contains("tls_cert"), "{error}");
        let error = client_auth(None, Some(DeviceAuth::Certificate), true).expect_err("no CA");
        assert!(error.to_string().contains("--client-ca"), "{error}");
        let error = client_auth(None, Some(DeviceAuth::Either), true).expect_err("no CA");
        assert!(error.to_string().contains("client_ca"), "{error}");
    }

    #[test]
    fn mqtt_tls_settings_need_mqtts_and_pairs() {
        let file = Some(Path::new("x.pem"));
        assert!(mqtt_tls(None, None, None, None).expect("none").is_none());
        assert!(mqtt_tls(Some(false), file, None, None).is_err(), "mqtt://");
        assert!(mqtt_tls(None, file, None, None).is_err(), "no broker");
        assert!(mqtt_tls(Some(true), None, file, None).is_err(), "no key");
        let public_roots = mqtt_tls(Some(true), None, None, None).expect("mqtts://");
        assert!(public_roots.is_some());
        let error = mqtt_tls(Some(true), file, None, None).expect_err("no such file");
        assert!(error.to_string().contains("x.pem"), "{error}");
    }
}
