//! `/api/device/v1`: authentication, check-in, download, status reports.

mod authenticate;
pub mod certificate;
mod check_in;
mod deferral;
mod download;
pub mod peer;
mod shadow;
pub mod shed;
mod status;
mod trust;

use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub use authenticate::__path_authenticate;
pub(crate) use authenticate::validate_identity;
pub use certificate::__path_authenticate_certificate;
pub use check_in::__path_check_in;
pub use deferral::__path_report_deferral;
pub use download::__path_download;
pub use shadow::__path_report_shadow;
pub use status::__path_report_status;
pub use trust::__path_trust_roots;
pub(crate) use trust::stamp;

/// Largest JSON body a device may send.
const DEVICE_BODY_LIMIT: usize = 64 * 1024;

/// The device API's routes; at most `max_requests` of the short ones
/// (authentication, check-ins, reports) in flight, the rest shed.
pub fn routes(max_requests: usize) -> Router<AppState> {
    let short = Router::new()
        .route("/auth", post(authenticate::authenticate))
        .route(
            "/auth/certificate",
            post(certificate::authenticate_certificate),
        )
        .route("/check-in", post(check_in::check_in))
        .route("/trust/roots", get(trust::trust_roots))
        .route(
            "/deployments/{deployment_id}/status",
            post(status::report_status),
        )
        .route(
            "/deployments/{deployment_id}/deferral",
            post(deferral::report_deferral),
        )
        .route(
            "/shadow/reported",
            axum::routing::put(shadow::report_shadow)
                .layer(DefaultBodyLimit::max(shadow::REPORTED_BODY_LIMIT)),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            shed::InFlight::new(max_requests),
            shed::shed,
        ));
    Router::new()
        .merge(short)
        .route("/push", get(crate::push::events::push))
        .route(
            "/deployments/{deployment_id}/download",
            get(download::download),
        )
        .layer(DefaultBodyLimit::max(DEVICE_BODY_LIMIT))
}
