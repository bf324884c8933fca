use super::audit;
use crate::auth::{hash_secret, new_api_secret, ApiCaller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use airlift_protocol::management::{ApiToken, CreateTokenRequest, CreatedToken};
use airlift_protocol::state::Role;
use airlift_protocol::TokenId;
use airlift_store::ApiTokenRecord;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;

/// Who the calling token is: its id, name and role. Any role may ask.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "tokens",
    security(("api_token" = [])),
    responses(
        (status = 200, body = ApiToken),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn whoami(State(state): State<AppState>, caller: ApiCaller) -> ApiResult<Json<ApiToken>> {
    let tokens = state.store().list_api_tokens().await?;
    tokens
        .into_iter()
        .find(|t| t.id == caller.token_id)
        .map(Json)
        .ok_or_else(|| ApiError::Unauthorized("token revoked".into()))
}

/// Create an API token (admin only). The secret is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = CreateTokenRequest,
    security(("api_token" = [])),
    responses(
        (status = 201, description = "Created; the secret is shown only now", body = CreatedToken),
        (status = 400, description = "A body that is not a CreateTokenRequest in JSON, or holds a NUL character", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "Not an admin token", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = airlift_protocol::ErrorBody),
        (status = 422, description = "A name that is empty or longer than 128 bytes", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn create_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    caller.require_admin()?;
    if request.name.trim().is_empty() || request.name.len() > 128 {
        return Err(ApiError::invalid("name: must be 1–128 characters"));
    }
    let secret = new_api_secret()?;
    let token = ApiToken {
        id: TokenId::new(),
        name: request.name.trim().to_owned(),
        role: request.role,
        created_at: Utc::now(),
    };
    state
        .store()
        .insert_api_token(&ApiTokenRecord {
            token: token.clone(),
            secret_sha256: hash_secret(&secret),
        })
        .await?;
    audit(
        &state,
        &caller,
        "token.create",
        token.id,
        serde_json::json!({"name": token.name, "role": token.role}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
}

/// List API tokens (admin only), without secrets.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    security(("api_token" = [])),
    responses(
        (status = 200, body = Vec<ApiToken>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "Not an admin token", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: ApiCaller,
) -> ApiResult<Json<Vec<ApiToken>>> {
    caller.require_admin()?;
    Ok(Json(state.store().list_api_tokens().await?))
}

/// Revoke an API token (admin only).
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{token_id}",
    tag = "tokens",
    params(("token_id" = uuid::Uuid, Path, description = "The token's id")),
    security(("api_token" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "A malformed token id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "Not an admin token", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such token", body = airlift_protocol::ErrorBody),
        (status = 409, description = "The last admin token: create another admin token first", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn delete_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<TokenId>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let tokens = state.store().list_api_tokens().await?;
    let Some(target) = tokens.iter().find(|t| t.id == id) else {
        return Err(ApiError::NotFound(format!("no token {id}")));
    };
    let admins = tokens.iter().filter(|t| t.role == Role::Admin).count();
    if target.role == Role::Admin && admins == 1 {
        return Err(ApiError::Conflict(
            "last_admin",
            "this is the last admin token; create another admin token first, or nobody could manage the server".into(),
        ));
    }
    if !state.store().delete_api_token(id).await? {
        return Err(ApiError::NotFound(format!("no token {id}")));
    }
    audit(&state, &caller, "token.delete", id, serde_json::json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}
