//! The OpenAPI document, generated from the handlers' annotations and the
//! protocol types, served at `/api/openapi.json`.

use crate::state::AppState;
use crate::{api, device_api, observability};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Airlift", description = "Over-the-air updates for device fleets: the device API (/api/device/v1) and the management API (/api/v1)."),
    paths(
        device_api::authenticate, device_api::check_in, device_api::download, device_api::report_status,
        crate::push::events::push,
        api::upload_package, api::list_packages, api::get_package, api::download_package, api::delete_package,
        api::list_devices, api::get_device, api::accept_device, api::reject_device, api::decommission_device,
        api::preauthorize_device, api::set_device_tags, api::request_check_in,
        api::create_deployment, api::list_deployments, api::get_deployment, api::cancel_deployment,
        api::release_install,
        api::advance_deployment, api::pause_deployment, api::resume_deployment, api::abort_deployment,
        api::create_token, api::list_tokens, api::delete_token, api::whoami, api::list_audit,
        observability::healthz, observability::readyz, observability::metrics_text,
    ),
    modifiers(&BearerSchemes),
    tags(
        (name = "device", description = "What devices call"),
        (name = "packages", description = "Signed update packages"),
        (name = "devices", description = "Admission, inventory, tags"),
        (name = "deployments", description = "Rolling a package out to devices"),
        (name = "tokens", description = "Management API tokens"),
        (name = "audit", description = "Who changed what"),
        (name = "operations", description = "Probes and metrics"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer =
            || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("api_token", bearer());
        components.add_security_scheme("device_token", bearer());
    }
}

/// `GET /api/openapi.json`.
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}
