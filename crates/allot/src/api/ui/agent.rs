//! An agent's page: its state and holders (refreshed every 2 s), a chart
//! per resource with the soft, hard and burst lines and every enforcement
//! action marked (drawn by `app.js` from `/ui/agents/{id}/chart`: the last
//! 5 min live, 1 h or 24 h from the store), pattern, forecast and
//! recommendation, budgets with window and reset, the enforcement history,
//! and the operator's buttons (suspend, resume, throttle, terminate, quota
//! edit; each confirmed in the browser and sent with the CSRF token).

use super::auth::{self, Via};
use super::page::{self, Nav, human, when};
use crate::api::access::Caller;
use crate::api::agents::{self as api_agents, ResumeQuery, ThrottleQuery};
use crate::api::bodies::QuotaBody;
use crate::api::reads::{heavy_read, with_store};
use crate::api::{ApiError, Shared, answer, ask};
use crate::commands::budget::{amount, resets};
use crate::commands::report::{self, ReadError};
use crate::governor::budgets::BudgetQuery;
use crate::governor::control::{AgentStatus, Control};
use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

/// The chart ranges offered: (query value, duration ago, label).
const RANGES: &[(&str, &str, &str)] = &[("5m", "5m", "last 5 min (live)"), ("1h", "1h", "1 h"), ("24h", "24h", "24 h")];
/// Points drawn per resource at most (the store's are thinned to this, keeping peaks).
const CHART_POINTS: usize = 1500;
/// Enforcement records listed on the page, the newest first.
const HISTORY_ROWS: usize = 50;

/// The query of the agent page and its chart.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RangeQuery {
    range: Option<String>,
}

fn range_of(q: &RangeQuery) -> Result<&'static (&'static str, &'static str, &'static str), ApiError> {
    let want = q.range.as_deref().unwrap_or("5m");
    RANGES.iter().find(|r| r.0 == want).ok_or_else(|| ApiError::field("range", format!("range must be one of 5m, 1h, 24h, not {want:?}")))
}

async fn status(api: &Shared, id: &str) -> Result<AgentStatus, ApiError> {
    ask(api, |tx| Control::Agent(id.to_owned(), tx)).await?.ok_or_else(|| ApiError::no_agent(id))
}

/// The state block (also `/ui/agents/{id}/summary`).
fn summary_block(a: &AgentStatus) -> Markup {
    let holders = |v: &[String]| if v.is_empty() { "nobody".to_owned() } else { v.join(", ") };
    html! {
        dl.summary #summary data-state=(a.state) {
            dt { "state" } dd { span class={"state " (a.state)} #state { (a.state) } }
            dt { "frozen by" } dd #frozen-by { (holders(&a.held_by.freeze)) }
            dt { "throttled by" } dd #throttled-by { (holders(&a.held_by.throttle)) }
            dt { "group" } dd { (a.group) }
            dt { "processes" } dd { (a.pids.len()) }
            dt { "last action" } dd #last-action { (a.last_action) }
            @if let Some(e) = &a.exit { dt { "exit" } dd { (e) } }
            dt { "usage" } dd {
                @for (r, v) in &a.usage { span.usage { (r) " " (human(r, *v)) } " " }
            }
        }
    }
}

/// `GET /ui/agents/{id}/summary`: the state block, for htmx's polling.
pub(super) async fn summary(State(api): State<Shared>, Path(id): Path<String>) -> Response {
    match status(&api, &id).await {
        Ok(a) => Html(summary_block(&a).into_string()).into_response(),
        Err(e) => e.into_response(),
    }
}

fn operator_controls(a: &AgentStatus) -> Markup {
    let id = &a.id;
    let act = format!("/ui/agents/{}/act", report::encode(id));
    let resources: Vec<String> = a.quota["limits"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    html! {
        section.controls {
            h2 { "Operator" }
            div.buttons {
                button #btn-suspend hx-post=(act) hx-vals=r#"{"op":"suspend"}"# hx-target="#action-result" hx-confirm={"Suspend " (id) "? Its processes are frozen until resumed."} { "Suspend" }
                button #btn-resume hx-post=(act) hx-vals=r#"{"op":"resume"}"# hx-target="#action-result" hx-confirm={"Resume " (id) "? The operator's freeze and throttle are lifted."} { "Resume" }
                button #btn-terminate.danger hx-post=(act) hx-vals=r#"{"op":"terminate"}"# hx-target="#action-result" hx-confirm={"Terminate " (id) "? It gets its notice, then its grace, then is killed."} { "Terminate" }
            }
            form.inline #throttle-form hx-post=(act) hx-target="#action-result" hx-confirm={"Throttle " (id) "'s cpu?"} {
                input type="hidden" name="op" value="throttle";
                label { "cpu " input #throttle-cpu name="cpu" placeholder="200m" required size="6"; }
                button type="submit" { "Throttle" }
            }
            form.inline #quota-form hx-post=(act) hx-target="#action-result" hx-confirm={"Change " (id) "'s limits?"} {
                input type="hidden" name="op" value="quota";
                label { "resource " select name="resource" { @for r in &resources { option value=(r) { (r) } } } }
                label { "soft " input name="soft" placeholder="256Mi" size="8"; }
                label { "hard " input name="hard" placeholder="512Mi" size="8"; }
                button type="submit" { "Set limits" }
            }
            div #action-result role="status" {}
        }
    }
}

/// The stored analysis of the agent per resource: pattern, forecast, recommendation.
fn analysis_block(rows: &[(String, String, u64, Value, Option<Value>)]) -> Markup {
    html! {
        section.analysis {
            h2 { "Pattern, forecast, recommendation" }
            @if rows.is_empty() { p { "No analysis yet (the governor analyses each agent on its analytics cadence once it has samples)." } }
            @else {
                table {
                    thead { tr { th { "resource" } th { "pattern" } th { "forecast (to hard)" } th { "recommendation" } th { "at" } } }
                    tbody {
                        @for (_, res, at, pattern, rec) in rows {
                            tr {
                                td { (res) }
                                td {
                                    @if let Some(p) = pattern["pattern"].as_str() { (p) " " small { "(" (format!("{:.0} %", pattern["confidence"].as_f64().unwrap_or(0.0) * 100.0)) ")" } }
                                    @else if let Some(ps) = pattern["patterns"].as_object() { @for (r, p) in ps { (r) ": " (p.as_str().unwrap_or("")) " " } }
                                }
                                td { (compact(&pattern["forecast_hard"])) }
                                td {
                                    @if let Some(r) = rec {
                                        strong { (r["kind"].as_str().unwrap_or("")) }
                                        @if let Some(h) = r["suggested_hard"].as_u64() { " hard " (human(res, h)) }
                                        @if let Some(g) = r["group"].as_str() { " group " (g) }
                                        br; small { (r["rationale"].as_str().unwrap_or("")) }
                                    } @else { "none" }
                                }
                                td { (when(*at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A JSON value in a line: `none` for null, `key value` pairs for an object.
fn compact(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::Object(m) => m
            .iter()
            .filter(|(_, x)| !x.is_null())
            .map(|(k, x)| match x {
                Value::Number(n) => format!("{k} {}", n.as_f64().map_or_else(|| n.to_string(), |f| format!("{f:.1}"))),
                _ => format!("{k} {}", compact(x)),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn budgets_block(v: &Value) -> Markup {
    let budgets = v["budgets"].as_array().cloned().unwrap_or_default();
    html! {
        section.budgets {
            h2 { "Budgets" }
            @if budgets.is_empty() { p { "No budgets apply to this agent." } }
            @else {
                table #budgets {
                    thead { tr { th { "level" } th { "resource" } th { "window" } th { "limit" } th { "spent" } th { "reserved" } th { "remaining" } th { "resets" } } }
                    tbody {
                        @for b in &budgets {
                            @let r = b["resource"].as_str().unwrap_or("");
                            @let q = |k: &str| amount(&b[k]);
                            tr {
                                td { (b["level"].as_str().unwrap_or("")) }
                                td { (r) }
                                td { (b["window"]["text"].as_str().unwrap_or("")) }
                                td { (q("hard")) @if b["soft"].is_u64() { " (soft " (q("soft")) ")" } }
                                td { (q("spent")) }
                                td { (q("reserved")) }
                                td { (q("remaining")) }
                                td { (resets(b, v["at"].as_str().unwrap_or(""))) }
                            }
                        }
                    }
                }
                p { (v["open_reservations"].as_u64().unwrap_or(0)) " open reservations" }
            }
        }
    }
}

fn history_block(rows: &[allot_store::EnforcementRecord]) -> Markup {
    html! {
        section.history {
            h2 { "Enforcement history" }
            @if rows.is_empty() { p { "Nothing enforced yet." } }
            @else {
                table #history {
                    thead { tr { th { "at" } th { "resource" } th { "action" } th { "outcome" } th { "detail" } } }
                    tbody {
                        @for h in rows.iter().rev().take(HISTORY_ROWS) {
                            tr data-at=(h.at_ms) data-action=(h.action) {
                                td { (when(h.at_ms)) } td { (h.resource) } td { (h.action) } td class={"outcome " (h.outcome)} { (h.outcome) } td { (h.detail) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/agents/{id}?range=5m|1h|24h`.
pub(super) async fn page(
    State(api): State<Shared>,
    Path(id): Path<String>,
    caller: Caller,
    via: Option<Extension<Via>>,
    q: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match render(&api, &id, caller, via.as_ref(), q).await {
        Ok(r) => r,
        Err(e) => page::error_page(e),
    }
}

async fn render(
    api: &Shared,
    id: &str,
    caller: Caller,
    via: Option<&Extension<Via>>,
    q: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::query(&e, "range (5m, 1h or 24h)"))?;
    let range = range_of(&q)?;
    let a = status(api, id).await?;
    let operator = caller == Caller::Operator;
    let budgets = answer(ask(api, |tx| Control::Budgets(BudgetQuery::Agent(id.to_owned()), tx)).await).unwrap_or(Value::Null);
    let agent = id.to_owned();
    let (analyses, history) = with_store(api, move |s| Ok((s.analyses(Some(&agent))?, s.history(Some(&agent))?))).await?;
    let enc = report::encode(id);
    // Only the operator's page carries the CSRF token (an agent can act on nothing).
    let csrf = if operator { page::csrf(api, via) } else { None };
    let body = html! {
        h1 { "Agent " (a.id) }
        div hx-get={"/ui/agents/" (enc) "/summary"} hx-trigger="every 2s" hx-swap="innerHTML" { (summary_block(&a)) }
        @if operator { (operator_controls(&a)) }
        section.charts {
            h2 { "Usage against its limits" }
            nav.ranges {
                @for (key, _, label) in RANGES {
                    a href={"/ui/agents/" (enc) "?range=" (key)} class=[(*key == range.0).then_some("on")] { (label) }
                }
            }
            div #charts data-agent=(a.id) data-range=(range.0) data-live=[(range.0 == "5m").then_some("1")] {}
            p.hint { "Lines: usage, soft (amber), hard (red), burst (dashed). Markers: enforcement actions; hover for the decision and its outcome." }
        }
        (analysis_block(&analyses))
        (budgets_block(&budgets))
        (history_block(&history))
    };
    Ok(page::shell(&format!("Agent {}", a.id), Nav::Agent, csrf.as_deref(), operator, body))
}

/// `GET /ui/agents/{id}/chart?range=`: per resource points, limits and actions (JSON for `app.js`).
pub(super) async fn chart(
    State(api): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::query(&e, "range (5m, 1h or 24h)"))?;
    let (_, ago, _) = *range_of(&q)?;
    let v = heavy_read(&api, &caller, move |s| {
        let range = report::range(("range", ago), None, report::now_ms())?;
        match report::chart(s, &id, range, CHART_POINTS) {
            Err(ReadError::NoAgent(_)) if s.agent(&id)?.is_some() => Ok(json!({"agent": id, "resources": []})),
            other => other,
        }
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

/// The body of an operator action from the agent page.
#[derive(Debug, Deserialize)]
pub(super) struct ActForm {
    op: String,
    csrf: Option<String>,
    cpu: Option<String>,
    resource: Option<String>,
    soft: Option<String>,
    hard: Option<String>,
}

/// `POST /ui/agents/{id}/act`: an operator action, with the CSRF token; answered with a line of HTML.
pub(super) async fn act(
    State(api): State<Shared>,
    Path(id): Path<String>,
    via: Option<Extension<Via>>,
    headers: HeaderMap,
    form: Result<Form<ActForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        // Too large (413), not a form (415), or without op (422): the rejection's own status and words.
        Err(e) => {
            let status = e.status();
            return ApiError::new(
                status,
                "invalid",
                format!("{}; the form takes op (suspend, resume, throttle, terminate, quota)", e.body_text()),
            )
            .into_response();
        }
    };
    if let Err(e) = auth::check_csrf(via.as_ref().map(|v| &v.0), &api.ui_csrf, &headers, f.csrf.as_deref()) {
        tracing::info!(agent = %id, "dashboard action refused: CSRF token missing or wrong");
        return e.into_response();
    }
    let st = page::state(&api);
    let p = Path(id.clone());
    let done = match f.op.as_str() {
        "suspend" => api_agents::suspend(st, p).await,
        "resume" => api_agents::resume(st, p, Ok(Query(ResumeQuery { force: None }))).await,
        "terminate" => api_agents::terminate(st, p).await,
        "throttle" => api_agents::throttle(st, p, Ok(Query(ThrottleQuery { cpu: f.cpu.filter(|c| !c.trim().is_empty()) }))).await,
        "quota" => match quota_body(&f) {
            Ok(b) => api_agents::quota_set(st, p, Ok(axum::Json(b))).await,
            Err(e) => Err(e),
        },
        other => Err(ApiError::field("op", format!("op must be suspend, resume, throttle, terminate or quota, not {other:?}"))),
    };
    tracing::info!(agent = %id, op = %f.op, ok = done.is_ok(), "dashboard action");
    let line = match &done {
        Ok(v) => {
            // A quota edit answers with the limit now in force (soft may have moved with hard).
            let shown = match f.resource.as_deref() {
                Some(r) if f.op == "quota" => format!("{r} now {}", limit_text(r, &v.0["limits"][r])),
                _ => compact(&v.0["detail"]),
            };
            html! { p.ok data-op=(f.op) { (f.op) " " (id) ": done. " small { (shown) } } }
        }
        Err(e) => html! { p.error role="alert" data-op=(f.op) { (f.op) " " (id) ": " (e.message()) } },
    };
    let status = done.as_ref().map_or_else(ApiError::status, |_| axum::http::StatusCode::OK);
    // htmx swaps only 2xx answers by default; the page's script swaps errors too.
    (status, Html(line.into_string())).into_response()
}

/// A limit as `soft 256Mi, hard 512Mi, burst 600Mi`.
fn limit_text(resource: &str, l: &Value) -> String {
    ["soft", "hard", "burst"]
        .iter()
        .filter_map(|k| l[*k].as_u64().map(|v| format!("{k} {}", human(resource, v))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn quota_body(f: &ActForm) -> Result<QuotaBody, ApiError> {
    let Some(resource) = f.resource.as_deref().filter(|r| !r.is_empty()) else {
        return Err(ApiError::field("resource", "choose the resource whose limits change"));
    };
    let mut limit = serde_json::Map::new();
    for (k, v) in [("soft", &f.soft), ("hard", &f.hard)] {
        if let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            limit.insert(k.to_owned(), Value::String(v.to_owned()));
        }
    }
    if limit.is_empty() {
        return Err(ApiError::field("soft", "give soft, hard or both"));
    }
    serde_json::from_value(json!({ "limits": { resource: limit } }))
        .map_err(|e| ApiError::field(format!("limits.{resource}"), e.to_string()))
}
