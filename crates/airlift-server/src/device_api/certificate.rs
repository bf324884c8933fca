//! Devices that authenticate with a TLS client certificate from the fleet
//! CA (`--client-ca`, `--device-auth`; `docs/mtls.md`).
//!
//! **Which device a certificate is.** A device is the key its certificate
//! carries, named by the SHA-256 of the certificate's SubjectPublicKeyInfo
//! — not by the subject's common name. The TLS handshake proves the peer
//! holds that key, so no certificate can act as a device whose key it does
//! not carry, even one the CA mis-issued with another device's name; a
//! certificate re-issued for the same key (renewal) stays the same device;
//! and a replaced device with a new key is a new device, admitted afresh,
//! instead of inheriting the old one's record by its name. The common name
//! is kept, for people, as the identity attribute `certificate_cn`.
//!
//! **Admission.** A certificate never seen before registers a pending
//! device on its first `POST /auth/certificate` (within the same
//! first-contact limits as keys); from then on the same pending, accepted,
//! rejected rules hold: an accepted device gets a token, a rejected one 403.
//!
//! **Binding.** The token a certificate device gets is honoured only on a
//! connection presenting that device's certificate, and a certificate bound
//! to one device never carries another device's token ([`check_binding`],
//! run by every device route's authentication): a stolen token is useless
//! without the key, and one device's certificate cannot report for
//! another.

use super::peer::PeerCertificate;
use crate::auth::issue_device_token;
use crate::config::mtls::DeviceAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::refuse_nul_in_json;
use crate::state::AppState;
use airlift_package::Sha256Digest;
use airlift_protocol::device::{AuthResponse, CertificateAuthRequest};
use airlift_protocol::management::Device;
use airlift_protocol::state::DeviceStatus;
use airlift_protocol::DeviceId;
use airlift_store::{CertificateRegistration, StoreError};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The identity attribute that carries the certificate's common name.
pub const CERTIFICATE_CN: &str = "certificate_cn";

/// Authenticate a device by the TLS client certificate its connection
/// presented: a token (accepted), `pending` (202) or `rejected` (403).
#[utoipa::path(
    post,
    path = "/api/device/v1/auth/certificate",
    tag = "device",
    security(("device_certificate" = [])),
    request_body(content = CertificateAuthRequest, description = "What the device tells people about itself; the certificate is the credential"),
    responses(
        (status = 200, description = "Accepted: a token, honoured only on connections presenting this certificate", body = AuthResponse),
        (status = 202, description = "Pending an operator's decision", body = AuthResponse),
        (status = 400, description = "A body that is not a CertificateAuthRequest in JSON, an empty or oversized identity, a NUL character", body = airlift_protocol::ErrorBody),
        (status = 401, description = "The connection presented no client certificate, the server does not take certificates from devices (--device-auth), or the certificate's key is a key-authenticated device's", body = airlift_protocol::ErrorBody),
        (status = 403, description = "Rejected or decommissioned", body = AuthResponse),
        (status = 413, description = "The body is over 64 KiB", body = airlift_protocol::ErrorBody),
        (status = 429, description = "A certificate never seen before, while its address has made too many first contacts lately or the admission queue is full", body = airlift_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
pub async fn authenticate_certificate(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    certificate: Option<Extension<Arc<PeerCertificate>>>,
    body: Bytes,
) -> ApiResult<Response> {
    if !state.settings().device_auth.allows_certificate() {
        return Err(ApiError::Unauthorized(
            "this server does not authenticate devices by certificate; sign /auth with the device key, or start the server with --client-ca".into(),
        ));
    }
    let Some(Extension(certificate)) = certificate else {
        return Err(ApiError::Unauthorized(
            "no client certificate on this connection: present the device certificate the fleet CA issued ([tls] client_cert and client_key)".into(),
        ));
    };
    let request: CertificateAuthRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("auth request is not valid: {e}")))?;
    super::validate_identity(&request.identity)?;
    refuse_nul_in_json(&body)?;
    let key = certificate.spki_sha256.to_string();
    let device_id = match state.store().certificate_by_key(&key).await? {
        Some(bound) => bound.device_id,
        None => {
            let peer = peer.map(|Extension(ConnectInfo(peer))| peer.ip());
            super::authenticate::admit_newcomer(&state, peer).await?;
            match register(&state, &certificate, request.identity).await? {
                Registered::Registered(id) => return Ok(pending(id)),
                Registered::AlreadyBound(id) => id,
            }
        }
    };
    let Some(device) = state.store().device(device_id).await? else {
        return Err(ApiError::Unauthorized(
            "the device was removed while it authenticated; try again".into(),
        ));
    };
    metrics::counter!("airlift_device_auth_total", "result" => device.status.as_str()).increment(1);
    answer(&state, device.id, device.status)
}

/// Stores a pending device bound to `certificate`, with the common name
/// added to what it says about itself.
async fn register(
    state: &AppState,
    certificate: &PeerCertificate,
    mut identity: BTreeMap<String, String>,
) -> ApiResult<Registered> {
    if !certificate.subject_cn.is_empty() {
        identity.insert(CERTIFICATE_CN.to_owned(), certificate.subject_cn.clone());
    }
    super::validate_identity(&identity)?;
    let device = Device {
        id: DeviceId::new(),
        status: DeviceStatus::Pending,
        identity,
        public_key: certificate.public_key_pem(),
        tags: Vec::new(),
        device_type: None,
        hardware_revision: None,
        installed: BTreeMap::new(),
        security_version: 0,
        attributes: BTreeMap::new(),
        created_at: Utc::now(),
        last_check_in: None,
    };
    let key = certificate.spki_sha256.to_string();
    let outcome = state
        .store()
        .insert_certificate_device(&device, &key, &certificate.subject_cn)
        .await;
    match outcome {
        Ok(CertificateRegistration::Registered) => {
            tracing::info!(device_id = %device.id, certificate_cn = %certificate.subject_cn, "new certificate device is pending acceptance");
            metrics::counter!("airlift_device_auth_total", "result" => "pending").increment(1);
            Ok(Registered::Registered(device.id))
        }
        Ok(CertificateRegistration::AlreadyBound(id)) => Ok(Registered::AlreadyBound(id)),
        Err(StoreError::Conflict(_)) => Err(ApiError::Unauthorized(
            "this certificate's key is already the key of a device that authenticates by signature; authenticate with /auth, or issue the certificate for another key".into(),
        )),
        Err(other) => Err(other.into()),
    }
}

/// What [`register`] did.
enum Registered {
    Registered(DeviceId),
    AlreadyBound(DeviceId),
}

/// The answer for a device in `status`.
fn answer(state: &AppState, device_id: DeviceId, status: DeviceStatus) -> ApiResult<Response> {
    Ok(match status {
        DeviceStatus::Accepted => Json(AuthResponse::Accepted {
            device_id,
            token: issue_device_token(state, device_id)?,
            expires_in_secs: state.settings().device_token_ttl.as_secs(),
        })
        .into_response(),
        DeviceStatus::Pending | DeviceStatus::Preauthorized => pending(device_id),
        DeviceStatus::Rejected | DeviceStatus::Decommissioned => (
            StatusCode::FORBIDDEN,
            Json(AuthResponse::Rejected { device_id }),
        )
            .into_response(),
    })
}

fn pending(device_id: DeviceId) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(AuthResponse::Pending { device_id }),
    )
        .into_response()
}

/// Refuses a device request whose token and connection do not go
/// together: a certificate device's token without its certificate, a
/// certificate bound to another device, or a key device's token where
/// devices must authenticate by certificate. Called by the device token's
/// extractor (`auth::DeviceCaller`) for every device route.
pub(crate) async fn check_binding(
    parts: &Parts,
    state: &AppState,
    device: DeviceId,
) -> ApiResult<()> {
    let mode = state.settings().device_auth;
    if mode == DeviceAuth::Key {
        return Ok(());
    }
    let presented = parts
        .extensions
        .get::<Arc<PeerCertificate>>()
        .map(|peer| peer.spki_sha256);
    let bindings = state.certificate_bindings();
    match (bindings.key_of(state, device).await?, presented) {
        // `Sha256Digest`'s equality is constant-time.
        (Some(bound), Some(presented)) if bound == presented => Ok(()),
        (Some(_), Some(_)) => Err(refused(
            "this client certificate belongs to another device than the token's",
        )),
        (Some(_), None) => Err(refused(
            "this device authenticates by certificate: present it on every connection",
        )),
        (None, _) if mode == DeviceAuth::Certificate => Err(refused(
            "this server admits devices by client certificate only (--device-auth certificate)",
        )),
        (None, Some(presented)) => match bindings.device_of(state, presented).await? {
            Some(owner) if owner != device => Err(refused(
                "this client certificate belongs to another device than the token's",
            )),
            _ => Ok(()),
        },
        (None, None) => Ok(()),
    }
}

fn refused(why: &str) -> ApiError {
    metrics::counter!("airlift_device_certificate_refusals_total").increment(1);
    ApiError::Unauthorized(format!("{why}; authenticate again"))
}

/// Which certificate key each device is bound to, and the reverse, as read
/// from the store. A binding is made with its device, in one transaction,
/// and never changes, so both answers can be kept (and "no certificate",
/// for a device whose token exists, too: its row was final before the
/// token was issued); device ids are never reused.
pub struct CertificateBindings {
    by_device: quick_cache::sync::Cache<DeviceId, Option<Sha256Digest>>,
    by_key: quick_cache::sync::Cache<[u8; 32], DeviceId>,
}

/// Most bindings kept each way (about a hundred bytes each).
const BINDINGS_KEPT: usize = 100_000;

impl Default for CertificateBindings {
    fn default() -> Self {
        Self {
            by_device: quick_cache::sync::Cache::new(BINDINGS_KEPT),
            by_key: quick_cache::sync::Cache::new(BINDINGS_KEPT),
        }
    }
}

impl std::fmt::Debug for CertificateBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertificateBindings({} devices)", self.by_device.len())
    }
}

impl CertificateBindings {
    /// The key `device` is bound to; `None` for a key device.
    async fn key_of(&self, state: &AppState, device: DeviceId) -> ApiResult<Option<Sha256Digest>> {
        if let Some(known) = self.by_device.get(&device) {
            return Ok(known);
        }
        let key = match state.store().certificate_of_device(device).await? {
            Some(bound) => Some(bound.spki_sha256.parse::<Sha256Digest>().map_err(|e| {
                ApiError::internal(format!("device_certificates of {device}: {e}"))
            })?),
            None => None,
        };
        self.by_device.insert(device, key);
        Ok(key)
    }

    /// The device bound to `key`, if any (only bindings are kept: a key
    /// may be registered at any moment).
    async fn device_of(&self, state: &AppState, key: Sha256Digest) -> ApiResult<Option<DeviceId>> {
        if let Some(device) = self.by_key.get(key.as_bytes()) {
            return Ok(Some(device));
        }
        let device = state
            .store()
            .certificate_by_key(&key.to_string())
            .await?
            .map(|bound| bound.device_id);
        if let Some(device) = device {
            self.by_key.insert(*key.as_bytes(), device);
        }
        Ok(device)
    }
}
