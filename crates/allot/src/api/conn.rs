//! Serving connections with limits: hyper's HTTP/1 connection builder in an
//! accept loop of our own, so that every connection has a header read
//! timeout, and connections are capped overall and per peer.
//!
//! The overall cap keeps a share for the operator (the socket's owner and
//! root): other peers together may hold only the rest, and each of them (a
//! uid on the Unix socket; all of TCP as one) at most its own cap, so a
//! stranger filling its cap can never lock the operator out. A connection
//! over a cap gets a 503 if the socket takes it at once, and is closed.
//! The same counting ([`Caps`]) bounds the server-sent-event subscribers.

use super::Peer;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How many may be open at once: in all, how many of those only the
/// operator may take, and how many any one other holder may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    /// In all.
    pub total: usize,
    /// Kept for the operator: other holders together have at most `total - reserved`.
    pub reserved: usize,
    /// For any one holder but the operator.
    pub per_holder: usize,
}

/// Why a slot was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken.
    Total,
    /// Every slot not kept for the operator is taken.
    Shared,
    /// This holder has its cap.
    PerHolder,
}

impl Refusal {
    /// The label value of the metric.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::Shared => "shared",
            Refusal::PerHolder => "per_peer",
        }
    }
}

#[derive(Debug)]
struct Counts<K> {
    all: usize,
    others: usize,
    by: HashMap<K, usize>,
}

/// Counted slots under a [`Cap`]; a holder `None` is the operator.
#[derive(Debug)]
pub struct Caps<K> {
    cap: Cap,
    counts: Mutex<Counts<K>>,
}

/// A slot taken; given back when dropped.
#[derive(Debug)]
pub struct Held<K: Hash + Eq> {
    caps: Arc<Caps<K>>,
    holder: Option<K>,
}

impl<K: Hash + Eq + Clone> Caps<K> {
    /// No slot taken.
    pub fn new(cap: Cap) -> Arc<Self> {
        Arc::new(Caps { cap, counts: Mutex::new(Counts { all: 0, others: 0, by: HashMap::new() }) })
    }

    /// The cap.
    pub fn cap(&self) -> Cap {
        self.cap
    }

    /// Take a slot for `holder` (`None`: the operator), or say which cap refuses it.
    pub fn take(self: &Arc<Self>, holder: Option<K>) -> Result<Held<K>, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if c.all >= self.cap.total {
            return Err(Refusal::Total);
        }
        if let Some(k) = &holder {
            if c.others >= self.cap.total.saturating_sub(self.cap.reserved) {
                return Err(Refusal::Shared);
            }
            let n = c.by.entry(k.clone()).or_insert(0);
            if *n >= self.cap.per_holder {
                return Err(Refusal::PerHolder);
            }
            *n += 1;
            c.others += 1;
        }
        c.all += 1;
        Ok(Held { caps: Arc::clone(self), holder })
    }

    /// Slots taken now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).all
    }
}

impl<K: Hash + Eq> Drop for Held<K> {
    fn drop(&mut self) {
        let mut c = self.caps.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.all = c.all.saturating_sub(1);
        if let Some(k) = &self.holder {
            c.others = c.others.saturating_sub(1);
            if let Some(n) = c.by.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.by.remove(k);
                }
            }
        }
    }
}

/// Whom a connection is counted under, when not the operator's.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Bucket {
    /// A Unix socket peer with this uid.
    Uid(u32),
    /// A Unix socket peer without credentials.
    Unknown,
    /// TCP connections from this remote address (a loopback caller counts under its uid).
    Tcp(std::net::IpAddr),
}

/// The limits of the API's connections and subscribers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections.
    pub connections: Cap,
    /// How long a connection may take to deliver a request head, counted
    /// from when the server starts waiting for one: a new connection, and a
    /// kept-alive one between requests (hyper's header read timeout).
    pub header_timeout: Duration,
    /// How long shutdown waits for open connections (a server-sent-event
    /// stream never ends by itself).
    pub shutdown_grace: Duration,
}

impl Limits {
    /// Limits for a process allowed `nofile` open files: half of what is
    /// left after 256 for the governor's own files (cgroup files, probes,
    /// the store, notifiers), at most 1024; a quarter kept for the
    /// operator; 64 per other peer (fewer when the cap is small).
    pub fn for_nofile(nofile: u64) -> Limits {
        let total = usize::try_from(nofile.saturating_sub(256) / 2).unwrap_or(usize::MAX).clamp(16, 1024);
        Limits {
            connections: Cap { total, reserved: total / 4, per_holder: 64.min(total / 4).max(1) },
            header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(3),
        }
    }

    /// Limits for this process's open-files limit.
    pub fn from_fd_limit() -> Limits {
        Limits::for_nofile(allot_sys::spawn::nofile_limit())
    }
}

/// The connections of every listener of one daemon: one set of caps, so
/// the overall cap bounds the daemon's descriptors whatever the listener.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    caps: Arc<Caps<Bucket>>,
    owner_uid: u32,
    metrics: Option<Arc<Metrics>>,
    last_warned: AtomicU64,
}

/// One connection's slot: the cap's and the metric's count.
#[derive(Debug)]
struct Slot {
    _held: Held<Bucket>,
    metrics: Option<Arc<Metrics>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.connection_closed();
        }
    }
}

impl Connections {
    /// Connections under `limits`; `owner_uid` and root are the operator; refusals counted in `metrics`.
    pub fn new(limits: Limits, owner_uid: u32, metrics: Option<Arc<Metrics>>) -> Arc<Self> {
        Arc::new(Connections { limits, caps: Caps::new(limits.connections), owner_uid, metrics, last_warned: AtomicU64::new(0) })
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.caps.open()
    }

    fn holder_of_uid(&self, uid: Option<u32>) -> Option<Bucket> {
        match uid {
            Some(u) if u == self.owner_uid || u == 0 => None,
            Some(u) => Some(Bucket::Uid(u)),
            None => Some(Bucket::Unknown),
        }
    }

    fn take(&self, listener: &'static str, holder: Option<Bucket>) -> Result<Slot, Refusal> {
        match self.caps.take(holder.clone()) {
            Ok(held) => {
                if let Some(m) = &self.metrics {
                    m.connection_opened();
                }
                Ok(Slot { _held: held, metrics: self.metrics.clone() })
            }
            Err(r) => {
                if let Some(m) = &self.metrics {
                    m.connection_refused(listener, r.reason());
                }
                // One line a minute at most: a flood must not flood the log.
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let last = self.last_warned.load(Ordering::Relaxed);
                if now >= last.saturating_add(60)
                    && self.last_warned.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                {
                    let cap = self.limits.connections;
                    tracing::warn!(
                        listener,
                        ?holder,
                        reason = r.reason(),
                        total = cap.total,
                        reserved_for_operator = cap.reserved,
                        per_peer = cap.per_holder,
                        "connection refused: over a connection cap (counted in allot_api_connections_refused_total; logged once a minute)"
                    );
                }
                Err(r)
            }
        }
    }

    /// Serve one admitted connection until it ends: hyper's HTTP/1 with the
    /// header read timeout, each request carrying the peer as axum's `ConnectInfo`.
    fn spawn<I>(&self, io: I, peer: Option<Peer>, slot: Slot, app: &Router, graceful: &GracefulShutdown)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            if let Some(p) = &peer {
                req.extensions_mut().insert(ConnectInfo(p.clone()));
            }
            tower_service::Service::call(&mut app.clone(), req)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.limits.header_timeout).keep_alive(true);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
            drop(slot);
        });
    }

    /// After shutdown: wait for open connections, at most the grace.
    async fn drain(&self, graceful: GracefulShutdown) {
        if tokio::time::timeout(self.limits.shutdown_grace, graceful.shutdown()).await.is_err() {
            tracing::info!(open = self.open(), "connections still open after the shutdown grace are dropped");
        }
    }
}

/// A refused connection: a 503 if the socket takes it without waiting, then closed.
fn refuse(std: std::io::Result<impl std::io::Write>, r: Refusal, cap: Cap) {
    let body = format!(
        "{{\"error\":{{\"code\":\"unavailable\",\"message\":\"too many connections ({}: at most {} in all, {} of them kept for the operator, {} per peer)\"}}}}",
        r.reason(),
        cap.total,
        cap.reserved,
        cap.per_holder
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Ok(mut s) = std {
        let _ = s.write(answer.as_bytes());
    }
}

/// After a failed accept (out of descriptors, say): wait a little rather than spin.
async fn accept_failed(e: &std::io::Error) {
    tracing::debug!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// An accepted connection: which listener it came from, where it counts,
/// who it is, and how to answer it when it is refused.
trait Accepted: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// The listener's name, for the metrics.
    const LISTENER: &'static str;
    /// The blocking stream a refusal is written to.
    type Std: std::io::Write;
    /// Its bucket (`None`: the operator's share).
    fn holder(&self, conns: &Connections) -> Option<Bucket>;
    /// The caller's credentials, once admitted (TCP callers prove themselves with the token instead).
    fn admitted(&self) -> Option<Peer>;
    /// The blocking stream, to write a refusal.
    fn into_blocking(self) -> std::io::Result<Self::Std>;
}

impl Accepted for tokio::net::UnixStream {
    const LISTENER: &'static str = "unix";
    type Std = std::os::unix::net::UnixStream;
    fn holder(&self, conns: &Connections) -> Option<Bucket> {
        conns.holder_of_uid(self.peer_cred().ok().map(|c| c.uid()))
    }
    fn admitted(&self) -> Option<Peer> {
        Some(Peer::of_unix(self))
    }
    fn into_blocking(self) -> std::io::Result<Self::Std> {
        self.into_std()
    }
}

impl Accepted for tokio::net::TcpStream {
    const LISTENER: &'static str = "tcp";
    type Std = std::net::TcpStream;
    fn holder(&self, conns: &Connections) -> Option<Bucket> {
        let (Ok(peer), Ok(me)) = (self.peer_addr(), self.local_addr()) else { return Some(Bucket::Unknown) };
        if !allot_sys::proc::sockets::is_loopback(peer.ip()) {
            return Some(Bucket::Tcp(peer.ip()));
        }
        // A caller on this machine counts under its uid, as on the socket: one user
        // holding connections cannot take the operator's share. The kernel is asked
        // for this one socket (netlink sock_diag: no table read on the accept loop).
        match allot_sys::proc::sockets::peer_owner(peer, me) {
            Ok(Some(owner)) => conns.holder_of_uid(Some(owner.uid)),
            _ => Some(Bucket::Unknown),
        }
    }
    fn admitted(&self) -> Option<Peer> {
        let _ = self.set_nodelay(true);
        match (self.peer_addr(), self.local_addr()) {
            (Ok(peer), Ok(me)) => Some(Peer::of_tcp(peer, me)),
            _ => None,
        }
    }
    fn into_blocking(self) -> std::io::Result<Self::Std> {
        self.into_std()
    }
}

/// Accept until `shutdown` resolves: each connection admitted under the caps
/// and served, or refused; returns the open connections' shutdown handle.
async fn accept_until<S: Accepted, F: std::future::Future<Output = std::io::Result<S>>>(
    mut accept: impl FnMut() -> F,
    app: &Router,
    conns: &Connections,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = accept() => match r {
                Ok(s) => s,
                Err(e) => { accept_failed(&e).await; continue; }
            },
            () = &mut shutdown => break,
        };
        match conns.take(S::LISTENER, stream.holder(conns)) {
            Ok(slot) => {
                let peer = stream.admitted();
                conns.spawn(stream, peer, slot, app, &graceful);
            }
            Err(r) => refuse(stream.into_blocking(), r, conns.limits.connections),
        }
    }
    graceful
}

/// Serve `app` on the Unix socket with peer credentials until `shutdown` resolves.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    app: Router,
    conns: Arc<Connections>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = accept_until(|| async { listener.accept().await.map(|(s, _)| s) }, &app, &conns, shutdown).await;
    drop(listener);
    conns.drain(graceful).await;
    Ok(())
}

/// Serve `app` (with its bearer-token layer) on TCP until `shutdown` resolves;
/// a loopback connection counts under its process's uid, others under their address.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    app: Router,
    conns: Arc<Connections>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = accept_until(|| async { listener.accept().await.map(|(s, _)| s) }, &app, &conns, shutdown).await;
    drop(listener);
    conns.drain(graceful).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stranger_at_its_cap_leaves_the_operator_its_share() {
        let caps = Caps::new(Cap { total: 8, reserved: 2, per_holder: 4 });
        let a: Vec<_> = (0..4).map(|_| caps.take(Some(1u32)).unwrap()).collect();
        assert_eq!(caps.take(Some(1)).unwrap_err(), Refusal::PerHolder);
        let b: Vec<_> = (0..2).map(|_| caps.take(Some(2)).unwrap()).collect();
        assert_eq!(caps.take(Some(3)).unwrap_err(), Refusal::Shared, "6 of 8 taken by others: the rest is the operator's");
        let op: Vec<_> = (0..2).map(|_| caps.take(None).unwrap()).collect();
        assert_eq!(caps.take(None).unwrap_err(), Refusal::Total);
        assert_eq!(caps.open(), 8);
        drop(a);
        assert_eq!(caps.open(), 4);
        let again = caps.take(Some(1)).unwrap();
        drop((b, op, again));
        assert_eq!(caps.open(), 0);
        assert!(caps.counts.lock().unwrap().by.is_empty(), "holders without slots are forgotten");
    }

    #[test]
    fn limits_follow_the_descriptor_limit() {
        assert_eq!(Limits::for_nofile(1_048_576).connections, Cap { total: 1024, reserved: 256, per_holder: 64 });
        assert_eq!(Limits::for_nofile(1024).connections, Cap { total: 384, reserved: 96, per_holder: 64 });
        let tiny = Limits::for_nofile(10).connections;
        assert_eq!(tiny, Cap { total: 16, reserved: 4, per_holder: 4 });
    }
}
