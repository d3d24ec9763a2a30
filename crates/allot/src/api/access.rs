//! Who may call what, declared once. The caller is classified once per
//! request (a connection's classification stands for [`CLASSIFY_FOR`], its
//! process checked alive on every request) from the socket's peer credentials (SO_PEERCRED): the socket's
//! process that belongs to an agent (its pid is in the agent's tree or
//! cgroup) is that agent, whatever its uid; else the socket's owner and
//! root are the operator; anyone else is a stranger. The peer's process is
//! pinned at accept (a pidfd, or its start time), so a pid reused later
//! by another process is not mistaken for the one that connected. On TCP the bearer token makes the caller the operator. Each
//! route of the table carries an [`Access`] rule that a layer enforces
//! before the handler runs; handlers take the [`Caller`] as an extractor.

use super::error::ApiError;
use super::{Shared, ask};
use crate::governor::control::Control;
use allot_sys::peer::PeerProcess;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The caller's credentials: from the socket (its uid, and its process
/// pinned at accept, so a pid reused later is not mistaken for it), or a
/// TCP caller that gave the token.
#[derive(Clone, Debug)]
pub struct Peer {
    pub(super) uid: Option<u32>,
    pub(super) process: Option<Arc<PeerProcess>>,
    pub(super) token: bool,
    /// A TCP connection: (the peer's address, ours); a loopback peer's process is looked up.
    tcp: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// The connection's last classification and when it was made (shared by its requests).
    seen: Arc<Mutex<Option<(Caller, Instant)>>>,
}

/// How long a connection's classification stands before the governor is
/// asked again (its process is checked alive on every request). A change of
/// membership (a process adopted into an agent) reaches a connection opened
/// before it within this time.
pub(crate) const CLASSIFY_FOR: Duration = Duration::from_secs(1);

impl Peer {
    /// The peer of a Unix socket connection.
    pub fn of_unix(stream: &tokio::net::UnixStream) -> Peer {
        use std::os::fd::AsFd;
        let cred = stream.peer_cred().ok();
        let pid = cred.and_then(|c| c.pid()).and_then(|p| u32::try_from(p).ok());
        let process = pid.and_then(|pid| PeerProcess::pin(stream.as_fd(), pid, &allot_sys::Roots::host().proc)).map(Arc::new);
        Peer { uid: cred.map(|c| c.uid()), process, token: false, tcp: None, seen: Arc::default() }
    }

    /// A TCP caller that presented the bearer token.
    pub fn token_holder() -> Peer {
        Peer { uid: None, process: None, token: true, tcp: None, seen: Arc::default() }
    }

    /// A TCP connection from `peer` to `me` (a loopback peer's process is looked up when it presents the token).
    pub fn of_tcp(peer: std::net::SocketAddr, me: std::net::SocketAddr) -> Peer {
        Peer { uid: None, process: None, token: false, tcp: Some((peer, me)), seen: Arc::default() }
    }

    /// Who is trying, for counting failed logins: a loopback caller's uid
    /// (the kernel's owner of its socket), else its address.
    pub(crate) fn source(&self) -> String {
        match self.tcp {
            Some((from, me)) if allot_sys::proc::sockets::is_loopback(from.ip()) => match allot_sys::proc::sockets::peer_owner(from, me) {
                Ok(Some(o)) => format!("uid {}", o.uid),
                _ => "local, unknown".to_owned(),
            },
            Some((from, _)) => format!("address {}", from.ip()),
            None => "unknown".to_owned(),
        }
    }

    /// This connection's peer, having presented the token (or a session given for it).
    pub fn with_token(&self) -> Peer {
        Peer { token: true, ..self.clone() }
    }

    /// The caller's uid; a TCP token holder acts as `owner` (the daemon's user).
    pub(super) fn uid_or(&self, owner: u32) -> u32 {
        if self.token { owner } else { self.uid.unwrap_or(owner) }
    }

    /// Nobody known (no credentials).
    fn unknown() -> Peer {
        Peer { uid: None, process: None, token: false, tcp: None, seen: Arc::default() }
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The socket's owner, root, or a TCP caller with the token.
    Operator,
    /// A process of this agent.
    Agent(String),
    /// Anyone else.
    Stranger,
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can reach the socket.
    Anyone,
    /// The operator only.
    Operator,
    /// The operator, or the agent the path's `{id}` names.
    SelfOrOperator,
    /// The operator sees everything; an agent sees only what is its own (the handler scopes it).
    Scoped,
}

impl Access {
    /// Who may call, in words (for the OpenAPI document).
    pub fn describe(self) -> &'static str {
        match self {
            Access::Anyone => "anyone",
            Access::Operator => "the operator",
            Access::SelfOrOperator => "the operator, or the agent itself",
            Access::Scoped => "the operator; an agent gets only its own",
        }
    }

    /// Whether `caller` may call a route with this rule; `id` is the path's `{id}`, if any.
    pub fn allows(self, caller: &Caller, id: Option<&str>) -> bool {
        match (self, caller) {
            (Access::Anyone, _) | (_, Caller::Operator) => true,
            (Access::Scoped, Caller::Agent(_)) => true,
            (Access::SelfOrOperator, Caller::Agent(me)) => id == Some(me.as_str()),
            _ => false,
        }
    }
}

/// Classify a peer. Agent membership comes first: a process of an agent is
/// that agent whatever its uid (an agent running as root is not the
/// operator). Then the socket's owner and root are the operator, and a TCP
/// caller with the token. A peer whose connecting process is gone (its pid
/// may now be anyone's) is a stranger.
async fn classify(api: &super::Api, peer: &Peer) -> Caller {
    if peer.token {
        return token_holder(api, peer).await;
    }
    let Some(uid) = peer.uid else { return Caller::Stranger };
    let Some(pid) = peer.process.as_ref().and_then(|p| p.pid(&allot_sys::Roots::host().proc)) else {
        return Caller::Stranger;
    };
    if let Some((caller, at)) = peer.seen.lock().unwrap_or_else(PoisonError::into_inner).clone() {
        if at.elapsed() < CLASSIFY_FOR {
            return caller;
        }
    }
    let caller = match ask(api, |tx| Control::Owner(pid, tx)).await {
        Ok(Some(agent)) => Caller::Agent(agent),
        Ok(None) if uid == api.owner_uid || uid == 0 => Caller::Operator,
        Ok(None) => Caller::Stranger,
        // Membership could not be decided: never guess operator, and ask again next time.
        Err(_) => return Caller::Stranger,
    };
    *peer.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some((caller.clone(), Instant::now()));
    caller
}

/// A caller with the token (or a session given for it) is the operator,
/// unless it is an agent's process on this machine: a loopback connection
/// whose process (found through `/proc`, `allot_sys::proc::sockets`) belongs
/// to an agent is that agent, as on the socket (an agent that obtained the
/// token or a dashboard cookie does not become the operator). A loopback
/// connection whose process cannot be found is a stranger: a process can
/// hide its socket from the scan (passing it away over a Unix socket while
/// its request is looked at), and the daemon sees the host's whole `/proc`.
async fn token_holder(api: &super::Api, peer: &Peer) -> Caller {
    let Some((from, me)) = peer.tcp.filter(|(from, _)| allot_sys::proc::sockets::is_loopback(from.ip())) else { return Caller::Operator };
    if let Some((caller, at)) = peer.seen.lock().unwrap_or_else(PoisonError::into_inner).clone() {
        if at.elapsed() < CLASSIFY_FOR {
            return caller;
        }
    }
    let pid = tokio::task::spawn_blocking(move || {
        let owner = allot_sys::proc::sockets::peer_owner(from, me).ok().flatten()?;
        allot_sys::proc::sockets::pid_of_socket(&allot_sys::Roots::host().proc, owner.inode)
    })
    .await
    .ok()
    .flatten();
    let caller = match pid {
        Some(pid) => match ask(api, |tx| Control::Owner(pid, tx)).await {
            Ok(Some(agent)) => Caller::Agent(agent),
            Ok(None) => Caller::Operator,
            // Membership could not be decided: never guess operator.
            Err(_) => return Caller::Stranger,
        },
        None => {
            tracing::info!(peer = %from, "a loopback caller with the token whose process cannot be found: refused as a stranger");
            Caller::Stranger
        }
    };
    *peer.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some((caller.clone(), Instant::now()));
    caller
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Shared) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let peer = parts.extensions.get::<ConnectInfo<Peer>>().map_or_else(Peer::unknown, |c| c.0.clone());
        let caller = classify(api, &peer).await;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// The layer of one route: classify the caller and apply the route's rule before the handler.
pub(super) async fn guard(State((api, access)): State<(Shared, Access)>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &api).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let id = match RawPathParams::from_request_parts(&mut parts, &api).await {
        Ok(params) => params.iter().find(|(k, _)| *k == "id").map(|(_, v)| v.to_owned()),
        Err(_) => None,
    };
    let who = match &caller {
        Caller::Operator => "operator".to_owned(),
        Caller::Agent(a) => format!("agent:{a}"),
        Caller::Stranger => "stranger".to_owned(),
    };
    tracing::Span::current().record("caller", who.as_str());
    if !access.allows(&caller, id.as_deref()) {
        tracing::info!(caller = %who, "refused by the route's access rule");
        return ApiError::forbidden().into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_by_caller_class() {
        let me = Caller::Agent("a".into());
        for (access, operator, own, other, stranger) in [
            (Access::Anyone, true, true, true, true),
            (Access::Operator, true, false, false, false),
            (Access::SelfOrOperator, true, true, false, false),
            (Access::Scoped, true, true, true, false),
        ] {
            assert_eq!(access.allows(&Caller::Operator, Some("b")), operator, "{access:?}");
            assert_eq!(access.allows(&me, Some("a")), own, "{access:?}");
            assert_eq!(access.allows(&me, Some("b")), other, "{access:?}");
            assert_eq!(access.allows(&Caller::Stranger, Some("a")), stranger, "{access:?}");
        }
    }
}
