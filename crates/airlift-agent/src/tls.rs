//! How the agent's HTTPS connections trust the server (`[tls]` in
//! `agent.toml`): a private certificate authority, pinning of the server's
//! key, and a client certificate.
//!
//! - `ca_file`: PEM certificates of the CAs to trust **instead of** the web
//!   PKI (the public roots compiled into the agent). A fleet behind a
//!   private CA trusts nothing else; leave it out to trust the public roots.
//! - `pin_sha256`: hex SHA-256 digests of the server's SubjectPublicKeyInfo.
//!   When set, the server's certificate must also carry one of these keys,
//!   after the usual chain and name checks — so a certificate a CA issued
//!   for the name to someone else is refused. List the next key before
//!   rotating to it.
//! - `client_cert` and `client_key`: a PEM certificate chain and its
//!   PKCS#8 private key, presented when the server asks (mutual TLS).
//! - `auth`: how the device authenticates to the server: `key` (a request
//!   signed with its Ed25519 key, the default) or `certificate` (the client
//!   certificate alone, for a server started with `--client-ca`; the
//!   device key is then never sent).
//!
//! Without any of them the agent's TLS is ureq's default (the public roots).
//! The same settings secure an `mqtts://` push broker (`push.rs`).

use airlift_package::Sha256Digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// `[tls]`: whom the agent's HTTPS connections trust, and what they
/// present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificates trusted instead of the web PKI.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Hex SHA-256 digests of server keys (SubjectPublicKeyInfo) one of
    /// which the server's certificate must carry.
    #[serde(default)]
    pub pin_sha256: Vec<String>,
    /// PEM certificate chain presented to a server that asks for one.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PKCS#8 PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// How the device authenticates to the server [default: key].
    #[serde(default)]
    pub auth: DeviceAuth,
}

/// How the device proves who it is to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAuth {
    /// A request signed with the device's Ed25519 key.
    #[default]
    Key,
    /// The TLS client certificate (`client_cert`) alone.
    Certificate,
}

/// The agent's TLS settings, ready for its connections.
#[derive(Debug, Clone)]
pub struct AgentTls {
    /// For every HTTPS connection to the server and the object store, and
    /// for an `mqtts://` broker.
    pub rustls: Arc<rustls::ClientConfig>,
    /// How the device authenticates.
    pub auth: DeviceAuth,
}

impl TlsConfig {
    /// Whether anything differs from the default (public roots only).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Why these settings cannot work together, if they cannot (files are
    /// read later, by [`client_config`](Self::client_config)).
    pub fn check(&self) -> Result<(), String> {
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err("[tls]: set client_cert and client_key together".into());
        }
        if self.auth == DeviceAuth::Certificate && self.client_cert.is_none() {
            return Err(
                "[tls] auth = \"certificate\" needs client_cert and client_key: the certificate is the device's credential".into(),
            );
        }
        self.pins().map(|_| ())
    }

    fn pins(&self) -> Result<Vec<Sha256Digest>, String> {
        self.pin_sha256
            .iter()
            .map(|pin| {
                pin.parse().map_err(|_| {
                    format!("[tls] pin_sha256: {pin:?} is not a SHA-256 in hex (64 characters); get it with `openssl x509 -pubkey -noout -in server.pem | openssl pkey -pubin -outform der | sha256sum`")
                })
            })
            .collect()
    }

    /// The TLS configuration for these settings; `None` for the default.
    pub fn client_config(&self) -> Result<Option<AgentTls>, String> {
        if self.is_default() {
            return Ok(None);
        }
        self.check()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in read_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("[tls] ca_file {}: {e}", path.display()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("[tls]: {e}"))?;
        let pins = self.pins()?;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("[tls]: {e}"))?;
        let builder = if pins.is_empty() {
            builder.with_webpki_verifier(webpki)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { webpki, pins }))
        };
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("[tls] client_key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("[tls] client_cert and client_key: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(AgentTls {
            rustls: Arc::new(config),
            auth: self.auth,
        }))
    }
}

/// The rustls configuration of the default settings: the public roots, no
/// client certificate (what ureq does by itself for HTTPS; an `mqtts://`
/// connection needs it spelled out).
pub fn public_roots() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("[tls] {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "[tls] {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The web PKI's checks, then the server key against the pins.
#[derive(Debug)]
struct Pinned {
    webpki: Arc<WebPkiServerVerifier>,
    pins: Vec<Sha256Digest>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("the server's certificate: {e}")))?;
        let key = Sha256Digest::of(cert.subject_public_key_info().as_ref());
        // Each comparison is constant-time (`Sha256Digest`'s equality).
        if self.pins.contains(&key) {
            Ok(verified)
        } else {
            Err(rustls::Error::General(format!(
                "the server's key (SHA-256 {key}) is none of the pinned keys ([tls] pin_sha256)"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_tls_to_the_public_roots() {
        assert!(matches!(TlsConfig::default().client_config(), Ok(None)));
    }

    #[test]
    fn half_a_client_identity_and_bad_pins_are_refused() {
        let half = TlsConfig {
            client_cert: Some("c.pem".into()),
            ..TlsConfig::default()
        };
        assert!(half.check().expect_err("no key").contains("together"));
        let pin = TlsConfig {
            pin_sha256: vec!["abc".into()],
            ..TlsConfig::default()
        };
        assert!(pin.check().expect_err("not hex").contains("pin_sha256"));
        let good = TlsConfig {
            pin_sha256: vec!["ab".repeat(32)],
            ..TlsConfig::default()
        };
        assert!(good.check().is_ok());
        let keyless = TlsConfig {
            auth: DeviceAuth::Certificate,
            ..TlsConfig::default()
        };
        let error = keyless.check().expect_err("no certificate");
        assert!(error.contains("auth = \"certificate\""), "{error}");
    }

    /// A CA, and a certificate it issued with its key.
    struct Issued {
        ca: rcgen::Certificate,
        ca_key: rcgen::KeyPair,
    }

    impl Issued {
        fn ca(name: &str) -> Self {
            let ca_key = rcgen::KeyPair::generate().expect("CA key");
            let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let ca = params.self_signed(&ca_key).expect("CA certificate");
            Self { ca, ca_key }
        }

        /// A leaf for `names`: its PEM certificate and key.
        fn leaf(&self, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
            let key = rcgen::KeyPair::generate().expect("leaf key");
            let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
            let params = rcgen::CertificateParams::new(names).expect("params");
            let cert = params
                .signed_by(&key, &self.ca, &self.ca_key)
                .expect("leaf certificate");
            (cert, key)
        }
    }

    fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    }

    /// A TLS server on a loopback port answering `ok` to each request,
    /// with the certificate `leaf`; with `client_ca`, it requires client
    /// certificates issued by that CA.
    fn server(
        leaf: &(rcgen::Certificate, rcgen::KeyPair),
        client_ca: Option<&rcgen::Certificate>,
    ) -> String {
        use std::io::{Read as _, Write as _};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.der().clone()).expect("client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let key = PrivateKeyDer::try_from(leaf.1.serialize_der()).expect("key");
        let config = Arc::new(
            builder
                .with_single_cert(vec![leaf.0.der().clone()], key)
                .expect("server certificate"),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("https://{}/", listener.local_addr().expect("address"));
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let Ok(connection) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tls = rustls::StreamOwned::new(connection, tcp);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && tls.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        url
    }

    fn get(tls: &TlsConfig, url: &str) -> Result<String, String> {
        let mut builder = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(10));
        if let Some(config) = tls.client_config()? {
            builder = builder.tls_config(config.rustls);
        }
        builder
            .build()
            .get(url)
            .call()
            .map_err(|e| e.to_string())?
            .into_string()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_private_ca_is_trusted_instead_of_the_public_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = Issued::ca("Fleet CA");
        let url = server(&fleet.leaf(&["127.0.0.1"]), None);
        let trusting = TlsConfig {
            ca_file: Some(write(dir.path(), "ca.pem", &fleet.ca.pem())),
            ..TlsConfig::default()
        };
        assert_eq!(get(&trusting, &url).as_deref(), Ok("ok"));
        let public_roots = get(&TlsConfig::default(), &url).expect_err("not a public CA");
        assert!(
            public_roots.to_lowercase().contains("certificate"),
            "{public_roots}"
        );
        let other = Issued::ca("Another CA");
        let wrong_ca = TlsConfig {
            ca_file: Some(write(dir.path(), "other.pem", &other.ca.pem())),
            ..TlsConfig::default()
        };
        assert!(get(&wrong_ca, &url).is_err());
    }

    #[test]
    fn pinning_refuses_a_server_with_another_key_even_from_the_trusted_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = Issued::ca("Fleet CA");
        let leaf = fleet.leaf(&["127.0.0.1"]);
        let pin = Sha256Digest::of(&leaf.1.public_key_der()).to_string();
        let url = server(&leaf, None);
        let ca_file = Some(write(dir.path(), "ca.pem", &fleet.ca.pem()));
        let pinned = TlsConfig {
            ca_file: ca_file.clone(),
            pin_sha256: vec!["00".repeat(32), pin],
            ..TlsConfig::default()
        };
        assert_eq!(get(&pinned, &url).as_deref(), Ok("ok"), "one pin matches");

        // Same name, same CA, another key: what a mis-issued certificate is.
        let impostor = server(&fleet.leaf(&["127.0.0.1"]), None);
        let error = get(&pinned, &impostor).expect_err("another key");
        assert!(error.contains("pinned"), "{error}");
    }

    #[test]
    fn a_client_certificate_is_presented_and_one_from_another_ca_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = Issued::ca("Fleet CA");
        let devices = Issued::ca("Device CA");
        let url = server(&fleet.leaf(&["127.0.0.1"]), Some(&devices.ca));
        let ca_file = Some(write(dir.path(), "ca.pem", &fleet.ca.pem()));
        let identity = |issuer: &Issued, name: &str| {
            let (cert, key) = issuer.leaf(&["device-1"]);
            TlsConfig {
                ca_file: ca_file.clone(),
                client_cert: Some(write(dir.path(), &format!("{name}.pem"), &cert.pem())),
                client_key: Some(write(
                    dir.path(),
                    &format!("{name}.key"),
                    &key.serialize_pem(),
                )),
                ..TlsConfig::default()
            }
        };
        assert_eq!(get(&identity(&devices, "good"), &url).as_deref(), Ok("ok"));
        let stranger = Issued::ca("Stranger CA");
        assert!(
            get(&identity(&stranger, "stranger"), &url).is_err(),
            "refused at the TLS layer"
        );
        let anonymous = TlsConfig {
            ca_file: ca_file.clone(),
            ..TlsConfig::default()
        };
        assert!(
            get(&anonymous, &url).is_err(),
            "no certificate, no connection"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let missing = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsConfig::default()
        };
        let error = missing.client_config().expect_err("missing");
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }
}
