//! `/api/device/v1`: authentication, check-in, download, status reports.

mod authenticate;
mod check_in;
mod download;
mod status;

use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub use authenticate::__path_authenticate;
pub(crate) use authenticate::validate_identity;
pub use check_in::__path_check_in;
pub use download::__path_download;
pub use status::__path_report_status;

/// Largest JSON body a device may send.
const DEVICE_BODY_LIMIT: usize = 64 * 1024;

/// The device API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth", post(authenticate::authenticate))
        .route("/check-in", post(check_in::check_in))
        .route("/push", get(crate::push::events::push))
        .route(
            "/deployments/{deployment_id}/download",
            get(download::download),
        )
        .route(
            "/deployments/{deployment_id}/status",
            post(status::report_status),
        )
        .layer(DefaultBodyLimit::max(DEVICE_BODY_LIMIT))
}
