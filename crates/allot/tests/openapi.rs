//! The OpenAPI document against a real daemon: every request body and query
//! parameter it lists is taken (a request naming each of them succeeds with
//! the documented status), and where it says `additionalProperties: false`
//! (or lists a route's query) an unknown member is refused, naming it.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use real_daemon::{call, cgroups_here, launch, running};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;

const FLEET: &str = r#"
[pools.p]
tokens = "1M/day"
"#;

/// A body naming `bogus_member` refused: 4xx with the name in the answer.
const BOGUS: &str = "bogus_member";

fn resolve<'a>(doc: &'a Value, s: &'a Value) -> (&'a Value, Option<String>) {
    match s["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            (&doc["components"]["schemas"][name], Some(name.to_owned()))
        }
        None => (s, None),
    }
}

/// What a walk of an example against its schema found: the schema
/// properties it named (by component) and where an object refuses unknown members.
#[derive(Default)]
struct Walk {
    named: BTreeSet<(String, String)>,
    components: BTreeSet<String>,
    strict: Vec<Vec<String>>,
}

impl Walk {
    fn go(&mut self, doc: &Value, schema: &Value, v: &Value, at: &[String], component: &str) {
        let (schema, name) = resolve(doc, schema);
        let component = name.unwrap_or_else(|| component.to_owned());
        self.components.insert(component.clone());
        if let Some([s]) = schema["allOf"].as_array().map(Vec::as_slice) {
            return self.go(doc, s, v, at, &component);
        }
        if let Some(branches) = schema["anyOf"].as_array() {
            let fits = |b: &Value| {
                let b = resolve(doc, b).0;
                match v {
                    Value::Object(_) => b["type"] == "object",
                    Value::String(_) => b["type"] == "string",
                    Value::Number(n) => b["type"] == "number" || (b["type"] == "integer" && n.is_u64()),
                    _ => false,
                }
            };
            let b = branches.iter().find(|b| fits(b)).unwrap_or_else(|| panic!("{v} fits no branch of {schema}"));
            return self.go(doc, b, v, at, &component);
        }
        let Value::Object(o) = v else { return };
        if schema["additionalProperties"] == false {
            self.strict.push(at.to_vec());
        }
        for (k, x) in o {
            let here: Vec<String> = at.iter().cloned().chain([k.clone()]).collect();
            if let Some(p) = schema["properties"].get(k) {
                self.named.insert((component.clone(), k.clone()));
                self.go(doc, p, x, &here, &component);
            } else {
                let map = &schema["additionalProperties"];
                assert!(map.is_object(), "{k} is not a property of {component}: {schema}");
                self.go(doc, map, x, &here, &component);
            }
        }
    }
}

/// `v` with `bogus_member` added to the object at `at`.
fn with_bogus(v: &Value, at: &[String]) -> Value {
    let mut v = v.clone();
    let mut o = &mut v;
    for k in at {
        o = &mut o[k.as_str()];
    }
    o.as_object_mut().unwrap().insert(BOGUS.into(), json!(1));
    v
}

fn op<'a>(doc: &'a Value, method: &str, template: &str) -> &'a Value {
    let op = &doc["paths"][template][method.to_lowercase()];
    assert!(op.is_object(), "{method} {template} is not in the document");
    op
}

/// The success status the document gives an operation.
fn ok_status(op: &Value) -> u16 {
    op["responses"].as_object().unwrap().keys().find(|k| k.starts_with('2')).unwrap().parse().unwrap()
}

fn bodies_are_taken_and_nothing_more(sock: &Path, doc: &Value) {
    let limit = json!({"soft": "100Mi", "hard": "200Mi", "burst": "250Mi", "burst_window": "10s", "action": "throttle"});
    let rolling = json!({"hard": "1k", "soft": 500, "per": "h", "on_expiry": "release"});
    let calendar = json!({"hard": 1000, "soft": "500", "calendar": "month", "day": 1, "at": "00:00", "tz": "UTC", "on_expiry": "charge"});
    let mut adoptee = std::process::Command::new("sleep").arg("600").spawn().unwrap();
    // (method, path template, path, body): together they name every property of every body schema.
    let mut examples: Vec<(&str, &str, String, Value)> = vec![
        (
            "POST",
            "/v1/agents",
            "/v1/agents".into(),
            json!({
                "name": "full", "group": "standard_agent", "command": ["sleep", "600"], "priority": 5, "limits": {"memory": limit},
                "env": {"A": "1"}, "workdir": "/tmp", "user": "nobody", "pools": ["p"],
            }),
        ),
        ("PATCH", "/v1/agents/{id}/quota", "/v1/agents/full/quota".into(), json!({"limits": {"memory": limit}})),
        ("POST", "/v1/agents/{id}/usage", "/v1/agents/full/usage".into(), json!({"resource": "tokens", "value": "1k"})),
        ("POST", "/v1/agents/{id}/ack", "/v1/agents/full/ack".into(), json!({"seq": 1, "note": "seen"})),
        ("POST", "/v1/agents/{id}/reservations", "/v1/agents/full/reservations".into(), json!({"resources": {"tokens": 10}, "ttl": "30s"})),
        ("PUT", "/v1/pools/{name}", "/v1/pools/q".into(), json!({"tokens": rolling, "usd_micros": calendar, "requests": "10/min"})),
        (
            "POST",
            "/v1/groups/{name}",
            "/v1/groups/g".into(),
            json!({
                "extends": "standard_agent", "description": "d", "scaling_policy": "proportional", "limits": {"memory": limit},
                "totals": {"memory": "1Gi", "tokens": rolling, "usd_micros": calendar}, "custom_handler": {"command": ["true"]},
            }),
        ),
        ("PUT", "/v1/groups/{name}", "/v1/groups/g".into(), json!({"custom_handler": {"url": "http://127.0.0.1:9/"}})),
        (
            "POST",
            "/v1/adopt",
            "/v1/adopt".into(),
            json!({
                "name": "adopted", "group": "standard_agent", "pid": adoptee.id(), "move": true, "priority": 1, "limits": {"memory": limit}, "pools": ["p"],
            }),
        ),
    ];
    let mut walk = Walk::default();
    let mut i = 0;
    while i < examples.len() {
        let (method, template, path, body) = examples[i].clone();
        let op = op(doc, method, template);
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{method} {template} documents no body");
        let (st, v) = call(sock, method, &path, &body.to_string());
        assert_eq!(st, ok_status(op), "{method} {path} {body}: {v}");
        walk.go(doc, schema, &body, &[], "");
        if template == "/v1/agents" {
            running(sock, "full");
        }
        if template.ends_with("/reservations") {
            let id = v["id"].as_u64().unwrap();
            let path = format!("/v1/reservations/{id}/settle");
            examples.push(("POST", "/v1/reservations/{rid}/settle", path, json!({"resources": {"tokens": 4}})));
        }
        i += 1;
    }
    // Every body of the document has an example; every property of every schema they reach is named.
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| ops.as_object().unwrap().iter().map(move |(m, o)| (m, p, o)))
        .filter(|(_, _, o)| o.get("requestBody").is_some())
        .map(|(m, p, _)| (m.to_uppercase(), p.clone()))
        .collect();
    let tried: BTreeSet<(String, String)> = examples.iter().map(|(m, t, _, _)| ((*m).to_owned(), (*t).to_owned())).collect();
    assert_eq!(tried, documented, "an example for every body");
    for c in &walk.components {
        for p in doc["components"]["schemas"][c]["properties"].as_object().into_iter().flatten().map(|(p, _)| p) {
            assert!(walk.named.contains(&(c.clone(), p.clone())), "no example names {c}.{p}");
        }
    }
    // An unknown member anywhere the document refuses one is refused, named.
    let mut refused = 0;
    for (method, template, path, body) in &examples {
        let mut w = Walk::default();
        w.go(doc, &op(doc, method, template)["requestBody"]["content"]["application/json"]["schema"], body, &[], "");
        for at in &w.strict {
            let bad = with_bogus(body, at);
            let (st, v) = call(sock, method, path, &bad.to_string());
            assert!((400..500).contains(&st) && v.to_string().contains(BOGUS), "{method} {path} {bad}: {st} {v}");
            refused += 1;
        }
    }
    assert!(refused >= examples.len(), "every body refuses an unknown member at least at its top ({refused})");
    let _ = adoptee.kill();
    let _ = adoptee.wait();
}

fn queries_are_taken_and_nothing_more(sock: &Path, doc: &Value) {
    // (method, path template, path, query): every query parameter of the document.
    let examples = [
        ("POST", "/v1/agents/{id}/throttle", "/v1/agents/full/throttle", "cpu=100m"),
        ("POST", "/v1/agents/{id}/resume", "/v1/agents/full/resume", "force=true"),
        ("GET", "/v1/agents/{id}/analysis", "/v1/agents/full/analysis", "resource=memory&window=1h&horizon=10m"),
        ("GET", "/v1/agents/{id}/report", "/v1/agents/full/report", "since=1h&until=1s&format=json"),
        ("GET", "/v1/report", "/v1/report", "since=1h&until=1s&format=text"),
        ("GET", "/v1/events", "/v1/events", "since=0&topic=agent.*&follow=false"),
        ("GET", "/v1/history", "/v1/history", "agent=full"),
    ];
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| ops.as_object().unwrap().iter().map(move |(m, o)| (m, p, o)))
        .filter(|(_, _, o)| o["parameters"].as_array().unwrap().iter().any(|x| x["in"] == "query"))
        .map(|(m, p, _)| (m.to_uppercase(), p.clone()))
        .collect();
    let tried: BTreeSet<(String, String)> = examples.iter().map(|(m, t, _, _)| ((*m).to_owned(), (*t).to_owned())).collect();
    assert_eq!(tried, documented, "an example for every route with a query");
    for (method, template, path, query) in examples {
        let op = op(doc, method, template);
        let mut listed: Vec<&str> =
            op["parameters"].as_array().unwrap().iter().filter(|x| x["in"] == "query").map(|x| x["name"].as_str().unwrap()).collect();
        let mut named: Vec<&str> = query.split('&').map(|kv| kv.split('=').next().unwrap()).collect();
        listed.sort_unstable();
        named.sort_unstable();
        assert_eq!(named, listed, "{method} {template}: the example names every parameter");
        let (st, v) = call(sock, method, &format!("{path}?{query}"), "");
        // An analysis or a report of an agent with too few samples is 404 no_data: the query was taken.
        let taken = st == ok_status(op) || (st == 404 && v["error"]["code"] == "no_data");
        assert!(taken, "{method} {path}?{query}: {st} {v}");
        let (st, v) = call(sock, method, &format!("{path}?{query}&{BOGUS}=1"), "");
        assert!(st == 400 && v["error"]["message"].as_str().unwrap().contains(BOGUS), "{method} {path}: {st} {v}");
    }
}

#[test]
fn every_documented_body_and_query_is_taken_and_nothing_more() {
    if !cgroups_here() {
        return;
    }
    let d = launch(FLEET, "openapi");
    let (st, doc) = call(&d.sock, "GET", "/v1/openapi.json", "");
    assert_eq!(st, 200, "{doc}");
    bodies_are_taken_and_nothing_more(&d.sock, &doc);
    queries_are_taken_and_nothing_more(&d.sock, &doc);
}
