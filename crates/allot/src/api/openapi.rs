//! The OpenAPI document (`GET /v1/openapi.json`), built from the route
//! table: per operation its path and query parameters, its request body,
//! its success status and its 429 where it can answer one. Bodies and
//! queries are JSON Schemas derived (schemars) from the very types the
//! handlers deserialize, so a field added to one is in the document without
//! anyone writing it; bodies are `$ref`s to `components.schemas`.

use super::bodies::BudgetTable;
use super::routes::{ROUTES, Route};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema, json_schema};
use serde_json::{Value, json};
use std::borrow::Cow;

/// A quantity in a body: a number, or a string in human units.
#[derive(Debug)]
pub(super) enum Quantity {}

impl JsonSchema for Quantity {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [{"type": "number"}, {"type": "string"}],
            "description": "A number, or a quantity string in human units (\"300Mi\", \"200m\", \"1.2k\"; a count may carry its window, \"400/h\")",
        })
    }
}

/// A budget of a pool: the short form (`"5M/day"`, a count) or its table.
#[derive(Debug)]
pub(super) enum Budget {}

impl JsonSchema for Budget {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Budget".into()
    }

    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [{"type": "string"}, {"type": "integer"}, g.subschema_for::<BudgetTable>()],
            "description": "A budget: \"5M/day\", \"100k/min\", \"500k\" (per minute), or its table",
        })
    }
}

/// A group total: a quantity on a measured resource, a budget on a custom one.
#[derive(Debug)]
pub(super) enum Total {}

impl JsonSchema for Total {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Total".into()
    }

    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [{"type": "number"}, {"type": "string"}, g.subschema_for::<BudgetTable>()],
            "description": "A quantity on a measured resource (\"2Gi\", \"500m\"), a budget on a custom one (\"5M/day\" or its table)",
        })
    }
}

/// How the route table names a schema: of a body (a `$ref` into the
/// generator's definitions) or of a query (the whole object, inline).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The body schema of `T`.
pub(super) fn body<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// The query schema of `T`.
pub(super) fn query<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.root_schema_for::<T>()
}

/// The error object every error answer carries.
fn error_schema() -> Value {
    json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "description": "not_found, conflict, invalid, exhausted, throttled, busy, ..."},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "The field at fault (invalid)"},
        "level": {"type": "string", "description": "The budget level that refused (exhausted): agent:ID, group:NAME or pool:NAME"},
        "resource": {"type": "string", "description": "The resource refused (exhausted, throttled)"},
        "retry_after": {"type": "number", "nullable": true, "description": "Seconds until it may succeed (exhausted, throttled); null: never (more than the limit)"}
    }}}})
}

/// Query parameters from a query type's object schema: each property with
/// its description and type (optional unless the type requires it).
fn query_parameters(schema: &Schema) -> Vec<Value> {
    let required: Vec<&str> = schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return Vec::new() };
    props
        .iter()
        .map(|(name, s)| {
            let mut s = s.clone();
            let description = s.as_object_mut().and_then(|o| {
                o.remove("nullable");
                o.remove("description")
            });
            json!({"name": name, "in": "query", "required": required.contains(&name.as_str()), "description": description, "schema": s})
        })
        .collect()
}

fn status_description(status: u16) -> &'static str {
    match status {
        201 => "Created",
        204 => "No content",
        _ => "OK",
    }
}

fn operation(r: &Route, bodies: &mut SchemaGenerator, queries: &mut SchemaGenerator) -> Value {
    let mut params: Vec<Value> = r
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if let Some(q) = r.query {
        params.extend(query_parameters(&q(queries)));
    }
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut responses = serde_json::Map::new();
    responses.insert(r.ok.to_string(), json!({"description": status_description(r.ok)}));
    if let Some(why) = r.too_many {
        responses.insert("429".into(), error(why));
    }
    responses.insert("4XX".into(), error("Bad request, forbidden, not found, conflict or invalid"));
    responses.insert("5XX".into(), error("The governor failed or is unavailable"));
    let mut op = json!({
        "summary": r.summary,
        "description": format!("Who may call it: {} (decided by the caller's peer credentials on the Unix socket).", r.access.describe()),
        "parameters": params,
        "responses": responses,
    });
    if let Some(b) = r.body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": b(bodies)}}});
    }
    op
}

/// `{"anyOf": [S, {"enum": [null], "nullable": true}]}` (an `Option` of a
/// type with its own schema, as schemars writes it for OpenAPI 3.0) as `S`
/// with `nullable: true` (`allOf: [S]` for a `$ref`, which takes no
/// siblings), everywhere under `v`.
fn fold_nullable(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let null = json!({"enum": [null], "nullable": true});
            let folded = match o.get("anyOf").and_then(Value::as_array).map(Vec::as_slice) {
                Some([s, n]) if *n == null => Some(s.clone()),
                _ => None,
            };
            if let Some(mut s) = folded {
                o.remove("anyOf");
                o.insert("nullable".into(), Value::Bool(true));
                match s.as_object_mut() {
                    Some(so) if !so.contains_key("$ref") => {
                        for (k, x) in std::mem::take(so) {
                            o.entry(k).or_insert(x);
                        }
                    }
                    _ => drop(o.insert("allOf".into(), json!([s]))),
                }
            }
            o.values_mut().for_each(fold_nullable);
        }
        Value::Array(a) => a.iter_mut().for_each(fold_nullable),
        _ => {}
    }
}

/// The document.
pub(super) fn document() -> Value {
    let mut bodies = SchemaSettings::openapi3().into_generator();
    let mut queries = SchemaSettings::openapi3().into_generator();
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let op = operation(r, &mut bodies, &mut queries);
        paths.entry(r.path.to_owned()).or_insert_with(|| json!({}))[r.method.name()] = op;
    }
    let mut schemas = bodies.take_definitions(true);
    schemas.values_mut().for_each(fold_nullable);
    schemas.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.0.3",
        "info": {"title": "allot daemon API", "version": env!("CARGO_PKG_VERSION"), "description": "HTTP JSON API of allot, a resource governor for multi-agent systems, served on a Unix socket."},
        "paths": paths,
        "components": {"schemas": schemas}
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every `$ref` under `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                o.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_operation_lists_its_body_query_and_statuses() {
        let doc = document();
        let mut queries = SchemaSettings::openapi3().into_generator();
        let resolve = |s: &Value| -> Value {
            let name = s["$ref"].as_str().unwrap().strip_prefix("#/components/schemas/").unwrap();
            doc["components"]["schemas"][name].clone()
        };
        for r in ROUTES {
            let what = format!("{} {}", r.method.name(), r.path);
            let op = &doc["paths"][r.path][r.method.name()];
            let rb = &op["requestBody"];
            match r.body {
                None => assert!(rb.is_null(), "{what} reads no body"),
                Some(_) => {
                    assert_eq!(rb["required"], true, "{what}");
                    let schema = resolve(&rb["content"]["application/json"]["schema"]);
                    assert_eq!(schema["type"], "object", "{what}: {schema}");
                    let props = schema["properties"].as_object().map_or(0, serde_json::Map::len);
                    // A struct lists its fields and refuses others; a map (a pool's budgets) says what each value is.
                    let ok = (props > 0 && schema["additionalProperties"] == false) || schema["additionalProperties"].is_object();
                    assert!(ok, "{what}: {schema}");
                }
            }
            let in_query: Vec<&Value> = op["parameters"].as_array().unwrap().iter().filter(|p| p["in"] == "query").collect();
            let want: Vec<String> = r
                .query
                .map_or_else(Vec::new, |q| q(&mut queries).get("properties").and_then(Value::as_object).unwrap().keys().cloned().collect());
            assert_eq!(in_query.iter().map(|p| p["name"].as_str().unwrap()).collect::<Vec<_>>(), want, "{what}");
            for p in in_query {
                assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()), "{what}: {p}");
                assert!(p["schema"]["type"].is_string(), "{what}: {p}");
                assert_eq!(p["required"], false, "{what}: {p}");
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key(&r.ok.to_string()), "{what}");
            assert_eq!(responses.contains_key("429"), r.too_many.is_some(), "{what}");
            assert_eq!(responses.keys().filter(|k| k.starts_with('2')).count(), 1, "{what}");
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            assert!(resolve(&json!({ "$ref": r })).is_object(), "{r} resolves");
        }
        assert!(!doc.to_string().contains("\"enum\":[null]"), "every Option folded into nullable");
    }

    #[test]
    fn the_document_names_what_the_routes_take() {
        let doc = document();
        let op = |m: &str, p: &str| doc["paths"][p][m].clone();
        let body = |m: &str, p: &str| op(m, p)["requestBody"]["content"]["application/json"]["schema"]["$ref"].clone();
        for (m, p, name) in [
            ("post", "/v1/agents", "StartBody"),
            ("post", "/v1/adopt", "AdoptBody"),
            ("patch", "/v1/agents/{id}/quota", "QuotaBody"),
            ("post", "/v1/agents/{id}/usage", "UsageBody"),
            ("post", "/v1/agents/{id}/ack", "AckBody"),
            ("post", "/v1/agents/{id}/reservations", "ReserveBody"),
            ("post", "/v1/reservations/{rid}/settle", "SettleBody"),
            ("put", "/v1/pools/{name}", "PoolBody"),
            ("post", "/v1/groups/{name}", "GroupBody"),
            ("put", "/v1/groups/{name}", "GroupBody"),
        ] {
            assert_eq!(body(m, p), format!("#/components/schemas/{name}"), "{m} {p}");
        }
        let schemas = &doc["components"]["schemas"];
        let start = &schemas["StartBody"];
        assert_eq!(start["required"], json!(["name", "group", "command"]));
        assert_eq!(start["properties"]["limits"]["additionalProperties"]["$ref"], "#/components/schemas/LimitBody");
        assert_eq!(start["properties"]["priority"]["nullable"], true);
        assert_eq!(
            schemas["AdoptBody"]["properties"]["move"],
            json!({"type": "boolean", "default": false, "description": "Move it into the agent's cgroup (only when asked)."})
        );
        let quantity = json!([{"type": "number"}, {"type": "string"}]);
        assert_eq!(schemas["LimitBody"]["properties"]["hard"]["anyOf"], quantity);
        assert_eq!(schemas["LimitBody"]["properties"]["hard"]["nullable"], true);
        assert_eq!(schemas["GroupBody"]["properties"]["custom_handler"]["allOf"], json!([{"$ref": "#/components/schemas/HandlerBody"}]));
        assert_eq!(schemas["PoolBody"]["additionalProperties"]["anyOf"][2]["$ref"], "#/components/schemas/BudgetTable");
        let names = |m: &str, p: &str| -> Vec<String> {
            op(m, p)["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["in"] == "query")
                .map(|x| x["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names("post", "/v1/agents/{id}/resume"), ["force"]);
        assert_eq!(names("post", "/v1/agents/{id}/throttle"), ["cpu"]);
        assert_eq!(names("get", "/v1/agents/{id}/analysis"), ["horizon", "resource", "window"]);
        assert_eq!(names("get", "/v1/report"), ["format", "since", "until"]);
        assert_eq!(names("get", "/v1/events"), ["follow", "since", "topic"]);
        assert_eq!(names("get", "/v1/history"), ["agent"]);
        let reserve = op("post", "/v1/agents/{id}/reservations");
        assert!(reserve["responses"]["201"].is_object() && reserve["responses"]["429"].is_object(), "{reserve}");
        assert!(op("post", "/v1/agents")["responses"]["201"].is_object());
        assert!(op("post", "/v1/adopt")["responses"]["201"].is_object());
        assert!(op("delete", "/v1/groups/{name}")["responses"]["204"].is_object());
        let error = &schemas["Error"]["properties"]["error"]["properties"];
        for member in ["code", "message", "field", "level", "resource", "retry_after"] {
            assert!(error[member].is_object(), "{member}");
        }
    }
}
