//! The web dashboard at `/ui/`: the fleet in a browser, for operators.
//!
//! Server-rendered HTML (maud, checked at compile time) that reads fully with
//! JavaScript off; a vendored htmx and our own `dashboard.js` add live
//! regions (server-sent events from the store's change feed, see [`live`]),
//! partial refreshes and upload progress. Every asset is embedded in the
//! binary ([`assets`]) and every response carries a Content-Security-Policy
//! with no inline script or style.
//!
//! Sign-in exchanges an API token for a session ([`session`]): a cookie
//! whose hash the store keeps, so any instance knows it and revoking the
//! token signs its browsers out. Every state-changing request carries the
//! session's CSRF token.
//!
//! This module must not hold rules of its own: every action calls the
//! management API's handler for it (`crate::api`), with the session's
//! caller, so roles, validation and audit are the API's. Pages only read the
//! store and render.

pub mod assets;
mod audit;
mod charts;
mod deployment;
mod deployment_form;
mod deployment_repair;
mod deployments;
mod device;
mod device_bulk;
mod device_shadow;
mod devices;
mod layout;
pub mod live;
mod overview;
mod package;
mod packages;
mod pending;
pub mod session;
mod tokens;

use crate::state::AppState;
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::Router;

pub use layout::PageError;

/// Where the dashboard lives.
pub const BASE: &str = "/ui";

/// The dashboard's routes, including `/` (which leads to it).
pub fn routes() -> Router<AppState> {
    let ui = Router::new()
        .route("/", get(overview::page))
        .route("/overview/fragment", get(overview::fragment))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/live", get(live::events))
        .route("/pending", get(pending::page))
        .route("/pending/decide", post(pending::decide))
        .route("/devices", get(devices::page))
        .route("/devices/bulk", post(device_bulk::bulk))
        .route("/devices/{id}", get(device::page))
        .route("/devices/{id}/fragment", get(device::fragment))
        .route("/devices/{id}/tags", post(device::set_tags))
        .route("/devices/{id}/action", post(device::action))
        .route("/packages", get(packages::page))
        .route("/packages/upload", post(packages::upload))
        .route("/packages/{id}", get(package::page))
        .route("/packages/{id}/delete", post(packages::delete))
        .route("/deployments", get(deployments::page))
        .route("/deployments/fragment", get(deployments::fragment))
        .route(
            "/deployments/new",
            get(deployment_form::page).post(deployment_form::create),
        )
        .route(
            "/deployments/new/target-expressions",
            get(deployment_form::grammar),
        )
        .route("/deployments/{id}", get(deployment::page))
        .route("/deployments/{id}/fragment", get(deployment::fragment))
        .route("/deployments/{id}/control", post(deployment::control))
        .route("/deployments/{id}/retry", post(deployment_repair::retry))
        .route(
            "/deployments/{id}/devices/{device_id}/reset",
            post(deployment_repair::reset),
        )
        .route("/tokens", get(tokens::page).post(tokens::create))
        .route("/tokens/{id}/revoke", post(tokens::revoke))
        .route("/audit", get(audit::page))
        .route("/assets/{file}", get(assets::serve))
        .layer(axum::middleware::from_fn(assets::security_headers));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        // axum 0.8 nests the dashboard's "/" at "/ui" exactly; "/ui/" (the
        // overview's address everywhere) is routed here.
        .route(
            "/ui/",
            get(overview::page).layer(axum::middleware::from_fn(assets::security_headers)),
        )
        .nest(BASE, ui)
}
