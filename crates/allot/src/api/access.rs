//! Who may call what, declared once. The caller is classified once per
//! request from the socket's peer credentials (SO_PEERCRED): the socket's
//! owner and root are the operator; a process that belongs to an agent (its
//! pid is in the agent's tree or cgroup) is that agent; anyone else is a
//! stranger. On TCP the bearer token makes the caller the operator. Each
//! route of the table carries an [`Access`] rule that a layer enforces
//! before the handler runs; handlers take the [`Caller`] as an extractor.

use super::error::ApiError;
use super::{Shared, ask};
use crate::governor::control::Control;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use tokio::net::UnixListener;

/// The caller's credentials, from the socket.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub(super) uid: Option<u32>,
    pub(super) pid: Option<i32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let cred = stream.io().peer_cred().ok();
        Peer { uid: cred.map(|c| c.uid()), pid: cred.and_then(|c| c.pid()) }
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

/// Classify a peer: operator, agent or stranger.
async fn classify(api: &super::Api, peer: Peer) -> Caller {
    match peer.uid {
        Some(uid) if uid == api.owner_uid || uid == 0 => return Caller::Operator,
        None => return Caller::Stranger,
        _ => {}
    }
    let Some(pid) = peer.pid.and_then(|p| u32::try_from(p).ok()) else { return Caller::Stranger };
    match ask(api, |tx| Control::Owner(pid, tx)).await {
        Ok(Some(agent)) => Caller::Agent(agent),
        _ => Caller::Stranger,
    }
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Shared) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let peer = parts.extensions.get::<ConnectInfo<Peer>>().map(|c| c.0).unwrap_or(Peer { uid: None, pid: None });
        let caller = classify(api, peer).await;
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
