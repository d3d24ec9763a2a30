//! An etcd v3 client over etcd's own JSON gateway (`/v3/kv/range`,
//! `/v3/kv/txn`, `/v3/lease/*`, `/v3/watch`), spoken with allot's one HTTP
//! client ([`crate::http`]).
//!
//! Why not a gRPC crate: the etcd client crates build their protocol code
//! with `protoc` at build time, which a fresh machine does not have; the
//! gateway is part of every etcd v3 server (3.4 and later), carries the same
//! requests as JSON (keys and values base64, 64-bit integers as strings),
//! and needs nothing beyond hyper, which allot already has.
//!
//! Every call goes to one endpoint and, when it cannot be reached (refused,
//! timed out), to the next: a member down is skipped. An answer with an
//! error (`{"code", "message"}`) is [`EtcdError::Server`], not retried
//! elsewhere.

use crate::http::{self, Target};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One request, at most (connect, send, answer).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint could be reached; the last error of each.
    #[error("no etcd endpoint answers: {0}")]
    Unreachable(String),
    /// The server refused the request.
    #[error("etcd refused {path}: {message} (code {code})")]
    Server { path: String, code: i64, message: String },
    /// The answer is not what the gateway sends.
    #[error("etcd answered {path} with something allot cannot read: {what}")]
    BadAnswer { path: String, what: String },
}

/// A key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub lease: i64,
}

/// A compare-and-swap's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// Written, at this revision.
    Done(i64),
    /// The key had changed: what it holds now (`None`: absent).
    Lost(Option<Kv>),
}

/// One event of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(Kv),
    Delete { key: String, mod_revision: i64 },
}

/// Why a watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The callback asked to stop.
    Stopped,
    /// The revision asked for was compacted: list again from this revision on.
    Compacted(i64),
    /// The server closed the stream.
    Closed,
}

/// An etcd client for a set of endpoints (`host:port`).
#[derive(Debug)]
pub struct Etcd {
    endpoints: Vec<String>,
    current: AtomicUsize,
}

/// Parse `etcd://HOST:PORT[,HOST:PORT...]`.
pub fn parse_url(url: &str) -> Result<Vec<String>, String> {
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| format!("--cluster {url:?}: use etcd://HOST:PORT[,HOST:PORT...] (the members' client addresses)"))?;
    let mut out = Vec::new();
    for ep in rest.split(',') {
        let ep = ep.trim().trim_end_matches('/');
        let Some((host, port)) = ep.rsplit_once(':') else {
            return Err(format!("--cluster {url:?}: endpoint {ep:?} has no port (HOST:PORT)"));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("--cluster {url:?}: endpoint {ep:?} is not HOST:PORT with a port from 1 to 65535"));
        }
        out.push(ep.to_owned());
    }
    Ok(out)
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// The key just after every key with `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return b64(&end);
        }
    }
    b64(&[0])
}

/// A 64-bit integer of the gateway's JSON: a string, a number, or absent (0).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn kv(v: &Value) -> Option<Kv> {
    let key = String::from_utf8(B64.decode(v["key"].as_str()?).ok()?).ok()?;
    let value = v["value"].as_str().map_or(Ok(Vec::new()), |s| B64.decode(s)).ok()?;
    Some(Kv { key, value, mod_revision: int(&v["mod_revision"]), lease: int(&v["lease"]) })
}

impl Etcd {
    /// A client of these endpoints (at least one).
    pub fn new(endpoints: Vec<String>) -> Etcd {
        Etcd { endpoints, current: AtomicUsize::new(0) }
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// POST `body` to `path` on the current endpoint, else on the next ones.
    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..n {
            let at = (start + i) % n;
            let target = Target::Tcp { authority: self.endpoints[at].clone() };
            match http::request(&target, "POST", path, Some(&body), CALL_TIMEOUT).await {
                Ok(r) => {
                    self.current.store(at, Ordering::Relaxed);
                    if let Some(code) = r.body.get("code").map(int).filter(|c| *c != 0) {
                        let message = r.body["message"].as_str().or(r.body["error"].as_str()).unwrap_or("").to_owned();
                        // A member without quorum answers "etcdserver: request timed out" / no leader: try another.
                        if message.contains("no leader") || message.contains("timed out") || message.contains("not capable") {
                            failures.push(format!("{}: {message}", self.endpoints[at]));
                            continue;
                        }
                        return Err(EtcdError::Server { path: path.to_owned(), code, message });
                    }
                    if !(200..300).contains(&r.status) {
                        failures.push(format!("{}: HTTP {}", self.endpoints[at], r.status));
                        continue;
                    }
                    return Ok(r.body);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }

    /// The value of `key`, or every key under it when `prefix`; with the store's revision.
    pub async fn range(&self, key: &str, prefix: bool) -> Result<(i64, Vec<Kv>), EtcdError> {
        let mut body = json!({"key": b64(key.as_bytes())});
        if prefix {
            body["range_end"] = Value::String(prefix_end(key));
        }
        let v = self.call("/v3/kv/range", body).await?;
        let kvs = v["kvs"].as_array().map(|a| a.iter().filter_map(kv).collect()).unwrap_or_default();
        Ok((int(&v["header"]["revision"]), kvs))
    }

    /// Put `value` at `key` under `lease` (0: none); the new revision.
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let mut body = json!({"key": b64(key.as_bytes()), "value": b64(value)});
        if lease != 0 {
            body["lease"] = Value::String(lease.to_string());
        }
        let v = self.call("/v3/kv/put", body).await?;
        Ok(int(&v["header"]["revision"]))
    }

    /// Delete `key`.
    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        self.call("/v3/kv/deleterange", json!({"key": b64(key.as_bytes())})).await.map(drop)
    }

    /// Write `value` at `key` only if the key is still at `mod_revision`
    /// (0: only if absent); else what it holds now.
    pub async fn cas(&self, key: &str, mod_revision: i64, value: &[u8], lease: i64) -> Result<Cas, EtcdError> {
        let k = b64(key.as_bytes());
        let compare = if mod_revision == 0 {
            json!({"target": "CREATE", "key": k, "result": "EQUAL", "create_revision": "0"})
        } else {
            json!({"target": "MOD", "key": k, "result": "EQUAL", "mod_revision": mod_revision.to_string()})
        };
        let mut put = json!({"key": k, "value": b64(value)});
        if lease != 0 {
            put["lease"] = Value::String(lease.to_string());
        }
        let body = json!({"compare": [compare], "success": [{"request_put": put}], "failure": [{"request_range": {"key": k}}]});
        let v = self.call("/v3/kv/txn", body).await?;
        if v["succeeded"].as_bool() == Some(true) {
            return Ok(Cas::Done(int(&v["header"]["revision"])));
        }
        let current = v["responses"][0]["response_range"]["kvs"].as_array().and_then(|a| a.first()).and_then(kv);
        Ok(Cas::Lost(current))
    }

    /// A new lease of `ttl`; its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/grant", json!({"TTL": ttl.as_secs().max(1).to_string()})).await?;
        match int(&v["ID"]) {
            0 => Err(EtcdError::BadAnswer { path: "/v3/lease/grant".into(), what: v.to_string() }),
            id => Ok(id),
        }
    }

    /// Keep lease `id` alive once; its remaining time to live (`None`: the lease is gone).
    pub async fn keepalive(&self, id: i64) -> Result<Option<Duration>, EtcdError> {
        let v = self.call("/v3/lease/keepalive", json!({"ID": id.to_string()})).await?;
        let ttl = int(&v["result"]["TTL"]);
        Ok((ttl > 0).then(|| Duration::from_secs(ttl.unsigned_abs())))
    }

    /// Revoke lease `id` (its keys go with it).
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", json!({"ID": id.to_string()})).await.map(drop)
    }

    /// A lease's remaining time to live (`None`: gone).
    pub async fn time_to_live(&self, id: i64) -> Result<Option<Duration>, EtcdError> {
        let v = self.call("/v3/lease/timetolive", json!({"ID": id.to_string()})).await?;
        let ttl = int(&v["TTL"]);
        Ok((ttl > 0).then(|| Duration::from_secs(ttl.unsigned_abs())))
    }

    /// Every live lease.
    pub async fn leases(&self) -> Result<BTreeSet<i64>, EtcdError> {
        let v = self.call("/v3/lease/leases", json!({})).await?;
        Ok(v["leases"].as_array().map(|a| a.iter().map(|l| int(&l["ID"])).filter(|id| *id != 0).collect()).unwrap_or_default())
    }

    /// Watch every key under `prefix` from revision `from`, calling `f` with
    /// each batch of events and the revision they bring the watcher to,
    /// until `f` returns false, the revision is compacted or the stream ends.
    /// A silent stream is ended after `idle` (the caller watches again).
    pub async fn watch(
        &self,
        prefix: &str,
        from: i64,
        idle: Duration,
        mut f: impl FnMut(i64, Vec<WatchEvent>) -> bool,
    ) -> Result<WatchEnd, EtcdError> {
        let body = json!({"create_request": {"key": b64(prefix.as_bytes()), "range_end": prefix_end(prefix), "start_revision": from.to_string(), "progress_notify": true}});
        let mut end = WatchEnd::Closed;
        let mut failures = Vec::new();
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        for i in 0..n {
            let at = (start + i) % n;
            let target = Target::Tcp { authority: self.endpoints[at].clone() };
            let r = http::stream_json(&target, "/v3/watch", &body, CALL_TIMEOUT, idle, |v| {
                let res = &v["result"];
                let compact = int(&res["compact_revision"]);
                if compact > 0 {
                    end = WatchEnd::Compacted(compact);
                    return false;
                }
                let rev = int(&res["header"]["revision"]);
                let events = res["events"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| match e["type"].as_str() {
                                Some("DELETE") => {
                                    let k = kv(&e["kv"])?;
                                    Some(WatchEvent::Delete { key: k.key, mod_revision: k.mod_revision })
                                }
                                _ => kv(&e["kv"]).map(WatchEvent::Put),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if !f(rev, events) {
                    end = WatchEnd::Stopped;
                    return false;
                }
                true
            })
            .await;
            match r {
                Ok(()) => return Ok(end),
                // A silent stream: the caller watches again from where it is.
                Err(http::HttpError::Timeout { .. }) if end == WatchEnd::Closed => return Ok(WatchEnd::Closed),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_what_is_wrong() {
        assert_eq!(parse_url("etcd://127.0.0.1:2379,[::1]:2380"), Ok(vec!["127.0.0.1:2379".into(), "[::1]:2380".into()]));
        assert!(parse_url("http://h:1").is_err_and(|e| e.contains("etcd://HOST:PORT")));
        assert!(parse_url("etcd://h").is_err_and(|e| e.contains("no port")));
        assert!(parse_url("etcd://h:0").is_err_and(|e| e.contains("1 to 65535")));
        assert!(parse_url("etcd://:5").is_err());
    }

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(B64.decode(prefix_end("/allot/")).ok(), Some(b"/allot0".to_vec()));
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&Value::Null), 0);
    }
}
