use super::audit;
use crate::auth::ApiCaller;
use crate::blobs;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::state::AppState;
use airlift_protocol::management::Package;
use airlift_protocol::PackageId;
use airlift_store::PackageRecord;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::Utc;
use object_store::path::Path as BlobPath;
use std::sync::Arc;

/// Upload a package: the raw `.airlift` file as the body. It is streamed
/// into the blob store as it arrives while the same bytes are verified
/// (signatures and every payload digest) against the release role of the
/// newest trust root the server holds — or, with no root, its `--trust`
/// keys — and only then stored: its file committed and its row written,
/// both or neither.
#[utoipa::path(
    post,
    path = "/api/v1/packages",
    tag = "packages",
    request_body(content = inline(crate::openapi::PackageFile), content_type = "application/octet-stream", description = "The package file, as `airlift package build` wrote it"),
    security(("api_token" = [])),
    responses(
        (status = 201, description = "Verified and stored", body = Package),
        (status = 400, description = "The upload broke off before its end; nothing was kept", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 409, description = "A package with this name and version exists", body = airlift_protocol::ErrorBody),
        (status = 413, description = "Larger than the server's limit (--max-package-mib)", body = airlift_protocol::ErrorBody),
        (status = 422, description = "Not a valid package; not signed by a threshold of the newest trust root's release keys (without a root: by the server's --trust keys); or the server has neither a root nor --trust keys (code `no_trusted_keys`)", body = airlift_protocol::ErrorBody),
        (status = 507, description = "The server's disk is full; nothing was kept", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn upload_package(
    State(state): State<AppState>,
    caller: ApiCaller,
    body: Body,
) -> ApiResult<(StatusCode, Json<Package>)> {
    caller.require_operator()?;
    let trust = upload_trust(&state).await?;
    // On a task of its own: a client that goes away cannot cut the upload
    // off between its blob and its row, nor leave the blob store's
    // multipart upload neither committed nor aborted.
    tokio::spawn(receive_package(state, caller, body, trust))
        .await
        .map_err(ApiError::internal)?
        .map(|package| (StatusCode::CREATED, Json(package)))
}

/// The signers an upload must carry. With a trust root stored, exactly
/// the newest root's release keys and threshold, as the devices that took
/// it trust: a key that root revoked is refused here too, and one it
/// rotated in is taken without restarting the server. Without a root, the
/// `--trust` keys.
pub(crate) async fn upload_trust(state: &AppState) -> ApiResult<airlift_package::TrustSet> {
    upload_trust_if_any(state).await?.ok_or_else(|| {
        ApiError::Unprocessable(
            "no_trusted_keys",
            "the server trusts no package signing key, so it accepts no package; restart it with --trust PUBLIC_KEY_FILE, or upload a trust root (POST /api/v1/trust/roots) whose release role names the key".into(),
        )
    })
}

/// The keys uploads are checked against, `None` when the server trusts
/// none (no root and no `--trust`): the newest trust root's release role,
/// else `--trust`.
pub(crate) async fn upload_trust_if_any(
    state: &AppState,
) -> ApiResult<Option<airlift_package::TrustSet>> {
    Ok(release_trust(state).await?.map(|trust| trust.keys))
}

/// The current release trust ([`crate::release_trust::current`]) with its
/// source, as an API result.
pub(crate) async fn release_trust(
    state: &AppState,
) -> ApiResult<Option<crate::release_trust::ReleaseTrust>> {
    crate::release_trust::current(state.store(), state.trust())
        .await
        .map_err(|error| match error {
            crate::release_trust::ReleaseTrustError::Store(store) => store.into(),
            bad_root => ApiError::Internal(bad_root.to_string()),
        })
}

/// Receives and verifies a package into the blob store, then commits its
/// file and writes its row; a row that cannot be written takes the file
/// with it, so a failed upload leaves neither behind.
async fn receive_package(
    state: AppState,
    caller: ApiCaller,
    body: Body,
    trust: airlift_package::TrustSet,
) -> ApiResult<Package> {
    // The key is the new package's id, decided before any byte arrives.
    let id = PackageId::new();
    let key = blobs::package_key(id);
    let target = match &state.settings().uploads {
        Some(recorded) => blobs::UploadTarget::Recorded(Arc::clone(recorded)),
        None => blobs::UploadTarget::Plain(Arc::clone(state.blobs())),
    };
    let max = state.settings().max_package_bytes;
    let received =
        blobs::receive(&target, Arc::clone(state.blobs()), &key, body, trust, max).await?;
    let record = match package_record(id, &key, &received) {
        Ok(record) => record,
        Err(error) => {
            received.file.abort().await;
            return Err(error);
        }
    };
    let committed = received.file.commit().await?;
    let package = &record.package;
    if let Err(error) = state.store().insert_package(&record).await {
        // The row is the source of truth; without it the blob is garbage.
        committed.discard().await;
        return Err(match error {
            airlift_store::StoreError::Conflict(_) => ApiError::Conflict(
                "conflict",
                format!(
                    "package {} {} already exists; bump the version or delete the old one",
                    package.name, package.version
                ),
            ),
            other => other.into(),
        });
    }
    committed.keep().await;
    audit(
        &state,
        &caller,
        "package.upload",
        package.id,
        serde_json::json!({"name": package.name, "version": package.version, "sha256": package.sha256}),
    )
    .await?;
    Ok(record.package)
}

/// The row of a received, verified package.
fn package_record(
    id: PackageId,
    key: &BlobPath,
    received: &blobs::Received,
) -> ApiResult<PackageRecord> {
    let manifest = &received.verified.manifest;
    let manifest_json = serde_json::to_value(manifest).map_err(ApiError::internal)?;
    crate::extract::refuse_nul("manifest", &manifest_json)
        .map_err(|e| ApiError::Unprocessable("package_refused", format!("package refused: {e}")))?;
    Ok(PackageRecord {
        package: Package {
            id,
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            description: manifest.description.clone(),
            device_types: manifest.compatible.device_types.clone(),
            security_version: manifest.security_version,
            size: received.size,
            sha256: received.sha256.clone(),
            signed_by: received.verified.signed_by.clone(),
            manifest: manifest_json,
            created_at: Utc::now(),
        },
        blob_key: key.to_string(),
        head: received.verified.head.clone(),
        provides: manifest
            .provides
            .iter()
            .map(|(name, version)| (name.clone(), version.to_string()))
            .collect(),
    })
}

/// Paging for listing packages.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PackageQuery {
    /// 1-based page [default: 1].
    #[param(minimum = 1, maximum = 4294967295_u64, format = Int64)]
    pub page: Option<u32>,
    /// Items per page, 1–1000 [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<u32>,
}

/// List packages, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/packages",
    tag = "packages",
    params(PackageQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = airlift_protocol::management::Page<Package>),
        (status = 400, description = "A malformed or unknown query parameter, page 0, or per_page out of range", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn list_packages(
    State(state): State<AppState>,
    _caller: ApiCaller,
    crate::extract::ApiQuery(query): crate::extract::ApiQuery<PackageQuery>,
) -> ApiResult<Json<airlift_protocol::management::Page<Package>>> {
    let page = super::deployments::page_request(query.page, query.per_page)?;
    let (packages, total) = state.store().list_packages_page(page).await?;
    Ok(Json(airlift_protocol::management::Page {
        items: packages.into_iter().map(|p| p.package).collect(),
        total,
        page: page.page,
        per_page: page.per_page,
    }))
}

/// One package.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{package_id}",
    tag = "packages",
    params(("package_id" = uuid::Uuid, Path, description = "The package's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Package),
        (status = 400, description = "A malformed package id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such package", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn get_package(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiPath(id): ApiPath<PackageId>,
) -> ApiResult<Json<Package>> {
    Ok(Json(find(&state, id).await?.package))
}

/// Download a package file.
#[utoipa::path(
    get,
    path = "/api/v1/packages/{package_id}/download",
    tag = "packages",
    params(
        ("package_id" = uuid::Uuid, Path, description = "The package's id"),
        ("Range" = Option<String>, Header, nullable = false, example = "bytes=0-65535", description = "One byte range, `bytes=START-END` (RFC 9110); a header the server cannot read, or several ranges, get the whole file"),
        ("If-Range" = Option<String>, Header, nullable = false, description = "The ETag of an earlier answer: the Range applies only if the package is still that one"),
    ),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The whole package file", content_type = "application/octet-stream", body = inline(crate::openapi::PackageFile), headers(("ETag" = String, description = "The package's SHA-256, quoted: the validator for If-Range"), ("Accept-Ranges" = String, description = "bytes"), ("Content-Disposition" = String, description = "attachment; filename=\"NAME-VERSION.airlift\""))),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = inline(crate::openapi::PackageFile), headers(("ETag" = String, description = "The package's SHA-256, quoted: the validator for If-Range"), ("Accept-Ranges" = String, description = "bytes"), ("Content-Disposition" = String, description = "attachment; filename=\"NAME-VERSION.airlift\""), ("Content-Range" = String, description = "bytes START-END/SIZE"))),
        (status = 400, description = "A malformed package id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such package", body = airlift_protocol::ErrorBody),
        (status = 500, description = "The package's file is missing from the blob store or is not the package (codes `package_file_missing`, `package_file_mismatch`, `blob_store_failed`); the server log and `airlift_blob_errors_total` tell the operator", body = airlift_protocol::ErrorBody),
        (status = 416, description = "The range lies outside the package", body = airlift_protocol::ErrorBody, headers(("Content-Range" = String, description = "bytes */SIZE"))),
    )
)]
pub async fn download_package(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiPath(id): ApiPath<PackageId>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let record = find(&state, id).await?;
    metrics::counter!("airlift_downloads_total", "api" => "management").increment(1);
    let filename = format!("{}-{}.airlift", record.package.name, record.package.version);
    blobs::serve(
        state.blobs().as_ref(),
        &record.blob_key.as_str().into(),
        record.package.size,
        &record.package.sha256,
        &filename,
        &headers,
    )
    .await
}

/// Delete a package; refused while an active deployment uses it.
#[utoipa::path(
    delete,
    path = "/api/v1/packages/{package_id}",
    tag = "packages",
    params(("package_id" = uuid::Uuid, Path, description = "The package's id")),
    security(("api_token" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A malformed package id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such package", body = airlift_protocol::ErrorBody),
        (status = 409, description = "An active deployment uses it", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn delete_package(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<PackageId>,
) -> ApiResult<StatusCode> {
    caller.require_operator()?;
    let record = state
        .store()
        .delete_package(id)
        .await
        .map_err(|e| match e {
            airlift_store::StoreError::InUse(_) => ApiError::Conflict(
                "in_use",
                "an active deployment uses this package; cancel it first".into(),
            ),
            other => other.into(),
        })?;
    state.caches().forget_package(id);
    blobs::delete(state.blobs().as_ref(), &record.blob_key.as_str().into()).await;
    audit(
        &state,
        &caller,
        "package.delete",
        id,
        serde_json::json!({"name": record.package.name, "version": record.package.version}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn find(state: &AppState, id: PackageId) -> ApiResult<PackageRecord> {
    state
        .store()
        .package(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no package {id}")))
}
