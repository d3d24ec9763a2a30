//! Who may see the dashboard, and the CSRF tokens of its operator actions.
//!
//! On the Unix socket the peer-credential rules of the API apply (an agent
//! sees only its own page, the socket's owner and root are the operator).
//! On TCP the bearer token is entered once on `/ui/login` and exchanged for
//! a session: a random id in an `HttpOnly; SameSite=Strict` cookie scoped to
//! `/ui`, known to this daemon only (in memory: a restart logs everyone
//! out). A request with a valid session cookie is the operator; without one,
//! a page request is sent to the login page and anything else is 401.
//!
//! Every operator action of the dashboard (`POST /ui/agents/{id}/act`)
//! needs a CSRF token in `X-CSRF-Token` (or the form's `csrf` field): the
//! session's own on TCP, a token of this daemon run on the socket (reachable
//! through an SSH forward, where a page of another site could post to it).
//! Tokens appear only in pages served to the operator; another site's page
//! cannot read them.

use crate::api::ApiError;
use axum::http::{HeaderMap, StatusCode, header};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "allot_session";
/// How long a session lasts after its login.
pub(crate) const SESSION_FOR: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; a login beyond drops the oldest.
pub(crate) const MAX_SESSIONS: usize = 256;

/// 32 random bytes as hex, from the kernel's generator.
pub(crate) fn random_token() -> String {
    let mut b = [0u8; 32];
    // getrandom only fails when the kernel has no entropy source at all; no token can be made then.
    if let Err(e) = getrandom::fill(&mut b) {
        panic!("the kernel's random generator failed: {e}");
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Equal in time independent of where the bytes differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A logged-in browser on TCP.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The session's id (its cookie).
    pub(crate) id: String,
    /// The session's CSRF token.
    pub(crate) csrf: String,
    started: Instant,
}

/// The TCP listener's sessions and the bearer token they are given for.
#[derive(Debug)]
pub struct Sessions {
    token: String,
    open: Mutex<HashMap<String, Session>>,
    /// Failed logins in the current second, per source (a local caller's uid, a remote one's address).
    failed: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Failed logins answered in a second from one source (a local uid, a
/// remote address); beyond, 429 until the next second. The token has at
/// least 32 bytes: this keeps the log and the daemon quiet, and one user
/// failing cannot keep another (the operator) from logging in.
pub(crate) const FAILED_LOGINS_PER_SECOND: u32 = 5;

/// What a login attempt gets.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Login {
    /// The token: a session id.
    Opened(String),
    /// Not the token (`true`: the first refusal of this second, to be logged).
    Refused(bool),
    /// Too many failed logins this second.
    TooMany,
}

impl Sessions {
    /// Sessions for `token`.
    pub fn new(token: String) -> Arc<Self> {
        Arc::new(Sessions { token, open: Mutex::new(HashMap::new()), failed: Mutex::new(HashMap::new()) })
    }

    /// Whether `given` is the bearer token.
    pub(crate) fn token_is(&self, given: &str) -> bool {
        same(given, &self.token)
    }

    /// A login with `given`: a session for the token, at most
    /// [`FAILED_LOGINS_PER_SECOND`] refusals a second, then 429s.
    pub(crate) fn login(&self, given: &str, source: &str) -> Login {
        let mut all = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        let second = Duration::from_secs(1);
        if all.len() > 1024 {
            all.retain(|_, (at, _)| at.elapsed() < second);
        }
        let failed = all.entry(source.to_owned()).or_insert((Instant::now(), 0));
        if failed.0.elapsed() >= second {
            *failed = (Instant::now(), 0);
        }
        if failed.1 >= FAILED_LOGINS_PER_SECOND {
            return Login::TooMany;
        }
        if self.token_is(given) {
            drop(all);
            return Login::Opened(self.open());
        }
        failed.1 += 1;
        Login::Refused(failed.1 == 1)
    }

    /// Whether the session `id` is still open (a stream ends when it is not).
    pub(crate) fn is_open(&self, id: &str) -> bool {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).get(id).is_some_and(|s| s.started.elapsed() < SESSION_FOR)
    }

    /// A new session: its id (for the cookie). The oldest goes beyond [`MAX_SESSIONS`].
    pub(crate) fn open(&self) -> String {
        let id = random_token();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, s| s.started.elapsed() < SESSION_FOR);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| k.clone()) {
                open.remove(&oldest);
            }
        }
        open.insert(id.clone(), Session { id: id.clone(), csrf: random_token(), started: Instant::now() });
        id
    }

    /// The session of a request's cookie, if it is open.
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.iter().find(|(k, _)| same(k, &id)).map(|(_, s)| s.clone()).filter(|s| s.started.elapsed() < SESSION_FOR)
    }

    /// End the session of a request's cookie.
    pub(crate) fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            self.open.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        }
    }
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The `Set-Cookie` value of a new session.
pub(crate) fn session_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_FOR.as_secs())
}

/// The `Set-Cookie` value that ends a session in the browser.
pub(crate) fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// How the request reached the dashboard, as the TCP gate marks it.
#[derive(Clone, Debug)]
pub(crate) enum Via {
    /// A TCP request with the bearer token in its header (not sent by a browser on its own: no CSRF token needed).
    Bearer,
    /// A TCP request with a session cookie.
    Session(Session),
}

/// What the TCP gate decides for a `/ui` request without the bearer token.
#[derive(Debug)]
pub(crate) enum Gate {
    /// Let through as the operator, logged in by this session.
    Operator(Session),
    /// Let through as nobody (login page, static files).
    Open,
    /// A page: go to the login page.
    Login,
    /// Refused: 401.
    Refused,
}

/// The gate for a TCP `/ui` request that has no bearer token.
pub(crate) fn gate(sessions: &Sessions, method: &axum::http::Method, path: &str, headers: &HeaderMap) -> Gate {
    if path == "/ui/login" || path.starts_with("/ui/assets/") {
        return Gate::Open;
    }
    if let Some(s) = sessions.of(headers) {
        return Gate::Operator(s);
    }
    if method == axum::http::Method::GET && !path.ends_with("/stream") && !path.ends_with("/chart") && !path.ends_with("/summary") {
        Gate::Login
    } else {
        Gate::Refused
    }
}

/// The CSRF token an operator's pages carry for this request: the session's
/// on TCP, the daemon run's on the socket, none for a bearer-token request
/// (which needs none).
pub(crate) fn csrf_for(via: Option<&Via>, socket_csrf: &str) -> Option<String> {
    match via {
        Some(Via::Session(s)) => Some(s.csrf.clone()),
        Some(Via::Bearer) => None,
        None => Some(socket_csrf.to_owned()),
    }
}

/// Check an operator action's CSRF token: `X-CSRF-Token`, else the form's `csrf`.
pub(crate) fn check_csrf(via: Option<&Via>, socket_csrf: &str, headers: &HeaderMap, form: Option<&str>) -> Result<(), ApiError> {
    if matches!(via, Some(Via::Bearer)) {
        return Ok(());
    }
    let expected = csrf_for(via, socket_csrf).unwrap_or_default();
    let given = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).or(form);
    match given {
        Some(g) if !expected.is_empty() && same(g, &expected) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "csrf", "the CSRF token is wrong or stale: reload the page")),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "an operator action of the dashboard needs its CSRF token (X-CSRF-Token, from the page)",
        )),
    }
}

/// Whether a `Host` header may name the dashboard on the Unix socket: an IP
/// address, `localhost` (or a name under it), or a single-label name (curl's
/// `http://x/`). A dotted name is refused there: a page of another site
/// whose name was rebound to 127.0.0.1 (DNS rebinding), reaching the socket
/// through a forward, would otherwise read pages with the operator's rights.
pub(crate) fn socket_host_allowed(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => return rest.split_once(']').is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(n, port)| if port.bytes().all(|b| b.is_ascii_digit()) { n } else { host }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || (!name.is_empty() && !name.contains('.'))
}

/// Whether a request's `Origin` (when a browser sends one) is the page's own
/// host: a form of another site posting to the dashboard is refused even
/// before its CSRF token is checked.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.split_once("://").is_some_and(|(_, h)| h.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Method};

    #[test]
    fn the_socket_serves_local_names_and_refuses_rebound_ones() {
        for ok in ["localhost", "localhost:7070", "127.0.0.1:7070", "[::1]:7070", "x", "a.localhost:80", "10.1.2.3"] {
            assert!(socket_host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example", "evil.example:7070", "127.0.0.1.nip.io:7070", "[evil]:1", ""] {
            assert!(!socket_host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn a_cross_site_origin_is_refused() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "no Origin: not a browser's cross-site request");
        h.insert(header::HOST, axum::http::HeaderValue::from_static("127.0.0.1:7070"));
        h.insert(header::ORIGIN, axum::http::HeaderValue::from_static("http://127.0.0.1:7070"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, axum::http::HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, axum::http::HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("")));
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_when_closed() {
        let s = Sessions::new("t".repeat(32));
        let id = s.open();
        assert_eq!(id.len(), 64);
        let h = with_cookie(&format!("other=1; {COOKIE}={id}"));
        let found = s.of(&h).map(|x| x.csrf);
        assert!(found.as_ref().is_some_and(|c| c.len() == 64));
        assert!(s.of(&with_cookie(&format!("{COOKIE}={}", "0".repeat(64)))).is_none());
        assert!(s.of(&HeaderMap::new()).is_none());
        s.close(&h);
        assert!(s.of(&h).is_none());
    }

    #[test]
    fn failed_logins_are_limited_per_second_and_the_token_opens_a_session() {
        let token = "t".repeat(32);
        let s = Sessions::new(token.clone());
        assert_eq!(s.login("wrong", "uid 65534"), Login::Refused(true));
        for _ in 1..FAILED_LOGINS_PER_SECOND {
            assert_eq!(s.login("wrong", "uid 65534"), Login::Refused(false));
        }
        assert_eq!(s.login(&token, "uid 65534"), Login::TooMany, "even the token waits for the next second");
        assert!(matches!(s.login(&token, "uid 0"), Login::Opened(_)), "another source is not locked out");
        std::thread::sleep(Duration::from_millis(1100));
        let Login::Opened(id) = s.login(&token, "uid 65534") else { panic!("the token is refused") };
        assert!(s.is_open(&id));
    }

    #[test]
    fn the_gate_sends_pages_to_login_and_refuses_the_rest_without_a_session() {
        let s = Sessions::new("t".repeat(32));
        let none = HeaderMap::new();
        assert!(matches!(gate(&s, &Method::GET, "/ui/", &none), Gate::Login));
        assert!(matches!(gate(&s, &Method::GET, "/ui/agents/a", &none), Gate::Login));
        assert!(matches!(gate(&s, &Method::GET, "/ui/stream", &none), Gate::Refused));
        assert!(matches!(gate(&s, &Method::GET, "/ui/agents/a/summary", &none), Gate::Refused));
        assert!(matches!(gate(&s, &Method::POST, "/ui/agents/a/act", &none), Gate::Refused));
        assert!(matches!(gate(&s, &Method::GET, "/ui/login", &none), Gate::Open));
        assert!(matches!(gate(&s, &Method::GET, "/ui/assets/htmx.min.js", &none), Gate::Open));
        let id = s.open();
        assert!(matches!(gate(&s, &Method::POST, "/ui/agents/a/act", &with_cookie(&format!("{COOKIE}={id}"))), Gate::Operator(_)));
    }

    #[test]
    fn csrf_tokens_are_checked_except_for_bearer_requests() {
        let socket = "s".repeat(64);
        let mut h = HeaderMap::new();
        assert!(check_csrf(None, &socket, &h, None).is_err());
        assert!(check_csrf(None, &socket, &h, Some("wrong")).is_err());
        assert!(check_csrf(None, &socket, &h, Some(&socket)).is_ok());
        h.insert("x-csrf-token", HeaderValue::from_static("nope"));
        assert!(check_csrf(None, &socket, &h, Some(&socket)).is_err(), "the header wins over the form");
        let session = Session { id: "i".repeat(64), csrf: "c".repeat(64), started: Instant::now() };
        let via = Via::Session(session.clone());
        assert!(check_csrf(Some(&via), &socket, &HeaderMap::new(), Some(&socket)).is_err(), "the socket's token is not a session's");
        assert!(check_csrf(Some(&via), &socket, &HeaderMap::new(), Some(&session.csrf)).is_ok());
        assert!(check_csrf(Some(&Via::Bearer), &socket, &HeaderMap::new(), None).is_ok());
    }
}
