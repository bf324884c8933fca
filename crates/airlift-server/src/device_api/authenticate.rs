use crate::auth::issue_device_token;
use crate::error::{ApiError, ApiResult};
use crate::extract::refuse_nul_in_json;
use crate::state::AppState;
use airlift_protocol::auth::{parse_public_key, public_key_pem, verify_body, MAX_CLOCK_SKEW_SECS};
use airlift_protocol::device::{AuthRequest, AuthResponse, SIGNATURE_HEADER};
use airlift_protocol::management::Device;
use airlift_protocol::state::DeviceStatus;
use airlift_protocol::DeviceId;
use airlift_store::{DeviceFilter, PageRequest};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use chrono::{Duration, Utc};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Authenticate a device: a request signed with its key, answered with a
/// token (accepted), `pending` (202) or `rejected` (403).
#[utoipa::path(
    post,
    path = "/api/device/v1/auth",
    tag = "device",
    request_body(content = AuthRequest, description = "Signed as sent: the signature covers these exact bytes"),
    params(("x-airlift-signature" = String, Header, description = "base64 Ed25519 signature of the exact body bytes")),
    responses(
        (status = 200, description = "Accepted: a token", body = AuthResponse),
        (status = 202, description = "Pending an operator's decision", body = AuthResponse),
        (status = 400, description = "A body that is not an AuthRequest in JSON, a public key that is not Ed25519 SPKI PEM, an empty or oversized identity, a nonce not of 16–128 characters, a NUL character", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No signature header, a bad signature, a stale timestamp or a replayed nonce; or the server takes only client certificates from devices (--device-auth certificate)", body = airlift_protocol::ErrorBody),
        (status = 403, description = "Rejected or decommissioned", body = AuthResponse),
        (status = 413, description = "The body is over 64 KiB", body = airlift_protocol::ErrorBody),
        (status = 429, description = "A device never seen before, while its address has made too many first contacts lately or the admission queue is full", body = airlift_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
pub async fn authenticate(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    if !state.settings().device_auth.allows_key() {
        return Err(ApiError::Unauthorized(
            "this server authenticates devices by client certificate only (--device-auth certificate): use /auth/certificate".into(),
        ));
    }
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized(format!("missing {SIGNATURE_HEADER} header")))?;
    let request: AuthRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("auth request is not valid: {e}")))?;
    let key =
        parse_public_key(&request.public_key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    verify_body(&key, &body, signature).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    validate_identity(&request.identity)?;
    refuse_nul_in_json(&body)?;

    let now = Utc::now();
    if (now.timestamp() - request.timestamp).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(ApiError::Unauthorized(format!(
            "request timestamp is more than {MAX_CLOCK_SKEW_SECS} s from the server's clock; check the device's time"
        )));
    }
    if !(16..=128).contains(&request.nonce.len()) {
        return Err(ApiError::bad_request("nonce must be 16 to 128 characters"));
    }
    let fresh = state
        .store()
        .use_nonce(
            &request.nonce,
            now + Duration::seconds(2 * MAX_CLOCK_SKEW_SECS),
            now,
        )
        .await?;
    if !fresh {
        return Err(ApiError::Unauthorized(
            "nonce already used: replayed request".into(),
        ));
    }

    // One spelling of each key, whatever whitespace the device used.
    let public_key = public_key_pem(&key);
    let device = match state.store().device_by_public_key(&public_key).await? {
        Some(device) => device,
        None => {
            let peer = peer.map(|Extension(ConnectInfo(peer))| peer.ip());
            let id = register_newcomer(&state, peer, &request, public_key, now).await?;
            return Ok(pending(id));
        }
    };
    let status = status_on_contact(&state, &device, &request).await?;
    state.caches().forget_device(device.id);
    let result = status.as_str();
    metrics::counter!("airlift_device_auth_total", "result" => result).increment(1);
    Ok(match status {
        DeviceStatus::Accepted => {
            let token = issue_device_token(&state, device.id)?;
            Json(AuthResponse::Accepted {
                device_id: device.id,
                token,
                expires_in_secs: state.settings().device_token_ttl.as_secs(),
            })
            .into_response()
        }
        DeviceStatus::Pending | DeviceStatus::Preauthorized => pending(device.id),
        DeviceStatus::Rejected | DeviceStatus::Decommissioned => (
            StatusCode::FORBIDDEN,
            Json(AuthResponse::Rejected {
                device_id: device.id,
            }),
        )
            .into_response(),
    })
}

/// Records a device never seen before as pending, within the admission
/// limits.
async fn register_newcomer(
    state: &AppState,
    peer: Option<IpAddr>,
    request: &AuthRequest,
    public_key: String,
    now: chrono::DateTime<Utc>,
) -> ApiResult<DeviceId> {
    admit_newcomer(state, peer).await?;
    let device = Device {
        id: DeviceId::new(),
        status: DeviceStatus::Pending,
        identity: request.identity.clone(),
        public_key,
        tags: Vec::new(),
        device_type: None,
        hardware_revision: None,
        installed: BTreeMap::new(),
        security_version: 0,
        attributes: BTreeMap::new(),
        created_at: now,
        last_check_in: None,
    };
    state.store().insert_device(&device).await?;
    tracing::info!(device_id = %device.id, "new device is pending acceptance");
    metrics::counter!("airlift_device_auth_total", "result" => "pending").increment(1);
    Ok(device.id)
}

/// A known device's status once it made contact: a pre-authorised one is
/// accepted if it presents the identity it was pre-authorised with, and
/// goes to the queue if it presents another.
///
/// Each move is one compare-and-set in the store from the status read: an
/// operator's decision that lands after the read wins, and the device is
/// answered with the status it has now.
async fn status_on_contact(
    state: &AppState,
    device: &Device,
    request: &AuthRequest,
) -> ApiResult<DeviceStatus> {
    if device.status != DeviceStatus::Preauthorized {
        return Ok(device.status);
    }
    let same_identity = device.identity == request.identity;
    let (to, identity) = if same_identity {
        (DeviceStatus::Accepted, None)
    } else {
        // Same key, different identity: a person should look.
        (DeviceStatus::Pending, Some(&request.identity))
    };
    let moved = state
        .store()
        .transition_device_status(device.id, DeviceStatus::Preauthorized, to, identity)
        .await?;
    if !moved {
        let status = match state.store().device(device.id).await? {
            Some(now) => now.status,
            None => {
                return Err(ApiError::Unauthorized(
                    "the device was removed while it authenticated; try again".into(),
                ))
            }
        };
        tracing::info!(device_id = %device.id, status = status.as_str(), "admission lost to a decision made meanwhile");
        // Still pre-authorised only if the decision put it back; wait for
        // the next contact rather than loop.
        return Ok(match status {
            DeviceStatus::Preauthorized => DeviceStatus::Pending,
            other => other,
        });
    }
    if same_identity {
        tracing::info!(device_id = %device.id, "pre-authorised device accepted on first contact");
    } else {
        tracing::warn!(device_id = %device.id, "pre-authorised key presented with another identity; now pending");
    }
    Ok(to)
}

/// Refuses a device never seen before when its address has made too many
/// first contacts lately, or the admission queue is full.
pub(super) async fn admit_newcomer(state: &AppState, peer: Option<IpAddr>) -> ApiResult<()> {
    if let (Some(limiter), Some(peer)) = (state.first_contacts(), peer) {
        limiter.check(peer)?;
    }
    let pending = DeviceFilter {
        status: Some(DeviceStatus::Pending),
        ..DeviceFilter::default()
    };
    let (_, waiting) = state
        .store()
        .list_devices(
            &pending,
            PageRequest {
                page: 1,
                per_page: 1,
            },
        )
        .await?;
    crate::admission::check_queue(&state.settings().admission, waiting)
}

fn pending(device_id: DeviceId) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(AuthResponse::Pending { device_id }),
    )
        .into_response()
}

pub(crate) fn validate_identity(identity: &BTreeMap<String, String>) -> ApiResult<()> {
    if identity.is_empty() {
        return Err(ApiError::bad_request(
            "identity needs at least one attribute (serial, mac, …)",
        ));
    }
    if identity.len() > 32
        || identity
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 1024)
    {
        return Err(ApiError::bad_request(
            "identity: at most 32 attributes, names of 1–128 bytes, values up to 1024 bytes",
        ));
    }
    Ok(())
}
