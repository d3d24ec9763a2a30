//! Forecasts: when a rising series' linear trend reaches a limit, with an interval.

use super::{MIN_SAMPLES, linear_fit};
use serde::{Deserialize, Serialize};

/// When a growing series reaches a limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The limit.
    pub limit: f64,
    /// Seconds from the last sample until the fitted line reaches it (0 if already above).
    pub eta_secs: f64,
    /// A 95 % interval for that time, from the slope's standard error.
    pub eta_low_secs: f64,
    /// Upper end of the interval (infinite when the slope may be zero).
    pub eta_high_secs: f64,
}

/// Forecast when the series' linear trend reaches `limit` (`None` unless rising).
pub fn forecast(samples: &[(f64, f64)], limit: f64) -> Option<Forecast> {
    let mut s: Vec<(f64, f64)> = samples.iter().copied().filter(|(t, v)| t.is_finite() && v.is_finite()).collect();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    if s.len() < MIN_SAMPLES {
        return None;
    }
    let t: Vec<f64> = s.iter().map(|p| p.0).collect();
    let v: Vec<f64> = s.iter().map(|p| p.1).collect();
    let (a, b, _, se) = linear_fit(&t, &v);
    if b <= 0.0 {
        return None;
    }
    let last = t[t.len() - 1];
    let now_fit = a + b * last;
    let eta = |slope: f64| if slope <= 0.0 { f64::INFINITY } else { ((limit - now_fit) / slope).max(0.0) };
    Some(Forecast { limit, eta_secs: eta(b), eta_low_secs: eta(b + 2.0 * se), eta_high_secs: eta(b - 2.0 * se) })
}
