//! `allot recommend`: the latest recommendations, from the store or a daemon.

use super::{ReadError, ask_daemon, encode, open, resource};
use crate::cli::RecommendArgs;
use crate::commands::{Error, print};
use crate::output::table;
use allot_store::Store;
use serde_json::{Value, json};
use std::process::ExitCode;

/// The latest recommendation per agent and resource (`agent`: only its own),
/// as `{agent, resource, at_ms, pattern, recommendation}`.
pub(crate) fn recommendations(store: &Store, agent: Option<&str>) -> Result<Vec<Value>, ReadError> {
    Ok(store
        .analyses(agent)?
        .into_iter()
        .filter(|r| r.4.is_some())
        .map(|(a, r, at, p, rec)| json!({"agent": a, "resource": r, "at_ms": at, "pattern": p["pattern"], "recommendation": rec}))
        .collect())
}

pub(crate) fn recommend(args: &RecommendArgs) -> Result<ExitCode, Error> {
    let rows: Vec<Value> = match &args.socket {
        Some(sock) => {
            let path = args
                .agent
                .as_ref()
                .map_or_else(|| "/v1/recommendations".to_owned(), |a| format!("/v1/agents/{}/recommendations", encode(a)));
            serde_json::from_value(ask_daemon(sock, &path)?)?
        }
        None => recommendations(&open(&args.state)?, args.agent.as_deref())?,
    };
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        print("no recommendations yet (analytics run every policy.analytics_interval while allot up runs, and at its end)\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = vec![["agent", "resource", "pattern", "recommendation", "suggested", "confidence", "rationale"].map(String::from).to_vec()];
    for row in &rows {
        let rec = &row["recommendation"];
        let r = row["resource"].as_str().unwrap_or("?");
        let res = resource(r);
        let suggested = match (rec["group"].as_str(), rec["suggested_hard"].as_u64()) {
            (Some(g), _) => format!("group {g}"),
            (None, Some(h)) => format!("hard {}", crate::output::human(res.unit(), h)),
            _ => "-".into(),
        };
        // An agent-wide answer (one group change for all resources) shows its resources' patterns.
        let (r, pattern) = match row["patterns"].as_object() {
            Some(all) if r == allot_core::analytics::AGENT_WIDE => {
                ("all".to_owned(), all.iter().map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?"))).collect::<Vec<_>>().join(", "))
            }
            _ => (r.to_owned(), row["pattern"].as_str().unwrap_or("?").to_owned()),
        };
        t.push(vec![
            row["agent"].as_str().unwrap_or("?").into(),
            r,
            pattern,
            rec["kind"].as_str().unwrap_or("?").into(),
            suggested,
            format!("{:.2}", rec["confidence"].as_f64().unwrap_or(0.0)),
            rec["rationale"].as_str().unwrap_or("").into(),
        ]);
    }
    print(&table(&t))?;
    Ok(ExitCode::SUCCESS)
}
