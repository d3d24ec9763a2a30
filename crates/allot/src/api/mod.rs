//! The daemon's HTTP API (axum) on a Unix socket, and on TCP with a bearer
//! token when configured.
//!
//! Every route is in one table (`routes::ROUTES`) with its access rule
//! (`access`) and the body and query types its handler reads: the router,
//! the OpenAPI document (`GET /v1/openapi.json`, `openapi`: bodies and
//! queries as JSON Schemas of those types) and the authorization tests are
//! built from it. Handlers never touch governor
//! state: they send a `Control` command into the loop and await its answer;
//! the governor's typed errors map to one HTTP status each (`error`).
//! `/metrics` encodes the registry the governor keeps up to date.

mod access;
mod agents;
mod bodies;
mod budgets;
pub mod conn;
mod error;
mod openapi;
mod reads;
pub mod routes;
mod system;
pub mod ui;

pub use access::{Access, Caller, Peer};
pub use conn::{Connections, Limits};
pub use error::ApiError;
pub use openapi::SchemaFn;
pub use routes::{HttpMethod, ROUTES, Route};
pub use system::EVENTS_PAGE;

use crate::governor::control::{Control, ControlError};
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

/// Shared by every request.
#[derive(Debug)]
pub struct Api {
    control: mpsc::UnboundedSender<Control>,
    state: PathBuf,
    owner_uid: u32,
    metrics: Arc<Metrics>,
    /// Server-sent-event subscribers: the operator, and each agent under its name.
    subscribers: Arc<conn::Caps<String>>,
    /// The read-only store every event stream reads, opened once: SQLite
    /// keeps the descriptor of a closed reader while the governor's writer
    /// holds its lock, so one reader per stream would leave descriptors behind.
    events_store: Mutex<Option<Arc<Mutex<allot_store::Store>>>>,
    /// Permits for the heavy reads (analysis, reports): [`HEAVY_READS`] at
    /// once over every caller; a read finding none free is answered 429.
    heavy: Arc<tokio::sync::Semaphore>,
    /// The heavy-read permits callers other than the operator may hold: one fewer than [`HEAVY_READS`].
    heavy_shared: Arc<tokio::sync::Semaphore>,
    /// The governor's sample interval: an analysis window shorter than it is refused.
    sample_interval: Duration,
    /// The CSRF token of the dashboard's operator actions on the Unix socket (this run's; TCP sessions have their own).
    ui_csrf: String,
}

impl Api {
    /// The shared read-only store of the event streams (opened now if it was not).
    fn events_store(&self) -> Result<Arc<Mutex<allot_store::Store>>, ApiError> {
        let mut shared = self.events_store.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = &*shared {
            return Ok(Arc::clone(s));
        }
        let s = Arc::new(Mutex::new(allot_store::Store::open_read_only(&self.state).map_err(|e| ApiError::unavailable(e.to_string()))?));
        *shared = Some(Arc::clone(&s));
        Ok(s)
    }
}

/// Server-sent-event subscribers: 64 at once, 16 of them kept for the
/// operator, 4 per agent (each holds a connection, a read-only store and a
/// task polling it).
pub const SUBSCRIBERS: conn::Cap = conn::Cap { total: 64, reserved: 16, per_holder: 4 };

type Shared = Arc<Api>;

/// Ask the governor; 503 when it does not answer.
async fn ask<T>(api: &Api, make: impl FnOnce(oneshot::Sender<T>) -> Control) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    api.control.send(make(tx)).map_err(|_| ApiError::unavailable("the governor is not running"))?;
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .map_err(|_| ApiError::unavailable("the governor did not answer in 10 s"))?
        .map_err(|_| ApiError::unavailable("the governor stopped"))
}

/// The governor's answer, or its typed error.
fn answer<T>(r: Result<Result<T, ControlError>, ApiError>) -> Result<T, ApiError> {
    r?.map_err(ApiError::from)
}

/// Heavy reads (analysis, reports: store reads and rendering on a blocking
/// thread) served at once, over every caller; more are answered 429 with
/// `Retry-After`, so many at once cannot pile up memory in the daemon.
pub const HEAVY_READS: usize = 2;

/// The router: every route of the table behind its access rule (for a
/// governor sampling at the fleet's smallest interval, 10 ms; see [`router_with`]).
pub fn router(control: mpsc::UnboundedSender<Control>, state: PathBuf, owner_uid: u32, metrics: Arc<Metrics>) -> Router {
    router_with(control, state, owner_uid, metrics, Duration::from_millis(10))
}

/// The router for a governor sampling every `sample_interval`.
pub fn router_with(
    control: mpsc::UnboundedSender<Control>,
    state: PathBuf,
    owner_uid: u32,
    metrics: Arc<Metrics>,
    sample_interval: Duration,
) -> Router {
    let events_store = Mutex::new(allot_store::Store::open_read_only(&state).ok().map(|s| Arc::new(Mutex::new(s))));
    let api = Arc::new(Api {
        control,
        state,
        owner_uid,
        metrics,
        subscribers: conn::Caps::new(SUBSCRIBERS),
        events_store,
        heavy: Arc::new(tokio::sync::Semaphore::new(HEAVY_READS)),
        heavy_shared: Arc::new(tokio::sync::Semaphore::new(HEAVY_READS - 1)),
        sample_interval,
        ui_csrf: ui::auth::random_token(),
    });
    let mut r = Router::new();
    for route in ROUTES {
        let guard = axum::middleware::from_fn_with_state((Arc::clone(&api), route.access), access::guard);
        r = r.route(route.path, route.method_router().route_layer(guard));
    }
    let r = ui::routes(r, &api);
    r.fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see GET /v1/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; see GET /v1/openapi.json",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn(ui::same_site))
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(api)
}

/// A span per request, so its log lines can be followed.
async fn trace_request(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use tracing::Instrument;
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), caller = tracing::field::Empty);
    let res = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = res.status().as_u16(), "answered"));
    res
}

/// The router for TCP: every request needs `Authorization: Bearer <token>`;
/// with it the caller is the operator, without it 401. The dashboard
/// (`/ui`) also takes a session cookie given for the token on its login
/// page (`ui::auth`); its pages send a browser without one to that page.
pub fn tcp_router(app: Router, token: String) -> Router {
    let sessions = ui::Sessions::new(token);
    app.layer(axum::middleware::from_fn(move |mut req: axum::extract::Request, next: axum::middleware::Next| {
        let sessions = Arc::clone(&sessions);
        async move {
            req.extensions_mut().insert(Arc::clone(&sessions));
            let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            // The connection's peer (a loopback one is looked up: an agent's process stays that agent), with the token.
            let holder = req.extensions().get::<ConnectInfo<Peer>>().map_or_else(Peer::token_holder, |c| c.0.with_token());
            if given.is_some_and(|g| sessions.token_is(g)) {
                req.extensions_mut().insert(ConnectInfo(holder));
                req.extensions_mut().insert(ui::auth::Via::Bearer);
                return next.run(req).await;
            }
            let path = req.uri().path().to_owned();
            if path == "/ui" || path.starts_with("/ui/") {
                match ui::auth::gate(&sessions, req.method(), &path, req.headers()) {
                    ui::auth::Gate::Operator(s) => {
                        req.extensions_mut().insert(ConnectInfo(holder));
                        req.extensions_mut().insert(ui::auth::Via::Session(s));
                        return next.run(req).await;
                    }
                    ui::auth::Gate::Open => return next.run(req).await,
                    ui::auth::Gate::Login => return axum::response::Redirect::to("/ui/login").into_response(),
                    ui::auth::Gate::Refused => {}
                }
            }
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "TCP requests need Authorization: Bearer <token> (the dashboard: log in at /ui/login)",
            )
            .into_response()
        }
    }))
}

/// Serve the router on `listener` with peer credentials until `shutdown`
/// resolves, under the limits of this process's descriptor limit (the
/// process's effective uid and root are the operator; refusals are not
/// counted in a registry: see [`conn::serve_unix`] for that).
pub async fn serve(
    listener: UnixListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let conns = Connections::new(Limits::from_fd_limit(), rustix::process::geteuid().as_raw(), None);
    conn::serve_unix(listener, app, conns, shutdown).await
}
