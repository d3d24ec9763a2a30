//! Analytics scheduling (SPEC section 6): a window of recent samples per
//! agent and resource; on the analytics timer, pattern, forecast (a
//! predictive alert when the hard limit is forecast within the horizon) and
//! recommendation per agent and resource, stored and published. The
//! analysis itself is pure, in `allot_core::analytics`.

use super::{Backend, Governor};
use allot_core::alerts::Threshold;
use allot_core::analytics::{self, AGENT_WIDE, GroupLimits, Recommendation, ResourceAnalysis};
use allot_core::{AgentId, Resource, Time, events};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// The analytics part: windows of samples and the recommendations that
/// stand (no flapping), per agent and resource, and per agent for a group
/// change.
#[derive(Debug, Default)]
pub(super) struct Analysis {
    /// Recent samples per agent and resource: (seconds, value).
    windows: BTreeMap<(AgentId, Resource), VecDeque<(f64, f64)>>,
    recommendations: BTreeMap<(AgentId, Resource), Recommendation>,
    /// One `change_group` per agent, for all its resources.
    group_changes: BTreeMap<AgentId, Recommendation>,
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
        self.group_changes.remove(id);
    }
}

impl<B: Backend> Governor<B> {
    /// Analyze every agent's windows now.
    pub(super) fn run_analytics(&mut self, now: Time) {
        let agents: BTreeSet<AgentId> = self.analysis.windows.keys().map(|(a, _)| a.clone()).collect();
        for id in agents {
            self.analyze_agent(&id, now);
        }
    }

    /// Pattern and forecast per resource, then the agent's recommendations:
    /// one group change for all its resources, else one per resource. What
    /// is stored and published is the recommendation that stands after this
    /// analysis (none when it recommends nothing).
    fn analyze_agent(&mut self, id: &AgentId, now: Time) {
        let horizon = self.settings.forecast_horizon.as_secs_f64();
        let Some(q) = self.domain.ledger.quota(id).cloned() else { return };
        let resources: Vec<Resource> = self.analysis.windows.keys().filter(|(a, _)| a == id).map(|(_, r)| r.clone()).collect();
        let mut analysed = Vec::new();
        for res in resources {
            let Some(limit) = q.limits.get(&res) else { continue };
            let Some(samples) = self.analysis.windows.get(&(id.clone(), res.clone())) else { continue };
            let samples: Vec<(f64, f64)> = samples.iter().copied().collect();
            let Ok(pattern) = analytics::classify(&samples) else { continue };
            let forecast = analytics::forecast(&samples, limit.hard as f64);
            self.forecast_alert(id, &res, limit.hard, &pattern, forecast.as_ref(), now);
            analysed.push(ResourceAnalysis { resource: res, pattern, hard: limit.hard, forecast });
        }
        let groups: Vec<GroupLimits> = self
            .domain
            .ledger
            .groups()
            .map(|g| GroupLimits { group: g.name.clone(), limits: g.limits.iter().map(|(r, l)| (r.clone(), (l.soft, l.hard))).collect() })
            .collect();
        let mut recs = analytics::recommend_agent(&q.group, &analysed, &groups, horizon);
        for a in &analysed {
            let new = recs.resources.iter().position(|(r, _)| *r == a.resource).map(|i| recs.resources.swap_remove(i).1);
            let key = (id.clone(), a.resource.clone());
            let old = self.analysis.recommendations.get(&key).cloned();
            let stands = analytics::standing(old.as_ref(), new, Some(a.hard));
            let pattern_json = json!({"pattern": a.pattern.kind.name(), "confidence": a.pattern.confidence, "characteristics": a.pattern.characteristics, "forecast_hard": a.forecast});
            let data = json!({"resource": a.resource.name(), "pattern": a.pattern.kind.name()});
            self.settle_recommendation(id, a.resource.name(), &pattern_json, old.as_ref(), stands.as_ref(), data, now);
            match stands {
                Some(r) => self.analysis.recommendations.insert(key, r),
                None => self.analysis.recommendations.remove(&key),
            };
        }
        let old = self.analysis.group_changes.get(id).cloned();
        let stands = analytics::standing(old.as_ref(), recs.change_group.take(), None);
        if old.is_some() || stands.is_some() {
            let patterns: serde_json::Map<String, Value> =
                analysed.iter().map(|a| (a.resource.name().to_owned(), json!(a.pattern.kind.name()))).collect();
            let pattern_json = json!({"scope": "agent", "patterns": patterns});
            let data = json!({"resource": Value::Null, "scope": "agent"});
            self.settle_recommendation(id, AGENT_WIDE, &pattern_json, old.as_ref(), stands.as_ref(), data, now);
            match stands {
                Some(r) => self.analysis.group_changes.insert(id.clone(), r),
                None => self.analysis.group_changes.remove(id),
            };
        }
    }

    /// Store the analysis with the recommendation that stands, and publish
    /// that recommendation when it differs from the one before.
    #[allow(clippy::too_many_arguments)]
    fn settle_recommendation(
        &mut self,
        id: &AgentId,
        resource: &str,
        pattern_json: &Value,
        old: Option<&Recommendation>,
        stands: Option<&Recommendation>,
        mut data: Value,
        now: Time,
    ) {
        let rec_json = stands.map(|r| serde_json::to_value(r).unwrap_or(Value::Null));
        if let Err(e) = self.recorder.store.put_analysis(id.as_str(), resource, now.as_millis(), pattern_json, rec_json.as_ref()) {
            tracing::error!(agent = %id, error = %e, "analysis not stored");
        }
        if let (Some(rj), true) = (rec_json, stands != old) {
            data["recommendation"] = rj;
            self.recorder.emit(now, events::RECOMMENDATION, Some(id.as_str()), data);
        }
    }

    /// A predictive alert when the hard limit is forecast within the horizon.
    fn forecast_alert(
        &mut self,
        id: &AgentId,
        res: &Resource,
        hard: u64,
        pattern: &analytics::Pattern,
        fc: Option<&analytics::Forecast>,
        now: Time,
    ) {
        let horizon = self.settings.forecast_horizon.as_secs_f64();
        if let Some(f) = fc.filter(|f| f.eta_secs <= horizon && f.eta_secs > 0.0) {
            let th = Threshold { warning_level: 0, critical_level: u64::MAX };
            if let Ok(fkey) = AgentId::new(format!("forecast:{id}")) {
                if self.domain.alerts.check(&fkey, res, 1, th, now).is_some() {
                    // Whole minutes past the first (`about 40m`), whole seconds under it.
                    let secs = if f.eta_secs >= 60.0 { (f.eta_secs / 60.0).round() as u64 * 60 } else { f.eta_secs.ceil() as u64 };
                    let eta = allot_core::quantity::format_duration(std::time::Duration::from_secs(secs));
                    let detail = if res.is_custom() {
                        format!("{res} budget exhausted in about {eta} at this rate (hard {hard})")
                    } else {
                        format!("{res} reaches its hard limit in about {eta} at this rate")
                    };
                    let data = json!({"resource": res.name(), "limit": hard, "eta_secs": f.eta_secs, "eta_low_secs": f.eta_low_secs, "eta_high_secs": f.eta_high_secs.min(1e12), "pattern": pattern.kind.name(), "detail": detail});
                    self.recorder.emit(now, events::ALERT_FORECAST, Some(id.as_str()), data);
                }
            }
        }
    }
}
