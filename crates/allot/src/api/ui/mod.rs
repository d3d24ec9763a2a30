//! The browser dashboard at `/ui/`, served by the daemon from its own
//! binary: server-rendered HTML (maud), htmx with its SSE extension for the
//! live fleet, uPlot for the charts; the JavaScript and CSS are vendored
//! (`crates/allot/ui/vendor/VENDOR.md`) and embedded (`assets`).
//!
//! Pages: the fleet (`fleet`: agents by pressure, holders, bars against
//! soft and hard, last action, group totals, host capacity; pushed through
//! `/ui/stream` on every stored event and every 2 s), an agent (`agent`:
//! charts with limit lines and action markers over 5 min live, 1 h or 24 h,
//! pattern, forecast, recommendation, budgets, history, operator buttons)
//! and the events (`events`: the live stream with a topic filter,
//! resumable). Each route runs behind the API's access rules (`Access`):
//! an agent's process sees only its own page and events. Who may come in on
//! TCP and the CSRF tokens of operator actions: `auth`.

pub mod auth;

mod agent;
mod assets;
mod events;
mod fleet;
mod page;

pub use auth::Sessions;

use super::Shared;
use super::access::{self, Access};
use axum::Router;
use axum::routing::{MethodRouter, get, post};
use std::sync::Arc;

/// The dashboard's routes with their access rules.
fn table() -> Vec<(&'static str, Access, MethodRouter<Shared>)> {
    vec![
        ("/ui", Access::Anyone, get(|| async { axum::response::Redirect::permanent("/ui/") })),
        ("/ui/", Access::Scoped, get(fleet::page)),
        ("/ui/stream", Access::Operator, get(fleet::stream)),
        ("/ui/agents/{id}", Access::SelfOrOperator, get(agent::page)),
        ("/ui/agents/{id}/summary", Access::SelfOrOperator, get(agent::summary)),
        ("/ui/agents/{id}/chart", Access::SelfOrOperator, get(agent::chart)),
        ("/ui/agents/{id}/act", Access::Operator, post(agent::act)),
        ("/ui/events", Access::Scoped, get(events::page)),
        ("/ui/events/stream", Access::Scoped, get(events::stream)),
        ("/ui/login", Access::Anyone, get(page::login_form).post(page::login)),
        ("/ui/logout", Access::Anyone, post(page::logout)),
        ("/ui/assets/{file}", Access::Anyone, get(assets::serve)),
    ]
}

/// Add the dashboard's routes to `r`, each behind its access rule.
pub(super) fn routes(mut r: Router<Shared>, api: &Shared) -> Router<Shared> {
    for (path, rule, method) in table() {
        let guard = axum::middleware::from_fn_with_state((Arc::clone(api), rule), access::guard);
        r = r.route(path, method.route_layer(guard));
    }
    r
}

/// Before anything else, on every route (the API's and the dashboard's): on
/// the Unix socket (no TCP gate marked the request) the `Host` must be a
/// local name (DNS rebinding through a forward of the socket,
/// `auth::socket_host_allowed`); a request whose `Origin` is another site's
/// is refused everywhere (a form of another site posting through a forward:
/// the socket's operator is whoever runs the forward). Pages also forbid
/// being framed and loading anything from elsewhere (`SECURITY_HEADERS`).
pub(super) async fn same_site(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let on_socket = req.extensions().get::<auth::Via>().is_none() && req.extensions().get::<Arc<Sessions>>().is_none();
    let host = req.headers().get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    if on_socket && !auth::socket_host_allowed(host) {
        tracing::info!(%host, "request refused: Host is not a local name");
        return super::ApiError::new(
            axum::http::StatusCode::MISDIRECTED_REQUEST,
            "host",
            "the Unix socket answers only local Host names (localhost, an IP address, a name without dots): this one may be another site's",
        )
        .into_response();
    }
    if !auth::same_origin(req.headers()) {
        tracing::info!("request refused: cross-site Origin");
        return super::ApiError::new(axum::http::StatusCode::FORBIDDEN, "origin", "a request from another site's page").into_response();
    }
    let mut res = next.run(req).await;
    for (k, v) in SECURITY_HEADERS {
        res.headers_mut().insert(k.clone(), axum::http::HeaderValue::from_static(v));
    }
    res
}

/// Sent with every answer: no framing (clickjacking through a forward), and
/// pages load scripts, styles and data from the daemon only.
const SECURITY_HEADERS: &[(axum::http::HeaderName, &str)] = &[
    (
        axum::http::header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (axum::http::header::X_FRAME_OPTIONS, "DENY"),
    (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (axum::http::header::REFERRER_POLICY, "same-origin"),
];
