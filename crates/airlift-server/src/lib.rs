//! The Airlift update server.
//!
//! It stores signed packages, admits devices, and decides deployments; a
//! device asks it for work and reports what happened. The library holds
//! everything — [`app`] builds the router from a state, [`serve`] runs it on
//! a listener until shutdown, [`startup::prepare`] turns a [`Config`] into a
//! state — and `main.rs` only parses flags.
//!
//! This crate must not know how a device installs an update: it trusts the
//! package format's verification and the device's reports, nothing more.
//! Storage is reached only through `airlift_store::Store`, package bytes only
//! through `object_store`. Device records and active deployments are held in
//! memory ([`cache`]) and kept true across instances by the store's change
//! feed, which [`startup::prepare`] subscribes to before serving.

pub mod admission;
pub mod api;
pub mod auth;
pub mod blobs;
pub mod cache;
pub mod config;
pub mod dashboard;
pub mod device_api;
pub mod error;
pub mod extract;
pub mod listen;
pub mod observability;
pub mod openapi;
pub mod push;
pub mod release_trust;
pub mod rollout;
pub mod shadow_cache;
pub mod startup;
pub mod state;
#[cfg(feature = "test-server")]
pub mod testing;

pub use config::{Args, Config};
pub use state::AppState;

use axum::Router;
use std::future::Future;
use tokio::net::TcpListener;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

/// The whole HTTP surface for `state`.
pub fn app(state: AppState) -> Router {
    let max_device_requests = state.settings().connections.max_device_requests;
    Router::new()
        .nest(
            airlift_protocol::DEVICE_API,
            device_api::routes(max_device_requests),
        )
        .nest(airlift_protocol::MANAGEMENT_API, api::routes())
        .merge(observability::routes())
        .merge(openapi::routes())
        .merge(dashboard::routes())
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(extract::json_errors))
        .layer(axum::middleware::from_fn(observability::track_requests))
        // A 5xx that matters has its own line already (`error::ApiError`
        // logs internal errors with their detail); the layer's own line for
        // every 5xx would repeat those, and log each request shed with 503
        // under overload, a line each, as an error.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}

/// Serves `state` on `listener` — plain HTTP, or HTTPS with `tls` — within
/// the connection limits of its settings, until `shutdown` resolves; then
/// finishes the requests in flight and writes the check-in times still
/// queued.
pub async fn serve(
    listener: TcpListener,
    tls: listen::Tls,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let push = state.push().clone();
    let shutdown = async move {
        shutdown.await;
        push.close();
    };
    let limits = state.settings().connections;
    listen::serve_connections(listener, tls, app(state.clone()), limits, shutdown).await?;
    if let Err(error) = state.caches().flush_check_ins(state.store()).await {
        tracing::warn!(%error, "writing the last check-in times failed");
    }
    Ok(())
}
