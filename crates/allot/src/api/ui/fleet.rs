//! The fleet page: agents sorted by pressure (usage over hard, the highest
//! resource), their state and who holds it, a bar per limited resource
//! against soft and hard, the last action; group totals against their
//! limits; host capacity and what is available. `/ui/stream` pushes the
//! page's body again (an SSE event `fleet` that htmx swaps in) whenever the
//! governor stores an event, at most every [`MIN_GAP`], and every
//! [`REFRESH`] in any case.

use super::page::{self, Nav, human};
use crate::api::access::Caller;
use crate::api::ui::auth::Via;
use crate::api::{ApiError, Shared, ask, system};
use crate::governor::control::{AgentStatus, Control};
use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// The fleet is pushed at least this often.
pub(super) const REFRESH: Duration = Duration::from_secs(2);
/// And at most this often (events coming in a burst are shown together).
pub(super) const MIN_GAP: Duration = Duration::from_millis(250);

/// One resource of an agent: usage against its limits.
struct Bar {
    resource: String,
    usage: u64,
    soft: u64,
    hard: u64,
}

impl Bar {
    fn pressure(&self) -> f64 {
        if self.hard == 0 { 0.0 } else { self.usage as f64 / self.hard as f64 }
    }
}

/// The resources drawn as bars, in this order, when the agent has a limit on them.
const BARS: &[&str] = &["memory", "cpu", "processes", "threads", "files", "connections", "disk", "disk_io", "network"];

fn bars(a: &AgentStatus) -> Vec<Bar> {
    let limits = &a.quota["limits"];
    let mut out = Vec::new();
    for r in
        BARS.iter().copied().chain(limits.as_object().into_iter().flat_map(|m| m.keys().map(String::as_str)).filter(|k| !BARS.contains(k)))
    {
        let l = &limits[r];
        let (Some(soft), Some(hard)) = (l["soft"].as_u64(), l["hard"].as_u64()) else { continue };
        if out.iter().any(|b: &Bar| b.resource == r) {
            continue;
        }
        out.push(Bar { resource: r.to_owned(), usage: a.usage.get(r).copied().unwrap_or(0), soft, hard });
    }
    out
}

/// An agent's pressure: its highest usage over hard (0 once exited).
fn pressure(a: &AgentStatus, bars: &[Bar]) -> f64 {
    if a.state == "exited" {
        return 0.0;
    }
    bars.iter().map(Bar::pressure).fold(0.0, f64::max)
}

/// A bar: one element whose background draws the usage and the soft and
/// hard marks (CSS variables), so a fleet of thousands stays a light page.
fn bar(b: &Bar) -> Markup {
    // The scale: up to the hard limit, or the usage when above it.
    let top = b.hard.max(b.usage).max(1) as f64;
    let pct = |v: u64| format!("{:.1}%", (v as f64 / top * 100.0).min(100.0));
    let level = if b.usage >= b.hard {
        "hard"
    } else if b.usage >= b.soft {
        "soft"
    } else {
        "ok"
    };
    let title = format!(
        "{}: {} (soft {}, hard {})",
        b.resource,
        human(&b.resource, b.usage),
        human(&b.resource, b.soft),
        human(&b.resource, b.hard)
    );
    let style = format!("--u:{};--s:{};--h:{}", pct(b.usage), pct(b.soft), pct(b.hard));
    html! {
        div.bar title=(title) data-resource=(b.resource) data-level=(level) {
            span.name { (b.resource) }
            span class={"track " (level)} style=(style) {}
            span.value { (human(&b.resource, b.usage)) " / " (human(&b.resource, b.hard)) }
        }
    }
}

/// The state with who holds it (`suspended by operator`).
fn state(a: &AgentStatus) -> Markup {
    let holders: Vec<&str> = match a.state.as_str() {
        "suspended" => a.held_by.freeze.iter().map(String::as_str).collect(),
        "throttled" => a.held_by.throttle.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    html! {
        span class={"state " (a.state)} { (a.state) }
        @if !holders.is_empty() { " " span.holders { "by " (holders.join(", ")) } }
        @if let Some(exit) = &a.exit { br; small.exit { (exit) } }
    }
}

/// The body of the fleet page (also what the stream pushes).
pub(super) async fn body(api: &Shared) -> Result<Markup, ApiError> {
    let agents = ask(api, Control::List).await?;
    let groups = ask(api, Control::Groups).await?;
    let host = system::host(page::state(api)).await.map(|j| j.0).unwrap_or(Value::Null);
    let mut rows: Vec<(f64, AgentStatus, Vec<Bar>)> = agents
        .into_iter()
        .map(|a| {
            let b = bars(&a);
            (pressure(&a, &b), a, b)
        })
        .collect();
    rows.sort_by(|x, y| y.0.total_cmp(&x.0).then_with(|| x.1.id.cmp(&y.1.id)));
    let live = rows.iter().filter(|r| r.1.state != "exited").count();
    // Group use: the sum of its live members' usage.
    let mut used: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (_, a, _) in rows.iter().filter(|r| r.1.state != "exited") {
        for (r, v) in &a.usage {
            *used.entry((a.group.as_str(), r.as_str())).or_default() += v;
        }
    }
    Ok(html! {
        section.summary {
            h1 { "Fleet" }
            p { span #agent-count data-count=(live) { (live) } " live agents, " (rows.len() - live) " exited (remembered)" }
        }
        section.hosttable {
            h2 { "Host" }
            @if let Some(res) = host["resources"].as_object() {
                table {
                    thead { tr { th { "resource" } th { "total" } th { "allocatable" } th { "available" } } }
                    tbody {
                        @for (r, row) in res {
                            tr {
                                td { (r) }
                                td { (row["total"].as_u64().map(|v| human(r, v)).unwrap_or_default()) }
                                td { (row["allocatable"].as_u64().map(|v| human(r, v)).unwrap_or_default()) }
                                td { (row["available"].as_u64().map(|v| human(r, v)).unwrap_or_else(|| "–".into())) }
                            }
                        }
                    }
                }
            } @else { p { "host capacity not readable" } }
        }
        section.groups {
            h2 { "Groups" }
            table {
                thead { tr { th { "group" } th { "members" } th { "totals: used / limit" } } }
                tbody {
                    @for (g, members) in &groups {
                        @let totals = crate::commands::group_to_json(g)["totals"].clone();
                        tr {
                            td { (g.name) }
                            td { (members.len()) }
                            td {
                                @if let Some(t) = totals.as_object().filter(|t| !t.is_empty()) {
                                    @for (r, limit) in t {
                                        @let u = used.get(&(g.name.as_str(), r.as_str())).copied().unwrap_or(0);
                                        @if let Some(l) = limit.as_u64() {
                                            (bar(&Bar { resource: r.clone(), usage: u, soft: l, hard: l }))
                                        }
                                    }
                                } @else { "no totals" }
                            }
                        }
                    }
                }
            }
        }
        section.agents {
            h2 { "Agents" }
            // Rows are laid out as a grid of their own (not a table) so the
            // browser skips the layout of rows out of view (content-visibility).
            div #agents.rows role="table" {
                div.row.head role="row" { span { "agent" } span { "group" } span { "state" } span { "usage against soft | hard" } span { "last action" } }
                @for (p, a, b) in &rows {
                    div.row.agent role="row" id={"agent-" (a.id)} data-agent=(a.id) data-state=(a.state) data-pressure=(format!("{p:.3}")) {
                        span { a href={"/ui/agents/" (crate::commands::report::encode(&a.id))} { (a.id) } }
                        span { (a.group) }
                        span { (state(a)) }
                        span.bars { @for x in b { (bar(x)) } }
                        span.last { (a.last_action) }
                    }
                }
            }
        }
    })
}

/// For a stream opened by a TCP session: whether that session is still open.
pub(super) fn session_alive(
    via: Option<&Extension<Via>>,
    sessions: Option<&Extension<std::sync::Arc<super::Sessions>>>,
) -> Option<super::super::system::Alive> {
    match (via.map(|v| &v.0), sessions) {
        (Some(Via::Session(s)), Some(Extension(sessions))) => {
            let (sessions, id) = (std::sync::Arc::clone(sessions), s.id.clone());
            Some(std::sync::Arc::new(move || sessions.is_open(&id)))
        }
        _ => None,
    }
}

/// `GET /ui/`: the fleet for the operator; an agent goes to its own page.
pub(super) async fn page(State(api): State<Shared>, caller: Caller, via: Option<Extension<Via>>) -> Response {
    if let Caller::Agent(me) = caller {
        return Redirect::to(&format!("/ui/agents/{}", crate::commands::report::encode(&me))).into_response();
    }
    let body = match body(&api).await {
        Ok(b) => b,
        Err(e) => return page::error_page(e),
    };
    let csrf = page::csrf(&api, via.as_ref());
    page::shell(
        "Fleet",
        Nav::Fleet,
        csrf.as_deref(),
        true,
        html! { div #fleet hx-ext="sse" sse-connect="/ui/stream" sse-swap="fleet" { (body) } },
    )
}

/// `GET /ui/stream`: the fleet's body as SSE events `fleet` (ending with the session that opened it).
pub(super) async fn stream(
    State(api): State<Shared>,
    via: Option<Extension<Via>>,
    sessions: Option<Extension<std::sync::Arc<super::Sessions>>>,
) -> Result<Response, ApiError> {
    let alive = session_alive(via.as_ref(), sessions.as_ref());
    let slot = api.subscribers.take(None).map_err(|r| {
        api.metrics.subscriber_refused();
        ApiError::unavailable(format!("too many event subscribers ({})", r.reason()))
    })?;
    let mut stored = api.metrics.stored_events();
    let (tx, mut rx) = mpsc::channel::<Result<Event, std::convert::Infallible>>(4);
    tokio::spawn(async move {
        let _slot = slot;
        loop {
            tokio::select! {
                () = tx.closed() => return,
                changed = stored.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(REFRESH) => {}
            }
            stored.borrow_and_update();
            if alive.as_ref().is_some_and(|a| !a()) {
                return;
            }
            let html = match body(&api).await {
                Ok(b) => b.into_string(),
                Err(e) => maud::html! { p.error role="alert" { (e.message()) } }.into_string(),
            };
            if tx.send(Ok(Event::default().event("fleet").data(html))).await.is_err() {
                return;
            }
            tokio::time::sleep(MIN_GAP).await;
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}
