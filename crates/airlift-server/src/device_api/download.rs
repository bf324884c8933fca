use crate::auth::DeviceCaller;
use crate::blobs;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::state::AppState;
use airlift_protocol::state::DeploymentStatus;
use airlift_protocol::strategy::Strategy;
use airlift_protocol::DeploymentId;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

/// Download the package a deployment offers this device. Supports `Range`
/// and `If-Range`; reads only, writes nothing. With package files in S3
/// (and offload on) the answer is a `307` to a presigned URL of the
/// package's object instead, after the same checks: the device fetches it
/// there, with `Range` to resume, and asks here again for a fresh URL once
/// it has expired.
#[utoipa::path(
    get,
    path = "/api/device/v1/deployments/{deployment_id}/download",
    tag = "device",
    params(
        ("deployment_id" = uuid::Uuid, Path, description = "The deployment of the offer"),
        ("Range" = Option<String>, Header, nullable = false, example = "bytes=0-65535", description = "One byte range, `bytes=START-END` (RFC 9110); a header the server cannot read, or several ranges, get the whole package"),
        ("If-Range" = Option<String>, Header, nullable = false, description = "The ETag of an earlier answer: the Range applies only if the package is still that one"),
    ),
    security(("device_token" = [])),
    responses(
        (status = 200, description = "The whole package", content_type = "application/octet-stream", body = inline(crate::openapi::PackageFile), headers(("ETag" = String, description = "The package's SHA-256, quoted: the validator for If-Range"), ("Accept-Ranges" = String, description = "bytes"))),
        (status = 307, description = "Served by the object store (package files in S3, offload on): fetch the package from the presigned URL in `Location`, without this API's token; resume there with `Range`; ask here again when it has expired or the store answers 403. No body", headers(("Location" = String, description = "A presigned GET URL of the package's object, valid for the server's --blob-url-expiry; a credential: do not log its query"), ("Cache-Control" = String, description = "no-store"))),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = inline(crate::openapi::PackageFile), headers(("ETag" = String, description = "The package's SHA-256, quoted: the validator for If-Range"), ("Accept-Ranges" = String, description = "bytes"), ("Content-Range" = String, description = "bytes START-END/SIZE"))),
        (status = 400, description = "A malformed deployment id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No device token, an invalid or expired one, or the device is no longer accepted: authenticate again", body = airlift_protocol::ErrorBody),
        (status = 404, description = "Not offered to this device", body = airlift_protocol::ErrorBody),
        (status = 410, description = "The deployment was cancelled or aborted, this device's update in it is finished, or its package was deleted: stop, do not retry", body = airlift_protocol::ErrorBody),
        (status = 500, description = "The package's file is missing from the blob store or is not the package (codes `package_file_missing`, `package_file_mismatch`, `blob_store_failed`); the server log and `airlift_blob_errors_total` tell the operator", body = airlift_protocol::ErrorBody),
        (status = 416, description = "The range lies outside the package", body = airlift_protocol::ErrorBody, headers(("Content-Range" = String, description = "bytes */SIZE"))),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    caller: DeviceCaller,
    ApiPath(deployment_id): ApiPath<DeploymentId>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let store = state.store();
    let not_offered = || ApiError::NotFound("no such deployment offered to this device".into());
    let deployment = store
        .deployment(deployment_id)
        .await?
        .ok_or_else(not_offered)?;
    let update = store
        .device_update(deployment_id, caller.device_id)
        .await?
        .ok_or_else(not_offered)?;
    if matches!(
        deployment.status,
        DeploymentStatus::Cancelled | DeploymentStatus::Aborted
    ) {
        return Err(cancelled());
    }
    // A phased rollout offers its package only to the devices it admitted.
    if matches!(deployment.strategy, Strategy::Phased(_)) && update.phase.is_none() {
        return Err(not_offered());
    }
    if update.state.is_final() {
        return Err(ApiError::Gone(
            "update_finished",
            format!(
                "this device's update in this deployment is {}; nothing to download",
                update.state
            ),
        ));
    }
    let package = store.package(deployment.package_id).await?.ok_or_else(|| {
        ApiError::Gone(
            "package_deleted",
            "the deployment's package was deleted".into(),
        )
    })?;
    metrics::counter!("airlift_downloads_total", "api" => "device").increment(1);
    let key = package.blob_key.as_str().into();
    if let Some(offload) = &state.settings().offload {
        return blobs::offload::redirect(
            state.blobs().as_ref(),
            offload,
            &key,
            package.package.size,
        )
        .await;
    }
    let filename = format!(
        "{}-{}.airlift",
        package.package.name, package.package.version
    );
    blobs::serve(
        state.blobs().as_ref(),
        &key,
        package.package.size,
        &package.package.sha256,
        &filename,
        &headers,
    )
    .await
}

pub(crate) fn cancelled() -> ApiError {
    ApiError::Gone(
        "deployment_cancelled",
        "the deployment was cancelled; stop this update and do not retry".into(),
    )
}
