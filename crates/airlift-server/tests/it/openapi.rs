//! The OpenAPI document is what clients are generated from, so it must say
//! what the server does: where each parameter goes, which ids are UUIDs,
//! which errors each operation can answer, which bodies are closed. These
//! tests read the document as JSON, the way a generator does; `.ci/schemathesis`
//! then checks the running server against it.

use airlift_server::openapi::ApiDoc;
use serde_json::Value;
use std::collections::BTreeSet;
use utoipa::OpenApi;

fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the document serializes")
}

/// Every operation: (method, path template, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
            ) {
                out.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    assert!(out.len() > 30, "found only {} operations", out.len());
    out
}

/// Follows a `$ref` into `components`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("local $ref");
            resolve(doc, doc.pointer(pointer).expect("$ref resolves"))
        }
        None => value,
    }
}

fn parameters<'a>(doc: &'a Value, operation: &'a Value) -> Vec<&'a Value> {
    operation["parameters"]
        .as_array()
        .map(|list| list.iter().map(|p| resolve(doc, p)).collect())
        .unwrap_or_default()
}

fn has_security(operation: &Value) -> bool {
    operation["security"].as_array().is_some_and(|list| {
        list.iter()
            .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
    })
}

fn statuses(operation: &Value) -> BTreeSet<String> {
    operation["responses"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

fn path_template_names(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

/// The JSON schema of an error answer is `ErrorBody`.
fn is_error_body(doc: &Value, response: &Value) -> bool {
    let response = resolve(doc, response);
    response["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorBody"
}

#[test]
fn every_protected_operation_documents_401() {
    let doc = document();
    let mut missing = Vec::new();
    for (method, path, operation) in operations(&doc) {
        if !has_security(&operation) {
            continue;
        }
        match operation["responses"].get("401") {
            Some(response) if is_error_body(&doc, response) => {}
            _ => missing.push(format!("{method} {path}")),
        }
    }
    assert!(missing.is_empty(), "no 401 (ErrorBody) on: {missing:#?}");
}

#[test]
fn every_management_and_device_operation_is_protected_except_device_auth() {
    let doc = document();
    let mut open = Vec::new();
    for (method, path, operation) in operations(&doc) {
        let api = path.starts_with("/api/");
        if api && path != "/api/device/v1/auth" && !has_security(&operation) {
            open.push(format!("{method} {path}"));
        }
    }
    assert!(open.is_empty(), "no security requirement on: {open:#?}");
}

#[test]
fn role_checked_operations_document_403_and_only_they_do() {
    let doc = document();
    // Every change through the management API needs an operator or admin
    // token; reading tokens and the audit log needs an admin.
    let admin_reads = ["GET /api/v1/tokens", "GET /api/v1/audit"];
    let mut wrong = Vec::new();
    for (method, path, operation) in operations(&doc) {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        let label = format!("{method} {path}");
        let checked = method != "GET" || admin_reads.contains(&label.as_str());
        let documented = operation["responses"]
            .get("403")
            .is_some_and(|r| is_error_body(&doc, r));
        if checked != documented {
            wrong.push(format!(
                "{label}: role check {checked}, 403 documented {documented}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn path_parameters_are_exactly_the_path_template() {
    let doc = document();
    let mut wrong = Vec::new();
    for (method, path, operation) in operations(&doc) {
        let template = path_template_names(&path);
        let mut in_path = BTreeSet::new();
        for parameter in parameters(&doc, &operation) {
            let name = parameter["name"].as_str().expect("named").to_owned();
            if parameter["in"] == "path" {
                if !template.contains(&name) {
                    wrong.push(format!(
                        "{method} {path}: {name} is in: path but not in the path"
                    ));
                }
                if parameter["required"] != true {
                    wrong.push(format!(
                        "{method} {path}: path parameter {name} is not required"
                    ));
                }
                in_path.insert(name);
            }
        }
        for name in template.difference(&in_path) {
            wrong.push(format!("{method} {path}: {{{name}}} is not documented"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn path_ids_are_uuids_and_a_malformed_one_is_400() {
    let doc = document();
    let mut wrong = Vec::new();
    let mut seen = 0;
    for (method, path, operation) in operations(&doc) {
        for parameter in parameters(&doc, &operation) {
            let name = parameter["name"].as_str().unwrap_or_default();
            if parameter["in"] != "path" || !name.ends_with("_id") {
                continue;
            }
            seen += 1;
            let schema = resolve(&doc, &parameter["schema"]);
            if schema["type"] != "string" || schema["format"] != "uuid" {
                wrong.push(format!("{method} {path}: {name} is {schema}"));
            }
            if !operation["responses"]
                .get("400")
                .is_some_and(|r| is_error_body(&doc, r))
            {
                wrong.push(format!(
                    "{method} {path}: no 400 (ErrorBody) for a malformed {name}"
                ));
            }
        }
    }
    assert!(seen >= 19, "only {seen} path ids");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

fn query_parameters(doc: &Value, method: &str, path: &str) -> Vec<Value> {
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is documented");
    parameters(doc, operation).into_iter().cloned().collect()
}

#[test]
fn list_filters_and_paging_are_query_parameters_with_bounds() {
    let doc = document();
    let devices = query_parameters(&doc, "get", "/api/v1/devices");
    let audit = query_parameters(&doc, "get", "/api/v1/audit");
    let names = |list: &[Value]| -> BTreeSet<String> {
        list.iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        names(&devices),
        [
            "status",
            "device_type",
            "tag",
            "attributes",
            "installed",
            "search",
            "connectivity",
            "deployment",
            "update_state",
            "reason",
            "where",
            "sort",
            "page",
            "per_page"
        ]
        .map(str::to_owned)
        .into()
    );
    assert_eq!(
        names(&audit),
        ["page", "per_page", "before", "actor", "action", "object", "since", "until"]
            .map(str::to_owned)
            .into()
    );
    for parameter in devices.iter().chain(&audit) {
        assert_eq!(parameter["in"], "query", "{parameter}");
        assert_ne!(parameter["required"], true, "{parameter}");
    }
    let find = |list: &[Value], name: &str| {
        list.iter()
            .find(|p| p["name"] == name)
            .expect("documented")
            .clone()
    };
    let page = find(&devices, "page");
    assert_eq!(page["schema"]["minimum"], 1, "{page}");
    for (list, name) in [(&devices, "per_page"), (&audit, "per_page")] {
        let parameter = find(list, name);
        assert_eq!(parameter["schema"]["minimum"], 1, "{parameter}");
        assert_eq!(parameter["schema"]["maximum"], 1000, "{parameter}");
    }
    for path in ["/api/v1/devices", "/api/v1/audit"] {
        let responses = statuses(&doc["paths"][path]["get"]);
        assert!(responses.contains("400"), "{path}: {responses:?}");
    }
}

/// Objects reachable from `schema` that list properties but do not say
/// `additionalProperties: false`.
fn open_objects(
    doc: &Value,
    schema: &Value,
    at: &str,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<String>,
) {
    if let Some(reference) = schema["$ref"].as_str() {
        if seen.insert(reference.to_owned()) {
            open_objects(doc, resolve(doc, schema), reference, seen, out);
        }
        return;
    }
    if schema["properties"].is_object() && schema["additionalProperties"] != false {
        out.push(at.to_owned());
    }
    for key in ["oneOf", "anyOf", "allOf", "prefixItems"] {
        for (i, item) in schema[key].as_array().into_iter().flatten().enumerate() {
            open_objects(doc, item, &format!("{at}/{key}/{i}"), seen, out);
        }
    }
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        open_objects(doc, property, &format!("{at}/{name}"), seen, out);
    }
    for key in ["items", "additionalProperties"] {
        if schema[key].is_object() {
            open_objects(doc, &schema[key], &format!("{at}/{key}"), seen, out);
        }
    }
}

#[test]
fn json_request_bodies_refuse_unknown_keys_and_document_400_and_413() {
    let doc = document();
    let mut wrong = Vec::new();
    for (method, path, operation) in operations(&doc) {
        let Some(body) = operation["requestBody"]["content"]["application/json"].get("schema")
        else {
            continue;
        };
        let mut open = Vec::new();
        open_objects(&doc, body, "body", &mut BTreeSet::new(), &mut open);
        if !open.is_empty() {
            wrong.push(format!("{method} {path}: open objects {open:?}"));
        }
        let responses = statuses(&operation);
        for status in ["400", "413"] {
            if !responses.contains(status) {
                wrong.push(format!("{method} {path}: no {status}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let target = &doc["components"]["schemas"]["Target"];
    let variants = target["oneOf"].as_array().expect("Target is one of four");
    assert_eq!(variants.len(), 4, "{target}");
    for variant in variants {
        assert_eq!(variant["additionalProperties"], false, "{variant}");
    }
}

#[test]
fn error_answers_are_error_bodies() {
    let doc = document();
    let mut wrong = Vec::new();
    for (method, path, operation) in operations(&doc) {
        for (status, response) in operation["responses"].as_object().expect("responses") {
            let error = status.starts_with('4') || status.starts_with('5');
            let plain = ["/healthz", "/readyz", "/metrics"].contains(&path.as_str());
            // A refused device hears it in the auth answer's own shape.
            let auth_refusal = (path == "/api/device/v1/auth"
                || path == "/api/device/v1/auth/certificate")
                && status == "403";
            if error && !plain && !auth_refusal && !is_error_body(&doc, response) {
                wrong.push(format!("{method} {path} {status}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn package_bytes_are_binary() {
    let doc = document();
    let upload = &doc["paths"]["/api/v1/packages"]["post"]["requestBody"];
    assert_eq!(upload["required"], true, "{upload}");
    let content = upload["content"].as_object().expect("content");
    assert_eq!(
        content.keys().collect::<Vec<_>>(),
        ["application/octet-stream"]
    );
    let schema = resolve(&doc, &content["application/octet-stream"]["schema"]);
    assert_eq!(schema["type"], "string", "{schema}");
    assert_eq!(schema["format"], "binary", "{schema}");
    let upload_statuses = statuses(&doc["paths"]["/api/v1/packages"]["post"]);
    for status in ["201", "401", "403", "409", "413", "422"] {
        assert!(upload_statuses.contains(status), "upload: {status}");
    }

    for path in [
        "/api/v1/packages/{package_id}/download",
        "/api/device/v1/deployments/{deployment_id}/download",
    ] {
        let operation = &doc["paths"][path]["get"];
        for status in ["200", "206"] {
            let schema = resolve(
                &doc,
                &operation["responses"][status]["content"]["application/octet-stream"]["schema"],
            );
            assert_eq!(schema["format"], "binary", "{path} {status}: {schema}");
        }
        for status in ["400", "404", "416"] {
            assert!(statuses(operation).contains(status), "{path}: {status}");
        }
        let headers: BTreeSet<String> = parameters(&doc, operation)
            .iter()
            .filter(|p| p["in"] == "header")
            .map(|p| p["name"].as_str().unwrap_or_default().to_ascii_lowercase())
            .collect();
        assert!(
            headers.contains("range") && headers.contains("if-range"),
            "{path}: {headers:?}"
        );
    }
}

#[test]
fn the_device_api_is_documented() {
    let doc = document();
    let auth = &doc["paths"]["/api/device/v1/auth"]["post"];
    assert_eq!(
        auth["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/AuthRequest"
    );
    let signature = parameters(&doc, auth)
        .into_iter()
        .find(|p| p["name"] == "x-airlift-signature")
        .expect("signature header");
    assert_eq!(signature["in"], "header");
    assert_eq!(signature["required"], true);
    for status in ["200", "202", "400", "401", "403", "413"] {
        assert!(statuses(auth).contains(status), "auth: {status}");
    }
    let check_in = &doc["paths"]["/api/device/v1/check-in"]["post"];
    for status in ["200", "400", "401", "413"] {
        assert!(statuses(check_in).contains(status), "check-in: {status}");
    }
    let status = &doc["paths"]["/api/device/v1/deployments/{deployment_id}/status"]["post"];
    for code in ["200", "400", "401", "404", "410", "413"] {
        assert!(statuses(status).contains(code), "status: {code}");
    }
    let download = &doc["paths"]["/api/device/v1/deployments/{deployment_id}/download"]["get"];
    assert!(statuses(download).contains("410"), "download: 410");
    let push = &doc["paths"]["/api/device/v1/push"]["get"];
    let content = push["responses"]["200"]["content"]
        .as_object()
        .expect("push content");
    assert_eq!(content.keys().collect::<Vec<_>>(), ["text/event-stream"]);
    for (path, scheme) in [
        ("/api/device/v1/check-in", "device_token"),
        ("/api/v1/devices", "api_token"),
    ] {
        let operation = doc["paths"][path]
            .as_object()
            .and_then(|item| item.values().next())
            .expect("operation");
        assert!(
            operation["security"][0].get(scheme).is_some(),
            "{path}: {}",
            operation["security"]
        );
    }
}
