//! Analytics scheduling (SPEC section 6): a window of recent samples per
//! agent and resource; on the analytics timer, pattern, forecast (a
//! predictive alert when the hard limit is forecast within the horizon) and
//! recommendation per agent and resource, stored and published. The
//! analysis itself is pure, in `allot_core::analytics`.

use super::{Backend, Governor};
use allot_core::alerts::Threshold;
use allot_core::analytics::{self, GroupFit, Recommendation, RecommendationKind};
use allot_core::{AgentId, Ledger, Resource, Time, events};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// The analytics part: windows of samples and the latest recommendations (no flapping).
#[derive(Debug, Default)]
pub(super) struct Analysis {
    /// Recent samples per agent and resource: (seconds, value).
    windows: BTreeMap<(AgentId, Resource), VecDeque<(f64, f64)>>,
    recommendations: BTreeMap<(AgentId, Resource), Recommendation>,
}

impl Analysis {
    /// Add a sample, dropping those older than `window`.
    pub(super) fn push(&mut self, id: &AgentId, res: &Resource, at: Time, v: u64, window: Duration) {
        let secs = at.as_millis() as f64 / 1000.0;
        let w = self.windows.entry((id.clone(), res.clone())).or_default();
        w.push_back((secs, v as f64));
        while w.front().is_some_and(|(t, _)| secs - t > window.as_secs_f64()) {
            w.pop_front();
        }
    }

    /// Forget an agent's windows and recommendations.
    pub(super) fn forget(&mut self, id: &AgentId) {
        self.windows.retain(|(a, _), _| a != id);
        self.recommendations.retain(|(a, _), _| a != id);
    }

    /// Whether group `g`'s hard limits cover the 95th percentile plus the
    /// margin of every resource of `id` measured in the window.
    fn group_fits_all(&self, ledger: &Ledger, id: &AgentId, g: &str) -> bool {
        let Some(group) = ledger.group(g) else { return false };
        self.windows.iter().filter(|((a, _), _)| a == id).all(|((_, res), w)| {
            let Some(l) = group.limits.get(res) else { return true };
            let mut v: Vec<f64> = w.iter().map(|(_, x)| *x).collect();
            v.sort_by(f64::total_cmp);
            let p95 = v.get(((v.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
            p95 * analytics::MARGIN <= l.hard as f64
        })
    }
}

impl<B: Backend> Governor<B> {
    /// Analyze every window now.
    pub(super) fn run_analytics(&mut self, now: Time) {
        let keys: Vec<(AgentId, Resource)> = self.analysis.windows.keys().cloned().collect();
        for (id, res) in keys {
            self.analyze(&id, &res, now);
        }
    }

    fn analyze(&mut self, id: &AgentId, res: &Resource, now: Time) {
        let horizon = self.settings.forecast_horizon.as_secs_f64();
        let ledger = &self.domain.ledger;
        let Some(q) = ledger.quota(id) else { return };
        let Some(limit) = q.limits.get(res).cloned() else { return };
        let Some(samples) = self.analysis.windows.get(&(id.clone(), res.clone())) else { return };
        let samples: Vec<(f64, f64)> = samples.iter().copied().collect();
        let Ok(pattern) = analytics::classify(&samples) else { return };
        let fc = analytics::forecast(&samples, limit.hard as f64);
        let fits: Vec<GroupFit> = ledger
            .groups()
            .filter_map(|g| g.limits.get(res).map(|l| GroupFit { group: g.name.clone(), soft: l.soft, hard: l.hard }))
            .collect();
        let mut rec = analytics::recommend(&pattern, limit.soft, limit.hard, &q.group, &fits, horizon, fc.as_ref());
        // A group change must fit every resource the agent uses, not just this one.
        if let Some(g) = rec.as_ref().filter(|r| r.kind == RecommendationKind::ChangeGroup).and_then(|r| r.group.clone()) {
            if !self.analysis.group_fits_all(ledger, id, &g) {
                rec = None;
            }
        }
        let pattern_json = json!({"pattern": pattern.kind.name(), "confidence": pattern.confidence, "characteristics": pattern.characteristics, "forecast_hard": fc});
        let key = (id.clone(), res.clone());
        let new_rec = rec.filter(|r| analytics::replaces(self.analysis.recommendations.get(&key), r));
        let rec_json = new_rec.as_ref().map(|r| serde_json::to_value(r).unwrap_or(Value::Null));
        if let Err(e) = self.recorder.store.put_analysis(id.as_str(), res.name(), now.as_millis(), &pattern_json, rec_json.as_ref()) {
            tracing::error!(agent = %id, error = %e, "analysis not stored");
        }
        if let Some(f) = fc.as_ref().filter(|f| f.eta_secs <= horizon && f.eta_secs > 0.0) {
            let th = Threshold { warning_level: 0, critical_level: u64::MAX };
            if let Ok(fkey) = AgentId::new(format!("forecast:{id}")) {
                if self.domain.alerts.check(&fkey, res, 1, th, now).is_some() {
                    let data = json!({"resource": res.name(), "limit": limit.hard, "eta_secs": f.eta_secs, "eta_low_secs": f.eta_low_secs, "eta_high_secs": f.eta_high_secs.min(1e12), "pattern": pattern.kind.name()});
                    self.recorder.emit(now, events::ALERT_FORECAST, Some(id.as_str()), data);
                }
            }
        }
        if let (Some(r), Some(rj)) = (new_rec, rec_json) {
            self.analysis.recommendations.insert(key, r);
            let data = json!({"resource": res.name(), "recommendation": rj, "pattern": pattern.kind.name()});
            self.recorder.emit(now, events::RECOMMENDATION, Some(id.as_str()), data);
        }
    }
}
