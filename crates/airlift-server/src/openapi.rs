//! The OpenAPI document, generated from the handlers' annotations and the
//! protocol types, served at `/api/openapi.json`.

use crate::state::AppState;
use crate::{api, device_api, observability};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::BTreeMap;
use utoipa::openapi::schema::{AdditionalProperties, Object, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
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
    components(schemas(airlift_protocol::push::Nudge)),
    modifiers(&BearerSchemes, &ClosedEnums),
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

/// A package file (`.airlift`) as raw bytes: the upload's body and the
/// downloads' answer. Only the document uses this type; the handlers stream
/// the bytes.
#[derive(Debug, utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct PackageFile(pub Vec<u8>);

/// One server-sent event of `GET /api/device/v1/push`, as a client reads
/// it: its type and its data. (Comment lines keep an idle stream alive.)
#[derive(Debug, utoipa::ToSchema)]
pub struct NudgeEvent {
    /// The event's type: always `check-in`.
    #[schema(pattern = "^check-in$", example = "check-in")]
    pub event: String,
    /// A `Nudge` as JSON text, e.g. `{"reason":"deployment"}`.
    #[schema(content_media_type = "application/json", example = r#"{"reason":"deployment"}"#)]
    pub data: String,
}

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

/// Enums in request bodies whose variants refuse unknown keys, as the
/// server does (`#[serde(deny_unknown_fields)]`; an externally tagged enum
/// takes one key and nothing beside it).
const CLOSED_ENUMS: &[&str] = &["Target", "Strategy", "PhaseDevices", "FailureThreshold"];

/// Says `additionalProperties: false` on the variants of [`CLOSED_ENUMS`].
/// utoipa says it for a struct with `deny_unknown_fields`, not for an
/// enum's variants; and it writes a newtype variant of an internally tagged
/// enum (`Strategy`'s `phased`) as `allOf` the inner struct and the tag,
/// which no object could match once the struct is closed — so that variant
/// becomes one closed object with the struct's fields and the tag.
struct ClosedEnums;

impl Modify for ClosedEnums {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in CLOSED_ENUMS {
            let Some(RefOr::T(Schema::OneOf(mut one_of))) = components.schemas.get(*name).cloned()
            else {
                continue;
            };
            one_of.items = one_of
                .items
                .into_iter()
                .map(|variant| closed(variant, &components.schemas))
                .collect();
            components
                .schemas
                .insert((*name).to_owned(), RefOr::T(Schema::OneOf(one_of)));
        }
    }
}

/// `variant` as one object refusing keys it does not list; unchanged if it
/// is of another shape.
fn closed(variant: RefOr<Schema>, schemas: &BTreeMap<String, RefOr<Schema>>) -> RefOr<Schema> {
    let mut object = match variant {
        RefOr::T(Schema::Object(object)) => object,
        RefOr::T(Schema::AllOf(all_of)) => {
            let mut merged = Object::with_type(Type::Object);
            for part in &all_of.items {
                let part = match part {
                    RefOr::Ref(reference) => reference
                        .ref_location
                        .strip_prefix("#/components/schemas/")
                        .and_then(|name| schemas.get(name)),
                    inline => Some(inline),
                };
                let Some(RefOr::T(Schema::Object(part))) = part else {
                    return RefOr::T(Schema::AllOf(all_of));
                };
                merged.properties.extend(part.properties.clone());
                merged.required.extend(part.required.iter().cloned());
            }
            merged.description = all_of.description;
            merged
        }
        other => return other,
    };
    object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    RefOr::T(Schema::Object(object))
}

/// `GET /api/openapi.json`.
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}
