//! Configuration in two stages: raw values ([`Args`], each setting written
//! once) from defaults → TOML file → `AIRLIFT_*` environment → flags, layered
//! by clap and figment; then a validated [`Config`]. A new setting is a field
//! of `Args` and a line where `Config` reads it. Loading has no side
//! effects; secrets never show in `Debug`.

use crate::blobs::offload::{parse_url_expiry, BaseUrl, OffloadConfig};
use crate::blobs::s3::{S3Config, S3Settings};
use crate::blobs::BlobBackend;
use crate::listen::ConnectionLimits;
use airlift_protocol::push::{MqttBroker, DEFAULT_TOPIC_PREFIX};
use airlift_store::DatabaseUrl;
use clap::Parser;
use figment::providers::Format;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The update server for Airlift fleets: every setting, once. Flags and
/// the environment fill it through clap; a TOML file with the same keys
/// fills it through serde, and figment layers the two.
#[derive(Debug, Default, Parser, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[command(
    name = "airlift-server",
    version,
    about = "The Airlift update server: stores signed packages, admits devices, runs deployments.",
    after_help = "Examples:
  airlift-server --trust keys/airlift-signing.pub
  airlift-server --trust keys/release.pub --listen 0.0.0.0:8443 \\
      --tls-cert cert.pem --tls-key key.pem
  airlift-server --database-url postgres://airlift@db/airlift \\
      --data-dir /var/lib/airlift
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... airlift-server \\
      --trust keys/release.pub --blob-url s3://airlift-packages/fleet
  airlift-server --trust keys/release.pub --blob-url s3://airlift-packages/fleet \\
      --blob-url-expiry 30m --download-base-url https://cdn.example.com

With no flags: SQLite and package blobs under ./airlift-data — relative to
the directory the server is started in — on http://127.0.0.1:8080.

On its first start the server prints an admin API token once. Lost it? Start
the server with AIRLIFT_ADMIN_TOKEN set to a new secret; it is installed as
an admin token, and with it you can revoke the old one:
  AIRLIFT_ADMIN_TOKEN=alt_$(openssl rand -hex 32) airlift-server ...
(docs/operations.md, \"The admin token\").

Every flag can also come from the environment (AIRLIFT_LISTEN,
AIRLIFT_DATA_DIR, ...) or a TOML file (--config); flags win over the
environment, which wins over the file."
)]
pub struct Args {
    /// The online timestamp key (PKCS#8 PEM private key, `airlift key
    /// generate`) named in the trust root's timestamp role: every offer
    /// gets a timestamp signed with it. Without it offers carry none, which
    /// devices with a trust_root refuse.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_TIMESTAMP_KEY", value_name = "FILE")]
    pub timestamp_key: Option<PathBuf>,
    /// How long a timestamp stays valid: a device cut off longer stays on
    /// its version, and a replayed offer is refused after it (1s–30d)
    /// [default: 1d].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_TIMESTAMP_EXPIRY", value_name = "DURATION")]
    pub timestamp_expiry: Option<String>,
    /// TOML configuration file; its keys are the long flag names with '_' (data_dir, listen, trust, …).
    #[serde(skip)]
    #[arg(long, env = "AIRLIFT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database and the package blobs [default: ./airlift-data, relative to where the server starts].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address and port to listen on [default: 127.0.0.1:8080].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Database URL: sqlite://PATH or postgres://… [default: SQLite in the data directory].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Public key file (PEM) of a trusted package signer; repeat for several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[arg(long = "trust", env = "AIRLIFT_TRUST", value_delimiter = ',')]
    pub trust: Vec<PathBuf>,
    /// How many trusted signatures a package needs [default: 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_TRUST_THRESHOLD")]
    pub trust_threshold: Option<usize>,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Fleet CA certificates (PEM) that issue device certificates: the
    /// listener asks every client for a certificate and refuses one this
    /// CA did not issue; needs --tls-cert (docs/mtls.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(
        long,
        env = "AIRLIFT_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub client_ca: Option<PathBuf>,
    /// How devices authenticate: key (signed with their Ed25519 key),
    /// certificate (their TLS client certificate) or either
    /// [default: either with --client-ca, else key].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_DEVICE_AUTH")]
    pub device_auth: Option<mtls::DeviceAuth>,
    /// Seconds between device check-ins, told to devices [default: 60].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_POLL_INTERVAL")]
    pub poll_interval: Option<u64>,
    /// Lifetime of a device token in seconds [default: 3600].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_DEVICE_TOKEN_TTL")]
    pub device_token_ttl: Option<u64>,
    /// Largest package accepted for upload, in MiB [default: 16384].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_MAX_PACKAGE_MIB")]
    pub max_package_mib: Option<u64>,
    /// Log format: text or json [default: text].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// MQTT broker to publish "check in now" nudges to: mqtt://[user[:password]@]host[:port].
    /// Devices subscribed to <prefix>/devices/<id>/check-in hear them. Off unless given.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// MQTT topic prefix [default: airlift].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_MQTT_TOPIC_PREFIX")]
    pub mqtt_topic_prefix: Option<String>,
    /// With mqtts://: CA certificates (PEM) trusted for the broker instead
    /// of the public roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_MQTT_CA_FILE", value_name = "FILE")]
    pub mqtt_ca_file: Option<PathBuf>,
    /// With mqtts://: certificate chain (PEM) presented to the broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_MQTT_CLIENT_CERT", value_name = "FILE")]
    pub mqtt_client_cert: Option<PathBuf>,
    /// With mqtts://: PKCS#8 private key (PEM) of --mqtt-client-cert.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_MQTT_CLIENT_KEY", value_name = "FILE")]
    pub mqtt_client_key: Option<PathBuf>,
    /// Most client connections open at once; one more is closed at once
    /// [default: the open-file limit less 256, at most 10000].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most device requests (authentication, check-ins, reports) served at
    /// once; one more is answered 503 with Retry-After at once, so an
    /// overloaded instance sheds load instead of queueing until every
    /// request times out [default: 128].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_MAX_DEVICE_REQUESTS")]
    pub max_device_requests: Option<usize>,
    /// Seconds a connection may take to send a request head, and may stay
    /// idle between requests; also bounds a TLS handshake [default: 30].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Seconds a request body (an upload) may send nothing [default: 30].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_BODY_TIMEOUT")]
    pub body_timeout: Option<u64>,
    /// Seconds a write to a client (a download, a push stream) may make no
    /// progress before the connection is closed [default: 60].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_WRITE_TIMEOUT")]
    pub write_timeout: Option<u64>,
    /// Seconds one database statement may run before PostgreSQL cancels it [default: 30].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_DATABASE_STATEMENT_TIMEOUT")]
    pub database_statement_timeout: Option<u64>,
    /// Connections this instance keeps to PostgreSQL, at most; every
    /// instance's count adds up against the database's `max_connections`
    /// [default: 10].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// Authentications of unknown devices (first contact) one source address
    /// may make per minute; 0 turns the limit off [default: 60].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_FIRST_CONTACT_PER_MINUTE")]
    pub first_contact_per_minute: Option<u32>,
    /// Most devices waiting in the admission queue (pending); first contact
    /// of another is refused with 429 until some are accepted or rejected
    /// [default: 10000].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_MAX_PENDING_DEVICES")]
    pub max_pending_devices: Option<u64>,
    /// Most devices kept in memory for check-ins (about 110 bytes each; one
    /// whose tags take more counts as several records of 256 bytes); the
    /// least used are read from the database again [default: 100000].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_DEVICE_CACHE_CAPACITY")]
    pub device_cache_capacity: Option<usize>,
    /// Largest device shadow document (desired or reported, as compact
    /// JSON) accepted, in KiB; 1–192 [default: 64].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(
        long,
        env = "AIRLIFT_SHADOW_MAX_DOCUMENT_KIB",
        value_name = "KIB",
        help_heading = "Device shadows"
    )]
    pub shadow_max_document_kib: Option<u64>,
    /// Most top-level keys of a shadow document; 1–10000 [default: 256].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(
        long,
        env = "AIRLIFT_SHADOW_MAX_KEYS",
        value_name = "N",
        help_heading = "Device shadows"
    )]
    pub shadow_max_keys: Option<u64>,
    /// Most group desired documents (tags and attribute filters); every
    /// instance keeps them all in memory; 1–100000 [default: 1000].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(
        long,
        env = "AIRLIFT_SHADOW_MAX_GROUPS",
        value_name = "N",
        help_heading = "Device shadows"
    )]
    pub shadow_max_groups: Option<u64>,
    /// Memory for devices' shadow documents kept for check-ins, in MiB; the
    /// least used are read from the database again; 1–65536 [default: 64].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(
        long,
        env = "AIRLIFT_SHADOW_CACHE_MIB",
        value_name = "MIB",
        help_heading = "Device shadows"
    )]
    pub shadow_cache_mib: Option<u64>,
    /// Where package files are kept: s3://BUCKET[/PREFIX] for an S3-compatible
    /// object store [default: DATA_DIR/blobs on local disk].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_BLOB_URL", help_heading = "Blob storage")]
    pub blob_url: Option<String>,
    /// S3 endpoint for a store other than AWS (MinIO, Ceph, s3s-fs, …):
    /// http(s)://HOST[:PORT] [default: AWS's endpoint for the region].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AWS_ENDPOINT_URL", help_heading = "Blob storage")]
    pub blob_endpoint: Option<String>,
    /// S3 region [default: us-east-1].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AWS_REGION", help_heading = "Blob storage")]
    pub blob_region: Option<String>,
    /// Name the bucket in the path (http://HOST/BUCKET/KEY) rather than in
    /// the host name (http://BUCKET.HOST/KEY), as most S3-compatible stores
    /// other than AWS need [default: false].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AIRLIFT_BLOB_PATH_STYLE", num_args = 0..=1, default_missing_value = "true", help_heading = "Blob storage")]
    pub blob_path_style: Option<bool>,
    /// S3 access key id; with the secret key [default: the instance's role,
    /// from the metadata service].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, env = "AWS_ACCESS_KEY_ID", help_heading = "Blob storage")]
    pub blob_access_key_id: Option<String>,
    /// S3 secret access key; never logged. Prefer the environment variable
    /// to the flag, which other users can see in the process list.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        help_heading = "Blob storage"
    )]
    pub blob_secret_access_key: Option<Secret>,
    /// S3 session token, for temporary credentials; never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(
        long,
        env = "AWS_SESSION_TOKEN",
        hide_env_values = true,
        help_heading = "Blob storage"
    )]
    pub blob_session_token: Option<Secret>,
    /// With S3: `on` answers a device's download with a redirect (307) to a
    /// presigned URL of the package's object, so the store serves the bytes;
    /// `off` streams them through the server. Local disk has no offload
    /// [default: on with S3].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(
        long,
        env = "AIRLIFT_BLOB_OFFLOAD",
        value_name = "on|off",
        help_heading = "Blob storage"
    )]
    pub blob_offload: Option<OnOff>,
    /// How long a presigned download URL stays valid: seconds, or with a
    /// unit (90s, 15m, 2h, 7d); 1 second to 7 days [default: 15m].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(
        long,
        env = "AIRLIFT_BLOB_URL_EXPIRY",
        value_name = "DURATION",
        help_heading = "Blob storage"
    )]
    pub blob_url_expiry: Option<String>,
    /// A CDN in front of the bucket, e.g. https://cdn.example.com[/PREFIX]:
    /// presigned URLs get its scheme, host and port (and prefix) and keep
    /// their path and query; the CDN must forward both to the bucket with
    /// the bucket's Host (docs/operations.md) [default: the store's URL].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(
        long,
        env = "AIRLIFT_DOWNLOAD_BASE_URL",
        value_name = "URL",
        help_heading = "Blob storage"
    )]
    pub download_base_url: Option<String>,
}

/// A switch set by `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OnOff {
    On,
    Off,
}

/// A secret setting (a key, a password): `Debug` shows `<redacted>`; only
/// [`Secret::expose`] gives the value, to the one place that needs it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self(value.to_owned()))
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Validated configuration.
#[derive(Clone)]
pub struct Config {
    /// Where the SQLite file and blobs live.
    pub data_dir: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Which database.
    pub database: DatabaseUrl,
    /// Trusted signer key files.
    pub trust: Vec<PathBuf>,
    /// Signatures needed.
    pub trust_threshold: usize,
    /// HTTPS certificate and key, if serving TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Told to devices.
    pub poll_interval: Duration,
    /// Device token lifetime.
    pub device_token_ttl: Duration,
    /// Upload limit in bytes.
    pub max_package_bytes: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// `AIRLIFT_ADMIN_TOKEN`, if set: the admin token to install.
    pub admin_token: Option<String>,
    /// The MQTT broker nudges go to, and the topic prefix, if configured.
    pub mqtt: Option<(MqttBroker, String)>,
    /// Bounds on client connections.
    pub connections: ConnectionLimits,
    /// Longest a database statement may run (PostgreSQL).
    pub statement_timeout: Duration,
    /// Connections in the PostgreSQL pool.
    pub database_max_connections: u32,
    /// Bounds on devices making first contact.
    pub admission: AdmissionLimits,
    /// How much the check-in caches hold.
    pub cache_limits: crate::cache::CacheLimits,
    /// Where package files are kept.
    pub blobs: BlobBackend,
    /// The online key that signs offers' timestamps (`docs/trust.md`).
    pub timestamps: Option<trust::TimestampSigner>,
    /// The fleet CA for client certificates, and how devices authenticate.
    pub client_auth: mtls::ClientAuth,
    /// How the MQTT connection to an `mqtts://` broker trusts and presents.
    pub mqtt_tls: Option<crate::push::mqtt::MqttClientTls>,
    /// Bounds on device shadow documents, and their cache.
    pub shadow: shadow::ShadowSettings,
}

/// Bounds on devices the server does not know yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// First contacts per source address per minute; `None`: unlimited.
    pub first_contact_per_minute: Option<std::num::NonZeroU32>,
    /// Most pending devices.
    pub max_pending_devices: u64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("database", &self.database)
            .field("trust", &self.trust)
            .field("trust_threshold", &self.trust_threshold)
            .field("tls", &self.tls.is_some())
            .field("poll_interval", &self.poll_interval)
            .field("device_token_ttl", &self.device_token_ttl)
            .field("max_package_bytes", &self.max_package_bytes)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("mqtt", &self.mqtt)
            .field("connections", &self.connections)
            .field("statement_timeout", &self.statement_timeout)
            .field("database_max_connections", &self.database_max_connections)
            .field("admission", &self.admission)
            .field("blobs", &self.blobs)
            .field("shadow", &self.shadow)
            .finish()
    }
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML for this server.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Merges the file under the environment and flags (which clap has
    /// merged already) over the defaults, then validates.
    pub fn from_args(args: Args, admin_token: Option<String>) -> Result<Self, ConfigError> {
        let raw = layered(args)?;
        let data_dir = raw
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("airlift-data"));
        let database = match &raw.database_url {
            Some(url) => {
                DatabaseUrl::parse(url).map_err(|e| ConfigError::Invalid(e.to_string()))?
            }
            None => DatabaseUrl::Sqlite(data_dir.join("airlift.db")),
        };
        let trust_threshold = raw.trust_threshold.unwrap_or(1);
        if !raw.trust.is_empty() && (trust_threshold == 0 || trust_threshold > raw.trust.len()) {
            return Err(ConfigError::Invalid(format!(
                "trust_threshold {trust_threshold} must be between 1 and the number of trusted keys ({})",
                raw.trust.len()
            )));
        }
        let device_token_ttl = raw.device_token_ttl.unwrap_or(3600);
        if !(60..=7 * 24 * 3600).contains(&device_token_ttl) {
            return Err(ConfigError::Invalid(
                "device_token_ttl must be between 60 seconds and 7 days".into(),
            ));
        }
        Ok(Self {
            listen: raw
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            database,
            trust_threshold,
            tls: tls(&raw)?,
            poll_interval: seconds("poll_interval", raw.poll_interval, 60)?,
            device_token_ttl: Duration::from_secs(device_token_ttl),
            max_package_bytes: raw
                .max_package_mib
                .unwrap_or(16 * 1024)
                .saturating_mul(1024 * 1024),
            log_format: raw.log_format.unwrap_or(LogFormat::Text),
            admin_token: admin_token.filter(|t| !t.is_empty()),
            mqtt: mqtt(&raw)?,
            connections: connections(&raw)?,
            statement_timeout: seconds(
                "database_statement_timeout",
                raw.database_statement_timeout,
                airlift_store::OpenOptions::default()
                    .statement_timeout
                    .as_secs(),
            )?,
            database_max_connections: database_max_connections(raw.database_max_connections)?,
            admission: AdmissionLimits {
                first_contact_per_minute: std::num::NonZeroU32::new(
                    raw.first_contact_per_minute.unwrap_or(60),
                ),
                max_pending_devices: raw.max_pending_devices.unwrap_or(10_000),
            },
            cache_limits: cache_limits(raw.device_cache_capacity)?,
            client_auth: mtls::client_auth(
                raw.client_ca.as_deref(),
                raw.device_auth,
                raw.tls_cert.is_some(),
            )?,
            mqtt_tls: mtls::mqtt_tls(
                mqtt(&raw)?.map(|(broker, _)| broker.tls),
                raw.mqtt_ca_file.as_deref(),
                raw.mqtt_client_cert.as_deref(),
                raw.mqtt_client_key.as_deref(),
            )?,
            shadow: shadow::validate(shadow::RawShadow {
                max_document_kib: raw.shadow_max_document_kib,
                max_keys: raw.shadow_max_keys,
                max_groups: raw.shadow_max_groups,
                cache_mib: raw.shadow_cache_mib,
            })?,
            blobs: blobs(&raw, &data_dir)?,
            timestamps: trust::validate(
                raw.timestamp_key.as_deref(),
                raw.timestamp_expiry.as_deref(),
            )?,
            trust: raw.trust,
            data_dir,
        })
    }
}

/// The file's settings under the flags' and the environment's.
fn layered(args: Args) -> Result<Args, ConfigError> {
    let Some(path) = args.config.clone() else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let mut raw: Args = figment::Figment::from(figment::providers::Toml::string(&text))
        .merge(figment::providers::Serialized::defaults(&args))
        .extract()
        .map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
    raw.config = Some(path);
    Ok(raw)
}

/// A whole number of seconds, at least one.
fn seconds(name: &str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError::Invalid(format!(
            "{name} must be at least 1 second"
        ))),
        secs => Ok(Duration::from_secs(secs)),
    }
}

/// PostgreSQL's own default `max_connections` is 100, shared by every
/// instance: more than that in one pool is a typo.
const MAX_DATABASE_CONNECTIONS: u32 = 1000;

fn database_max_connections(value: Option<u32>) -> Result<u32, ConfigError> {
    match value.unwrap_or(airlift_store::OpenOptions::default().max_connections) {
        n @ 1..=MAX_DATABASE_CONNECTIONS => Ok(n),
        n => Err(ConfigError::Invalid(format!(
            "database_max_connections must be 1 to {MAX_DATABASE_CONNECTIONS}, not {n}"
        ))),
    }
}

fn cache_limits(devices: Option<usize>) -> Result<crate::cache::CacheLimits, ConfigError> {
    let default = crate::cache::CacheLimits::default();
    match devices {
        None => Ok(default),
        Some(0) => Err(ConfigError::Invalid(
            "--device-cache-capacity must be at least 1".into(),
        )),
        Some(devices) => Ok(crate::cache::CacheLimits {
            devices,
            // Several deployments' final states per device.
            final_states: devices.saturating_mul(10),
        }),
    }
}

fn tls(raw: &Args) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    match (&raw.tls_cert, &raw.tls_key) {
        (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
        (None, None) => Ok(None),
        _ => Err(ConfigError::Invalid(
            "tls_cert and tls_key go together: give both or neither".into(),
        )),
    }
}

fn mqtt(raw: &Args) -> Result<Option<(MqttBroker, String)>, ConfigError> {
    let prefix = raw
        .mqtt_topic_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_TOPIC_PREFIX.to_owned());
    if prefix.is_empty() || prefix.contains(['+', '#']) {
        return Err(ConfigError::Invalid(format!(
            "mqtt_topic_prefix {prefix:?} must be non-empty and free of MQTT wildcards (+, #)"
        )));
    }
    let Some(url) = &raw.mqtt_url else {
        return Ok(None);
    };
    let broker = url
        .parse::<MqttBroker>()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(Some((broker, prefix)))
}

/// Local disk under the data directory, or the S3 bucket `blob_url` names
/// with the other `blob_*` settings (which local disk ignores: the AWS
/// variables may be set for other programs).
fn blobs(raw: &Args, data_dir: &std::path::Path) -> Result<BlobBackend, ConfigError> {
    let offload = offload(raw)?;
    let Some(url) = &raw.blob_url else {
        if raw.blob_offload == Some(OnOff::On) {
            return Err(ConfigError::Invalid(
                "blob_offload = on (AIRLIFT_BLOB_OFFLOAD, --blob-offload) needs package files in S3 (--blob-url s3://…): from local disk the server serves them itself".into(),
            ));
        }
        if raw.download_base_url.is_some() {
            return Err(ConfigError::Invalid(
                "download_base_url (AIRLIFT_DOWNLOAD_BASE_URL, --download-base-url) needs package files in S3 (--blob-url s3://…) with offloaded downloads".into(),
            ));
        }
        return Ok(BlobBackend::Local(data_dir.join("blobs")));
    };
    let mut s3 = S3Config::new(S3Settings {
        url,
        endpoint: raw.blob_endpoint.as_deref(),
        region: raw.blob_region.as_deref(),
        path_style: raw.blob_path_style.unwrap_or(false),
        access_key_id: raw.blob_access_key_id.as_deref(),
        secret_access_key: raw.blob_secret_access_key.as_ref(),
        session_token: raw.blob_session_token.as_ref(),
    })
    .map_err(ConfigError::Invalid)?;
    s3.offload = offload;
    Ok(BlobBackend::S3(Box::new(s3)))
}

/// How downloads from S3 are offloaded, `None` when they are not
/// (`blob_offload = off`); the expiry and base URL are checked either way.
fn offload(raw: &Args) -> Result<Option<OffloadConfig>, ConfigError> {
    let expiry = match &raw.blob_url_expiry {
        Some(text) => parse_url_expiry(text).map_err(ConfigError::Invalid)?,
        None => OffloadConfig::default().expiry,
    };
    let base_url = raw
        .download_base_url
        .as_deref()
        .map(BaseUrl::parse)
        .transpose()
        .map_err(ConfigError::Invalid)?;
    if raw.blob_offload == Some(OnOff::Off) {
        if base_url.is_some() {
            return Err(ConfigError::Invalid(
                "download_base_url (AIRLIFT_DOWNLOAD_BASE_URL, --download-base-url) needs offloaded downloads: it has no use with blob_offload = off (--blob-offload off)".into(),
            ));
        }
        return Ok(None);
    }
    Ok(Some(OffloadConfig { expiry, base_url }))
}

fn connections(raw: &Args) -> Result<ConnectionLimits, ConfigError> {
    let defaults = ConnectionLimits::defaults(crate::listen::open_file_limit());
    let max_connections = match raw.max_connections {
        Some(0) => {
            return Err(ConfigError::Invalid(
                "max_connections must be at least 1".into(),
            ))
        }
        Some(n) => n,
        None => defaults.max_connections,
    };
    let max_device_requests = match raw.max_device_requests {
        Some(0) => {
            return Err(ConfigError::Invalid(
                "max_device_requests must be at least 1".into(),
            ))
        }
        Some(n) => n,
        None => defaults.max_device_requests,
    };
    Ok(ConnectionLimits {
        max_connections,
        max_device_requests,
        idle_timeout: seconds(
            "idle_timeout",
            raw.idle_timeout,
            defaults.idle_timeout.as_secs(),
        )?,
        body_timeout: seconds(
            "body_timeout",
            raw.body_timeout,
            defaults.body_timeout.as_secs(),
        )?,
        write_timeout: seconds(
            "write_timeout",
            raw.write_timeout,
            defaults.write_timeout.as_secs(),
        )?,
    })
}

pub mod mtls;
pub mod shadow;
pub mod trust;

#[cfg(test)]
mod tests;
