//! `GET /api/openapi.json`: an OpenAPI 3.1 document of the JSON API, derived
//! from the route table itself, so it cannot drift from the code: every
//! `/api` route appears with its method, path parameters, access rule, and
//! the request and response bodies its [`RouteDef`](super::RouteDef)
//! declares ([`super::api_doc`]), whose schemas are derived from the Rust
//! types (`utoipa::ToSchema`). schemathesis checks the live server against
//! it (`tests/tests/e2e/api_schema.rs`).

use std::collections::BTreeMap;

use axum::response::IntoResponse;
use axum::Json;
use kleidia_protocol::ErrorBody;
use serde_json::{json, Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::KnownFormat;
use utoipa::{PartialSchema, ToSchema};

use super::api_doc::{Body, Components};
use crate::auth::Access;
use crate::domain::Serial;

fn access_text(a: Access) -> String {
    match a {
        Access::Public => "public".into(),
        Access::SignedIn => "any signed-in user (object rules in the handler)".into(),
        Access::Roles(rs) => rs.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
    }
}

/// The schema of a path parameter, by its name: serial numbers are
/// [`Serial`]s, the ids of users, certificates, approvals, operations and
/// sessions UUIDs; anything else text.
fn path_param_schema(name: &str, components: &mut Components) -> Value {
    match name {
        "serial" => {
            components.push((Serial::name().into_owned(), Serial::schema()));
            json!({"$ref": format!("#/components/schemas/{}", Serial::name())})
        }
        "id" | "cert" | "approval" | "op" | "session" => json!(ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .build()),
        _ => json!({"type": "string"}),
    }
}

fn content(body: &Body, components: &mut Components) -> Value {
    (body.components)(components);
    json!({ body.content_type: { "schema": (body.schema)() } })
}

pub fn document() -> Value {
    let mut paths = Map::new();
    let mut components: Components = Vec::new();
    // Every route may answer an error in the one shape.
    components.push((ErrorBody::name().into_owned(), ErrorBody::schema()));
    let error_ref = format!("#/components/schemas/{}", ErrorBody::name());
    for route in super::routes() {
        let (method, path, access) = (route.method, route.path, route.access);
        if !path.starts_with("/api/") {
            continue;
        }
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": path_param_schema(name, &mut components)})
            })
            .collect();
        let mut responses = Map::new();
        let mut op = json!({
            "summary": format!("{method} {path}"),
            "parameters": params,
            "x-kleidia-access": access_text(access),
        });
        if let Some(doc) = &route.doc {
            if let Some(query) = doc.query {
                params.extend(query().iter().map(|p| json!(p)));
                op["parameters"] = json!(params);
            }
            if let Some(Some(body)) = &doc.request {
                op["requestBody"] = json!({
                    "required": true,
                    "content": content(body, &mut components),
                });
            }
            for a in &doc.answers {
                let mut r = json!({"description": a.description});
                if let Some(body) = &a.body {
                    r["content"] = content(body, &mut components);
                }
                responses.insert(a.status.to_string(), r);
            }
        }
        responses.insert(
            "default".into(),
            json!({
                "description": "an error: 4xx for what the caller can change, 503 while a \
                                service Kleidia needs is unavailable",
                "content": {"application/json": {"schema": {"$ref": error_ref}}},
            }),
        );
        op["responses"] = Value::Object(responses);
        if access != Access::Public {
            op["security"] = json!([{"bearer": []}, {"session": []}]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method.as_str().to_lowercase()] = op;
    }
    let schemas: BTreeMap<String, Value> = components
        .into_iter()
        .map(|(name, schema)| (name, json!(schema)))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Kleidia API", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT from POST /api/auth/login"},
                "session": {"type": "apiKey", "in": "cookie", "name": "kleidia_session"}
            }
        },
        "paths": paths,
    })
}

pub async fn serve() -> impl IntoResponse {
    Json(document())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn every_api_route_is_in_the_document() {
        let doc = super::document();
        for (method, path, _) in super::super::route_table() {
            if path.starts_with("/api/") {
                let m = method.as_str().to_lowercase();
                assert!(
                    doc["paths"][path][&m].is_object(),
                    "{method} {path} missing"
                );
            }
        }
        assert!(doc["paths"]["/api/devices/{serial}"]["get"]["parameters"][0]["name"] == "serial");
    }

    /// Every `/api` route says what it takes and answers; a route added
    /// without it fails here with what to add to its `RouteDef`.
    #[test]
    fn every_api_route_describes_its_bodies() {
        let mut missing = Vec::new();
        for route in super::super::routes() {
            if !route.path.starts_with("/api/") {
                continue;
            }
            let why = match &route.doc {
                None => Some(
                    "nothing declared: chain `.takes::<RequestType>()` (or `.takes_nothing()`) \
                     for POST/PUT/PATCH and `.gives::<ResponseType>(200, \"what it is\")` \
                     (or `.gives_nothing(204, \"…\")`) onto its RouteDef; the types need \
                     `#[derive(utoipa::ToSchema)]` (see app/src/web/api_doc.rs)",
                ),
                Some(d) => d.missing(&route.method),
            };
            if let Some(why) = why {
                missing.push(format!("{} {}: {why}", route.method, route.path));
            }
        }
        assert!(
            missing.is_empty(),
            "/api routes without a described body or answer:\n{}",
            missing.join("\n")
        );
    }

    /// Every `$ref` points at a schema the document has.
    #[test]
    fn every_reference_resolves() {
        fn walk(v: &Value, doc: &Value, bad: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let name = r.trim_start_matches("#/components/schemas/");
                        if !doc["components"]["schemas"][name].is_object() {
                            bad.push(r.clone());
                        }
                    }
                    m.values().for_each(|x| walk(x, doc, bad));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, doc, bad)),
                _ => {}
            }
        }
        let doc = super::document();
        let mut bad = Vec::new();
        walk(&doc, &doc, &mut bad);
        assert!(bad.is_empty(), "unresolved references: {bad:?}");
    }

    /// The bodies come from the types: a field of the Rust struct is a
    /// property of its schema.
    #[test]
    fn bodies_are_the_rust_types() {
        let doc = super::document();
        let login = &doc["paths"]["/api/auth/login"]["post"];
        assert_eq!(
            login["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ApiLogin"
        );
        let s = &doc["components"]["schemas"];
        assert!(s["ApiLogin"]["properties"]["password"].is_object());
        assert!(s["DeviceRow"]["properties"]["serial"].is_object());
        assert!(s["UserView"]["properties"]["must_change_password"].is_object());
        // Query strings too: the filter struct's fields are the parameters.
        let params = doc["paths"]["/api/devices"]["get"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "state" && p["in"] == "query"),
            "{params:?}"
        );
        assert_eq!(
            doc["paths"]["/api/devices"]["post"]["responses"]["201"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/DeviceRow"
        );
    }
}
