//! The live table of `allot up` (redrawn on a terminal, printed every ten
//! seconds otherwise) and one-line summaries of events.

use crate::output::table;
use allot_core::Resource;
use allot_core::quantity::format_approx;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};

pub(super) struct Row {
    pub(super) agent: String,
    pub(super) group: String,
    pub(super) state: String,
    pub(super) usage: BTreeMap<Resource, u64>,
    pub(super) last_action: String,
}

fn cells(rows: &[Row]) -> Vec<Vec<String>> {
    let mut out = vec![["agent", "group", "state", "memory", "cpu", "procs", "files", "last action"].map(String::from).to_vec()];
    for r in rows {
        let u = |res: Resource| r.usage.get(&res).map_or_else(|| "-".to_owned(), |v| format_approx(res.unit(), *v));
        out.push(vec![
            r.agent.clone(),
            r.group.clone(),
            r.state.clone(),
            u(Resource::Memory),
            u(Resource::Cpu),
            u(Resource::Processes),
            u(Resource::Files),
            r.last_action.clone(),
        ]);
    }
    out
}

pub(super) fn live(mode: &str, rows: &[Row], recent: &VecDeque<String>) {
    use std::io::Write;
    let mut s = String::from("\x1b[H\x1b[2J");
    s.push_str(&format!("allot up: {mode}   (Ctrl-C stops every agent gracefully)\n\n"));
    s.push_str(&table(&cells(rows)));
    s.push_str("\nrecent events:\n");
    for e in recent {
        s.push_str("  ");
        s.push_str(e);
        s.push('\n');
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

pub(super) fn plain(rows: &[Row]) {
    print!("{}", table(&cells(rows)));
}

/// A short text for an event's data.
pub(super) fn brief(data: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(name) = data.get("decision").and_then(|d| d.get("decision")).and_then(Value::as_str) {
        parts.push(name.to_owned());
    }
    for key in ["resource", "level", "outcome", "reason", "detail"] {
        if let Some(v) = data.get(key) {
            let t = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            parts.push(t);
        }
    }
    if let Some(v) = data.get("violation") {
        if let (Some(r), Some(u), Some(l)) = (v.get("resource"), v.get("usage"), v.get("limit")) {
            parts.push(format!("{} {u} > {l}", r.as_str().unwrap_or("?")));
        }
    }
    let mut s = parts.join(" ");
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
