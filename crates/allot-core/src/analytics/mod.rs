//! Usage analytics (SPEC section 6): pattern classification, forecasts and
//! recommendations, pure and unit-free.
//!
//! Every threshold is relative: the trend is a fraction of the mean per hour
//! with its goodness of fit (R^2, or a slope at least 10 standard errors from
//! zero, against real timestamps, so uneven sampling and gaps are handled;
//! the standard error counts independent observations, so a wandering level
//! whose noise is correlated in time is not taken for a trend), spikes are
//! measured in robust standard deviations (median absolute deviation) of the
//! detrended series, and periodicity is the autocorrelation of the detrended
//! series resampled onto an even grid, searched over every lag from 2
//! samples to half the window after its first dip below zero; a periodic
//! verdict also needs at least two full cycles that each follow the shape of
//! the others, with a swing that stands above the noise around that shape.
//! Scaling a series by any positive factor, or reordering its samples,
//! leaves the result unchanged.
//!
//! Recommendations: [`recommend_agent`] answers for one agent (one
//! `change_group` for all its resources, else one answer per resource);
//! [`recommend`](fn@recommend) is the view of a single series; [`standing`] keeps them
//! from flapping without keeping one the current limits have outgrown.

mod classify;
mod forecast;
mod recommend;

pub use classify::classify;
pub use forecast::{Forecast, forecast};
pub use recommend::{
    AGENT_WIDE, AgentRecommendations, GroupFit, GroupLimits, MARGIN, Recommendation, RecommendationKind, ResourceAnalysis, recommend,
    recommend_agent, replaces, standing,
};

use serde::{Deserialize, Serialize};

/// A usage pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternKind {
    /// Rising steadily.
    Growing,
    /// Falling steadily.
    Declining,
    /// Mostly flat with rare large spikes.
    Bursty,
    /// Repeating with a period.
    Periodic,
    /// Flat within noise.
    Steady,
}

/// All pattern kinds, in a fixed order (for confusion matrices).
pub const PATTERNS: [PatternKind; 5] =
    [PatternKind::Growing, PatternKind::Declining, PatternKind::Bursty, PatternKind::Periodic, PatternKind::Steady];

impl PatternKind {
    /// The name used in JSON and text.
    pub fn name(self) -> &'static str {
        match self {
            PatternKind::Growing => "growing",
            PatternKind::Declining => "declining",
            PatternKind::Bursty => "bursty",
            PatternKind::Periodic => "periodic",
            PatternKind::Steady => "steady",
        }
    }
}

/// What the classification measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Characteristics {
    /// Samples.
    pub count: usize,
    /// Seconds from the first to the last sample.
    pub span_secs: f64,
    /// Mean.
    pub mean: f64,
    /// Variance.
    pub variance: f64,
    /// Coefficient of variation (standard deviation / mean).
    pub cv: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub peak: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Least-squares slope, units per second.
    pub slope_per_sec: f64,
    /// Trend as a fraction of the mean per hour.
    pub trend_per_hour: f64,
    /// Goodness of fit of the linear trend (R^2).
    pub trend_r2: f64,
    /// Fraction of samples that are spikes (more than 6 robust deviations above the trend).
    pub spike_fraction: f64,
    /// Strongest autocorrelation peak of the detrended series.
    pub autocorrelation: f64,
    /// The period, when periodic, in seconds.
    pub period_secs: Option<f64>,
}

/// A classified series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pattern {
    /// The pattern.
    pub kind: PatternKind,
    /// Confidence in [0, 1].
    pub confidence: f64,
    /// What was measured.
    pub characteristics: Characteristics,
}

/// Too few samples to say anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not enough data: {count} sample(s) over {span_ms} ms; at least {MIN_SAMPLES} samples over a non-zero time span are needed")]
pub struct NotEnoughData {
    /// Samples given.
    pub count: usize,
    /// Their span.
    pub span_ms: u64,
}

/// The fewest samples classification accepts.
pub const MIN_SAMPLES: usize = 8;

/// Least squares of v on t: (intercept, slope, r2, standard error of slope).
fn linear_fit(t: &[f64], v: &[f64]) -> (f64, f64, f64, f64) {
    let n = t.len() as f64;
    let mt = t.iter().sum::<f64>() / n;
    let mv = v.iter().sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in t.iter().zip(v) {
        sxx += (x - mt) * (x - mt);
        sxy += (x - mt) * (y - mv);
        syy += (y - mv) * (y - mv);
    }
    if sxx <= 0.0 {
        return (mv, 0.0, 0.0, 0.0);
    }
    let slope = sxy / sxx;
    let intercept = mv - slope * mt;
    let r2 = if syy > 0.0 { (sxy * sxy) / (sxx * syy) } else { 0.0 };
    let resid: f64 = t.iter().zip(v).map(|(x, y)| (y - intercept - slope * x).powi(2)).sum();
    let se = if n > 2.0 { (resid / (n - 2.0) / sxx).sqrt() } else { 0.0 };
    (intercept, slope, r2, se)
}

/// `n` samples `dt` seconds apart of `f(t)`, for the tests.
#[cfg(test)]
fn series(mut f: impl FnMut(f64) -> f64, n: usize, dt: f64) -> Vec<(f64, f64)> {
    (0..n).map(|i| (i as f64 * dt, f(i as f64 * dt))).collect()
}
