//! `allot cluster status`: the cluster as etcd has it, read once: nodes
//! (lease, time to live, memory, agents, etcd transactions), and each
//! cluster total with its slices and each node's use of it.

use super::etcd::{Etcd, parse_url};
use super::{PREFIX, TotalId};
use crate::cli::ClusterStatusArgs;
use crate::commands::Error;
use allot_core::grants::GrantLedger;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;

/// The cluster's state as JSON.
pub async fn read(etcd: &Etcd) -> Result<Value, Error> {
    let (revision, kvs) = etcd.range(PREFIX, true).await?;
    let alive = etcd.leases().await?;
    let mut nodes = Vec::new();
    let mut uses: Vec<(String, Value)> = Vec::new();
    let mut totals = Vec::new();
    for kv in &kvs {
        if let Some(name) = kv.key.strip_prefix(PREFIX).and_then(|k| k.strip_prefix("nodes/")) {
            let record: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            let ttl = etcd.time_to_live(kv.lease).await.ok().flatten();
            uses.push((name.to_owned(), record["use"].clone()));
            nodes.push(json!({
                "node": name,
                "lease": kv.lease.to_string(),
                "ttl_s": ttl.map(|t| t.as_secs()),
                "pid": record["pid"],
                "memory_total": record["memory_total"],
                "memory_available": record["memory_available"],
                "agents": record["agents"],
                "txns": record["txns"],
                "updated_ms": record["updated_ms"],
            }));
        }
    }
    for kv in &kvs {
        let Some(id) = TotalId::from_key(&kv.key) else { continue };
        let Ok(l) = serde_json::from_slice::<GrantLedger>(&kv.value) else { continue };
        let slices: Vec<Value> = l
            .slices
            .iter()
            .map(|(node, s)| {
                let used = uses.iter().find(|(n, _)| n == node).map_or(Value::Null, |(_, u)| u[id.key()].clone());
                json!({"node": node, "slice": s.granted, "lease": s.lease.to_string(), "lease_alive": alive.contains(&s.lease), "used": used})
            })
            .collect();
        let held: Vec<Value> =
            l.held.iter().map(|h| json!({"node": h.node, "amount": h.amount, "until_ms": h.until.as_millis()})).collect();
        totals.push(json!({
            "total": id.label(),
            "key": id.key(),
            "cluster_total": l.total,
            "granted": l.granted(),
            "free": l.free(),
            "slices": slices,
            "held": held,
            "revision": kv.mod_revision,
        }));
    }
    let events: Vec<Value> = kvs
        .iter()
        .filter(|kv| kv.key.starts_with(&format!("{PREFIX}events/")))
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    let migrations: Vec<Value> = kvs
        .iter()
        .filter(|kv| kv.key.starts_with(&format!("{PREFIX}migrations/")))
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    Ok(
        json!({"endpoints": etcd.endpoints(), "revision": revision, "nodes": nodes, "totals": totals, "migrations": migrations, "events": events}),
    )
}

fn text(v: &Value) -> String {
    let mut out = format!("cluster at {} (revision {})\n\n", v["endpoints"], v["revision"]);
    let mut rows = vec![vec!["NODE".into(), "LEASE".into(), "TTL".into(), "MEMORY AVAIL/TOTAL".into(), "AGENTS".into(), "TXNS".into()]];
    for n in v["nodes"].as_array().into_iter().flatten() {
        let mem = |k: &str| n[k].as_u64().map_or("-".into(), |b| crate::output::human(allot_core::Resource::Memory.unit(), b));
        rows.push(vec![
            n["node"].as_str().unwrap_or("").to_owned(),
            n["lease"].as_str().unwrap_or("").to_owned(),
            n["ttl_s"].as_u64().map_or("expired".into(), |t| format!("{t}s")),
            format!("{}/{}", mem("memory_available"), mem("memory_total")),
            n["agents"].as_array().map_or(0, Vec::len).to_string(),
            n["txns"].to_string(),
        ]);
    }
    if rows.len() == 1 {
        out.push_str("no node is registered\n");
    } else {
        out.push_str(&crate::output::table(&rows));
    }
    out.push('\n');
    let mut rows = vec![vec!["TOTAL".into(), "CLUSTER".into(), "GRANTED".into(), "FREE".into(), "SLICES (node: slice used)".into()]];
    for t in v["totals"].as_array().into_iter().flatten() {
        let slices: Vec<String> = t["slices"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let dead = if s["lease_alive"] == true { "" } else { " (lease gone)" };
                format!("{}: {} {}{dead}", s["node"].as_str().unwrap_or(""), s["slice"], s["used"])
            })
            .chain(t["held"].as_array().into_iter().flatten().map(|h| format!("{} held {}", h["node"].as_str().unwrap_or(""), h["amount"])))
            .collect();
        rows.push(vec![
            t["total"].as_str().unwrap_or("").to_owned(),
            t["cluster_total"].to_string(),
            t["granted"].to_string(),
            t["free"].to_string(),
            slices.join(", "),
        ]);
    }
    if rows.len() == 1 {
        out.push_str("no cluster total yet\n");
    } else {
        out.push_str(&crate::output::table(&rows));
    }
    let events = v["events"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !events.is_empty() {
        out.push_str("\nrecent cluster events\n");
        for e in events.iter().rev().take(10).rev() {
            out.push_str(&format!(
                "{} {} {}: {} -> {} ({})\n",
                e["at_ms"],
                e["topic"].as_str().unwrap_or(""),
                e["agent"].as_str().unwrap_or(""),
                e["from"].as_str().unwrap_or(""),
                e["to"].as_str().unwrap_or(""),
                e["stage"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// `allot cluster status`.
pub(crate) fn run(args: &ClusterStatusArgs) -> Result<ExitCode, Error> {
    let etcd = Arc::new(Etcd::new(parse_url(&args.cluster)?));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let v = rt.block_on(read(&etcd))?;
    let out = if args.json { format!("{}\n", serde_json::to_string_pretty(&v)?) } else { text(&v) };
    crate::commands::print(&out)?;
    Ok(ExitCode::SUCCESS)
}
