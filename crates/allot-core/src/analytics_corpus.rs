//! A labelled corpus of synthetic usage series for evaluating the pattern
//! classifier: every pattern, with noise, gaps, uneven sampling and values
//! from millicores to gigabytes. Deterministic (seeded xorshift).

use crate::analytics::{PATTERNS, PatternKind, classify};

/// A small deterministic PRNG (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [a, b).
    pub fn range(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.unit()
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// One labelled series.
#[derive(Clone, Debug)]
pub struct Labelled {
    /// The true pattern.
    pub label: PatternKind,
    /// `(seconds, value)` samples.
    pub samples: Vec<(f64, f64)>,
}

/// Generate `per_class` series of each pattern.
pub fn generate(per_class: usize, seed: u64) -> Vec<Labelled> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for label in PATTERNS {
        for _ in 0..per_class {
            out.push(Labelled { label, samples: one(label, &mut rng) });
        }
    }
    out
}

fn one(label: PatternKind, rng: &mut Rng) -> Vec<(f64, f64)> {
    // Scale: millicores (~100) to bytes (~1e9).
    let scale = 10f64.powf(rng.range(2.0, 9.5));
    let n = rng.range(120.0, 900.0) as usize;
    let dt = rng.range(0.5, 5.0);
    let noise = rng.range(0.01, 0.10);
    let span = n as f64 * dt;
    // Uneven sampling: jittered steps; gaps: one or two holes.
    let mut t = 0.0;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        t += dt * rng.range(0.5, 1.5);
        times.push(t);
    }
    let gaps: Vec<(f64, f64)> = (0..rng.range(0.0, 3.0) as usize)
        .map(|_| {
            let start = rng.range(0.1, 0.8) * span;
            (start, start + rng.range(0.02, 0.08) * span)
        })
        .collect();
    let growth = rng.range(0.15, 3.0);
    let decline = rng.range(0.15, 0.85);
    let amp = rng.range(0.1, 0.6);
    let cycles = rng.range(3.0, 12.0);
    let phase = rng.range(0.0, std::f64::consts::TAU);
    let spike_p = rng.range(0.01, 0.08);
    let mut out = Vec::with_capacity(n);
    for &t in &times {
        if gaps.iter().any(|(a, b)| t >= *a && t <= *b) {
            continue;
        }
        let x = t / span;
        let base = match label {
            PatternKind::Steady => 1.0,
            PatternKind::Growing => 1.0 + growth * x,
            PatternKind::Declining => 1.0 - decline * x,
            PatternKind::Periodic => 1.0 + amp * (std::f64::consts::TAU * cycles * x + phase).sin(),
            PatternKind::Bursty => {
                if rng.unit() < spike_p {
                    rng.range(2.0, 8.0)
                } else {
                    1.0
                }
            }
        };
        let v = (base * (1.0 + noise * rng.normal())).max(0.0) * scale;
        out.push((t, v));
    }
    out
}

/// Accuracy per class and the confusion matrix (rows: truth, columns: prediction, in `PATTERNS` order).
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Series evaluated.
    pub total: usize,
    /// Correctly classified.
    pub correct: usize,
    /// `matrix[truth][predicted]`.
    pub matrix: [[usize; 5]; 5],
}

impl Evaluation {
    /// Overall accuracy.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
    /// Accuracy of one class.
    pub fn class_accuracy(&self, i: usize) -> f64 {
        let row: usize = self.matrix[i].iter().sum();
        self.matrix[i][i] as f64 / row.max(1) as f64
    }
}

/// Classify every series of a corpus.
pub fn evaluate(corpus: &[Labelled]) -> Evaluation {
    let mut matrix = [[0usize; 5]; 5];
    let mut correct = 0;
    for s in corpus {
        let truth = PATTERNS.iter().position(|p| *p == s.label).unwrap_or(0);
        let got = classify(&s.samples).map(|p| p.kind).unwrap_or(PatternKind::Steady);
        let pred = PATTERNS.iter().position(|p| *p == got).unwrap_or(4);
        matrix[truth][pred] += 1;
        if truth == pred {
            correct += 1;
        }
    }
    Evaluation { total: corpus.len(), correct, matrix }
}

/// Relative errors of [`crate::analytics::forecast`] on `n` generated leaks:
/// 5 minutes of 1 s samples of `a + b t` with 0-5 % noise (half of them
/// noise-free), a limit the true line reaches 1-30 minutes after the last
/// sample. Returns |forecast - truth| / truth per leak.
pub fn forecast_errors(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut errs = Vec::with_capacity(n);
    for i in 0..n {
        let scale = 10f64.powf(rng.range(2.0, 9.0));
        let a = scale;
        let b = scale * rng.range(0.0005, 0.01);
        let noise = if i % 2 == 0 { 0.0 } else { rng.range(0.005, 0.05) };
        let samples: Vec<(f64, f64)> = (0..300).map(|t| (t as f64, (a + b * t as f64) * (1.0 + noise * rng.normal()))).collect();
        let ahead = rng.range(60.0, 1800.0);
        let limit = a + b * (299.0 + ahead);
        if let Some(f) = crate::analytics::forecast(&samples, limit) {
            errs.push((f.eta_secs - ahead).abs() / ahead);
        } else {
            errs.push(f64::INFINITY);
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forecast_median_error_is_within_10_percent_after_5_minutes() {
        let mut e = forecast_errors(200, 7);
        e.sort_by(f64::total_cmp);
        let median = e[e.len() / 2];
        eprintln!("forecast relative error: median {median:.4}, p90 {:.4}", e[e.len() * 9 / 10]);
        assert!(median <= 0.10, "median {median}");
    }

    #[test]
    fn accuracy_on_a_labelled_corpus_is_at_least_95_percent() {
        let e = evaluate(&generate(120, 42));
        assert_eq!(e.total, 600);
        for (i, p) in PATTERNS.iter().enumerate() {
            eprintln!("{:>10}: {:.3} {:?}", p.name(), e.class_accuracy(i), e.matrix[i]);
        }
        assert!(e.accuracy() >= 0.95, "accuracy {:.3}: {:?}", e.accuracy(), e.matrix);
    }
}
