//! `/api/v1/trust/roots`: the chain of signed trust roots the devices
//! follow (`docs/trust.md`). An admin uploads each new root, made and
//! signed offline with `airlift root`; the server stores it only when it
//! follows the newest stored root (the next version, signed by a threshold
//! of the previous root's root keys and of its own) and has not expired,
//! and then hands it to devices as it is, byte for byte.

use super::audit;
use crate::auth::ApiCaller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use airlift_package::Sha256Digest;
use airlift_protocol::trust::StoredRoot;
use airlift_store::TrustRootRecord;
use airlift_trust::Root;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;

/// Most roots listed.
const MAX_LISTED: u32 = 1000;

fn stored(record: &TrustRootRecord) -> StoredRoot {
    StoredRoot {
        version: record.version,
        expires: record.expires,
        sha256: record.sha256.clone(),
    }
}

/// Store the next trust root (admin only).
#[utoipa::path(
    post,
    path = "/api/v1/trust/roots",
    tag = "trust",
    request_body(content = Object, content_type = "application/json", description = "The signed root envelope, exactly as `airlift root sign` wrote it (its signatures cover its bytes)"),
    security(("api_token" = [])),
    responses(
        (status = 201, body = StoredRoot, description = "Stored; devices take it at their next offer"),
        (status = 400, description = "Not UTF-8 text", body = airlift_protocol::ErrorBody),
        (status = 422, description = "Not a root, not signed by a threshold of its own root keys and of the previous root's, not the next version, or expired", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "Not an admin token", body = airlift_protocol::ErrorBody),
        (status = 409, description = "Another root of this version was stored first", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn upload_root(
    State(state): State<AppState>,
    caller: ApiCaller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<StoredRoot>)> {
    caller.require_admin()?;
    let store = state.store();
    // Well-formed JSON that is not the next root is refused as such (422),
    // as a package that does not verify is.
    let refused = |e: airlift_trust::TrustError| ApiError::invalid(e.to_string());
    let root = match store.latest_trust_root().await? {
        Some(latest) => Root::parse(latest.document.as_bytes())
            .map_err(|e| ApiError::Internal(format!("the stored root {}: {e}", latest.version)))?
            .next_from(&body)
            .map_err(refused)?,
        None => Root::trust_first(&body).map_err(refused)?,
    };
    let now = Utc::now();
    root.check_not_expired(u64::try_from(now.timestamp()).unwrap_or(0))
        .map_err(refused)?;
    let document = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("the root is not UTF-8 text"))?;
    let record = TrustRootRecord {
        version: root.version(),
        expires: root.document().expires,
        sha256: Sha256Digest::of(&body).to_string(),
        document,
        created_at: now,
    };
    store.insert_trust_root(&record).await?;
    audit(
        &state,
        &caller,
        "trust.root",
        format!("root:{}", record.version),
        serde_json::json!({"version": record.version, "expires": record.expires, "sha256": record.sha256}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(stored(&record))))
}

/// List the stored trust roots, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/trust/roots",
    tag = "trust",
    security(("api_token" = [])),
    responses(
        (status = 200, body = Vec<StoredRoot>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn list_roots(
    State(state): State<AppState>,
    _caller: ApiCaller,
) -> ApiResult<Json<Vec<StoredRoot>>> {
    let roots = state.store().trust_roots_after(0, MAX_LISTED).await?;
    Ok(Json(roots.iter().map(stored).collect()))
}
