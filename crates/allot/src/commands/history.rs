//! `allot history` and `allot events`: read the state database, also while
//! `allot up` runs.

use super::{Error, print};
use crate::cli::{EventsArgs, HistoryArgs};
use crate::output::table;
use allot_store::Store;
use std::process::ExitCode;

fn open(path: &std::path::Path) -> Result<Store, Error> {
    if !path.exists() {
        return Err(format!("no state database at {} (run `allot up FLEET.toml` first, or pass --state)", path.display()).into());
    }
    Ok(Store::open_read_only(path)?)
}

fn at(ms: u64) -> String {
    crate::governor::clock::rfc3339(allot_core::Time::from_millis(ms))
}

pub(crate) fn history(args: &HistoryArgs) -> Result<ExitCode, Error> {
    let records: Vec<allot_store::EnforcementRecord> = match &args.socket {
        Some(sock) => {
            let path = args.agent.as_ref().map_or_else(|| "/v1/history".to_owned(), |a| format!("/v1/history?agent={a}"));
            let (st, v) = crate::client::request(sock, "GET", &path, None)?;
            if st != 200 {
                return Err(crate::client::failure(st, &v).into());
            }
            serde_json::from_value(v)?
        }
        None => open(&args.state)?.history(args.agent.as_deref())?,
    };
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&records)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![["at", "agent", "resource", "action", "outcome", "detail"].map(String::from).to_vec()];
    for r in &records {
        rows.push(vec![at(r.at_ms), r.agent.clone(), r.resource.clone(), r.action.clone(), r.outcome.clone(), r.detail.clone()]);
    }
    print(&table(&rows))?;
    Ok(ExitCode::SUCCESS)
}

/// The events recorded so far, from a daemon (`follow=false`, page by page).
fn events_from(sock: &std::path::Path, args: &EventsArgs) -> Result<Vec<allot_store::StoredEvent>, Error> {
    let mut out = Vec::new();
    let mut since = args.since;
    loop {
        let mut path = format!("/v1/events?follow=false&since={since}");
        if let Some(t) = &args.topic {
            path.push_str(&format!("&topic={}", super::report::encode(t)));
        }
        let page: Vec<serde_json::Value> = serde_json::from_value(super::report::ask_daemon(sock, &path)?)?;
        let n = page.len();
        for v in page {
            out.push(allot_store::StoredEvent {
                seq: v["seq"].as_u64().ok_or("an event without seq")?,
                at_ms: v["at_ms"].as_u64().unwrap_or(0),
                topic: v["topic"].as_str().unwrap_or("").to_owned(),
                agent: v["agent"].as_str().map(str::to_owned),
                data: v["data"].clone(),
            });
        }
        match out.last() {
            Some(last) if n > 0 && last.seq > since => since = last.seq,
            _ => break,
        }
        if n < crate::api::EVENTS_PAGE {
            break;
        }
    }
    Ok(out)
}

pub(crate) fn events(args: &EventsArgs) -> Result<ExitCode, Error> {
    if let (false, Some(sock)) = (args.follow, &args.socket) {
        let events = events_from(sock, args)?;
        print(&event_lines(&events, args.json))?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.follow {
        let sock = match &args.socket {
            Some(s) => s.clone(),
            None => crate::client::default_socket()?,
        };
        let mut path = format!("/v1/events?since={}", args.since);
        if let Some(t) = &args.topic {
            path.push_str(&format!("&topic={}", t.replace('*', "%2A")));
        }
        crate::client::follow(&sock, &path, |v| {
            let line = if args.json {
                format!("{v}\n")
            } else {
                format!(
                    "{:>6} {:<45} {:<12} {}\n",
                    v["seq"],
                    v["topic"].as_str().unwrap_or(""),
                    v["agent"].as_str().unwrap_or("-"),
                    v["data"]
                )
            };
            print(&line).is_ok()
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let store = open(&args.state)?;
    let mut events = Vec::new();
    let mut since = args.since;
    loop {
        let batch = store.events_since(since, 1000)?;
        let Some(last) = batch.last() else { break };
        since = last.seq;
        events.extend(batch.into_iter().filter(|e| args.topic.as_deref().is_none_or(|g| allot_core::events::topic_matches(g, &e.topic))));
    }
    print(&event_lines(&events, args.json))?;
    Ok(ExitCode::SUCCESS)
}

/// Events as lines of text, or JSON lines `{seq, at, topic, agent, data}`.
fn event_lines(events: &[allot_store::StoredEvent], json: bool) -> String {
    let mut out = String::new();
    for e in events {
        if json {
            let line = serde_json::json!({"seq": e.seq, "at": at(e.at_ms), "topic": e.topic, "agent": e.agent, "data": e.data});
            out.push_str(&format!("{line}\n"));
        } else {
            out.push_str(&format!("{:>6} {} {:<45} {:<12} {}\n", e.seq, at(e.at_ms), e.topic, e.agent.as_deref().unwrap_or("-"), e.data));
        }
    }
    out
}
