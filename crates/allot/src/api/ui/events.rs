//! The events page: the live stream (`/ui/events/stream`, the API's event
//! stream with unnamed events for the browser's `EventSource`), filtered by
//! a topic glob, resumable: the browser resends the last sequence number it
//! saw (`Last-Event-ID`) when it reconnects, and `?since=SEQ` starts after
//! a given one. An agent sees only its own events.

use super::page::{self, Nav};
use crate::api::access::Caller;
use crate::api::{ApiError, Shared, system};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

/// The query of the events page and its stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// A topic glob (`enforcement.*`).
    topic: Option<String>,
    /// Start after this sequence number.
    since: Option<u64>,
}

/// `GET /ui/events?topic=&since=`.
pub(super) async fn page(caller: Caller, q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return page::error_page(ApiError::query(&e, "topic (a glob such as agent.*) and since (a sequence number)")),
    };
    let topic = q.topic.unwrap_or_default();
    let body = html! {
        h1 { "Events" }
        form.inline #topic-form method="get" action="/ui/events" {
            label { "topic " input #topic name="topic" value=(topic) placeholder="resource_management.enforcement.*" size="40"; }
            button type="submit" { "Filter" }
            span #stream-state role="status" { "connecting" }
        }
        table #events data-topic=(topic) data-since=[q.since] {
            thead { tr { th { "seq" } th { "at" } th { "topic" } th { "agent" } th { "data" } } }
            tbody {}
        }
    };
    page::shell("Events", Nav::Events, None, caller == Caller::Operator, body)
}

/// `GET /ui/events/stream?topic=&since=`: unnamed server-sent events.
pub(super) async fn stream(
    State(api): State<Shared>,
    caller: Caller,
    via: Option<axum::Extension<super::auth::Via>>,
    sessions: Option<axum::Extension<std::sync::Arc<super::Sessions>>>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::query(&e, "topic (a glob) and since (a sequence number)"))?;
    let (since, only) = system::stream_start(caller, &headers, q.since);
    let topic = q.topic.filter(|t| !t.trim().is_empty());
    let alive = super::fleet::session_alive(via.as_ref(), sessions.as_ref());
    system::event_stream(api, since, topic, only, false, alive)
}
