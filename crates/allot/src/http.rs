//! The one HTTP/1.1 client of allot, on hyper's client connection API: the
//! CLI's requests to the daemon over its Unix socket ([`crate::client`] wraps
//! this module in a blocking API), server-sent events from the daemon, and
//! the POST of a `custom_handler = { url = "http://..." }` over TCP.
//!
//! One connection per call, closed when the call returns. Every call has a
//! timeout. Only `http://` is spoken: [`parse_http_url`] is the single check
//! of a handler URL, used by the fleet file's validation and at run-time, so
//! a URL that validates is one the run-time can call.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Connecting, sending and reading the headers of an event stream, at most.
pub const SSE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest silence on an event stream (the daemon sends a keep-alive comment every 15 s).
pub const SSE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A custom handler's POST, at most (connect, send, read the answer).
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer body read into memory.
const MAX_BODY: usize = 64 << 20;

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The daemon's Unix socket.
    Unix(PathBuf),
    /// A TCP server; `authority` is `host:port`.
    Tcp { authority: String },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "{}", p.display()),
            Target::Tcp { authority } => f.write_str(authority),
        }
    }
}

/// An answer: the status and the body, as JSON when it parses, else as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

/// What failed, naming the target (socket path or `host:port`) or the URL.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{}", connect_message(.target, .source))]
    Connect { target: Target, source: std::io::Error },
    #[error("cannot send the request to {target}: {source}")]
    Send { target: String, source: hyper::Error },
    #[error("{target} did not answer within {}", humantime::format_duration(*.waited))]
    Timeout { target: String, waited: Duration },
    #[error("{url}: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot read the answer from {target}: {source}")]
    Body { target: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("{target} answered {status}: {body}")]
    Status { target: String, status: u16, body: Value },
}

fn connect_message(target: &Target, e: &std::io::Error) -> String {
    match target {
        Target::Unix(p) => {
            let p = p.display();
            format!("no allot daemon answers at {p} ({e}); start one with `allot daemon --socket {p}` (or pass --socket)")
        }
        Target::Tcp { authority } => format!("cannot connect to {authority}: {e}"),
    }
}

const HTTPS: &str = "https is not supported by the run-time; use http:// (for example a local relay) or a command";

/// Parse and check a handler URL: `http://host[:port][/path][?query]`.
/// Returns the authority `host:port` (port 80 when none is given) and the
/// path with its query (`/` when none is given); the error says why not.
pub fn parse_http_url(url: &str) -> Result<(String, String), String> {
    let scheme_end = url.find("://").ok_or("must start with http:// (for example http://127.0.0.1:9000/violations)")?;
    let (scheme, rest) = (&url[..scheme_end], &url[scheme_end + 3..]);
    if scheme.eq_ignore_ascii_case("https") {
        return Err(HTTPS.into());
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!("scheme {scheme:?} is not supported; use http://"));
    }
    if rest.is_empty() || rest.starts_with(['/', '?', '#', ':']) {
        return Err("has no host (for example http://127.0.0.1:9000/violations)".into());
    }
    let uri: Uri = url.parse().map_err(|e| format!("is not a valid URL: {e}"))?;
    let auth = uri.authority().ok_or("has no host")?;
    if auth.as_str().contains('@') {
        return Err("user information (user@host) is not supported".into());
    }
    if auth.host().is_empty() {
        return Err("has no host".into());
    }
    let port = match auth.as_str()[auth.host().len()..].strip_prefix(':') {
        None | Some("") => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(0) => return Err("port 0 cannot be called".into()),
            Ok(n) => n,
            Err(_) => return Err(format!("port {p:?} is not a number from 1 to 65535")),
        },
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let path = if path.is_empty() { "/" } else { path };
    Ok((format!("{}:{port}", auth.host()), path.to_owned()))
}

/// One request with an optional JSON body; the whole exchange within `timeout`.
pub async fn request(target: &Target, method: &str, path: &str, body: Option<&Value>, timeout: Duration) -> Result<Response, HttpError> {
    let body = body.map(|v| Bytes::from(v.to_string()));
    let req = build(target, method, path, body, "application/json")?;
    within(target, timeout, exchange(target, req)).await
}

/// POST `body` (JSON text) to `http://host[:port]/path`; anything else is [`HttpError::BadUrl`].
pub async fn post_url(url: &str, body: &str, timeout: Duration) -> Result<Response, HttpError> {
    let (authority, path) = parse_http_url(url).map_err(|why| HttpError::BadUrl { url: url.to_owned(), why })?;
    let target = Target::Tcp { authority };
    let req = build(&target, "POST", &path, Some(Bytes::from(body.to_owned())), "application/json")?;
    within(&target, timeout, exchange(&target, req)).await
}

/// A custom handler's POST, within [`HANDLER_TIMEOUT`]: `Ok("POST {url}: HTTP/1.1 200 OK")`
/// on a 2xx answer, else `Err` with the same form (or what failed).
pub async fn run_post_handler(url: &str, body: &str) -> Result<String, String> {
    let r = post_url(url, body, HANDLER_TIMEOUT).await.map_err(|e| format!("POST {url}: {e}"))?;
    let status = StatusCode::from_u16(r.status).map_or_else(|_| r.status.to_string(), |s| s.to_string());
    let line = format!("POST {url}: HTTP/1.1 {status}");
    if (200..300).contains(&r.status) { Ok(line) } else { Err(line) }
}

/// Follow server-sent events at `path`, calling `f` with each event's data
/// (JSON; events whose data is not JSON are skipped) until it returns false
/// or the stream ends. Connecting and the answer's headers within
/// [`SSE_CONNECT_TIMEOUT`], then at most [`SSE_IDLE_TIMEOUT`] between frames.
/// A non-2xx answer is [`HttpError::Status`].
pub async fn follow_sse(target: &Target, path: &str, mut f: impl FnMut(Value) -> bool) -> Result<(), HttpError> {
    let req = build(target, "GET", path, None, "text/event-stream")?;
    let (mut body, _conn) = open_stream(target, req, SSE_CONNECT_TIMEOUT).await?;
    let mut events = SseParser::default();
    loop {
        let frame = match tokio::time::timeout(SSE_IDLE_TIMEOUT, body.frame()).await {
            Err(_) => return Err(HttpError::Timeout { target: target.to_string(), waited: SSE_IDLE_TIMEOUT }),
            Ok(None) => return Ok(()),
            Ok(Some(frame)) => frame.map_err(|e| HttpError::Body { target: target.to_string(), source: e.into() })?,
        };
        let Ok(data) = frame.into_data() else { continue };
        for v in events.push(&data) {
            if !f(v) {
                return Ok(());
            }
        }
    }
}

/// POST `body` and read the answer as a stream of JSON values (etcd's
/// gateway streams a watch as one object after another), calling `f` with
/// each until it returns false or the stream ends. Connecting and the
/// answer's headers within `connect`, then at most `idle` between frames.
pub async fn stream_json(
    target: &Target,
    path: &str,
    body: &Value,
    connect: Duration,
    idle: Duration,
    mut f: impl FnMut(Value) -> bool,
) -> Result<(), HttpError> {
    let req = build(target, "POST", path, Some(Bytes::from(body.to_string())), "application/json")?;
    let (mut body, _conn) = open_stream(target, req, connect).await?;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(HttpError::Timeout { target: target.to_string(), waited: idle }),
            Ok(None) => return Ok(()),
            Ok(Some(frame)) => frame.map_err(|e| HttpError::Body { target: target.to_string(), source: e.into() })?,
        };
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        if buf.len() > MAX_BODY {
            return Err(HttpError::Body { target: target.to_string(), source: "a streamed value larger than 64 MiB".into() });
        }
        let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
        let mut used = 0;
        loop {
            match values.next() {
                Some(Ok(v)) => {
                    used = values.byte_offset();
                    if !f(v) {
                        return Ok(());
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(HttpError::Body { target: target.to_string(), source: e.into() }),
                None => break,
            }
        }
        buf.drain(..used);
    }
}

/// Send `req` and wait for a 2xx answer's headers (within `connect`): its
/// body to read as a stream, with the connection kept for as long. A non-2xx
/// answer is [`HttpError::Status`] with its body.
async fn open_stream(target: &Target, req: Request<Full<Bytes>>, connect: Duration) -> Result<(Incoming, Conn), HttpError> {
    let (res, conn) = within(target, connect, async {
        let (mut sender, conn) = open(target).await?;
        let res = sender.send_request(req).await.map_err(|source| HttpError::Send { target: target.to_string(), source })?;
        Ok((res, conn))
    })
    .await?;
    if !res.status().is_success() {
        let status = res.status().as_u16();
        let body = within(target, connect, read_body(target, res.into_body())).await?;
        return Err(HttpError::Status { target: target.to_string(), status, body });
    }
    Ok((res.into_body(), conn))
}

/// Splits an event stream into events; keeps a partial line between frames.
#[derive(Debug, Default)]
struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feed bytes; returns the JSON data of the events they complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.line).trim_end_matches('\r').to_owned();
            self.line.clear();
            if line.is_empty() {
                if let Some(v) = self.data.take().and_then(|d| serde_json::from_str(&d).ok()) {
                    out.push(v);
                }
            } else if let Some(d) = line.strip_prefix("data:") {
                let d = d.strip_prefix(' ').unwrap_or(d);
                match &mut self.data {
                    Some(acc) => {
                        acc.push('\n');
                        acc.push_str(d);
                    }
                    None => self.data = Some(d.to_owned()),
                }
            }
        }
        out
    }
}

/// A request with a JSON body (if any) that accepts `accept`.
fn build(target: &Target, method: &str, path: &str, body: Option<Bytes>, accept: &str) -> Result<Request<Full<Bytes>>, HttpError> {
    let bad = |why: String| HttpError::BadUrl { url: format!("{method} {path} at {target}"), why };
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let host = match target {
        Target::Unix(_) => "allot",
        Target::Tcp { authority } => authority.as_str(),
    };
    let mut req = Request::builder().method(method).uri(path).header(header::HOST, host).header(header::ACCEPT, accept);
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    req.body(Full::new(body.unwrap_or_default())).map_err(|e| bad(e.to_string()))
}

/// Aborts the task driving a connection when the call is done with it.
#[derive(Debug)]
struct Conn(tokio::task::JoinHandle<()>);

impl Drop for Conn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn open(target: &Target) -> Result<(SendRequest<Full<Bytes>>, Conn), HttpError> {
    let connect = |source| HttpError::Connect { target: target.clone(), source };
    match target {
        Target::Unix(p) => handshake(target, tokio::net::UnixStream::connect(p).await.map_err(connect)?).await,
        Target::Tcp { authority } => handshake(target, tokio::net::TcpStream::connect(authority.as_str()).await.map_err(connect)?).await,
    }
}

async fn handshake<S>(target: &Target, io: S) -> Result<(SendRequest<Full<Bytes>>, Conn), HttpError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) =
        http1::handshake(TokioIo::new(io)).await.map_err(|source| HttpError::Send { target: target.to_string(), source })?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, Conn(task)))
}

async fn exchange(target: &Target, req: Request<Full<Bytes>>) -> Result<Response, HttpError> {
    let (mut sender, _conn) = open(target).await?;
    let res = sender.send_request(req).await.map_err(|source| HttpError::Send { target: target.to_string(), source })?;
    let status = res.status().as_u16();
    Ok(Response { status, body: read_body(target, res.into_body()).await? })
}

async fn read_body(target: &Target, body: Incoming) -> Result<Value, HttpError> {
    let bytes =
        Limited::new(body, MAX_BODY).collect().await.map_err(|source| HttpError::Body { target: target.to_string(), source })?.to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    Ok(serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned())))
}

async fn within<T>(target: &Target, waited: Duration, work: impl Future<Output = Result<T, HttpError>>) -> Result<T, HttpError> {
    tokio::time::timeout(waited, work).await.unwrap_or_else(|_| Err(HttpError::Timeout { target: target.to_string(), waited }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::response::sse::{Event, Sse};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use futures_util::StreamExt;
    use serde_json::json;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const WAIT: Duration = Duration::from_secs(5);

    fn app() -> Router {
        let events = || async {
            let events = (1..=3).map(|n| Ok::<_, Infallible>(Event::default().data(json!({ "n": n }).to_string())));
            Sse::new(futures_util::stream::iter(events).chain(futures_util::stream::pending()))
        };
        Router::new()
            .route("/json", get(|| async { Json(json!({ "a": 1 })) }))
            .route("/echo", post(|Json(v): Json<Value>| async move { Json(json!({ "got": v })) }))
            .route("/text", get(|| async { "plain text" }))
            .route("/missing", get(|| async { (StatusCode::NOT_FOUND, Json(json!({ "error": { "message": "no such agent" } }))) }))
            .route("/events", get(events))
    }

    fn unix_server(dir: &tempfile::TempDir) -> Target {
        let p = dir.path().join("d.sock");
        let l = tokio::net::UnixListener::bind(&p).unwrap();
        tokio::spawn(async move { axum::serve(l, app()).await });
        Target::Unix(p)
    }

    async fn tcp_server() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app()).await });
        authority
    }

    /// A TCP server that reads a request and writes `answer` as is, or never answers.
    async fn raw_server(answer: Option<&'static str>) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let _ = s.read(&mut buf).await;
                    match answer {
                        Some(a) => s.write_all(a.as_bytes()).await.unwrap(),
                        None => std::future::pending().await,
                    }
                });
            }
        });
        authority
    }

    #[tokio::test]
    async fn get_and_post_json_over_a_unix_socket_and_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let unix = unix_server(&dir);
        let tcp = Target::Tcp { authority: tcp_server().await };
        for t in [&unix, &tcp] {
            let r = request(t, "GET", "/json", None, WAIT).await.unwrap();
            assert_eq!(r, Response { status: 200, body: json!({ "a": 1 }) });
            let r = request(t, "POST", "/echo", Some(&json!({ "x": [1, 2] })), WAIT).await.unwrap();
            assert_eq!(r, Response { status: 200, body: json!({ "got": { "x": [1, 2] } }) });
            let r = request(t, "GET", "/text", None, WAIT).await.unwrap();
            assert_eq!(r.body, Value::String("plain text".into()));
        }
    }

    #[tokio::test]
    async fn non_2xx_answers_are_responses_with_their_body() {
        let dir = tempfile::tempdir().unwrap();
        let t = unix_server(&dir);
        let r = request(&t, "GET", "/missing", None, WAIT).await.unwrap();
        assert_eq!((r.status, r.body["error"]["message"].as_str()), (404, Some("no such agent")));
        let r = request(&t, "DELETE", "/json", None, WAIT).await.unwrap();
        assert_eq!(r.status, 405);
        let e = request(&t, "GET", "/a path", None, WAIT).await.unwrap_err();
        assert!(matches!(e, HttpError::BadUrl { .. }), "{e}");
    }

    #[tokio::test]
    async fn chunked_answers_are_joined() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"a\": [\r\n6\r\n1, 2]}\r\n0\r\n\r\n";
        let t = Target::Tcp { authority: raw_server(Some(chunked)).await };
        let r = request(&t, "GET", "/", None, WAIT).await.unwrap();
        assert_eq!(r, Response { status: 200, body: json!({ "a": [1, 2] }) });
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_says_how_to_start_a_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("none.sock");
        let e = request(&Target::Unix(p.clone()), "GET", "/v1/agents", None, WAIT).await.unwrap_err();
        let p = p.display();
        let m = e.to_string();
        assert!(matches!(e, HttpError::Connect { .. }), "{m}");
        assert!(m.starts_with(&format!("no allot daemon answers at {p} (")), "{m}");
        assert!(m.ends_with(&format!("); start one with `allot daemon --socket {p}` (or pass --socket)")), "{m}");
        let e = follow_sse(&Target::Unix(dir.path().join("none.sock")), "/v1/events", |_| true).await.unwrap_err();
        assert!(e.to_string().starts_with("no allot daemon answers at"), "{e}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("silent.sock");
        let _never_accepts = tokio::net::UnixListener::bind(&p).unwrap();
        let waited = Duration::from_millis(200);
        let e = request(&Target::Unix(p), "GET", "/", None, waited).await.unwrap_err();
        assert!(matches!(e, HttpError::Timeout { waited: w, .. } if w == waited), "{e}");
        assert!(e.to_string().ends_with("silent.sock did not answer within 200ms"), "{e}");
        let e = post_url(&format!("http://{}/hook", raw_server(None).await), "{}", waited).await.unwrap_err();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e}");
    }

    #[tokio::test]
    async fn sse_follow_gets_events_until_f_returns_false() {
        let dir = tempfile::tempdir().unwrap();
        let t = unix_server(&dir);
        let mut seen = Vec::new();
        let follow = follow_sse(&t, "/events", |v| {
            seen.push(v);
            seen.len() < 2
        });
        tokio::time::timeout(WAIT, follow).await.unwrap().unwrap();
        assert_eq!(seen, [json!({ "n": 1 }), json!({ "n": 2 })]);
        let e = follow_sse(&t, "/missing", |_| true).await.unwrap_err();
        assert!(matches!(&e, HttpError::Status { status: 404, body, .. } if body["error"]["message"] == "no such agent"), "{e}");
    }

    #[tokio::test]
    async fn post_url_and_the_handler_post_over_tcp() {
        let a = tcp_server().await;
        let r = post_url(&format!("http://{a}/echo"), r#"{"v":1}"#, WAIT).await.unwrap();
        assert_eq!(r, Response { status: 200, body: json!({ "got": { "v": 1 } }) });
        let url = format!("http://{a}/echo");
        assert_eq!(run_post_handler(&url, "{}").await, Ok(format!("POST {url}: HTTP/1.1 200 OK")));
        let url = format!("http://{a}/missing");
        assert_eq!(run_post_handler(&url, "{}").await, Err(format!("POST {url}: HTTP/1.1 405 Method Not Allowed")));
        let e = post_url("https://example.com/hook", "{}", WAIT).await.unwrap_err();
        assert_eq!(e.to_string(), format!("https://example.com/hook: {HTTPS}"));
        let e = run_post_handler("http://127.0.0.1:1/hook", "{}").await.unwrap_err();
        assert!(e.starts_with("POST http://127.0.0.1:1/hook: cannot connect to 127.0.0.1:1: "), "{e}");
    }

    #[test]
    fn handler_urls() {
        let ok = |u: &str| parse_http_url(u).unwrap();
        assert_eq!(ok("http://127.0.0.1:9000/violations"), ("127.0.0.1:9000".into(), "/violations".into()));
        assert_eq!(ok("http://relay"), ("relay:80".into(), "/".into()));
        assert_eq!(ok("HTTP://relay:8080/a/b?x=1&y=2"), ("relay:8080".into(), "/a/b?x=1&y=2".into()));
        assert_eq!(ok("http://[::1]:9000/x"), ("[::1]:9000".into(), "/x".into()));
        let err = |u: &str| parse_http_url(u).unwrap_err();
        assert_eq!(err("https://example.com/hook"), HTTPS);
        for u in ["http://", "http:///x", "http://:80/x", "http://?q"] {
            assert!(err(u).starts_with("has no host"), "{u}: {}", err(u));
        }
        assert!(err("relay:9000/x").starts_with("must start with http://"));
        assert!(err("ftp://relay/x").contains("not supported"));
        assert!(err("http://user@relay/x").contains("user@host"));
        assert!(err("http://relay:0/x").contains("port 0"));
        assert!(err("http://relay:99999/x").starts_with("port \"99999\" is not a number"));
        assert!(err("http://re lay/x").starts_with("is not a valid URL"));
    }

    #[test]
    fn sse_frames_split_anywhere() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nda").is_empty());
        assert!(p.push(b"ta: {\"n\":").is_empty());
        assert_eq!(p.push(b" 1}\r\n\r\ndata: [1,\ndata: 2]\n\ndata: not json\n\nevent: x\ndata: 3\n"), [json!({ "n": 1 }), json!([1, 2])]);
        assert_eq!(p.push(b"\n"), [json!(3)]);
    }
}
