//! Pattern classification: level, trend, spikes and periodicity of a series.

use super::{Characteristics, MIN_SAMPLES, NotEnoughData, Pattern, PatternKind, linear_fit};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize - 1;
    sorted[rank.min(sorted.len() - 1)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::series;
    use proptest::prelude::*;

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
