//! Who is calling: management API tokens (with roles) and device tokens.

use crate::error::ApiError;
use crate::state::AppState;
use airlift_protocol::state::{DeviceStatus, Role};
use airlift_protocol::{DeviceId, TokenId};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of management API secrets, so a leaked one is recognisable.
pub const API_TOKEN_PREFIX: &str = "alt_";

/// A new random management API secret.
pub fn new_api_secret() -> Result<String, ApiError> {
    Ok(format!("{API_TOKEN_PREFIX}{}", random_hex(32)?))
}

/// `len` random bytes as hex.
pub fn random_hex(len: usize) -> Result<String, ApiError> {
    let mut bytes = vec![0u8; len];
    getrandom::getrandom(&mut bytes).map_err(ApiError::internal)?;
    Ok(hex::encode(bytes))
}

/// SHA-256 of a secret: what the store keeps.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized("missing Authorization: Bearer <token> header".into())
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("Authorization header is not text".into()))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("Authorization header must be 'Bearer <token>'".into())
        })
}

/// A caller of the management API, authenticated by its token.
#[derive(Debug, Clone)]
pub struct ApiCaller {
    /// The token's id.
    pub token_id: TokenId,
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl ApiCaller {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("{} ({})", self.name, self.token_id)
    }

    /// Refuses callers that may not change things.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.role.can_operate() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "token '{}' has role {}, which may only read; an operator or admin token is needed",
                self.name, self.role
            )))
        }
    }

    /// Refuses callers that are not admins.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role.can_administer() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "token '{}' has role {}; only an admin token may do this",
                self.name, self.role
            )))
        }
    }
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secret = bearer(parts)?;
        let record = state
            .store()
            .api_token_by_hash(&hash_secret(secret))
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked API token".into()))?;
        Ok(ApiCaller {
            token_id: record.token.id,
            name: record.token.name,
            role: record.token.role,
        })
    }
}

/// The claims in a device token.
#[derive(Debug, Serialize, Deserialize)]
struct DeviceClaims {
    sub: String,
    aud: String,
    iat: i64,
    exp: i64,
}

const DEVICE_AUDIENCE: &str = "airlift-device";

/// Issues a short-lived device token.
pub fn issue_device_token(state: &AppState, device: DeviceId) -> Result<String, ApiError> {
    let now = Utc::now().timestamp();
    let claims = DeviceClaims {
        sub: device.to_string(),
        aud: DEVICE_AUDIENCE.into(),
        iat: now,
        exp: now + state.settings().device_token_ttl.as_secs() as i64,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &state.device_keys().encoding,
    )
    .map_err(ApiError::internal)
}

/// A device token that passed verification: whom it names, until when.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedToken {
    pub device_id: DeviceId,
    /// When the token expires (Unix seconds).
    pub expires_at: i64,
}

/// An accepted device, authenticated by its token, with what this instance
/// keeps of it. A token outlives a rejection or a decommissioning by
/// up to its lifetime, so every device route asks the device's status too:
/// from memory, kept true across instances by the store's change feed
/// (stale for the feed's latency, milliseconds), so a refused device is
/// refused on every route at once.
#[derive(Debug, Clone)]
pub struct DeviceCaller {
    pub device_id: DeviceId,
    /// When its token expires (Unix seconds).
    pub expires_at: i64,
    /// What the device routes read of it (accepted, its tags, the digest
    /// of its stored inventory).
    pub device: crate::cache::CachedDevice,
}

impl FromRequestParts<AppState> for DeviceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = verify_device_token(bearer(parts)?, state)?;
        crate::device_api::certificate::check_binding(parts, state, token.device_id).await?;
        // With its shadow documents: most device requests are check-ins,
        // which answer the shadow's delta.
        let device = state
            .caches()
            .device_with_documents(state.store(), state.shadows(), token.device_id)
            .await?
            .filter(|d| d.status == DeviceStatus::Accepted)
            .ok_or_else(|| {
                ApiError::Unauthorized("device is not accepted any more; authenticate again".into())
            })?;
        Ok(DeviceCaller {
            device_id: token.device_id,
            expires_at: token.expires_at,
            device,
        })
    }
}

/// Checks a device token's signature, audience and expiry — and that it
/// claims no longer a life than this server gives, so a token minted under
/// a longer lifetime, or with a stolen secret for years ahead, is not
/// honoured past what the configuration allows.
fn verify_device_token(token: &str, state: &AppState) -> Result<VerifiedToken, ApiError> {
    let keys = state.device_keys();
    let now = Utc::now().timestamp();
    if let Some(verified) = keys.verified.get(token, now) {
        return Ok(verified);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[DEVICE_AUDIENCE]);
    validation.leeway = DEVICE_TOKEN_LEEWAY_SECS;
    let data =
        jsonwebtoken::decode::<DeviceClaims>(token, &keys.decoding, &validation).map_err(|e| {
            ApiError::Unauthorized(format!("device token refused ({e}); authenticate again"))
        })?;
    let longest =
        state.settings().device_token_ttl.as_secs() as i64 + DEVICE_TOKEN_LEEWAY_SECS as i64;
    if data.claims.exp.saturating_sub(now) > longest
        || data.claims.exp.saturating_sub(data.claims.iat) > longest
    {
        return Err(ApiError::Unauthorized(
            "device token lives longer than this server allows; authenticate again".into(),
        ));
    }
    let device_id = data
        .claims
        .sub
        .parse()
        .map_err(|_| ApiError::Unauthorized("device token names no device".into()))?;
    let verified = VerifiedToken {
        device_id,
        expires_at: data.claims.exp,
    };
    keys.verified.insert(token, verified);
    Ok(verified)
}

/// Seconds a device token is still taken after its expiry (clock skew
/// between server instances).
const DEVICE_TOKEN_LEEWAY_SECS: u64 = 5;

/// Device tokens that passed verification, by their exact text, so that a
/// device checking in every few seconds pays for the base64, the two JSON
/// parses and the HMAC once per token instead of once per request (about a
/// tenth of a loaded server's time: BENCHMARKS.md, session 5). Only the
/// identical string hits, and its expiry is checked on every use. Bounded:
/// a fleet larger than the cache only loses part of the saving.
pub struct VerifiedTokens(quick_cache::sync::Cache<String, VerifiedToken>);

/// Most tokens kept (a few hundred bytes each).
const VERIFIED_TOKENS: usize = 32_768;

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self(quick_cache::sync::Cache::new(VERIFIED_TOKENS))
    }
}

impl VerifiedTokens {
    /// The caller `token` verified as, if it did and has not expired at `now`
    /// (Unix seconds).
    pub fn get(&self, token: &str, now: i64) -> Option<VerifiedToken> {
        let leeway = DEVICE_TOKEN_LEEWAY_SECS as i64;
        self.0
            .get(token)
            .filter(|caller| now <= caller.expires_at.saturating_add(leeway))
    }

    /// Remembers that `token` verified as `caller`.
    pub fn insert(&self, token: &str, caller: VerifiedToken) {
        self.0.insert(token.to_owned(), caller);
    }
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are bearer tokens: never print them.
        write!(f, "VerifiedTokens({} kept)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_token_is_honoured_until_it_expires_and_only_as_written() {
        let tokens = VerifiedTokens::default();
        let caller = VerifiedToken {
            device_id: DeviceId::new(),
            expires_at: 1_000,
        };
        tokens.insert("header.claims.signature", caller);
        let hit = tokens
            .get("header.claims.signature", 1_000)
            .map(|c| c.device_id);
        assert_eq!(hit, Some(caller.device_id));
        assert!(
            tokens.get("header.claims.signaturE", 1_000).is_none(),
            "another string, however close, is verified afresh"
        );
        let leeway = DEVICE_TOKEN_LEEWAY_SECS as i64;
        assert!(tokens
            .get("header.claims.signature", 1_000 + leeway)
            .is_some());
        assert!(
            tokens
                .get("header.claims.signature", 1_001 + leeway)
                .is_none(),
            "an expired token is never honoured"
        );
        assert!(
            !format!("{tokens:?}").contains("signature"),
            "never printed"
        );
    }
}
