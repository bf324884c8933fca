//! What every handler shares.

use crate::cache::Caches;
use crate::config::Config;
use crate::push::mqtt::MqttPublisher;
use crate::push::PushHub;
use airlift_package::TrustSet;
use airlift_store::SharedStore;
use jsonwebtoken::{DecodingKey, EncodingKey};
use metrics_exporter_prometheus::PrometheusHandle;
use object_store::ObjectStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Shared by all requests; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.inner.store)
            .field("blobs", &self.inner.blobs.to_string())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: SharedStore,
    blobs: Arc<dyn ObjectStore>,
    trust: Option<TrustSet>,
    device_keys: DeviceTokenKeys,
    settings: Settings,
    metrics: Option<PrometheusHandle>,
    caches: Caches,
    push: PushHub,
    live: crate::dashboard::live::LiveHub,
    mqtt: Option<MqttPublisher>,
    first_contacts: Option<crate::admission::FirstContactLimiter>,
    certificate_bindings: crate::device_api::certificate::CertificateBindings,
    shadows: crate::shadow_cache::ShadowCache,
}

/// The tunables handlers need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Told to devices at check-in.
    pub poll_interval: Duration,
    /// Device token lifetime.
    pub device_token_ttl: Duration,
    /// Upload limit.
    pub max_package_bytes: u64,
    /// Where earlier servers spooled uploads: swept of their leftovers at
    /// start (uploads now stream into the blob store).
    pub spool_dir: PathBuf,
    /// Bounds on client connections.
    pub connections: crate::listen::ConnectionLimits,
    /// Bounds on devices making first contact.
    pub admission: crate::config::AdmissionLimits,
    /// Whether the dashboard's session cookie is `Secure` (served over TLS).
    pub secure_cookies: bool,
    /// How much the check-in caches hold.
    pub cache_limits: crate::cache::CacheLimits,
    /// Signs the presigned URLs device downloads are redirected to, when
    /// they are offloaded to S3; set by `startup::prepare`, which makes
    /// the store's clients.
    pub offload: Option<Arc<crate::blobs::offload::Offload>>,
    /// With S3, multipart uploads recorded in the store while they run, so
    /// that abandoned ones are aborted; set by `startup::prepare`. `None`:
    /// object_store's own multipart upload (local disk).
    pub uploads: Option<Arc<crate::blobs::recorded::RecordedUploads>>,
    /// Bounds on device shadow documents.
    pub shadow: airlift_store::ShadowLimits,
    /// Bytes of device shadow documents kept for check-ins.
    pub shadow_cache_bytes: u64,
    /// Signs offers' timestamps, if the server has an online key.
    pub timestamps: Option<crate::config::trust::TimestampSigner>,
    /// How devices authenticate (`docs/mtls.md`).
    pub device_auth: crate::config::mtls::DeviceAuth,
}

impl Settings {
    /// The settings a [`Config`] implies.
    pub fn from_config(config: &Config) -> Self {
        Self {
            poll_interval: config.poll_interval,
            device_token_ttl: config.device_token_ttl,
            max_package_bytes: config.max_package_bytes,
            spool_dir: config.data_dir.join("spool"),
            connections: config.connections,
            admission: config.admission,
            secure_cookies: config.tls.is_some(),
            cache_limits: config.cache_limits,
            offload: None,
            uploads: None,
            shadow: config.shadow.limits,
            shadow_cache_bytes: config.shadow.cache_bytes,
            timestamps: config.timestamps.clone(),
            device_auth: config.client_auth.device_auth,
        }
    }
}

/// HMAC keys for device tokens, from a secret shared by all instances
/// through the store. `Debug` shows nothing of them.
#[derive(Clone)]
pub struct DeviceTokenKeys {
    /// Signs tokens.
    pub encoding: EncodingKey,
    /// Checks tokens.
    pub decoding: DecodingKey,
    /// Tokens that passed the check.
    pub verified: std::sync::Arc<crate::auth::VerifiedTokens>,
}

impl std::fmt::Debug for DeviceTokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceTokenKeys(<redacted>)")
    }
}

impl DeviceTokenKeys {
    /// Keys from the shared secret.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            verified: std::sync::Arc::default(),
        }
    }
}

impl AppState {
    /// Bundles the parts.
    pub fn new(
        store: SharedStore,
        blobs: Arc<dyn ObjectStore>,
        trust: Option<TrustSet>,
        device_keys: DeviceTokenKeys,
        settings: Settings,
        metrics: Option<PrometheusHandle>,
        mqtt: Option<MqttPublisher>,
    ) -> Self {
        let caches = Caches::new(settings.cache_limits);
        let shadows = crate::shadow_cache::ShadowCache::new(settings.shadow_cache_bytes);
        let first_contacts = settings
            .admission
            .first_contact_per_minute
            .map(crate::admission::FirstContactLimiter::new);
        Self {
            inner: Arc::new(Inner {
                first_contacts,
                store,
                blobs,
                trust,
                device_keys,
                settings,
                metrics,
                caches,
                push: PushHub::default(),
                live: Default::default(),
                mqtt,
                shadows,
                certificate_bindings: Default::default(),
            }),
        }
    }

    pub fn store(&self) -> &dyn airlift_store::Store {
        self.inner.store.as_ref()
    }

    /// The database, shared (for background tasks).
    pub fn shared_store(&self) -> SharedStore {
        self.inner.store.clone()
    }

    /// The blob store holding package files.
    pub fn blobs(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.blobs
    }

    /// Keys trusted to sign packages, if any are configured.
    pub fn trust(&self) -> Option<&TrustSet> {
        self.inner.trust.as_ref()
    }

    /// Device token keys.
    pub fn device_keys(&self) -> &DeviceTokenKeys {
        &self.inner.device_keys
    }

    /// Tunables.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Read caches for hot paths.
    pub fn caches(&self) -> &Caches {
        &self.inner.caches
    }

    /// Shadow documents kept for check-ins, following the store's feed.
    pub fn shadows(&self) -> &crate::shadow_cache::ShadowCache {
        let shadows = &self.inner.shadows;
        shadows.follow(|| self.inner.store.changes());
        shadows
    }

    /// The devices connected to this instance's push stream.
    pub fn push(&self) -> &PushHub {
        &self.inner.push
    }

    /// The dashboard's live topics.
    pub fn live(&self) -> &crate::dashboard::live::LiveHub {
        &self.inner.live
    }

    /// The rate limit on first contacts, unless it is off.
    pub fn first_contacts(&self) -> Option<&crate::admission::FirstContactLimiter> {
        self.inner.first_contacts.as_ref()
    }

    /// Which certificate key each device is bound to (`docs/mtls.md`).
    pub fn certificate_bindings(&self) -> &crate::device_api::certificate::CertificateBindings {
        &self.inner.certificate_bindings
    }

    /// The MQTT broker nudges are published to, if one is configured.
    pub fn mqtt(&self) -> Option<&MqttPublisher> {
        self.inner.mqtt.as_ref()
    }

    /// The Prometheus renderer, if metrics are on.
    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.inner.metrics.as_ref()
    }
}
