//! The route table: one list of every route with its method, path, access
//! rule and summary. It builds the router (each route behind its access
//! rule), the OpenAPI document, and the authorization test matrix, so a
//! route cannot be added without a rule.

use super::access::Access;
use super::{Shared, agents, system};
use axum::routing::{MethodFilter, MethodRouter, on};

/// An HTTP method of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl HttpMethod {
    /// Lower-case name, as in OpenAPI.
    pub fn name(self) -> &'static str {
        match self {
            HttpMethod::Get => "get",
            HttpMethod::Post => "post",
            HttpMethod::Put => "put",
            HttpMethod::Patch => "patch",
            HttpMethod::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            HttpMethod::Get => MethodFilter::GET,
            HttpMethod::Post => MethodFilter::POST,
            HttpMethod::Put => MethodFilter::PUT,
            HttpMethod::Patch => MethodFilter::PATCH,
            HttpMethod::Delete => MethodFilter::DELETE,
        }
    }
}

/// One route.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// Its method.
    pub method: HttpMethod,
    /// Its path, with `{id}` or `{name}` parameters.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What it does (and its body).
    pub summary: &'static str,
    handler: fn(MethodFilter) -> MethodRouter<Shared>,
}

impl Route {
    /// The handler for this route's method.
    pub(super) fn method_router(&self) -> MethodRouter<Shared> {
        (self.handler)(self.method.filter())
    }
}

use Access::{Anyone, Operator, Scoped, SelfOrOperator};
use HttpMethod::{Delete, Get, Patch, Post, Put};

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    Route { method: Get, path: "/healthz", access: Anyone, summary: "Liveness", handler: |f| on(f, system::healthz) },
    Route { method: Get, path: "/readyz", access: Anyone, summary: "Readiness: the governor answers", handler: |f| on(f, system::readyz) },
    Route { method: Get, path: "/v1/openapi.json", access: Anyone, summary: "This document", handler: |f| on(f, system::openapi) },
    Route {
        method: Get,
        path: "/v1/agents",
        access: Scoped,
        summary: "List agents with state, holders, pids, usage and quota",
        handler: |f| on(f, agents::list),
    },
    Route {
        method: Post,
        path: "/v1/agents",
        access: Operator,
        summary: "Start a command as an agent: {name, group, command, priority?, limits?, env?, workdir?}",
        handler: |f| on(f, agents::start),
    },
    Route { method: Get, path: "/v1/agents/{id}", access: SelfOrOperator, summary: "One agent", handler: |f| on(f, agents::one) },
    Route {
        method: Delete,
        path: "/v1/agents/{id}",
        access: Operator,
        summary: "Stop an agent: notice, grace, kill",
        handler: |f| on(f, agents::terminate),
    },
    Route {
        method: Post,
        path: "/v1/adopt",
        access: Operator,
        summary: "Adopt a running process: {name, group, pid, move?, priority?, limits?}",
        handler: |f| on(f, agents::adopt),
    },
    Route {
        method: Post,
        path: "/v1/agents/{id}/suspend",
        access: Operator,
        summary: "Freeze the agent's tree (the operator's hold)",
        handler: |f| on(f, agents::suspend),
    },
    Route {
        method: Post,
        path: "/v1/agents/{id}/resume",
        access: Operator,
        summary: "Lift the operator's freeze and throttle; ?force=true lifts every holder's and the policy's pending escalations",
        handler: |f| on(f, agents::resume),
    },
    Route {
        method: Post,
        path: "/v1/agents/{id}/terminate",
        access: Operator,
        summary: "Notice, grace, kill",
        handler: |f| on(f, agents::terminate),
    },
    Route {
        method: Post,
        path: "/v1/agents/{id}/throttle",
        access: Operator,
        summary: "Limit cpu (the operator's hold): ?cpu=200m",
        handler: |f| on(f, agents::throttle),
    },
    Route {
        method: Post,
        path: "/v1/agents/{id}/clear",
        access: Operator,
        summary: "Lift the operator's throttle",
        handler: |f| on(f, agents::clear),
    },
    Route {
        method: Get,
        path: "/v1/agents/{id}/quota",
        access: SelfOrOperator,
        summary: "The agent's quota",
        handler: |f| on(f, agents::quota_get),
    },
    Route {
        method: Patch,
        path: "/v1/agents/{id}/quota",
        access: Operator,
        summary: "Change limits at run time: {limits: {RESOURCE: {soft?, hard?, burst?, action?}}}",
        handler: |f| on(f, agents::quota_set),
    },
    Route {
        method: Post,
        path: "/v1/agents/{id}/usage",
        access: SelfOrOperator,
        summary: "Report usage: {resource, value}",
        handler: |f| on(f, agents::usage),
    },
    Route {
        method: Post,
        path: "/v1/agents/{id}/ack",
        access: SelfOrOperator,
        summary: "Acknowledge a request of the agent channel: {seq, note?}",
        handler: |f| on(f, agents::ack),
    },
    Route {
        method: Get,
        path: "/v1/events",
        access: Scoped,
        summary: "Server-sent events: ?since=SEQ&topic=GLOB, or Last-Event-ID",
        handler: |f| on(f, system::events),
    },
    Route {
        method: Get,
        path: "/v1/groups",
        access: Operator,
        summary: "Groups with limits, totals and members",
        handler: |f| on(f, system::groups),
    },
    Route {
        method: Post,
        path: "/v1/groups/{name}",
        access: Operator,
        summary: "Create a group: {extends?, description?, scaling_policy?, limits?, totals?}",
        handler: |f| on(f, system::put_group),
    },
    Route { method: Put, path: "/v1/groups/{name}", access: Operator, summary: "Replace a group", handler: |f| on(f, system::put_group) },
    Route {
        method: Delete,
        path: "/v1/groups/{name}",
        access: Operator,
        summary: "Delete a group without members",
        handler: |f| on(f, system::delete_group),
    },
    Route {
        method: Get,
        path: "/v1/history",
        access: Scoped,
        summary: "Enforcement history with real outcomes (?agent=ID)",
        handler: |f| on(f, system::history),
    },
    Route {
        method: Get,
        path: "/v1/host",
        access: Operator,
        summary: "Host capacity: total, reserved, allocatable, available",
        handler: |f| on(f, system::host),
    },
    Route {
        method: Get,
        path: "/metrics",
        access: Operator,
        summary: "Prometheus metrics (OpenMetrics text)",
        handler: |f| on(f, system::metrics),
    },
];
