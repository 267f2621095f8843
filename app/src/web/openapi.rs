//! `GET /api/openapi.json`: an OpenAPI 3.1 document of the JSON API, derived
//! from the route table itself, so it cannot drift from the code: every
//! `/api` route appears with its method, path parameters and access rule.

use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};

use crate::auth::Access;

fn access_text(a: Access) -> String {
    match a {
        Access::Public => "public".into(),
        Access::SignedIn => "any signed-in user (object rules in the handler)".into(),
        Access::Roles(rs) => rs.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
    }
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, access) in super::route_table() {
        if !path.starts_with("/api/") {
            continue;
        }
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": format!("{method} {path}"),
            "parameters": params,
            "x-kleidia-access": access_text(access),
            "responses": {
                "default": {"description": "JSON; errors are {\"error\": code, \"message\": text}"}
            },
        });
        if access != Access::Public {
            op["security"] = json!([{"bearer": []}, {"session": []}]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method.as_str().to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Kleidia API", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT from POST /api/auth/login"},
            "session": {"type": "apiKey", "in": "cookie", "name": "kleidia_session"}
        }},
        "paths": paths,
    })
}

pub async fn serve() -> impl IntoResponse {
    Json(document())
}

#[cfg(test)]
mod tests {
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
}
