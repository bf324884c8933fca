//! `/api/v1`: the management API for operators and scripts.

mod audit;
mod deployments;
mod devices;
mod packages;
mod repair;
mod rollouts;
mod shadow;
mod tokens;
mod trust;

use crate::auth::ApiCaller;
use crate::error::ApiResult;
use crate::state::AppState;
use airlift_store::NewAuditEntry;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use chrono::Utc;

pub use audit::*;
pub use deployments::*;
pub use devices::*;
pub use packages::*;
pub use repair::*;
pub use rollouts::*;
pub use shadow::*;
pub use tokens::*;
pub use trust::*;

/// Largest JSON body the management API takes (uploads have their own limit).
const JSON_BODY_LIMIT: usize = 1024 * 1024;

/// The management API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(package_routes())
        .merge(device_routes())
        .merge(deployment_routes())
        .merge(access_routes())
        .merge(shadow_routes())
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
}

fn package_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/packages",
            get(packages::list_packages)
                .post(packages::upload_package)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/packages/{package_id}",
            get(packages::get_package).delete(packages::delete_package),
        )
        .route(
            "/packages/{package_id}/download",
            get(packages::download_package),
        )
}

fn device_routes() -> Router<AppState> {
    Router::new()
        .route("/devices", get(devices::list_devices))
        .route("/devices/preauthorize", post(devices::preauthorize_device))
        .route("/devices/{device_id}", get(devices::get_device))
        .route("/devices/{device_id}/accept", post(devices::accept_device))
        .route("/devices/{device_id}/reject", post(devices::reject_device))
        .route(
            "/devices/{device_id}/decommission",
            post(devices::decommission_device),
        )
        .route("/devices/{device_id}/tags", put(devices::set_device_tags))
        .route(
            "/devices/{device_id}/check-in",
            post(devices::request_check_in),
        )
        .route("/devices/{device_id}/reset", post(repair::reset_device))
}

fn deployment_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/deployments",
            get(deployments::list_deployments).post(deployments::create_deployment),
        )
        .route(
            "/deployments/{deployment_id}",
            get(deployments::get_deployment),
        )
        .route(
            "/deployments/{deployment_id}/cancel",
            post(deployments::cancel_deployment),
        )
        .route(
            "/deployments/{deployment_id}/install",
            post(deployments::release_install),
        )
        .route(
            "/deployments/{deployment_id}/end",
            post(deployments::end_deployment),
        )
        .route(
            "/deployments/{deployment_id}/devices",
            get(deployments::list_deployment_devices),
        )
        .route(
            "/deployments/{deployment_id}/advance",
            post(rollouts::advance_deployment),
        )
        .route(
            "/deployments/{deployment_id}/pause",
            post(rollouts::pause_deployment),
        )
        .route(
            "/deployments/{deployment_id}/resume",
            post(rollouts::resume_deployment),
        )
        .route(
            "/deployments/{deployment_id}/abort",
            post(rollouts::abort_deployment),
        )
        .route(
            "/deployments/{deployment_id}/retry",
            post(repair::retry_deployment),
        )
        .route(
            "/deployments/{deployment_id}/devices/{device_id}/reset",
            post(repair::reset_deployment_device),
        )
}

/// Tokens, the trust root and the audit log.
fn access_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/tokens/{token_id}", delete(tokens::delete_token))
        .route("/whoami", get(tokens::whoami))
        .route(
            "/trust/roots",
            get(trust::list_roots)
                .post(trust::upload_root)
                .layer(DefaultBodyLimit::max(airlift_trust::limits::MAX_ROOT_BYTES)),
        )
        .route("/audit", get(audit::list_audit))
}

fn shadow_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/devices/{device_id}/shadow",
            get(shadow::get_device_shadow),
        )
        .route(
            "/devices/{device_id}/shadow/desired",
            put(shadow::change_device_desired)
                .patch(shadow::change_device_desired)
                .delete(shadow::delete_device_desired),
        )
        .route(
            "/shadows/tags/{tag}",
            get(shadow::get_tag_desired)
                .put(shadow::change_tag_desired)
                .patch(shadow::change_tag_desired)
                .delete(shadow::delete_tag_desired),
        )
        .route(
            "/shadows/attributes",
            get(shadow::get_attributes_desired)
                .put(shadow::change_attributes_desired)
                .patch(shadow::change_attributes_desired)
                .delete(shadow::delete_attributes_desired),
        )
        .route(
            "/shadows/expression",
            get(shadow::get_expression_desired)
                .put(shadow::change_expression_desired)
                .patch(shadow::change_expression_desired)
                .delete(shadow::delete_expression_desired),
        )
}

/// Records a change in the audit log.
pub(crate) async fn audit(
    state: &AppState,
    caller: &ApiCaller,
    action: &str,
    object: impl std::fmt::Display,
    details: serde_json::Value,
) -> ApiResult<()> {
    state
        .store()
        .append_audit(&NewAuditEntry {
            at: Utc::now(),
            actor: caller.actor(),
            action: action.to_owned(),
            object: object.to_string(),
            details,
        })
        .await?;
    tracing::info!(actor = %caller.actor(), action, "audit");
    Ok(())
}
