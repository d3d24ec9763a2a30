//! Fuzzing the binary's parsers, 100,000 cases each, run by `cargo test`:
//! fleet files (arbitrary text, documents built table by table with random
//! keys and values, and mutations of the shipped examples), and every
//! route's request body (and the action routes' query strings) through the
//! real router. No input may panic; a fleet error has a location inside the
//! text; a body the API refuses gets a 4xx with the JSON error shape, never
//! a 5xx.

#![allow(clippy::unwrap_used)]

use allot::governor::control::Control;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const CASES: u32 = 100_000;

/// 100,000 cases with the XorShift generator: ChaCha, the default, costs half the time of a case in a debug build.
fn config() -> ProptestConfig {
    ProptestConfig { rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift, ..ProptestConfig::with_cases(CASES) }
}

// ---------------------------------------------------------------- values

/// Arbitrary text of up to `max` characters: printable ASCII, and any character (cheaper than a regex strategy).
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![3 => (0x20u8..0x7f).prop_map(char::from), 1 => any::<char>()], 0..=max).prop_map(String::from_iter)
}

/// Strings the parsers care about: quantities, durations, names, actions, URLs, and anything.
fn word() -> BoxedStrategy<String> {
    const WORDS: &[&str] = &[
        "",
        " ",
        ".",
        "..",
        "/",
        "a",
        "x-1",
        "standard_agent",
        "lightweight_agent",
        "heavy_computation_agent",
        "g",
        "tool_sandbox",
        "512Mi",
        "1.5Gi",
        "0",
        "-1",
        "250m",
        "0.5",
        "25%",
        "100Mbit/s",
        "10MB/s",
        "100k/min",
        "5M/day",
        "1e3",
        "NaN",
        "99999999999999P",
        "30s",
        "5m",
        "1m30s",
        "250ms",
        "365d",
        "366d",
        "1000000000h",
        "18446744073709551615",
        "1.5h",
        "warn",
        "throttle",
        "suspend",
        "terminate",
        "scale_down",
        "migrate",
        "custom",
        "explode",
        "fixed",
        "proportional",
        "never",
        "on-failure",
        "SIGUSR1",
        "SIGKILL",
        "root",
        "0:0",
        "65534:65534",
        "nobody",
        "1:x",
        "http://127.0.0.1:9/h",
        "https://x/",
        "http://",
        "memory",
        "cpu",
        "processes",
        "files",
        "connections",
        "disk",
        "disk_io",
        "network",
        "tokens",
        "A=B",
        "\u{0}",
        "é",
    ];
    prop_oneof![4 => prop::sample::select(WORDS).prop_map(str::to_owned), 1 => text(12)].boxed()
}

/// A TOML value as inline text: strings, integers at their edges, floats, booleans, dates, arrays, inline tables.
fn toml_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        4 => word().prop_map(|w| toml::Value::String(w).to_string()),
        2 => prop_oneof![any::<i64>(), -2i64..12, Just(i64::MAX), Just(i64::MIN)].prop_map(|i| i.to_string()),
        1 => any::<f64>().prop_map(|f| toml::Value::Float(f).to_string()),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => prop::sample::select(vec!["1979-05-27T07:32:00Z", "0x7fffffffffffffff", "0o777", "0b11", "1_000", "inf", "-nan", "1e400"])
            .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|kv| inline_table(&kv)),
        ]
    })
    .boxed()
}

fn inline_table(kv: &[(String, String)]) -> String {
    format!("{{ {} }}", kv.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "))
}

/// A key of any table of the fleet file, or another (quoted as TOML needs).
fn key() -> BoxedStrategy<String> {
    const KEYS: &[&str] = &[
        "delays",
        "terminate_grace",
        "scale_down_deadline",
        "recovery_dwell",
        "recovery_stage_interval",
        "sample_interval",
        "slow_every",
        "analytics_interval",
        "analytics_window",
        "forecast_horizon",
        "extends",
        "description",
        "scaling_policy",
        "limits",
        "totals",
        "custom_handler",
        "name",
        "group",
        "command",
        "priority",
        "env",
        "workdir",
        "restart",
        "max_restarts",
        "notify_signal",
        "user",
        "soft",
        "hard",
        "burst",
        "burst_window",
        "action",
        "url",
        "memory",
        "cpu",
        "processes",
        "files",
        "tokens",
        "usd_micros",
        "pools",
        "per",
        "calendar",
        "day",
        "at",
        "tz",
        "on_expiry",
        "throttle",
        "suspend",
        "terminate",
        "explode",
    ];
    prop_oneof![8 => prop::sample::select(KEYS).prop_map(str::to_owned), 1 => word().prop_map(|w| toml::Value::String(w).to_string())]
        .boxed()
}

/// A limit table, mostly with the keys of one.
fn limit_table() -> BoxedStrategy<String> {
    let field = prop_oneof![
        prop::sample::select(vec!["soft", "hard", "burst"])
            .prop_flat_map(|k| word().prop_map(move |w| (k.to_owned(), toml::Value::String(w).to_string()))),
        prop::sample::select(vec!["soft", "hard", "burst"])
            .prop_flat_map(|k| any::<i64>().prop_map(move |i| (k.to_owned(), i.to_string()))),
        word().prop_map(|w| ("burst_window".to_owned(), toml::Value::String(w).to_string())),
        word().prop_map(|w| ("action".to_owned(), toml::Value::String(w).to_string())),
        (key(), toml_value()),
    ];
    prop::collection::vec(field, 0..5).prop_map(|kv| inline_table(&kv)).boxed()
}

/// `limits.R = {...}` lines, or another value at `limits`.
fn limits_lines() -> BoxedStrategy<String> {
    let resource = prop_oneof![
        4 => prop::sample::select(vec!["memory", "cpu", "processes", "files", "connections", "disk", "disk_io", "network", "tokens"]).prop_map(str::to_owned),
        1 => word().prop_map(|w| toml::Value::String(w).to_string()),
    ];
    prop_oneof![
        4 => prop::collection::vec((resource, limit_table()), 0..3)
            .prop_map(|v| v.iter().map(|(r, t)| format!("limits.{r} = {t}\n")).collect::<String>()),
        1 => toml_value().prop_map(|v| format!("limits = {v}\n")),
    ]
    .boxed()
}

/// `key = value` lines of a table: its own keys with fitting values, and others.
fn table_lines() -> BoxedStrategy<String> {
    let line = prop_oneof![
        6 => (key(), toml_value()).prop_map(|(k, v)| format!("{k} = {v}\n")),
        2 => limits_lines(),
        1 => prop::collection::vec(word(), 0..3).prop_map(|c| format!("command = {}\n", toml::Value::from(c))),
        1 => prop::collection::vec((prop::sample::select(vec!["soft", "hard", "throttle", "suspend", "terminate", "explode"]), word()), 0..3)
            .prop_map(|kv| format!("delays = {}\n", inline_table(&kv.iter().map(|(k, w)| (k.to_string(), toml::Value::String(w.clone()).to_string())).collect::<Vec<_>>()))),
    ];
    prop::collection::vec(line, 0..6).prop_map(|v| v.concat()).boxed()
}

/// A fleet document built table by table: `[policy]`, `[groups.NAME]`, `[pools.NAME]`, `[[agents]]`, and stray tables.
fn fleet_document() -> impl Strategy<Value = String> {
    let agent = (word(), word(), table_lines(), any::<bool>()).prop_map(|(name, group, rest, required)| {
        let head = if required {
            format!("name = {}\ngroup = {}\ncommand = [\"x\"]\n", toml::Value::String(name), toml::Value::String(group))
        } else {
            String::new()
        };
        format!("[[agents]]\n{head}{rest}\n")
    });
    let group = (prop_oneof![3 => prop::sample::select(vec!["g", "standard_agent", "gpu_1", "lightweight_agent"]).prop_map(str::to_owned), 1 => word().prop_map(|w| toml::Value::String(w).to_string())], table_lines())
        .prop_map(|(name, body)| format!("[groups.{name}]\n{body}\n"));
    let pool = (prop_oneof![3 => Just("p".to_owned()), 1 => word().prop_map(|w| toml::Value::String(w).to_string())], table_lines())
        .prop_map(|(name, body)| format!("[pools.{name}]\n{body}\n"));
    let section = prop_oneof![
        2 => table_lines().prop_map(|b| format!("[policy]\n{b}\n")),
        3 => group,
        2 => pool,
        4 => agent,
        1 => (key(), table_lines()).prop_map(|(k, b)| format!("[{k}]\n{b}\n")),
    ];
    prop::collection::vec(section, 0..5).prop_map(|v| v.concat())
}

/// The shipped examples: `basic.toml` (29 lines) is mutated three times as often as `fleet.toml` (99 lines), to keep the test fast.
const EXAMPLES: [&str; 2] = [include_str!("../../../examples/basic.toml"), include_str!("../../../examples/fleet.toml")];

/// One edit of a line of a valid fleet file.
#[derive(Clone, Debug)]
enum Edit {
    Delete,
    Duplicate,
    Truncate(usize),
    /// Replace the value after `=` (or the whole line).
    Value(String),
    /// Insert text at a character position.
    Insert(usize, String),
    Swap(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => Just(Edit::Delete),
        1 => Just(Edit::Duplicate),
        1 => any::<usize>().prop_map(Edit::Truncate),
        3 => toml_value().prop_map(Edit::Value),
        1 => (any::<usize>(), prop_oneof![text(4), prop::sample::select(vec!["\"", "[", "]", "{", "}", "=", "\n", "#", ",", "'''", "\\"]).prop_map(str::to_owned)])
            .prop_map(|(at, t)| Edit::Insert(at, t)),
        1 => any::<usize>().prop_map(Edit::Swap),
    ]
}

/// A shipped example with `edits` applied, each at a line (modulo the line count).
fn mutate(example: &str, edits: &[(usize, Edit)]) -> String {
    let mut lines: Vec<String> = example.lines().map(str::to_owned).collect();
    for (at, e) in edits {
        if lines.is_empty() {
            break;
        }
        let i = at % lines.len();
        match e {
            Edit::Delete => {
                lines.remove(i);
            }
            Edit::Duplicate => lines.insert(i, lines[i].clone()),
            Edit::Truncate(n) => {
                let chars: String = lines[i].chars().take(n % (lines[i].chars().count() + 1)).collect();
                lines[i] = chars;
            }
            Edit::Value(v) => {
                lines[i] = match lines[i].split_once('=') {
                    Some((k, _)) => format!("{k}= {v}"),
                    None => v.clone(),
                }
            }
            Edit::Insert(n, t) => {
                let chars: Vec<char> = lines[i].chars().collect();
                let n = n % (chars.len() + 1);
                lines[i] = chars[..n].iter().chain(t.chars().collect::<Vec<_>>().iter()).collect();
            }
            Edit::Swap(j) => {
                let j = j % lines.len();
                lines.swap(i, j);
            }
        }
    }
    lines.join("\n")
}

/// Parse a fleet text: no panic, and every error inside the text with a message.
fn check_fleet(text: &str) -> Result<(), TestCaseError> {
    match allot::fleet::parse(text) {
        Ok(f) => {
            for a in &f.agents {
                prop_assert!(f.ledger.group(&a.spec.group).is_some(), "{} in an unknown group", a.spec.id.as_str());
                prop_assert!(!a.command.is_empty());
            }
        }
        Err(errs) => {
            prop_assert!(!errs.is_empty());
            let lines = text.split('\n').count();
            for e in &errs {
                prop_assert!(e.line >= 1 && e.line <= lines && e.column >= 1, "{e:?} in {lines} lines");
                prop_assert!(!e.message.is_empty());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fleet_files_of_arbitrary_text(text in prop_oneof![text(200), prop::collection::vec(prop_oneof![text(8), key(), Just("\n".to_owned()), Just(" = ".to_owned()), Just("[[agents]]\n".to_owned())], 0..20).prop_map(|v| v.concat())]) {
        check_fleet(&text)?;
    }

    #[test]
    fn fleet_files_built_table_by_table(doc in fleet_document()) {
        check_fleet(&doc)?;
    }

    #[test]
    fn fleet_files_mutated_from_the_examples(which in prop_oneof![3 => Just(0usize), 1 => Just(1usize)], edits in prop::collection::vec((any::<usize>(), edit()), 1..4)) {
        check_fleet(&mutate(EXAMPLES[which], &edits))?;
    }
}

// ---------------------------------------------------------------- bodies

/// The router over a stand-in governor that answers every command (the
/// real loop's decisions are not what is tested here: the parsing before them is).
struct Api {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    _dir: tempfile::TempDir,
}

const TOKEN: &str = "fuzz-token-fuzz-token-fuzz-token-0123";

impl Api {
    fn new() -> Api {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Control>();
        rt.spawn(async move {
            while let Some(c) = rx.recv().await {
                answer(c);
            }
        });
        // A state database the read routes (analysis, recommendations, reports) open read-only.
        drop(allot_store::Store::open(&dir.path().join("state.db")).unwrap());
        let app = allot::api::router(tx, dir.path().join("state.db"), 0, Arc::new(allot::metrics::Metrics::new()));
        // Over TCP with the token the caller is the operator, who may call every route.
        let app = allot::api::tcp_router(app, TOKEN.to_owned());
        Api { rt, app, _dir: dir }
    }

    fn call(&self, method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(path).header("authorization", format!("Bearer {TOKEN}"));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Body::from(body)).unwrap();
        self.rt.block_on(async {
            let res = self.app.clone().oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
            (status, bytes.to_vec())
        })
    }
}

/// The stand-in governor: what reaches it has passed the API's parsing, so it must be well formed.
fn answer(c: Control) {
    match c {
        Control::List(tx) => drop(tx.send(Vec::new())),
        Control::Ready(tx) => drop(tx.send(Ok(()))),
        Control::Agent(_, tx) => drop(tx.send(None)),
        Control::Quota(_, tx) => drop(tx.send(None)),
        Control::Owner(_, tx) => drop(tx.send(None)),
        Control::Act(id, _, tx) => drop(tx.send(Ok(id))),
        Control::Report(_, r, _, _, tx) => {
            assert!(r.is_custom(), "a measured resource reached the governor: {r}");
            drop(tx.send(Ok(json!({}))));
        }
        Control::Ack(_, _, _, tx) => drop(tx.send(Ok(json!({})))),
        Control::Groups(tx) => drop(tx.send(Vec::new())),
        Control::PutGroup(g, _, tx) => {
            assert!(allot_core::group::valid_group_name(&g.name), "{:?}", g.name);
            drop(tx.send(Ok(json!(null))));
        }
        Control::DeleteGroup(_, tx) => drop(tx.send(Ok(()))),
        Control::TotalUsage(tx) => drop(tx.send(Default::default())),
        Control::Start(def, tx) => {
            assert!(!def.command.is_empty(), "a start without a command reached the governor");
            drop(tx.send(Ok(json!({}))));
        }
        Control::Adopt(_, _, _, tx) => drop(tx.send(Ok(json!({})))),
        Control::SetLimits(_, _, tx) => drop(tx.send(Ok(json!({})))),
        Control::Compliance(_, tx) => drop(tx.send(Ok(json!({})))),
        Control::Reserve(_, amounts, _, tx) => {
            assert!(!amounts.is_empty() && amounts.keys().all(allot_core::Resource::is_custom), "{amounts:?}");
            drop(tx.send(Ok(json!({}))));
        }
        Control::Settle(_, _, actual, tx) => {
            assert!(actual.keys().all(allot_core::Resource::is_custom), "{actual:?}");
            drop(tx.send(Ok(json!({}))));
        }
        Control::Release(_, _, tx) => drop(tx.send(Ok(json!({})))),
        Control::Budgets(_, tx) => drop(tx.send(Ok(json!({})))),
        Control::PutPool(name, budgets, tx) => {
            assert!(allot_core::group::valid_group_name(&name) && !budgets.is_empty(), "{name:?} {budgets:?}");
            drop(tx.send(Ok(json!({}))));
        }
        Control::DeletePool(_, tx) => drop(tx.send(Ok(json!({})))),
        c @ (Control::ClusterDemand(_) | Control::ClusterApply(..) | Control::ClusterEvent(..) | Control::Migrated(..)) => {
            panic!("the API sent a cluster command, which only the node task sends: {c:?}")
        }
    }
}

thread_local! {
    static API: Api = Api::new();
}

/// Call a route: any answer but a 5xx; a refusal is a 4xx with `{"error": {"code", "message"}}`.
fn check_route(method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Result<(), TestCaseError> {
    let (status, bytes) = API.with(|api| api.call(method, path, content_type, body.clone()));
    prop_assert!(
        !status.is_server_error(),
        "{method} {path} {:?} -> {status}: {}",
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&bytes)
    );
    if status.is_client_error() && status != StatusCode::METHOD_NOT_ALLOWED && status != StatusCode::NOT_FOUND {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        prop_assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{method} {path} -> {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(())
}

/// A JSON value: scalars at their edges (numbers too large, negative, fractional), quantity-like strings, arrays, objects.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => prop_oneof![Just(0u64), Just(1), Just(10), Just(u64::MAX)].prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        3 => word().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A `limits` object: resources (known, custom, invalid) to limit bodies with their keys.
fn limits_json() -> BoxedStrategy<Value> {
    let field = prop_oneof![
        4 => (prop::sample::select(vec!["soft", "hard", "burst", "action"]), json_value()).prop_map(|(k, v)| (k.to_owned(), v)),
        4 => (prop::sample::select(vec!["soft", "hard", "burst", "action"]), word()).prop_map(|(k, w)| (k.to_owned(), Value::String(w))),
        1 => (word(), json_value()),
    ];
    let limit =
        prop_oneof![9 => prop::collection::vec(field, 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())), 1 => json_value()];
    let resource = prop_oneof![
        4 => prop::sample::select(vec!["memory", "cpu", "processes", "files", "connections", "disk", "disk_io", "network", "tokens"]).prop_map(str::to_owned),
        1 => word(),
    ];
    prop_oneof![9 => prop::collection::vec((resource, limit), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())), 1 => json_value()].boxed()
}

/// An object with the body's own fields (each with a fitting value or any) and stray ones.
fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let own: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .into_iter()
        .map(|(k, fit)| prop_oneof![1 => Just(None), 8 => fit.prop_map(move |v| Some((k.to_owned(), v))), 1 => json_value().prop_map(move |v| Some((k.to_owned(), v)))].boxed())
        .collect();
    (own, prop::collection::vec((word(), json_value()), 0..2), prop::bool::weighted(0.1))
        .prop_map(move |(own, stray, with_stray)| {
            let mut m = serde_json::Map::new();
            for (k, v) in own.into_iter().flatten() {
                m.insert(k, v);
            }
            if with_stray {
                m.extend(stray);
            }
            Value::Object(m)
        })
        .boxed()
}

fn words_json() -> BoxedStrategy<Value> {
    prop_oneof![4 => prop::collection::vec(word().prop_map(Value::String), 1..3), 1 => prop::collection::vec(word().prop_map(Value::String), 0..3)]
        .prop_map(Value::Array)
        .boxed()
}

/// An agent name: mostly valid ids.
fn name_json() -> BoxedStrategy<Value> {
    prop_oneof![3 => prop::sample::select(vec!["a", "x-1", "agent.2", "A_b:c", "..."]).prop_map(str::to_owned), 1 => word()]
        .prop_map(Value::String)
        .boxed()
}

/// A group name: mostly the built-in groups.
fn group_json() -> BoxedStrategy<Value> {
    prop_oneof![3 => prop::sample::select(vec!["standard_agent", "lightweight_agent", "heavy_computation_agent"]).prop_map(str::to_owned), 1 => word()]
        .prop_map(Value::String)
        .boxed()
}

fn priority_json() -> BoxedStrategy<Value> {
    prop_oneof![3 => (-2i64..13).prop_map(Value::from), 1 => any::<i64>().prop_map(Value::from)].boxed()
}

/// Limits that often hold, and any.
fn some_limits_json() -> BoxedStrategy<Value> {
    let valid = (
        prop::sample::select(vec!["memory", "cpu", "processes", "tokens"]),
        1u64..100,
        0u64..100,
        prop::sample::select(vec!["warn", "throttle", "suspend", "terminate"]),
    )
        .prop_map(|(r, soft, extra, action)| json!({ r: { "soft": soft, "hard": soft + extra, "action": action } }));
    prop_oneof![1 => Just(json!({})), 2 => valid, 2 => limits_json()].boxed()
}

/// The body of a route, as bytes: mostly the route's own shape, sometimes any JSON or any text.
fn body(shape: BoxedStrategy<Value>) -> impl Strategy<Value = (Vec<u8>, Option<&'static str>)> {
    let content_type = prop_oneof![20 => Just(Some("application/json")), 1 => Just(None), 1 => Just(Some("text/plain"))];
    let bytes = prop_oneof![
        16 => shape.prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => text(40).prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ];
    (bytes, content_type)
}

fn start_body() -> BoxedStrategy<Value> {
    object(vec![
        ("name", name_json()),
        ("group", group_json()),
        ("command", words_json()),
        ("priority", priority_json()),
        ("limits", some_limits_json()),
        (
            "env",
            prop::collection::vec((word(), word().prop_map(Value::String)), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect()))
                .boxed(),
        ),
        ("workdir", word().prop_map(Value::String).boxed()),
    ])
}

fn adopt_body() -> BoxedStrategy<Value> {
    object(vec![
        ("name", name_json()),
        ("group", group_json()),
        ("pid", prop_oneof![any::<u32>().prop_map(Value::from), any::<i64>().prop_map(Value::from)].boxed()),
        ("move", any::<bool>().prop_map(Value::Bool).boxed()),
        ("priority", priority_json()),
        ("limits", some_limits_json()),
    ])
}

fn group_body() -> BoxedStrategy<Value> {
    object(vec![
        ("extends", group_json()),
        ("description", word().prop_map(Value::String).boxed()),
        ("scaling_policy", word().prop_map(Value::String).boxed()),
        ("limits", some_limits_json()),
        ("totals", prop::collection::vec((word(), json_value()), 0..3).prop_map(|kv| Value::Object(kv.into_iter().collect())).boxed()),
        ("custom_handler", json_value()),
    ])
}

/// A path segment for `{id}` or `{name}`: ids, group names, and anything percent-encoded.
fn segment() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "sleeper", "g", "standard_agent", "x-1", "...", "%2e%2e", "%2F"]).prop_map(str::to_owned),
        1 => word().prop_map(|w| w.bytes().map(|b| format!("%{b:02X}")).collect::<String>()),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn start_bodies(b in body(start_body())) {
        check_route("POST", "/v1/agents", b.1, b.0)?;
    }

    #[test]
    fn adopt_bodies(b in body(adopt_body())) {
        check_route("POST", "/v1/adopt", b.1, b.0)?;
    }

    #[test]
    fn quota_bodies(id in segment(), b in body(object(vec![("limits", some_limits_json())]))) {
        check_route("PATCH", &format!("/v1/agents/{id}/quota"), b.1, b.0)?;
    }

    #[test]
    fn usage_bodies(id in segment(), b in body(object(vec![
        ("resource", prop_oneof![word().prop_map(Value::String), Just(Value::String("tokens".into()))].boxed()),
        ("value", json_value()),
    ]))) {
        check_route("POST", &format!("/v1/agents/{id}/usage"), b.1, b.0)?;
    }

    #[test]
    fn reservation_bodies(id in segment(), b in body(object(vec![
        ("resources", prop_oneof![
            json_value(),
            (prop_oneof![word(), Just("tokens".to_owned()), Just("memory".to_owned())], json_value())
                .prop_map(|(k, v)| Value::Object([(k, v)].into_iter().collect())),
        ].boxed()),
        ("ttl", json_value()),
    ]))) {
        check_route("POST", &format!("/v1/agents/{id}/reservations"), b.1, b.0)?;
    }

    #[test]
    fn settle_bodies(rid in prop_oneof![segment(), any::<u64>().prop_map(|n| n.to_string())], b in body(object(vec![
        ("resources", (prop_oneof![word(), Just("tokens".to_owned())], json_value())
            .prop_map(|(k, v)| Value::Object([(k, v)].into_iter().collect())).boxed()),
    ]))) {
        check_route("POST", &format!("/v1/reservations/{rid}/settle"), b.1, b.0)?;
        check_route("DELETE", &format!("/v1/reservations/{rid}"), None, Vec::new())?;
    }

    #[test]
    fn pool_bodies(name in segment(), b in body(object(vec![
        ("tokens", json_value()),
        ("usd_micros", prop_oneof![json_value(), object(vec![
            ("hard", json_value()), ("soft", json_value()), ("per", json_value()), ("calendar", json_value()),
            ("day", json_value()), ("at", json_value()), ("tz", json_value()), ("on_expiry", json_value()),
        ])].boxed()),
    ]))) {
        check_route("PUT", &format!("/v1/pools/{name}"), b.1, b.0)?;
    }

    #[test]
    fn ack_bodies(id in segment(), b in body(object(vec![
        ("seq", prop_oneof![any::<u64>().prop_map(Value::from), any::<i64>().prop_map(Value::from), any::<f64>().prop_map(Value::from)].boxed()),
        ("note", word().prop_map(Value::String).boxed()),
    ]))) {
        check_route("POST", &format!("/v1/agents/{id}/ack"), b.1, b.0)?;
    }

    #[test]
    fn group_bodies(name in segment(), put in any::<bool>(), b in body(group_body())) {
        check_route(if put { "PUT" } else { "POST" }, &format!("/v1/groups/{name}"), b.1, b.0)?;
    }

    #[test]
    fn action_queries(id in segment(), action in prop::sample::select(vec!["throttle", "resume", "suspend", "clear", "terminate"]),
        query in prop_oneof![
            word().prop_map(|w| format!("cpu={}", w.bytes().map(|b| format!("%{b:02X}")).collect::<String>())),
            word().prop_map(|w| format!("force={}", w.bytes().map(|b| format!("%{b:02X}")).collect::<String>())),
            (word(), word()).prop_map(|(k, v)| format!("{}={}", k.bytes().map(|b| format!("%{b:02X}")).collect::<String>(), v.bytes().map(|b| format!("%{b:02X}")).collect::<String>())),
            Just(String::new()),
        ]) {
        check_route("POST", &format!("/v1/agents/{id}/{action}?{query}"), None, Vec::new())?;
    }

    #[test]
    fn read_queries(id in segment(), route in prop::sample::select(vec!["report", "analysis", "recommendations", "compliance", "-report", "-recommendations", "-events"]),
        params in prop::collection::vec((
            prop::sample::select(vec!["since", "until", "format", "resource", "window", "horizon", "follow", "topic", "x"]),
            prop_oneof![
                word(),
                Just("2026-12-03T10:00:00Z".to_owned()),
                Just("9999-99-99T99:99:99Z".to_owned()),
                Just("1h".to_owned()),
                Just("365d".to_owned()),
                prop::sample::select(vec!["json", "text", "svg", "html", "false", "memory", "tokens"]).prop_map(str::to_owned),
            ],
        ), 0..4)) {
        let enc = |w: &str| w.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        let mut query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
        if route == "-events" {
            // The events recorded so far, not a stream that never ends.
            query.push("follow=false".into());
        }
        let path = match route.strip_prefix('-') {
            Some(fleet) => format!("/v1/{fleet}"),
            None => format!("/v1/agents/{id}/{route}"),
        };
        check_route("GET", &format!("{path}?{}", query.join("&")), None, Vec::new())?;
    }
}
