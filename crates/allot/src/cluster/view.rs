//! What a node knows of the cluster: a [`View`] of the ledgers, node
//! records and migrations under the prefix, kept current by
//! [`watch_cluster`] (list, then watch from the next revision; list again
//! after a compaction; reconnect after errors).

use super::etcd::{Etcd, WatchEnd, WatchEvent};
use super::migrate::Moving;
use super::{PREFIX, TotalId};
use allot_core::grants::GrantLedger;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the node knows of the cluster from its watch.
#[derive(Debug, Default)]
pub struct View {
    /// The revision the view is at.
    pub revision: i64,
    /// Ledgers with their revisions.
    pub ledgers: BTreeMap<TotalId, (GrantLedger, i64)>,
    /// Node records by name.
    pub nodes: BTreeMap<String, Value>,
    /// Agents on their way to a node: (node, agent).
    pub migrations: BTreeMap<(String, String), Moving>,
}

impl View {
    pub(super) fn put(&mut self, key: &str, value: &[u8], rev: i64) {
        if let Some(id) = TotalId::from_key(key) {
            match serde_json::from_slice::<GrantLedger>(value) {
                Ok(l) => {
                    if self.ledgers.get(&id).is_none_or(|(_, r)| *r <= rev) {
                        self.ledgers.insert(id, (l, rev));
                    }
                }
                // Not readable: no cached copy stands for it (a read says what is wrong).
                Err(_) => drop(self.ledgers.remove(&id)),
            }
        } else if let Some(name) = key.strip_prefix(PREFIX).and_then(|k| k.strip_prefix("nodes/")) {
            if let Ok(v) = serde_json::from_slice(value) {
                self.nodes.insert(name.to_owned(), v);
            }
        } else if let Some((node, agent)) = migration_key(key) {
            if let Ok(m) = serde_json::from_slice(value) {
                self.migrations.insert((node, agent), m);
            }
        }
    }

    fn delete(&mut self, key: &str) {
        if let Some(id) = TotalId::from_key(key) {
            self.ledgers.remove(&id);
        } else if let Some(name) = key.strip_prefix(PREFIX).and_then(|k| k.strip_prefix("nodes/")) {
            self.nodes.remove(name);
        } else if let Some(k) = migration_key(key) {
            self.migrations.remove(&k);
        }
    }
}

/// `migrations/<node>/<agent>` as (node, agent).
pub(super) fn migration_key(key: &str) -> Option<(String, String)> {
    let (node, agent) = key.strip_prefix(PREFIX)?.strip_prefix("migrations/")?.split_once('/')?;
    Some((node.to_owned(), agent.to_owned()))
}

/// Follow every key under the prefix: list, then watch from the next
/// revision; list again after a compaction; reconnect after errors.
pub(super) async fn watch_cluster(etcd: Arc<Etcd>, view: Arc<Mutex<View>>) {
    loop {
        let (rev, kvs) = match etcd.range(PREFIX, true).await {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Ok(mut v) = view.lock() {
            *v = View { revision: rev, ..View::default() };
            for kv in &kvs {
                v.put(&kv.key, &kv.value, kv.mod_revision);
            }
        }
        let mut from = rev + 1;
        loop {
            let r = etcd
                .watch(PREFIX, from, Duration::from_secs(30), |rev, evs| {
                    if let Ok(mut v) = view.lock() {
                        for e in evs {
                            match e {
                                WatchEvent::Put(kv) => v.put(&kv.key, &kv.value, kv.mod_revision),
                                WatchEvent::Delete { key, .. } => v.delete(&key),
                            }
                        }
                        v.revision = v.revision.max(rev);
                    }
                    from = from.max(rev + 1);
                    true
                })
                .await;
            match r {
                Ok(WatchEnd::Compacted(_)) => break,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}
