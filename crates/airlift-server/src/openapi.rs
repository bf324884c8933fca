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
        device_api::authenticate, device_api::authenticate_certificate, device_api::check_in, device_api::download, device_api::report_status, device_api::report_deferral,
        crate::push::events::push,
        api::upload_package, api::list_packages, api::get_package, api::download_package, api::delete_package,
        api::list_devices, api::get_device, api::accept_device, api::reject_device, api::decommission_device,
        api::preauthorize_device, api::set_device_tags, api::request_check_in,
        api::create_deployment, api::list_deployments, api::get_deployment, api::cancel_deployment,
        api::release_install, api::end_deployment, api::list_deployment_devices,
        api::advance_deployment, api::pause_deployment, api::resume_deployment, api::abort_deployment,
        api::retry_deployment, api::reset_deployment_device, api::reset_device,
        api::create_token, api::list_tokens, api::delete_token, api::whoami, api::list_audit,
        api::get_device_shadow, api::change_device_desired, api::get_tag_desired, api::change_tag_desired,
        api::get_attributes_desired, api::change_attributes_desired, api::delete_device_desired, api::delete_tag_desired, api::delete_attributes_desired, api::get_expression_desired, api::change_expression_desired, api::delete_expression_desired, device_api::report_shadow,
        api::upload_root, api::list_roots, device_api::trust_roots,
        observability::healthz, observability::readyz, observability::metrics_text,
    ),
    components(schemas(airlift_protocol::push::Nudge)),
    modifiers(&BearerSchemes, &ClosedEnums, &VariantBounds, &DatabaseUnavailable),
    tags(
        (name = "device", description = "What devices call"),
        (name = "packages", description = "Signed update packages"),
        (name = "devices", description = "Admission, inventory, tags"),
        (name = "deployments", description = "Rolling a package out to devices"),
        (name = "tokens", description = "Management API tokens"),
        (name = "audit", description = "Who changed what"),
        (name = "shadows", description = "Desired and reported device configuration"),
        (name = "trust", description = "Signed trust roots (docs/trust.md)"),
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
    #[schema(
        content_media_type = "application/json",
        example = r#"{"reason":"deployment"}"#
    )]
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
        // `/auth/certificate`: the TLS client certificate (docs/mtls.md).
        components.add_security_scheme(
            "device_certificate",
            SecurityScheme::MutualTls {
                description: Some("A device certificate from the fleet CA (--client-ca)".into()),
                extensions: None,
            },
        );
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

/// The bounds the server puts on the values of enum variants, which utoipa
/// has no attribute for: a target's tag and attributes, percentages (a `u8`
/// would otherwise read as any non-negative 32-bit integer).
struct VariantBounds;

impl Modify for VariantBounds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use airlift_protocol::device::{MAX_INVENTORY_NAME, MAX_INVENTORY_VALUE};
        use airlift_protocol::management::{MAX_FILTER_PAIRS, MAX_TAG};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let string = |max_length| {
            let mut string = Object::with_type(Type::String);
            string.max_length = Some(max_length);
            string
        };
        for (schema, property, bound) in [
            ("Target", "tag", Bound::MaxLength(MAX_TAG)),
            ("Target", "attributes", Bound::Map(MAX_FILTER_PAIRS)),
            ("PhaseDevices", "percent", Bound::Range(1, 100)),
            ("FailureThreshold", "percent", Bound::Range(0, 100)),
        ] {
            let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(schema) else {
                continue;
            };
            for variant in &mut one_of.items {
                let RefOr::T(Schema::Object(variant)) = variant else {
                    continue;
                };
                let Some(RefOr::T(Schema::Object(value))) = variant.properties.get_mut(property)
                else {
                    continue;
                };
                match bound {
                    Bound::MaxLength(max) => value.max_length = Some(max),
                    Bound::Range(min, max) => {
                        value.minimum = Some(min.into());
                        value.maximum = Some(max.into());
                    }
                    Bound::Map(entries) => {
                        let mut name = string(MAX_INVENTORY_NAME);
                        name.min_length = Some(1);
                        value.max_properties = Some(entries);
                        value.property_names = Some(Box::new(Schema::Object(name)));
                        value.additional_properties = Some(Box::new(AdditionalProperties::RefOr(
                            RefOr::T(Schema::Object(string(MAX_INVENTORY_VALUE))),
                        )));
                    }
                }
            }
        }
    }
}

/// A bound [`VariantBounds`] puts on a variant's value.
#[derive(Clone, Copy)]
enum Bound {
    /// A string of at most this many characters.
    MaxLength(usize),
    /// An integer within these.
    Range(u8, u8),
    /// A map of strings of at most this many entries, with inventory-sized
    /// names and values.
    Map(usize),
}

/// `GET /api/openapi.json`.
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}

/// Says on every operation that reads or writes the database that it may
/// answer 503 with `Retry-After`: the database is slow (a statement past
/// its timeout, no free connection) or away. Only the probes that do not
/// ask it (`/healthz`, `/metrics`, the document itself) are left out;
/// `/readyz` documents its own 503.
struct DatabaseUnavailable;

const WITHOUT_DATABASE: &[&str] = &["/healthz", "/metrics", "/readyz", "/api/openapi.json"];

impl Modify for DatabaseUnavailable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let response = ResponseBuilder::new()
            .description("The database is slow or unavailable, or (device API) the server is at its limit of device requests in flight; try again after Retry-After seconds")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some("Seconds to wait before trying again"))
                    .build(),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if WITHOUT_DATABASE.contains(&path.as_str()) {
                continue;
            }
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                operation
                    .responses
                    .responses
                    .entry("503".to_owned())
                    .or_insert_with(|| RefOr::T(response.clone()));
            }
        }
    }
}
