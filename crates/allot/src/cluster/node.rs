//! A node of the cluster: registered under a lease, kept alive, and the
//! grant loop that keeps its slice of each cluster total sized to its
//! demand (`allot_core::grants::ask`, in chunks).
//!
//! Order of a change, so that the nodes' local limits never sum above a
//! total: a shrink is applied locally first (a kernel total the kernel
//! refuses to lower stays, and so does the slice), then written to the
//! ledger; a growth is written to the ledger first (a compare-and-swap on
//! the ledger's revision; lost: read again, retry), then applied.
//!
//! Failure: the node relies on its slices until its deadline (the start
//! of its last successful keepalive + TTL - margin). Past it, it falls to
//! safe capacity: budgets refuse every reservation (cap 0), kernel totals
//! keep the limits they have; `cluster.degraded` says so. When etcd answers
//! again: the same lease if it lives (etcd restarts leases' time to live
//! on a new leader), else a new registration; `cluster.recovered`.
//! A dead node's slices are taken out of a ledger by whichever node writes
//! it next, once its lease is gone (kernel totals back to the pool, budget
//! slices held for the budget's window: its spend still counts there).

use super::etcd::{Cas, Etcd, EtcdError};
use super::migrate::{Moving, target};
use super::view::{View, watch_cluster};
use super::{Config, Demand, PREFIX, TotalId, chunk, wall_now};
use crate::governor::control::Control;
use allot_core::events;
use allot_core::grants::{GrantLedger, ask};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// How often the grant loop looks at the demand.
const GRANT_EVERY: Duration = Duration::from_millis(200);
/// How often the node's record (capacity, use, agents) is published.
const PUBLISH_EVERY: Duration = Duration::from_secs(2);
/// How long the list of live leases is reused.
const LEASES_FOR: Duration = Duration::from_secs(1);

/// A registered node.
#[derive(Debug)]
pub struct Node {
    etcd: Arc<Etcd>,
    cfg: Config,
    lease: i64,
    /// The start of the last successful keepalive.
    renewed: Instant,
    last_try: Instant,
    /// Keepalives fail (said once).
    failing: bool,
    degraded: bool,
    /// This node's slice per total as the ledger has it.
    mine: BTreeMap<TotalId, u64>,
    /// As applied locally.
    applied: BTreeMap<TotalId, u64>,
    view: Arc<Mutex<View>>,
    alive: Option<(Instant, BTreeSet<i64>)>,
    warned: BTreeSet<TotalId>,
    /// When a failed change of each total was last logged (at most once a minute).
    failed_at: BTreeMap<TotalId, Instant>,
    /// Ledger transactions this node sent (published in its record).
    txns: u64,
}

fn node_key(node: &str) -> String {
    format!("{PREFIX}nodes/{node}")
}

/// Register `cfg.node` under a new lease. A node of that name whose lease
/// still lives (an earlier run that was killed, or another daemon) is waited
/// for up to its time to live, then refused.
pub async fn register(etcd: Arc<Etcd>, cfg: Config) -> Result<Node, String> {
    let started = Instant::now();
    let lease = etcd.grant(cfg.ttl).await.map_err(|e| format!("cluster: cannot take a lease: {e}"))?;
    let record = json!({"node": cfg.node, "lease": lease.to_string(), "pid": std::process::id(), "started_ms": wall_now().as_millis()});
    let key = node_key(&cfg.node);
    let mut said = false;
    loop {
        match etcd.cas(&key, 0, record.to_string().as_bytes(), lease).await.map_err(|e| format!("cluster: cannot register: {e}"))? {
            Cas::Done(_) => break,
            Cas::Lost(holder) => {
                if started.elapsed() > cfg.ttl + Duration::from_secs(3) {
                    let _ = etcd.revoke(lease).await;
                    let who = holder.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).unwrap_or_default();
                    return Err(format!(
                        "cluster: node {:?} is registered by another daemon whose lease lives ({who}); give this one another --node",
                        cfg.node
                    ));
                }
                if !said {
                    eprintln!("allot: node {:?} is still registered (an earlier run's lease?); waiting for it to expire", cfg.node);
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    tracing::info!(node = %cfg.node, lease, endpoints = ?etcd.endpoints(), "registered in the cluster");
    Ok(Node {
        etcd,
        cfg,
        lease,
        renewed: started,
        last_try: started,
        failing: false,
        degraded: false,
        mine: BTreeMap::new(),
        applied: BTreeMap::new(),
        view: Arc::new(Mutex::new(View::default())),
        alive: None,
        warned: BTreeSet::new(),
        failed_at: BTreeMap::new(),
        txns: 0,
    })
}

/// The governor, as the node task talks to it.
#[derive(Debug, Clone)]
struct Gov(mpsc::UnboundedSender<Control>);

impl Gov {
    async fn demand(&self) -> Option<(Vec<Demand>, Value)> {
        let (tx, rx) = oneshot::channel();
        self.0.send(Control::ClusterDemand(tx)).ok()?;
        rx.await.ok()
    }

    async fn apply(&self, slices: Vec<(TotalId, u64)>) -> Vec<Result<(), String>> {
        let n = slices.len();
        let (tx, rx) = oneshot::channel();
        if self.0.send(Control::ClusterApply(slices, tx)).is_err() {
            return vec![Err("the governor is gone".into()); n];
        }
        rx.await.unwrap_or_else(|_| vec![Err("the governor is gone".into()); n])
    }

    fn event(&self, topic: &'static str, data: Value) {
        let _ = self.0.send(Control::ClusterEvent(topic, data));
    }
}

impl Node {
    /// The first slices, before the governor runs: what each total's demand asks.
    pub async fn initial(&mut self, demands: &[Demand]) -> BTreeMap<TotalId, u64> {
        for d in demands {
            let want = ask(0, d.used, chunk(d.total, self.cfg.chunk_percent)).unwrap_or(0);
            if let Err(e) = self.change(d, want, None).await {
                tracing::warn!(total = %d.id.label(), error = %e, "no first slice");
            }
        }
        self.applied = self.mine.clone();
        self.mine.clone()
    }

    async fn live_leases(&mut self) -> Result<BTreeSet<i64>, EtcdError> {
        if let Some((at, l)) = &self.alive {
            if at.elapsed() < LEASES_FOR {
                return Ok(l.clone());
            }
        }
        let l = self.etcd.leases().await?;
        self.alive = Some((Instant::now(), l.clone()));
        Ok(l)
    }

    /// The ledger of `id` as last seen (watch or own write), else read.
    async fn ledger(&self, id: &TotalId) -> Result<Option<(GrantLedger, i64)>, String> {
        if let Some(l) = self.view.lock().ok().and_then(|v| v.ledgers.get(id).cloned()) {
            return Ok(Some(l));
        }
        let (_, kvs) = self.etcd.range(&id.key(), false).await.map_err(|e| e.to_string())?;
        match kvs.into_iter().next() {
            None => Ok(None),
            Some(kv) => match serde_json::from_slice::<GrantLedger>(&kv.value) {
                Ok(l) => Ok(Some((l, kv.mod_revision))),
                Err(e) => Err(format!(
                    "the ledger at {} is not a ledger allot can read ({e}): nothing is granted of it until it is repaired (or deleted, and every node restarted)",
                    id.key()
                )),
            },
        }
    }

    /// Make this node's slice of `d.id` become `want` (a growth up to what is
    /// free); `gov`: apply locally (a shrink before, a growth after the
    /// ledger's change). Returns the slice now held.
    async fn change(&mut self, d: &Demand, want: u64, gov: Option<&Gov>) -> Result<u64, String> {
        for _ in 0..4 {
            let (mut ledger, rev) = self.ledger(&d.id).await?.unwrap_or_else(|| (GrantLedger::new(d.total), 0));
            if ledger.total != d.total && self.warned.insert(d.id.clone()) {
                tracing::warn!(total = %d.id.label(), cluster = ledger.total, configured = d.total, "this node is configured with another total than the cluster's ledger: the ledger's holds");
            }
            let mut alive = self.live_leases().await.map_err(|e| e.to_string())?;
            if ledger.slices.values().any(|s| !alive.contains(&s.lease)) {
                // A lease unknown to a list taken before it was granted is not dead: a list taken now decides.
                self.alive = None;
                alive = self.live_leases().await.map_err(|e| e.to_string())?;
            }
            let now = wall_now();
            let released = ledger.release_dead(&alive, now, d.keep);
            let returned = ledger.expire_held(now);
            // This node's own slice held from an earlier lease (etcd was out of reach past the
            // TTL, or a restart): its spend is still counted here, so it is its slice again.
            let own_held: u64 = ledger.held.iter().filter(|h| h.node == self.cfg.node).map(|h| h.amount).sum();
            if own_held > 0 {
                ledger.held.retain(|h| h.node != self.cfg.node);
                let s = ledger.slices.entry(self.cfg.node.clone()).or_insert(allot_core::grants::Slice { granted: 0, lease: self.lease });
                s.granted = s.granted.saturating_add(own_held);
                s.lease = self.lease;
            }
            let had = ledger.slices.get(&self.cfg.node).map_or(0, |s| s.granted);
            if want < had {
                if let Some(gov) = gov {
                    if let Some(Err(e)) = gov.apply(vec![(d.id.clone(), want)]).await.pop() {
                        return Err(e);
                    }
                    self.applied.insert(d.id.clone(), want);
                }
            }
            let granted = ledger.resize(&self.cfg.node, want, self.lease);
            let lease_changed = ledger.slices.get(&self.cfg.node).is_some_and(|s| s.lease != self.lease);
            if granted == had && released.is_empty() && returned == 0 && own_held == 0 && rev != 0 && !lease_changed {
                self.mine.insert(d.id.clone(), granted);
                return Ok(granted);
            }
            let text = serde_json::to_vec(&ledger).map_err(|e| e.to_string())?;
            self.txns += 1;
            match self.etcd.cas(&d.id.key(), rev, &text, 0).await.map_err(|e| e.to_string())? {
                Cas::Done(new_rev) => {
                    if let Ok(mut v) = self.view.lock() {
                        if v.ledgers.get(&d.id).is_none_or(|(_, r)| *r < new_rev) {
                            v.ledgers.insert(d.id.clone(), (ledger.clone(), new_rev));
                        }
                    }
                    self.mine.insert(d.id.clone(), granted);
                    if let Some(gov) = gov {
                        for (node, amount) in &released {
                            let held = if d.keep.is_some() { "held for the budget's window" } else { "back in the pool" };
                            gov.event(
                                events::CLUSTER_RELEASED,
                                json!({"total": d.id.label(), "node": node, "slice": amount, "detail": format!("node {node}'s lease expired: its slice of {} ({amount}) taken from it, {held}", d.id.label())}),
                            );
                        }
                        if granted > had {
                            if let Some(Err(e)) = gov.apply(vec![(d.id.clone(), granted)]).await.pop() {
                                tracing::warn!(total = %d.id.label(), error = %e, "granted slice not applied");
                            } else {
                                self.applied.insert(d.id.clone(), granted);
                            }
                        }
                    }
                    return Ok(granted);
                }
                Cas::Lost(current) => {
                    if let Ok(mut v) = self.view.lock() {
                        match current {
                            Some(kv) => v.put(&kv.key, &kv.value, kv.mod_revision),
                            None => drop(v.ledgers.remove(&d.id)),
                        }
                    }
                }
            }
        }
        Err(format!("{}: the ledger kept changing under this node; tried 4 times", d.id.label()))
    }

    /// Keep the lease alive when due; whether the node may rely on its slices.
    async fn keep_alive(&mut self, gov: &Gov) -> bool {
        let due = if self.degraded { Duration::from_millis(500) } else { self.cfg.ttl / 3 };
        if self.last_try.elapsed() >= due {
            let sent = Instant::now();
            self.last_try = sent;
            match self.etcd.keepalive(self.lease).await {
                Ok(Some(_)) => {
                    self.renewed = sent;
                    self.failing = false;
                }
                Ok(None) => self.reregister(gov).await,
                Err(e) if !self.failing => {
                    self.failing = true;
                    tracing::warn!(error = %e, "cluster: keepalive failed (retried; said again when etcd answers)");
                }
                Err(e) => tracing::debug!(error = %e, "cluster: keepalive failed"),
            }
        }
        let deadline = self.renewed + self.cfg.ttl.saturating_sub(self.cfg.margin);
        let ok = Instant::now() < deadline;
        if !ok && !self.degraded {
            self.degraded = true;
            let budgets: Vec<(TotalId, u64)> = self.applied.keys().filter(|id| id.is_budget()).map(|id| (id.clone(), 0)).collect();
            let names: Vec<String> = budgets.iter().map(|(id, _)| id.label()).collect();
            let _ = gov.apply(budgets.clone()).await;
            for (id, _) in budgets {
                self.applied.insert(id, 0);
            }
            gov.event(
                events::CLUSTER_DEGRADED,
                json!({"node": self.cfg.node, "lease": self.lease.to_string(), "budgets_refused": names,
                       "detail": format!("etcd unreachable past this node's deadline (last keepalive + {} - {}): budgets refuse every reservation, kernel totals keep their limits", humantime::format_duration(self.cfg.ttl), humantime::format_duration(self.cfg.margin))}),
            );
            tracing::warn!("cluster: deadline passed without etcd; safe capacity");
        } else if ok && self.degraded {
            self.degraded = false;
            let back: Vec<(TotalId, u64)> = self.mine.iter().map(|(id, c)| (id.clone(), *c)).collect();
            let _ = gov.apply(back.clone()).await;
            self.applied.extend(back);
            gov.event(
                events::CLUSTER_RECOVERED,
                json!({"node": self.cfg.node, "lease": self.lease.to_string(), "detail": "etcd answers again: the node's slices are in force"}),
            );
            tracing::info!("cluster: recovered");
        }
        ok
    }

    /// The lease is gone (expired while etcd was out of reach): register anew.
    /// Slices held under the old lease are dead: they leave the ledgers at the next write.
    async fn reregister(&mut self, gov: &Gov) {
        let Ok(lease) = self.etcd.grant(self.cfg.ttl).await else { return };
        let record =
            json!({"node": self.cfg.node, "lease": lease.to_string(), "pid": std::process::id(), "started_ms": wall_now().as_millis()});
        match self.etcd.cas(&node_key(&self.cfg.node), 0, record.to_string().as_bytes(), lease).await {
            Ok(Cas::Done(_)) => {
                let old = std::mem::replace(&mut self.lease, lease);
                self.renewed = Instant::now();
                self.mine.clear();
                self.alive = None;
                gov.event(
                    events::CLUSTER_REGISTERED,
                    json!({"node": self.cfg.node, "lease": lease.to_string(), "detail": format!("lease {old} expired while etcd was out of reach: registered again; slices asked for anew")}),
                );
            }
            _ => {
                let _ = self.etcd.revoke(lease).await;
            }
        }
    }

    /// Send `m` to the node with the most room; the governor is told where (or why not).
    async fn migrate_out(&mut self, gov: &Gov, mut m: Moving) {
        let agent = m.agent.clone();
        // The nodes as etcd has them now, only those whose record lives under a live lease (a
        // record written by anything else is no node).
        self.alive = None;
        let live = self.live_leases().await.unwrap_or_default();
        let nodes: BTreeMap<String, Value> = match self.etcd.range(&format!("{PREFIX}nodes/"), true).await {
            Ok((_, kvs)) => kvs
                .iter()
                .filter(|kv| kv.lease != 0 && live.contains(&kv.lease))
                .filter_map(|kv| Some((kv.key.rsplit('/').next()?.to_owned(), serde_json::from_slice(&kv.value).ok()?)))
                .collect(),
            Err(e) => {
                let _ = gov.0.send(Control::Migrated(agent, Err(format!("etcd: {e}"))));
                return;
            }
        };
        let found = target(nodes.iter(), &self.cfg.node, m.memory);
        let Some((to, avail)) = found else {
            let why =
                format!("no other node has {} of memory available", crate::output::human(allot_core::Resource::Memory.unit(), m.memory));
            let _ = gov.0.send(Control::Migrated(agent, Err(why)));
            return;
        };
        m.to = to.clone();
        let key = format!("{PREFIX}migrations/{to}/{agent}");
        let text = serde_json::to_vec(&m).unwrap_or_default();
        match self.etcd.put(&key, &text, 0).await {
            Ok(_) => {
                tracing::info!(agent, to, available = avail, "migrating");
                self.cluster_event(&m, "left").await;
                let _ = gov.0.send(Control::Migrated(agent, Ok(to)));
            }
            Err(e) => drop(gov.0.send(Control::Migrated(agent, Err(format!("the move could not be written to etcd: {e}"))))),
        }
    }

    /// Start the agents sent to this node (seen in the watch), each once: its key deleted first.
    async fn migrate_in(&mut self, gov: &Gov) {
        let mine: Vec<((String, String), Moving)> = self
            .view
            .lock()
            .map(|v| v.migrations.iter().filter(|((n, _), _)| n == &self.cfg.node).map(|(k, m)| (k.clone(), m.clone())).collect())
            .unwrap_or_default();
        for ((node, agent), m) in mine {
            if self.etcd.delete(&format!("{PREFIX}migrations/{node}/{agent}")).await.is_err() {
                continue;
            }
            if let Ok(mut v) = self.view.lock() {
                v.migrations.remove(&(node, agent.clone()));
            }
            let started = match m.to_def() {
                Err(e) => Err(e),
                Ok(def) => {
                    let (tx, rx) = oneshot::channel();
                    match gov.0.send(Control::Start(Box::new(def), tx)) {
                        Err(_) => Err("the governor is gone".to_owned()),
                        Ok(()) => rx.await.map_err(|_| "the governor is gone".to_owned()).and_then(|r| r.map_err(|e| e.to_string())),
                    }
                }
            };
            let (outcome, detail) = match &started {
                Ok(_) => ("success", format!("{agent} arrived from node {} and runs here", m.from)),
                Err(e) => ("failure", format!("{agent} from node {} could not be started here: {e}", m.from)),
            };
            gov.event(
                events::CLUSTER_MIGRATED,
                json!({"agent": agent, "from": m.from, "to": self.cfg.node, "stage": "arrived", "outcome": outcome, "detail": detail}),
            );
            self.cluster_event(&m, if started.is_ok() { "arrived" } else { "failed" }).await;
        }
    }

    /// A cluster event under `events/`, for every node to read.
    async fn cluster_event(&self, m: &Moving, stage: &str) {
        let at = wall_now().as_millis();
        let key = format!("{PREFIX}events/{at}-{}-{}", self.cfg.node, m.agent);
        let v = json!({"at_ms": at, "topic": events::CLUSTER_MIGRATED, "agent": m.agent, "from": m.from, "to": m.to, "stage": stage, "by": self.cfg.node});
        if let Err(e) = self.etcd.put(&key, v.to_string().as_bytes(), 0).await {
            tracing::warn!(error = %e, "cluster event not written");
        }
    }

    /// Run until `stop`: keepalive, the watch, the grant loop, the node's
    /// record, migrations out (from `moves`) and in (from the watch).
    pub async fn run(
        mut self,
        tx: mpsc::UnboundedSender<Control>,
        mut moves: mpsc::UnboundedReceiver<Moving>,
        mut stop: watch::Receiver<bool>,
    ) {
        let gov = Gov(tx);
        let watcher = tokio::spawn(watch_cluster(Arc::clone(&self.etcd), Arc::clone(&self.view)));
        gov.event(
            events::CLUSTER_REGISTERED,
            json!({"node": self.cfg.node, "lease": self.lease.to_string(), "slices": self.mine.iter().map(|(id, c)| json!({"total": id.label(), "slice": c})).collect::<Vec<_>>()}),
        );
        let mut published = Instant::now() - PUBLISH_EVERY;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(m) = moves.recv() => {
                    if self.degraded {
                        let _ = gov.0.send(Control::Migrated(m.agent, Err("etcd is out of reach".into())));
                    } else {
                        self.migrate_out(&gov, m).await;
                    }
                    continue;
                }
                () = tokio::time::sleep(GRANT_EVERY) => {}
            }
            if !self.keep_alive(&gov).await {
                continue;
            }
            self.migrate_in(&gov).await;
            let Some((demands, info)) = gov.demand().await else { break };
            // Slices of dead nodes are taken out of the ledgers this node sees, once their leases are gone.
            let alive = self.live_leases().await.ok();
            let now = wall_now();
            for d in &demands {
                let slice = self.mine.get(&d.id).copied().unwrap_or(0);
                let sweep = alive.as_ref().is_some_and(|alive| {
                    self.view.lock().ok().is_some_and(|v| {
                        v.ledgers.get(&d.id).is_some_and(|(l, _)| {
                            l.slices.values().any(|s| !alive.contains(&s.lease)) || l.held.iter().any(|h| h.until <= now)
                        })
                    })
                });
                let want = ask(slice, d.used, chunk(d.total, self.cfg.chunk_percent)).or(sweep.then_some(slice));
                if let Some(want) = want {
                    let before = slice;
                    match self.change(d, want, Some(&gov)).await {
                        Ok(now) if now != before => tracing::debug!(total = %d.id.label(), from = before, to = now, "slice changed"),
                        Ok(_) => {}
                        Err(e) => {
                            if self.failed_at.get(&d.id).is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                                self.failed_at.insert(d.id.clone(), Instant::now());
                                tracing::warn!(total = %d.id.label(), error = %e, "slice not changed (said again at most once a minute)");
                            }
                        }
                    }
                } else if self.applied.get(&d.id) != self.mine.get(&d.id) {
                    let cap = self.mine.get(&d.id).copied().unwrap_or(0);
                    if let Some(Ok(())) = gov.apply(vec![(d.id.clone(), cap)]).await.pop() {
                        self.applied.insert(d.id.clone(), cap);
                    }
                }
            }
            if published.elapsed() >= PUBLISH_EVERY {
                published = Instant::now();
                let mut record = info;
                record["node"] = json!(self.cfg.node);
                record["lease"] = json!(self.lease.to_string());
                record["pid"] = json!(std::process::id());
                record["updated_ms"] = json!(wall_now().as_millis());
                record["txns"] = json!(self.txns);
                record["use"] = demands.iter().map(|d| (d.id.key(), json!(d.used))).collect::<serde_json::Map<_, _>>().into();
                if let Err(e) = self.etcd.put(&node_key(&self.cfg.node), record.to_string().as_bytes(), self.lease).await {
                    tracing::warn!(error = %e, "cluster: node record not published");
                }
            }
        }
        watcher.abort();
    }
}
