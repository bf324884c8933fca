//! From a [`Config`] to a ready [`AppState`]: open the store, the blob
//! store (a directory, or an S3 bucket probed first) and the trusted keys;
//! make the device-token secret and the first admin token; sweep what
//! interrupted uploads left (files at once, S3 uploads in the background).

use crate::auth::{hash_secret, new_api_secret, random_hex};
use crate::config::Config;
use crate::state::{AppState, DeviceTokenKeys, Settings};
use airlift_package::{PublicKey, TrustSet};
use airlift_protocol::management::ApiToken;
use airlift_protocol::state::Role;
use airlift_protocol::TokenId;
use airlift_store::{ApiTokenRecord, SharedStore};
use chrono::Utc;
use std::path::PathBuf;

/// Why the server cannot start; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The data directory cannot be made.
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database cannot be opened or migrated.
    #[error("opening the database: {0}")]
    Store(#[from] airlift_store::StoreError),
    /// The blob store cannot be used: the message names the setting to fix.
    #[error("blob store: {0}")]
    Blobs(String),
    /// A trusted key file is unreadable or not a public key.
    #[error("trusted key {path}: {message}")]
    TrustKey { path: PathBuf, message: String },
    /// Something else.
    #[error("{0}")]
    Other(String),
}

/// What the operator must be told once at start.
#[derive(Debug)]
pub enum AdminToken {
    /// A new admin token was made: print it once.
    Created(String),
    /// `AIRLIFT_ADMIN_TOKEN` was installed or already present.
    FromEnvironment,
    /// Tokens exist already.
    Existing,
    /// `AIRLIFT_ADMIN_TOKEN` names a token that was revoked: it stays
    /// revoked; set a new secret to get an admin token back.
    Revoked,
}

/// Prepares everything the server needs from `config`.
pub async fn prepare(config: &Config) -> Result<(AppState, AdminToken), StartupError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartupError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let trust = load_trust(config)?;
    // Before the database: a bucket that cannot be used stops the server
    // at once, with the setting to fix.
    let blobs = crate::blobs::open(&config.blobs)
        .await
        .map_err(StartupError::Blobs)?;
    let offload = match &config.blobs {
        crate::blobs::BlobBackend::S3(s3) => crate::blobs::offload::Offload::new(s3)
            .map_err(StartupError::Blobs)?
            .map(std::sync::Arc::new),
        crate::blobs::BlobBackend::Local(_) => None,
    };
    let store = airlift_store::open_with(
        &config.database,
        airlift_store::OpenOptions {
            statement_timeout: config.statement_timeout,
            max_connections: config.database_max_connections,
        },
    )
    .await?;

    let secret = random_hex(32).map_err(|e| StartupError::Other(e.to_string()))?;
    let secret = store
        .setting_or_insert("device_token_secret", &secret)
        .await?;
    let device_keys = DeviceTokenKeys::from_secret(secret.as_bytes());
    let admin = ensure_admin_token(&store, config.admin_token.as_deref()).await?;
    let uploads = match &config.blobs {
        crate::blobs::BlobBackend::S3(s3) => Some(std::sync::Arc::new(
            crate::blobs::s3::recorded_uploads(s3, store.clone()).map_err(StartupError::Blobs)?,
        )),
        crate::blobs::BlobBackend::Local(_) => None,
    };

    // Subscribed before the first request, so no change is missed.
    let changes = store.changes();
    let push_changes = store.changes();
    // The recorder first: the broker connection reports to it at once.
    let metrics = crate::observability::prometheus();
    let mqtt = config
        .mqtt
        .as_ref()
        .map(|(broker, prefix)| {
            let client_id = format!("airlift-server-{}", random_hex(8).unwrap_or_default());
            let tls = config.mqtt_tls.clone();
            crate::push::mqtt::MqttPublisher::start(broker, prefix, &client_id, tls)
        })
        .transpose()
        .map_err(StartupError::Other)?;
    let state = AppState::new(
        store,
        blobs,
        trust,
        device_keys,
        Settings {
            offload,
            uploads: uploads.clone(),
            ..Settings::from_config(config)
        },
        metrics,
        mqtt,
    );
    tokio::spawn(crate::cache::follow_changes(changes, state.clone()));
    tokio::spawn(crate::push::follow::follow(push_changes, state.clone()));
    tokio::spawn(flush_check_ins(state.clone()));
    tokio::spawn(forget_idle_addresses(state.clone()));
    sweep_local_leftovers(config, &state).await?;
    if let Some(uploads) = uploads {
        tokio::spawn(sweep_abandoned_uploads(uploads));
    }
    tokio::spawn(
        crate::rollout::RolloutEngine::new(state.shared_store())
            .with_configured_trust(state.trust().cloned())
            .run(ROLLOUT_INTERVAL),
    );
    Ok((state, admin))
}

/// Removes staging files of the local blob store, and spool files of
/// earlier servers (on S3 an unfinished upload is a multipart upload,
/// aborted by `sweep_abandoned_uploads`; the directory is swept all the
/// same, in case the server kept its blobs there before).
async fn sweep_local_leftovers(config: &Config, state: &AppState) -> Result<(), StartupError> {
    let blob_dir = match &config.blobs {
        crate::blobs::BlobBackend::Local(dir) => dir.clone(),
        crate::blobs::BlobBackend::S3(_) => config.data_dir.join("blobs"),
    };
    let (spool_dir, swept_blobs) = (state.settings().spool_dir.clone(), blob_dir);
    let cutoff = std::time::SystemTime::now() - crate::blobs::sweep::ABANDONED_AFTER;
    let swept = tokio::task::spawn_blocking(move || {
        crate::blobs::sweep::sweep(&spool_dir, &swept_blobs, cutoff)
    })
    .await
    .map_err(|e| StartupError::Other(e.to_string()))?;
    if !swept.files.is_empty() {
        tracing::info!(
            files = swept.files.len(),
            bytes = swept.bytes,
            "removed what interrupted uploads left behind"
        );
    }
    Ok(())
}

/// Aborts abandoned S3 uploads ([`crate::blobs::sweep::abandoned_uploads`])
/// now and every [`UPLOAD_SWEEP_PERIOD`](crate::blobs::sweep::UPLOAD_SWEEP_PERIOD),
/// for the life of the process; in the background, so a slow bucket does
/// not hold the start up.
async fn sweep_abandoned_uploads(uploads: std::sync::Arc<crate::blobs::recorded::RecordedUploads>) {
    use crate::blobs::sweep::{abandoned_uploads, ABANDONED_UPLOAD_AFTER, UPLOAD_SWEEP_PERIOD};
    let age =
        chrono::TimeDelta::from_std(ABANDONED_UPLOAD_AFTER).unwrap_or(chrono::TimeDelta::days(1));
    let mut tick = tokio::time::interval(UPLOAD_SWEEP_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        abandoned_uploads(&uploads, Utc::now() - age).await;
    }
}

/// Writes queued check-in times once per [`FLUSH_PERIOD`](crate::cache::FLUSH_PERIOD),
/// for the life of the process.
/// How often the rollout engine looks at phased deployments.
pub const ROLLOUT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

async fn flush_check_ins(state: AppState) {
    let mut tick = tokio::time::interval(crate::cache::FLUSH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = state.caches().flush_check_ins(state.store()).await {
            tracing::warn!(%error, "flushing check-in times failed");
        }
    }
}

/// Forgets, every minute, the addresses whose first-contact share is full
/// again.
async fn forget_idle_addresses(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Some(limiter) = state.first_contacts() {
            limiter.forget_idle();
        }
    }
}

/// The trusted signers, or `None` when none are configured: the server then
/// runs, but refuses every upload with a message saying how to fix it.
fn load_trust(config: &Config) -> Result<Option<TrustSet>, StartupError> {
    if config.trust.is_empty() {
        tracing::warn!(
            "no trusted package signing keys (--trust): package uploads will be refused"
        );
        return Ok(None);
    }
    let mut keys = Vec::new();
    for path in &config.trust {
        let key_error = |message: String| StartupError::TrustKey {
            path: path.clone(),
            message,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
        keys.push(PublicKey::from_pem(&pem).map_err(|e| key_error(e.to_string()))?);
    }
    TrustSet::new(keys, config.trust_threshold)
        .map(Some)
        .map_err(|e| StartupError::Other(e.to_string()))
}

async fn ensure_admin_token(
    store: &SharedStore,
    from_env: Option<&str>,
) -> Result<AdminToken, StartupError> {
    let install = |secret: &str| ApiTokenRecord {
        token: ApiToken {
            id: TokenId::new(),
            name: "admin".into(),
            role: Role::Admin,
            created_at: Utc::now(),
        },
        secret_sha256: hash_secret(secret),
    };
    if let Some(secret) = from_env {
        let hash = hash_secret(secret);
        // Settings are never deleted, so this marks for good that this
        // secret was installed: once its token is gone, it was revoked,
        // and a restart with the same variable must not bring it back.
        let marker = format!("admin_token_from_environment.{}", hex::encode(hash));
        let present = store.api_token_by_hash(&hash).await?.is_some();
        let installed_before = store.setting(&marker).await?.is_some();
        if !present && installed_before {
            return Ok(AdminToken::Revoked);
        }
        if !present {
            store.insert_api_token(&install(secret)).await?;
        }
        store
            .setting_or_insert(&marker, &Utc::now().to_rfc3339())
            .await?;
        return Ok(AdminToken::FromEnvironment);
    }
    if store.count_api_tokens().await? > 0 {
        return Ok(AdminToken::Existing);
    }
    let secret = new_api_secret().map_err(|e| StartupError::Other(e.to_string()))?;
    store.insert_api_token(&install(&secret)).await?;
    Ok(AdminToken::Created(secret))
}
