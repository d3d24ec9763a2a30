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
//! [`recommend`] is the view of a single series; [`standing`] keeps them
//! from flapping without keeping one the current limits have outgrown.

use crate::resource::{Resource, Unit};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize - 1;
    sorted[rank.min(sorted.len() - 1)]
}

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

/// The detrended series resampled onto `n` even steps (linear interpolation).
fn resample(t: &[f64], r: &[f64], n: usize) -> Vec<f64> {
    let (t0, t1) = (t[0], t[t.len() - 1]);
    let mut out = Vec::with_capacity(n);
    let mut j = 0;
    for i in 0..n {
        let x = t0 + (t1 - t0) * i as f64 / (n - 1) as f64;
        while j + 1 < t.len() - 1 && t[j + 1] < x {
            j += 1;
        }
        let (xa, xb) = (t[j], t[(j + 1).min(t.len() - 1)]);
        let (ya, yb) = (r[j], r[(j + 1).min(t.len() - 1)]);
        let y = if xb > xa { ya + (yb - ya) * (x - xa) / (xb - xa) } else { ya };
        out.push(y);
    }
    out
}

/// The strongest local peak of the autocorrelation of an evenly sampled
/// series over lags 2..n/2, after its first dip below zero: (lag, value);
/// (0, 0) when there is none. A repetition first decorrelates: the bumps of
/// slowly decaying noise at short lags are not cycles.
fn best_autocorrelation(x: &[f64]) -> (usize, f64) {
    let n = x.len();
    let m = x.iter().sum::<f64>() / n as f64;
    let d: Vec<f64> = x.iter().map(|v| v - m).collect();
    let var: f64 = d.iter().map(|v| v * v).sum();
    if var <= 0.0 || n < 8 {
        return (0, 0.0);
    }
    let acf: Vec<f64> = (0..=n / 2).map(|k| d.iter().zip(&d[k..]).map(|(a, b)| a * b).sum::<f64>() / var).collect();
    let first_dip = acf.iter().position(|a| *a < 0.0).unwrap_or(acf.len());
    let mut best = (0, 0.0);
    for k in first_dip.max(2)..acf.len().saturating_sub(1) {
        if acf[k] > acf[k - 1] && acf[k] >= acf[k + 1] && acf[k] > best.1 {
            best = (k, acf[k]);
        }
    }
    best
}

/// The integrated autocorrelation time of a series in samples: 1 plus
/// twice the sum of its autocorrelation up to the first lag where it falls
/// to the level of chance. How many samples one independent observation spans: about 1
/// for white noise, more for a wandering level.
fn integrated_time(x: &[f64]) -> f64 {
    let n = x.len();
    let m = x.iter().sum::<f64>() / n as f64;
    let d: Vec<f64> = x.iter().map(|v| v - m).collect();
    let var: f64 = d.iter().map(|v| v * v).sum();
    if var <= 0.0 {
        return 1.0;
    }
    // Lags count while their autocorrelation stands above what white noise
    // of this length shows by chance (two standard errors).
    let floor = 2.0 / (n as f64).sqrt();
    let mut sum = 0.0;
    for k in 1..n / 2 {
        let a = d.iter().zip(&d[k..]).map(|(a, b)| a * b).sum::<f64>() / var;
        if a < floor {
            break;
        }
        sum += a;
    }
    1.0 + 2.0 * sum
}

/// The finite samples, sorted by time (then value).
fn finite_sorted(samples: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut s: Vec<(f64, f64)> = samples.iter().copied().filter(|(t, v)| t.is_finite() && v.is_finite()).collect();
    s.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    s
}

/// The level and spread of a series' values.
struct Level {
    mean: f64,
    variance: f64,
    /// What changes are measured against: the mean's magnitude, or for a
    /// series centred on zero its largest magnitude.
    scale: f64,
    min: f64,
    peak: f64,
    p95: f64,
}

impl Level {
    fn of(v: &[f64]) -> Level {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let variance = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let scale = if mean.abs() > 0.0 { mean.abs() } else { v.iter().fold(0.0f64, |a, x| a.max(x.abs())).max(f64::MIN_POSITIVE) };
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        Level { mean, variance, scale, min: sorted[0], peak: sorted[sorted.len() - 1], p95: percentile(&sorted, 95.0) }
    }
}

/// A series' least-squares line against its timestamps.
struct Trend {
    intercept: f64,
    slope: f64,
    r2: f64,
    /// How many standard errors the slope is from zero: a noisy but long trend
    /// is still a trend even when R^2 is low.
    t_stat: f64,
}

impl Trend {
    fn fit(t: &[f64], v: &[f64]) -> Trend {
        let (intercept, slope, r2, slope_se) = linear_fit(t, v);
        let t_stat = if slope_se > 0.0 {
            (slope / slope_se).abs()
        } else if slope != 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        Trend { intercept, slope, r2, t_stat }
    }

    /// The values less the line: the detrended series.
    fn residuals(&self, t: &[f64], v: &[f64]) -> Vec<f64> {
        t.iter().zip(v).map(|(x, y)| y - self.intercept - self.slope * x).collect()
    }
}

/// How many residuals stand more than six median absolute deviations (at
/// least a thousandth of `scale`) above the residuals' median.
fn spike_count(resid: &[f64], scale: f64) -> usize {
    let mut sorted = resid.to_vec();
    sorted.sort_by(f64::total_cmp);
    let med = sorted[sorted.len() / 2];
    let mut abs_dev: Vec<f64> = resid.iter().map(|x| (x - med).abs()).collect();
    abs_dev.sort_by(f64::total_cmp);
    let mad = abs_dev[abs_dev.len() / 2] * 1.4826;
    let spike_floor = 6.0 * mad.max(scale * 1e-3);
    resid.iter().filter(|x| **x - med > spike_floor).count()
}

/// How the full cycles of a period repeat in an evenly sampled series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Cycles {
    /// Full cycles in the series.
    full: usize,
    /// Cycles that follow the shape of the others (correlation at least
    /// [`CLEAR_CYCLE`] with the mean of the other cycles).
    clear: usize,
    /// Standard deviation of the mean cycle's shape, less what averaging
    /// noise over the cycles leaves in it.
    amplitude: f64,
    /// Standard deviation of the samples around the mean cycle's shape.
    noise: f64,
}

/// The correlation a cycle needs with the mean of the others to count as clear.
const CLEAR_CYCLE: f64 = 0.5;

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa <= 0.0 || sbb <= 0.0 { 0.0 } else { sab / (saa * sbb).sqrt() }
}

/// Fold `x` at `lag` samples: the full cycles, the mean shape, and how
/// many cycles follow it.
fn cycles(x: &[f64], lag: usize) -> Cycles {
    if lag < 2 || x.len() / lag < 2 {
        return Cycles { full: x.len().checked_div(lag).unwrap_or(0), ..Cycles::default() };
    }
    let c = x.len() / lag;
    let segs: Vec<&[f64]> = x.chunks_exact(lag).take(c).collect();
    let shape: Vec<f64> = (0..lag).map(|k| segs.iter().map(|s| s[k]).sum::<f64>() / c as f64).collect();
    let cf = c as f64;
    let mut ss = 0.0;
    for s in &segs {
        ss += s.iter().zip(&shape).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
    }
    let noise_var = ss / (lag as f64 * (cf - 1.0));
    let m = shape.iter().sum::<f64>() / lag as f64;
    let shape_var = shape.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / lag as f64;
    let amplitude = (shape_var - noise_var / cf).max(0.0).sqrt();
    let clear = segs
        .iter()
        .filter(|s| {
            let others: Vec<f64> = shape.iter().zip(s.iter()).map(|(m, v)| (m * cf - v) / (cf - 1.0)).collect();
            correlation(s, &others) >= CLEAR_CYCLE
        })
        .count();
    Cycles { full: c, clear, amplitude, noise: noise_var.sqrt() }
}

/// What the residuals, resampled evenly, say about repetition and about how
/// correlated their noise is.
struct Repetition {
    /// The strongest autocorrelation peak.
    acf: f64,
    /// Its lag in seconds.
    period_secs: f64,
    /// How many such periods the span holds.
    cycles_in_span: f64,
    /// How the full cycles repeat.
    cycles: Cycles,
    /// Independent observations in the series: the samples divided by the
    /// integrated autocorrelation time of the residuals (in sample order).
    effective_samples: f64,
}

fn periodicity(t: &[f64], resid: &[f64], span: f64) -> Repetition {
    let grid = resample(t, resid, t.len().clamp(16, 512));
    let (lag, acf) = best_autocorrelation(&grid);
    let step = span / (grid.len() - 1) as f64;
    let cycles_in_span = if lag > 0 { grid.len() as f64 / lag as f64 } else { 0.0 };
    let effective_samples = t.len() as f64 / integrated_time(resid);
    Repetition { acf, period_secs: lag as f64 * step, cycles_in_span, cycles: cycles(&grid, lag), effective_samples }
}

/// What the kind of a pattern is decided on besides its characteristics.
struct Evidence {
    spikes: usize,
    /// The strongest repetition's period.
    period_secs: f64,
    /// How many of those periods the series spans.
    cycles: f64,
    /// How its full cycles repeat.
    folded: Cycles,
    /// The trend's change over the span, relative to the scale.
    change: f64,
    /// How large the detrended wiggle is next to the level and the trend: a
    /// faint ripple on a leak is still a leak.
    resid_rel: f64,
    trend_strong: bool,
    t_stat: f64,
}

impl Evidence {
    /// At least two cycles follow the shape of the others, and that shape's
    /// swing (peak to peak of a sine of the same spread) stands above the
    /// noise around it.
    fn clear_cycles(&self) -> bool {
        self.folded.clear >= 2 && 2.0 * std::f64::consts::SQRT_2 * self.folded.amplitude >= self.folded.noise
    }
}

/// The autocorrelation peak (after the first dip below zero) a periodic
/// pattern needs.
const PERIODIC_ACF: f64 = 0.40;

/// The kind, its confidence and the period (for a periodic pattern).
fn decide(c: &Characteristics, e: &Evidence) -> (PatternKind, f64, Option<f64>) {
    let acf = c.autocorrelation;
    if e.spikes >= 2 && c.spike_fraction <= 0.3 && acf < 0.6 {
        (PatternKind::Bursty, (0.6 + c.spike_fraction * 4.0).min(1.0), None)
    } else if acf >= PERIODIC_ACF
        && e.cycles >= 2.0
        && e.clear_cycles()
        && e.resid_rel >= 0.02
        && !(e.trend_strong && e.change.abs() > 4.0 * e.resid_rel)
    {
        (PatternKind::Periodic, acf.clamp(0.0, 1.0), Some(e.period_secs))
    } else if e.trend_strong {
        let k = if c.slope_per_sec > 0.0 { PatternKind::Growing } else { PatternKind::Declining };
        (k, c.trend_r2.max((e.t_stat / 30.0).min(1.0)).clamp(0.0, 1.0), None)
    } else {
        (PatternKind::Steady, (1.0 - c.cv / 0.5).clamp(0.3, 1.0), None)
    }
}

/// Classify a series of `(seconds, value)` samples (any order).
pub fn classify(samples: &[(f64, f64)]) -> Result<Pattern, NotEnoughData> {
    let s = finite_sorted(samples);
    let span = s.last().map_or(0.0, |l| l.0) - s.first().map_or(0.0, |f| f.0);
    if s.len() < MIN_SAMPLES || span <= 0.0 {
        return Err(NotEnoughData { count: s.len(), span_ms: (span.max(0.0) * 1000.0) as u64 });
    }
    let t: Vec<f64> = s.iter().map(|p| p.0).collect();
    let v: Vec<f64> = s.iter().map(|p| p.1).collect();
    let n = v.len() as f64;
    let level = Level::of(&v);
    let trend = Trend::fit(&t, &v);
    let resid = trend.residuals(&t, &v);
    let spikes = spike_count(&resid, level.scale);
    let rep = periodicity(&t, &resid, span);
    // The slope's standard error assumes independent residuals; correlated
    // noise (a wandering level) holds fewer independent observations.
    let t_stat = trend.t_stat * (rep.effective_samples / n).sqrt();
    let change = trend.slope * span / level.scale;
    let resid_rel = (resid.iter().map(|x| x * x).sum::<f64>() / n).sqrt() / level.scale;
    let trend_strong = change.abs() >= 0.1 && (trend.r2 >= 0.5 || t_stat >= 10.0);
    let characteristics = Characteristics {
        count: v.len(),
        span_secs: span,
        mean: level.mean,
        variance: level.variance,
        cv: level.variance.sqrt() / level.scale,
        min: level.min,
        peak: level.peak,
        p95: level.p95,
        slope_per_sec: trend.slope,
        trend_per_hour: trend.slope * 3600.0 / level.scale,
        trend_r2: trend.r2,
        spike_fraction: spikes as f64 / n,
        autocorrelation: rep.acf,
        period_secs: None,
    };
    let evidence = Evidence {
        spikes,
        period_secs: rep.period_secs,
        cycles: rep.cycles_in_span,
        folded: rep.cycles,
        change,
        resid_rel,
        trend_strong,
        t_stat,
    };
    let (kind, confidence, period) = decide(&characteristics, &evidence);
    Ok(Pattern { kind, confidence, characteristics: Characteristics { period_secs: period, ..characteristics } })
}

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

/// A recommendation type (the sketch's four).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecommendationKind {
    /// Raise the quota before the limit is hit.
    IncreaseQuota,
    /// Lower an oversized quota.
    DecreaseQuota,
    /// Another group fits the usage better.
    ChangeGroup,
    /// Spiky usage: smooth it in the agent.
    OptimizeCode,
}

/// A recommendation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Type.
    pub kind: RecommendationKind,
    /// Suggested hard limit (or group name for change_group in `group`).
    pub suggested_hard: Option<u64>,
    /// Suggested group, for change_group.
    pub group: Option<String>,
    /// Why, for a person.
    pub rationale: String,
    /// Confidence in [0, 1].
    pub confidence: f64,
}

/// The safety margin over the 95th percentile for suggested limits (VPA uses
/// the 90th percentile + 15 %; allot uses the 95th, which suits agents whose
/// overruns are punished, with the same margin).
pub const MARGIN: f64 = 1.15;

/// A group's per-agent hard limit for the resource, for change_group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupFit {
    /// Group name.
    pub group: String,
    /// Its soft limit for the resource.
    pub soft: u64,
    /// Its hard limit for the resource.
    pub hard: u64,
}

/// The resource name under which an agent-wide recommendation (one
/// `change_group` for all its resources) is stored and published.
pub const AGENT_WIDE: &str = "*";

/// What a resource needs: the 95th percentile plus the margin; a periodic
/// series keeps its peak (it comes back every period), so its peak plus the
/// margin.
fn need(p: &Pattern) -> f64 {
    let c = &p.characteristics;
    let base = if p.kind == PatternKind::Periodic { c.p95.max(c.peak) } else { c.p95 };
    (base * MARGIN).max(0.0)
}

/// `v` rounded up to a value that reads well in the unit (whole Mi or Ki
/// for large byte sizes), so a suggestion prints short and exact.
fn round_up(unit: Option<Unit>, v: f64) -> u64 {
    let v = v.ceil().max(0.0) as u64;
    let step = match unit {
        Some(Unit::Bytes) if v >= 64 << 20 => 1 << 20,
        Some(Unit::Bytes) if v >= 64 << 10 => 1 << 10,
        _ => 1,
    };
    v.div_ceil(step).saturating_mul(step)
}

/// A value for a rationale: in the unit's human form when known.
fn show(unit: Option<Unit>, v: f64) -> String {
    match unit {
        Some(u) => crate::quantity::format_approx(u, v.max(0.0).round() as u64),
        None => format!("{v:.0}"),
    }
}

/// A duration for a rationale, to the second.
fn show_secs(secs: f64) -> String {
    crate::quantity::format_duration(std::time::Duration::from_secs(secs.clamp(0.0, 1e12) as u64))
}

/// The answer for one resource on its own: increase (growing, only above
/// the current hard limit), optimize (bursty) or decrease (the need under
/// half the hard limit; a periodic series never below its peak).
fn for_resource(p: &Pattern, unit: Option<Unit>, hard: u64, horizon_secs: f64, fc: Option<&Forecast>) -> Option<Recommendation> {
    let c = &p.characteristics;
    match p.kind {
        PatternKind::Growing => {
            // Room for the growth expected over the horizon, with the margin.
            let projected = (c.p95 + c.slope_per_sec.max(0.0) * horizon_secs) * MARGIN;
            let suggested = round_up(unit, projected);
            if suggested <= hard {
                return None; // the current limit already holds the growth over the horizon
            }
            let when = match fc {
                Some(f) if f.eta_secs <= 0.0 => "and it is already above the hard limit".to_owned(),
                Some(f) => format!(
                    "at this rate it reaches the hard limit in about {} ({}-{})",
                    show_secs(f.eta_secs),
                    show_secs(f.eta_low_secs),
                    show_secs(f.eta_high_secs.min(1e12))
                ),
                None => "no crossing of the hard limit is forecast".to_owned(),
            };
            Some(Recommendation {
                kind: RecommendationKind::IncreaseQuota,
                suggested_hard: Some(suggested),
                group: None,
                rationale: format!(
                    "usage grows by {}/s ({:.0} % of its mean per hour, R^2 {:.2}), {when}; suggested hard: the 95th percentile plus the growth over {}, plus 15 %, above the current hard {}",
                    show(unit, c.slope_per_sec),
                    c.trend_per_hour * 100.0,
                    c.trend_r2,
                    show_secs(horizon_secs),
                    show(unit, hard as f64)
                ),
                confidence: p.confidence,
            })
        }
        PatternKind::Bursty => Some(Recommendation {
            kind: RecommendationKind::OptimizeCode,
            suggested_hard: None,
            group: None,
            rationale: format!(
                "{:.1} % of samples are spikes far above the usual level (peak {} against mean {}); smoothing them would avoid violations",
                c.spike_fraction * 100.0,
                show(unit, c.peak),
                show(unit, c.mean)
            ),
            confidence: p.confidence * 0.8,
        }),
        PatternKind::Steady | PatternKind::Periodic | PatternKind::Declining => {
            let need = need(p);
            let suggested = round_up(unit, need);
            if need <= 0.0 || (suggested as f64) >= hard as f64 * 0.5 {
                return None;
            }
            let basis = if p.kind == PatternKind::Periodic {
                format!("the peak {} of a periodic series", show(unit, c.peak.max(c.p95)))
            } else {
                format!("the 95th percentile {}", show(unit, c.p95))
            };
            Some(Recommendation {
                kind: RecommendationKind::DecreaseQuota,
                suggested_hard: Some(suggested),
                group: None,
                rationale: format!(
                    "{basis} plus 15 % is {}, under half of the hard limit {}",
                    show(unit, suggested as f64),
                    show(unit, hard as f64)
                ),
                confidence: p.confidence,
            })
        }
    }
}

/// Recommend from a pattern, the current limits and the groups available,
/// for a single series: its resource is all the agent uses (see
/// [`recommend_agent`] for an agent with several). `change_group` names the
/// smallest group whose limits cover the need (for a periodic series, its
/// peak) when that is not the current group and is below the current hard
/// limit; else increase, decrease or optimize as [`recommend_agent`] does.
pub fn recommend(
    p: &Pattern,
    _soft: u64,
    hard: u64,
    current_group: &str,
    groups: &[GroupFit],
    horizon_secs: f64,
    fc: Option<&Forecast>,
) -> Option<Recommendation> {
    let c = &p.characteristics;
    if matches!(p.kind, PatternKind::Steady | PatternKind::Periodic | PatternKind::Declining) {
        let need = need(p);
        let best = groups.iter().filter(|g| g.hard as f64 >= need && g.soft as f64 >= c.mean).min_by_key(|g| g.hard);
        if let Some(g) = best.filter(|g| g.group != current_group && g.hard < hard) {
            return Some(Recommendation {
                kind: RecommendationKind::ChangeGroup,
                suggested_hard: Some(g.hard),
                group: Some(g.group.clone()),
                rationale: format!("the need {need:.0} fits group {} (hard {}), smaller than the current hard {hard}", g.group, g.hard),
                confidence: p.confidence * 0.9,
            });
        }
    }
    for_resource(p, None, hard, horizon_secs, fc)
}

/// One analysed resource of an agent, for [`recommend_agent`].
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceAnalysis {
    /// The resource.
    pub resource: Resource,
    /// Its pattern over the window.
    pub pattern: Pattern,
    /// Its current hard limit.
    pub hard: u64,
    /// When its trend reaches the hard limit.
    pub forecast: Option<Forecast>,
}

/// A group's per-agent limits, for `change_group`.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupLimits {
    /// Group name.
    pub group: String,
    /// Soft and hard limit per resource it limits.
    pub limits: BTreeMap<Resource, (u64, u64)>,
}

/// What an agent is recommended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentRecommendations {
    /// One answer for the whole agent: the smallest group whose limits cover
    /// every analysed resource, when that is another group than its own and
    /// smaller than its current limits.
    pub change_group: Option<Recommendation>,
    /// Otherwise, per resource: increase, decrease or optimize.
    pub resources: Vec<(Resource, Recommendation)>,
}

/// Whether `g` covers resource `r`: no limit on it, or a hard limit at or
/// above its need and a soft limit at or above its mean.
fn covers(g: &GroupLimits, r: &ResourceAnalysis) -> bool {
    g.limits.get(&r.resource).is_none_or(|(soft, hard)| *hard as f64 >= need(&r.pattern) && *soft as f64 >= r.pattern.characteristics.mean)
}

/// How large `g` is next to the agent's current limits: the sum over the
/// analysed resources it limits of its hard limit over the current one.
fn relative_size(g: &GroupLimits, resources: &[ResourceAnalysis]) -> f64 {
    resources.iter().filter_map(|r| g.limits.get(&r.resource).map(|(_, hard)| *hard as f64 / r.hard.max(1) as f64)).sum()
}

/// Recommend for one agent from all its analysed resources: one
/// `change_group` when the smallest group covering every resource (none
/// growing or bursty) is another group, no larger than the current limits
/// on any resource and smaller on one; else an answer per resource.
pub fn recommend_agent(
    current_group: &str,
    resources: &[ResourceAnalysis],
    groups: &[GroupLimits],
    horizon_secs: f64,
) -> AgentRecommendations {
    let settled = !resources.is_empty()
        && resources.iter().all(|r| matches!(r.pattern.kind, PatternKind::Steady | PatternKind::Periodic | PatternKind::Declining));
    if settled {
        let smallest = groups
            .iter()
            .filter(|g| resources.iter().all(|r| covers(g, r)))
            .min_by(|a, b| relative_size(a, resources).total_cmp(&relative_size(b, resources)).then_with(|| a.group.cmp(&b.group)));
        let smaller = |g: &GroupLimits| {
            let limited: Vec<(u64, u64)> =
                resources.iter().filter_map(|r| g.limits.get(&r.resource).map(|(_, hard)| (*hard, r.hard))).collect();
            limited.iter().all(|(g, cur)| g <= cur) && limited.iter().any(|(g, cur)| g < cur)
        };
        if let Some(g) = smallest.filter(|g| g.group != current_group && smaller(g)) {
            let fits: Vec<String> = resources
                .iter()
                .filter_map(|r| {
                    let (_, hard) = g.limits.get(&r.resource)?;
                    let unit = Some(r.resource.unit());
                    Some(format!("{} needs {} of {}", r.resource, show(unit, need(&r.pattern)), show(unit, *hard as f64)))
                })
                .collect();
            let confidence = resources.iter().map(|r| r.pattern.confidence).fold(1.0f64, f64::min) * 0.9;
            return AgentRecommendations {
                change_group: Some(Recommendation {
                    kind: RecommendationKind::ChangeGroup,
                    suggested_hard: None,
                    group: Some(g.group.clone()),
                    rationale: format!(
                        "group {} is the smallest whose limits cover every resource (the 95th percentile, or a periodic peak, plus 15 %): {}",
                        g.group,
                        fits.join(", ")
                    ),
                    confidence,
                }),
                resources: Vec::new(),
            };
        }
    }
    let resources = resources
        .iter()
        .filter_map(|r| {
            for_resource(&r.pattern, Some(r.resource.unit()), r.hard, horizon_secs, r.forecast.as_ref())
                .map(|rec| (r.resource.clone(), rec))
        })
        .collect();
    AgentRecommendations { change_group: None, resources }
}

/// Whether a standing recommendation still makes sense against the current
/// hard limit: an increase must be above it, a decrease below it.
fn still_valid(r: &Recommendation, hard: Option<u64>) -> bool {
    match (r.kind, r.suggested_hard, hard) {
        (RecommendationKind::IncreaseQuota, Some(s), Some(h)) => s > h,
        (RecommendationKind::DecreaseQuota, Some(s), Some(h)) => s < h,
        _ => true,
    }
}

/// The recommendation that stands after an analysis: none when the
/// analysis recommends nothing (an older one does not outlive the analysis
/// that replaced it); the previous one when the new one does not
/// [`replaces`] it and it still makes sense against the current hard limit;
/// else the new one.
pub fn standing(old: Option<&Recommendation>, new: Option<Recommendation>, hard: Option<u64>) -> Option<Recommendation> {
    let new = new?;
    match old {
        Some(o) if !replaces(Some(o), &new) && still_valid(o, hard) => Some(o.clone()),
        _ => Some(new),
    }
}

/// Keeps recommendations from flapping: a new one replaces the old only when
/// its type changes or its suggested value differs by more than 10 %.
pub fn replaces(old: Option<&Recommendation>, new: &Recommendation) -> bool {
    let Some(old) = old else { return true };
    if old.kind != new.kind || old.group != new.group {
        return true;
    }
    match (old.suggested_hard, new.suggested_hard) {
        (Some(a), Some(b)) if a > 0 => (b as f64 - a as f64).abs() / a as f64 > 0.10,
        (a, b) => a != b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn series(mut f: impl FnMut(f64) -> f64, n: usize, dt: f64) -> Vec<(f64, f64)> {
        (0..n).map(|i| (i as f64 * dt, f(i as f64 * dt))).collect()
    }

    #[test]
    fn clear_cases() {
        assert_eq!(classify(&series(|_| 100.0, 100, 1.0)).unwrap().kind, PatternKind::Steady);
        assert_eq!(classify(&series(|t| 100.0 + t, 100, 1.0)).unwrap().kind, PatternKind::Growing);
        assert_eq!(classify(&series(|t| 300.0 - t, 100, 1.0)).unwrap().kind, PatternKind::Declining);
        let p = classify(&series(|t| 100.0 + 40.0 * (t * std::f64::consts::TAU / 20.0).sin(), 200, 1.0)).unwrap();
        assert_eq!(p.kind, PatternKind::Periodic);
        assert!((p.characteristics.period_secs.unwrap() - 20.0).abs() < 2.0, "{:?}", p.characteristics.period_secs);
        let spikes = [5, 23, 61, 64, 120, 171];
        let bursty = series(|t| if spikes.contains(&(t as usize)) { 900.0 } else { 100.0 + (t * 7.0).sin() }, 200, 1.0);
        assert_eq!(classify(&bursty).unwrap().kind, PatternKind::Bursty);
    }

    #[test]
    fn a_periodic_verdict_needs_two_clear_cycles_above_the_noise() {
        use crate::analytics_corpus::Rng;
        // Two and a half clear cycles are periodic.
        let mut rng = Rng::new(1);
        let sine = series(|t| 100.0 + 30.0 * (t * std::f64::consts::TAU / 120.0).sin() + rng.normal(), 300, 1.0);
        assert_eq!(classify(&sine).unwrap().kind, PatternKind::Periodic);
        // AR(1) noise (phi 0.8 to 0.95 per sample, 2 % of the level) at
        // jittered times wanders without repeating: never periodic, whatever
        // bumps its autocorrelation shows.
        let mut periodic = Vec::new();
        for seed in 0..300u64 {
            let mut rng = Rng::new(seed);
            let phi = 0.8 + 0.15 * rng.unit();
            let (mut x, mut t) = (0.0, 0.0);
            let s: Vec<(f64, f64)> = (0..400)
                .map(|_| {
                    t += rng.range(0.5, 1.5);
                    x = phi * x + (1.0 - phi * phi).sqrt() * rng.normal();
                    (t, 1000.0 * (1.0 + 0.02 * x + 0.005 * rng.normal()))
                })
                .collect();
            let p = classify(&s).unwrap();
            if p.kind == PatternKind::Periodic {
                periodic.push((seed, p.characteristics.autocorrelation, p.characteristics.period_secs));
            }
        }
        assert!(periodic.is_empty(), "{periodic:?}");
    }

    #[test]
    fn not_enough_data_is_an_answer_not_a_panic() {
        assert!(classify(&[]).unwrap_err().to_string().contains("not enough data"));
        assert!(classify(&[(1.0, 5.0)]).is_err());
        assert!(classify(&[(1.0, 5.0); 20]).is_err(), "zero time span");
        assert!(classify(&[(f64::NAN, 1.0); 20]).is_err());
    }

    #[test]
    fn forecasts_and_flapping() {
        let s = series(|t| 100.0 + 2.0 * t, 300, 1.0);
        let f = forecast(&s, 1000.0).unwrap();
        assert!((f.eta_secs - (1000.0 - 698.0) / 2.0).abs() < 1.0, "{f:?}");
        assert!(forecast(&series(|t| 100.0 - t, 50, 1.0), 1000.0).is_none());
        let r = |v| Recommendation {
            kind: RecommendationKind::DecreaseQuota,
            suggested_hard: Some(v),
            group: None,
            rationale: String::new(),
            confidence: 1.0,
        };
        assert!(replaces(None, &r(100)));
        assert!(!replaces(Some(&r(100)), &r(109)));
        assert!(replaces(Some(&r(100)), &r(111)));
    }

    fn pattern(kind: PatternKind, mean: f64, p95: f64, peak: f64, slope_per_sec: f64) -> Pattern {
        Pattern {
            kind,
            confidence: 0.9,
            characteristics: Characteristics {
                count: 600,
                span_secs: 600.0,
                mean,
                variance: 0.0,
                cv: 0.0,
                min: 0.0,
                peak,
                p95,
                slope_per_sec,
                trend_per_hour: slope_per_sec * 3600.0 / mean.max(1.0),
                trend_r2: 0.9,
                spike_fraction: 0.0,
                autocorrelation: 0.0,
                period_secs: None,
            },
        }
    }

    #[test]
    fn an_increase_is_above_the_current_limit() {
        // Growing slowly, far under its limit: the projection over the
        // horizon (115 % of 100 + 600 s x 0.01) stays under 1000.
        let p = pattern(PatternKind::Growing, 90.0, 100.0, 101.0, 0.01);
        assert_eq!(recommend(&p, 800, 1000, "g", &[], 600.0, None), None);
        let p = pattern(PatternKind::Growing, 900.0, 950.0, 960.0, 0.5);
        let r = recommend(&p, 800, 1000, "g", &[], 600.0, None).unwrap();
        assert_eq!(r.kind, RecommendationKind::IncreaseQuota);
        assert!(r.suggested_hard.unwrap() > 1000, "{r:?}");
    }

    #[test]
    fn a_periodic_series_keeps_its_peak() {
        // Narrow peaks: the 95th percentile is far under the peak, which
        // comes back every period.
        let p = pattern(PatternKind::Periodic, 200.0, 300.0, 1000.0, 0.0);
        let r = recommend(&p, 5000, 10_000, "g", &[], 600.0, None).unwrap();
        assert_eq!(r.kind, RecommendationKind::DecreaseQuota);
        assert!(r.suggested_hard.unwrap() >= 1000, "{r:?}");
        // A peak over half the limit: no decrease at all.
        let p = pattern(PatternKind::Periodic, 200.0, 300.0, 4500.0, 0.0);
        assert_eq!(recommend(&p, 5000, 10_000, "g", &[], 600.0, None), None);
    }

    fn groups() -> Vec<GroupLimits> {
        let g = |name: &str, m: (u64, u64), c: (u64, u64)| GroupLimits {
            group: name.into(),
            limits: [(Resource::Memory, m), (Resource::Cpu, c)].into_iter().collect(),
        };
        vec![
            g("small", (50 << 20, 100 << 20), (50, 100)),
            g("medium", (200 << 20, 500 << 20), (150, 300)),
            g("large", (1 << 30, 2 << 30), (400, 800)),
        ]
    }

    fn steady(resource: Resource, mean: f64, hard: u64) -> ResourceAnalysis {
        ResourceAnalysis { resource, pattern: pattern(PatternKind::Steady, mean, mean * 1.05, mean * 1.1, 0.0), hard, forecast: None }
    }

    #[test]
    fn one_group_change_per_agent_for_all_its_resources() {
        // Memory and cpu both fit "small": one change_group, nothing per resource.
        let agent = [steady(Resource::Memory, 20e6, 500 << 20), steady(Resource::Cpu, 10.0, 300)];
        let r = recommend_agent("medium", &agent, &groups(), 600.0);
        let change = r.change_group.unwrap();
        assert_eq!((change.kind, change.group.as_deref()), (RecommendationKind::ChangeGroup, Some("small")));
        assert!(change.rationale.contains("memory") && change.rationale.contains("cpu"), "{}", change.rationale);
        assert!(r.resources.is_empty(), "{:?}", r.resources);
        // cpu needs more than "small" holds: "medium", its own group, is the
        // smallest that covers both, so no group change; decreases per resource.
        let agent = [steady(Resource::Memory, 20e6, 500 << 20), steady(Resource::Cpu, 140.0, 300)];
        let r = recommend_agent("medium", &agent, &groups(), 600.0);
        assert_eq!(r.change_group, None);
        assert_eq!(r.resources.len(), 1, "memory only (cpu needs 170m of 300m): {:?}", r.resources);
        assert_eq!(r.resources[0].0, Resource::Memory);
        assert_eq!(r.resources[0].1.kind, RecommendationKind::DecreaseQuota);
        // Memory growing: no group change while any resource grows.
        let mut agent = [steady(Resource::Memory, 20e6, 500 << 20), steady(Resource::Cpu, 10.0, 300)];
        agent[0].pattern = pattern(PatternKind::Growing, 20e6, 30e6, 31e6, 1e6);
        let r = recommend_agent("medium", &agent, &groups(), 600.0);
        assert_eq!(r.change_group, None);
        assert!(r.resources.iter().any(|(res, x)| *res == Resource::Memory && x.kind == RecommendationKind::IncreaseQuota), "{r:?}");
    }

    #[test]
    fn the_standing_recommendation_follows_the_latest_analysis() {
        let inc = |v| Recommendation {
            kind: RecommendationKind::IncreaseQuota,
            suggested_hard: Some(v),
            group: None,
            rationale: String::new(),
            confidence: 1.0,
        };
        // Nothing recommended now: nothing stands.
        assert_eq!(standing(Some(&inc(1000)), None, Some(800)), None);
        // Within 10 %: the old one stands, while it is still an increase.
        assert_eq!(standing(Some(&inc(1000)), Some(inc(1050)), Some(800)), Some(inc(1000)));
        // The limit was raised to it: the old increase is spent, the new one stands.
        assert_eq!(standing(Some(&inc(1000)), Some(inc(1050)), Some(1000)), Some(inc(1050)));
    }

    fn arb_kind() -> impl Strategy<Value = PatternKind> {
        prop::sample::select(PATTERNS.to_vec())
    }

    proptest! {
        #[test]
        fn suggestions_move_the_limit_the_way_they_say(
            kind in arb_kind(),
            mean in 0.0f64..1e9,
            p95_over in 1.0f64..3.0,
            peak_over in 1.0f64..4.0,
            slope in -1e5f64..1e5,
            hard in 1u64..4_000_000_000,
            unit in prop::sample::select(vec![Resource::Memory, Resource::Cpu, Resource::Processes]),
        ) {
            let p95 = mean * p95_over;
            let peak = p95 * peak_over;
            let p = pattern(kind, mean, p95, peak, slope);
            let single = recommend(&p, hard / 2, hard, "g", &[], 600.0, None);
            let agent = recommend_agent("g", &[ResourceAnalysis { resource: unit, pattern: p.clone(), hard, forecast: None }], &[], 600.0);
            for r in single.iter().chain(agent.resources.iter().map(|(_, r)| r)) {
                match r.kind {
                    RecommendationKind::IncreaseQuota => prop_assert!(r.suggested_hard.unwrap() > hard, "{:?} for hard {}", r, hard),
                    RecommendationKind::DecreaseQuota => {
                        let s = r.suggested_hard.unwrap();
                        prop_assert!(s < hard, "{:?} for hard {}", r, hard);
                        if kind == PatternKind::Periodic {
                            prop_assert!(s as f64 >= peak, "{:?} under the peak {}", r, peak);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn arb_series() -> impl Strategy<Value = Vec<(f64, f64)>> {
        prop::collection::vec((0.0f64..10_000.0, 0.0f64..1e6), 0..120)
    }

    proptest! {
        #[test]
        fn scaling_keeps_the_pattern(s in arb_series(), k in prop_oneof![Just(1e-3), Just(8.0), Just(1024.0), Just(1e6)]) {
            let a = classify(&s);
            let b = classify(&s.iter().map(|(t, v)| (*t, v * k)).collect::<Vec<_>>());
            match (a, b) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a.kind, b.kind),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
            }
        }

        #[test]
        fn order_does_not_matter(s in arb_series(), seed in any::<u64>()) {
            let mut shuffled = s.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let (a, b) = (classify(&s), classify(&shuffled));
            prop_assert_eq!(a.map(|p| p.kind), b.map(|p| p.kind));
        }
    }
}
