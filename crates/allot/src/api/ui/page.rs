//! The dashboard's page shell (head, navigation, the CSRF token for htmx),
//! shared formatting, and the TCP login page.

use super::auth::{self, Sessions, Via};
use crate::api::{ApiError, Shared};
use axum::Extension;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use std::sync::Arc;

/// Which page is shown, for the navigation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Nav {
    Fleet,
    Agent,
    Events,
    Login,
}

/// A whole page: `csrf` is given to htmx for every request it makes.
pub(super) fn shell(title: &str, nav: Nav, csrf: Option<&str>, operator: bool, body: Markup) -> Response {
    let headers = csrf.map(|c| serde_json::json!({ "X-CSRF-Token": c }).to_string());
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · allot" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/ui/assets/uPlot.min.css";
                link rel="stylesheet" href="/ui/assets/app.css";
                script src="/ui/assets/htmx.min.js" {}
                script src="/ui/assets/htmx-ext-sse.min.js" {}
                script src="/ui/assets/uPlot.iife.min.js" {}
                script src="/ui/assets/app.js" defer {}
            }
            body hx-headers=[headers.as_deref()] {
                header.top {
                    span.brand { "allot" }
                    @if operator {
                        a href="/ui/" class=[(nav == Nav::Fleet).then_some("on")] { "Fleet" }
                    }
                    @if nav != Nav::Login {
                        a href="/ui/events" class=[(nav == Nav::Events).then_some("on")] { "Events" }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A value of `resource` in its unit for a person (`512Mi`, `250m`).
pub(super) fn human(resource: &str, v: u64) -> String {
    match resource.parse::<allot_core::Resource>() {
        Ok(r) => crate::output::human(r.unit(), v),
        Err(_) => v.to_string(),
    }
}

/// Milliseconds since the epoch as a UTC time of day with its date.
pub(super) fn when(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ").replace('Z', " UTC")
}

/// The login form (TCP only; on the socket the peer's credentials decide).
pub(super) async fn login_form(sessions: Option<Extension<Arc<Sessions>>>) -> Response {
    if sessions.is_none() {
        return Redirect::to("/ui/").into_response();
    }
    login_page(None, StatusCode::OK)
}

fn login_page(error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        section.login {
            h1 { "Log in" }
            p { "Enter the daemon's bearer token (the file given to " code { "--token-file" } "). It is kept in a session cookie of this browser only." }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/ui/login" {
                input type="text" name="username" value="operator" autocomplete="username" hidden;
                label { "Token " input type="password" name="token" autocomplete="current-password" required autofocus; }
                button type="submit" { "Log in" }
            }
        }
    };
    let mut r = shell("Log in", Nav::Login, None, false, body);
    *r.status_mut() = status;
    r
}

/// The login form's body.
#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    /// The bearer token (other fields, such as the hidden user name for password managers, are ignored).
    token: String,
}

/// `POST /ui/login`: the right token opens a session (its cookie set) and goes to the fleet.
pub(super) async fn login(
    sessions: Option<Extension<Arc<Sessions>>>,
    peer: Option<Extension<axum::extract::ConnectInfo<crate::api::Peer>>>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(Extension(sessions)) = sessions else { return Redirect::to("/ui/").into_response() };
    let Ok(Form(f)) = form else { return login_page(Some("the form needs a token"), StatusCode::BAD_REQUEST) };
    let source = peer.map_or_else(|| "unknown".to_owned(), |p| p.0.0.source());
    let id = match sessions.login(f.token.trim(), &source) {
        auth::Login::Opened(id) => id,
        auth::Login::Refused(first) => {
            if first {
                tracing::info!(%source, "dashboard login refused: wrong token (later refusals this second from there are not logged)");
            }
            return login_page(Some("That is not the daemon's token."), StatusCode::UNAUTHORIZED);
        }
        auth::Login::TooMany => {
            return login_page(Some("Too many failed logins: wait a second."), StatusCode::TOO_MANY_REQUESTS);
        }
    };
    tracing::info!("dashboard login");
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, auth::session_cookie(&id)), (header::LOCATION, "/ui/".to_owned())]).into_response()
}

/// `POST /ui/logout`: the session ends here and in the browser.
pub(super) async fn logout(sessions: Option<Extension<Arc<Sessions>>>, headers: HeaderMap) -> Response {
    if let Some(Extension(s)) = sessions {
        s.close(&headers);
    }
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, auth::cleared_cookie()), (header::LOCATION, "/ui/login".to_owned())]).into_response()
}

/// The CSRF token for an operator's pages of this request (none for a bearer-token request).
pub(super) fn csrf(api: &Shared, via: Option<&Extension<Via>>) -> Option<String> {
    auth::csrf_for(via.map(|v| &v.0), &api.ui_csrf)
}

/// A page-level error for the browser.
pub(super) fn error_page(e: ApiError) -> Response {
    let status = e.status();
    let body = html! { section { h1 { "Not available" } p.error role="alert" { (e.message()) } } };
    let mut r = shell("Error", Nav::Agent, None, false, body);
    *r.status_mut() = status;
    r
}

/// The state of the API handler `State`, for calling the API's own handlers.
pub(super) fn state(api: &Shared) -> State<Shared> {
    State(Arc::clone(api))
}
