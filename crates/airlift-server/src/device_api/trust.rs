//! Trust on the device side (`docs/trust.md`): the roots a device lacks,
//! and the timestamp the server signs on every offer with its online key
//! — the root version it was made under, the highest security version of
//! any package the server holds, and the SHA-256 of the offered head.

use crate::auth::DeviceCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;
use airlift_package::Sha256Digest;
use airlift_protocol::device::UpdateOffer;
use airlift_protocol::trust::{RootsQuery, TrustRoots, MAX_ROOTS_PER_ANSWER};
use airlift_trust::{TimestampDocument, TIMESTAMP_TYPE};
use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;

/// The trust roots after the device's, oldest first.
#[utoipa::path(
    get,
    path = "/api/device/v1/trust/roots",
    tag = "device",
    params(RootsQuery),
    security(("device_token" = [])),
    responses(
        (status = 200, body = TrustRoots, description = "At most 16 roots after `after`, each the exact text of its signed envelope; ask again from the last one while `latest` is higher"),
        (status = 400, description = "`after` is not a whole number from 0 to 2^63 − 1", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No device token, an invalid or expired one: authenticate again", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn trust_roots(
    State(state): State<AppState>,
    _caller: DeviceCaller,
    ApiQuery(query): ApiQuery<RootsQuery>,
) -> ApiResult<Json<TrustRoots>> {
    // Versions are stored as signed 64-bit numbers (as the schema says).
    if i64::try_from(query.after).is_err() {
        return Err(ApiError::bad_request(format!(
            "after: at most {}",
            i64::MAX
        )));
    }
    let store = state.store();
    let limit = u32::try_from(MAX_ROOTS_PER_ANSWER).unwrap_or(16);
    let roots = store.trust_roots_after(query.after, limit).await?;
    let latest = store
        .latest_trust_root()
        .await?
        .map_or(0, |root| root.version);
    Ok(Json(TrustRoots {
        roots: roots.into_iter().map(|root| root.document).collect(),
        latest,
    }))
}

/// Signs a timestamp for `offer` with the online key, if the server has one.
pub(crate) async fn stamp(state: &AppState, offer: &mut UpdateOffer) -> ApiResult<()> {
    let Some(signer) = &state.settings().timestamps else {
        return Ok(());
    };
    let head = STANDARD
        .decode(offer.signed_manifest.as_bytes())
        .map_err(|e| ApiError::Internal(format!("an offer's head is not base64: {e}")))?;
    let store = state.store();
    let root_version = store
        .latest_trust_root()
        .await?
        .map_or(0, |root| root.version);
    let security_version = store.latest_security_version().await?;
    let now = Utc::now();
    let document = TimestampDocument {
        kind: TIMESTAMP_TYPE.into(),
        // Milliseconds since the epoch: increasing across instances whose
        // clocks agree, without a counter shared through the store.
        version: u64::try_from(now.timestamp_millis()).unwrap_or(0),
        expires: u64::try_from(now.timestamp())
            .unwrap_or(0)
            .saturating_add(signer.expiry.as_secs()),
        root_version,
        security_version,
        covers: Sha256Digest::of(&head),
    };
    let signed = document
        .sign(&signer.key)
        .map_err(|e| ApiError::Internal(format!("signing a timestamp: {e}")))?;
    offer.timestamp = Some(
        String::from_utf8(signed)
            .map_err(|e| ApiError::Internal(format!("a timestamp is not UTF-8: {e}")))?,
    );
    Ok(())
}
