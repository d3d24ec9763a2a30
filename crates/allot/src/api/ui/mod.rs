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

/// Add the dashboard's routes to `r`, each behind its access rule and the
/// same-site checks ([`same_site`]).
pub(super) fn routes(mut r: Router<Shared>, api: &Shared) -> Router<Shared> {
    for (path, rule, method) in table() {
        let guard = axum::middleware::from_fn_with_state((Arc::clone(api), rule), access::guard);
        r = r.route(path, method.route_layer(guard).route_layer(axum::middleware::from_fn(same_site)));
    }
    r
}

/// Before anything else: on the Unix socket (no TCP gate marked the
/// request) the `Host` must be a local name (DNS rebinding, `auth::socket_host_allowed`);
/// a request whose `Origin` is another site's is refused everywhere.
async fn same_site(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let on_socket = req.extensions().get::<auth::Via>().is_none() && req.extensions().get::<Arc<Sessions>>().is_none();
    let host = req.headers().get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    if on_socket && !auth::socket_host_allowed(host) {
        tracing::info!(%host, "dashboard request refused: Host is not a local name");
        return super::ApiError::new(
            axum::http::StatusCode::MISDIRECTED_REQUEST,
            "host",
            "the dashboard on the Unix socket answers only local names (localhost, an IP address): this Host may be another site's",
        )
        .into_response();
    }
    if !auth::same_origin(req.headers()) {
        tracing::info!("dashboard request refused: cross-site Origin");
        return super::ApiError::new(axum::http::StatusCode::FORBIDDEN, "origin", "a request from another site's page").into_response();
    }
    next.run(req).await
}
