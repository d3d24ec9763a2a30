//! `allot analyze --csv` and `allot bench analytics` as a user runs them.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::process::{Command, Output};

fn allot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_allot")).args(args).output().unwrap()
}

fn csv(dir: &std::path::Path, name: &str, rows: impl Iterator<Item = (f64, f64)>) -> String {
    let p = dir.join(name);
    let mut s = String::from("timestamp_seconds,value\n");
    for (t, v) in rows {
        s.push_str(&format!("{t},{v}\n"));
    }
    std::fs::write(&p, s).unwrap();
    p.display().to_string()
}

#[test]
fn a_leak_is_growing_with_a_forecast_and_an_increase_recommendation() {
    let d = tempfile::tempdir().unwrap();
    // 5 minutes at 1 s: 100 MB growing 100 kB/s, with a hard limit of 200 MB.
    let f = csv(d.path(), "leak.csv", (0..300).map(|t| (t as f64, 100e6 + 1e5 * t as f64 + ((t * 7919) % 13) as f64 * 1e4)));
    let o = allot(&["analyze", "--csv", &f, "--resource", "memory", "--limit", "soft=150M,hard=200M", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pattern"], "growing");
    assert!(v["confidence"].as_f64().unwrap() > 0.9);
    for key in ["mean", "variance", "trend_per_hour", "trend_r2", "peak", "min", "count", "cv"] {
        assert!(v["characteristics"][key].is_number(), "{key}");
    }
    let eta = v["forecast"]["hard"]["eta_secs"].as_f64().unwrap();
    // The line reaches 200 MB at t = 1000 s, 701 s after the last sample.
    assert!((eta - 701.0).abs() < 35.0, "{eta}");
    assert_eq!(v["forecast"]["hard_within_horizon"], false, "701 s is beyond the 10 min horizon");
    assert_eq!(v["recommendation"]["kind"], "increase_quota");
    let text = allot(&["analyze", "--csv", &f, "--group", "standard_agent"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("growing"));
}

#[test]
fn too_little_data_and_bad_lines_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let one = csv(d.path(), "one.csv", std::iter::once((0.0, 5.0)));
    let o = allot(&["analyze", "--csv", &one, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["pattern"].is_null() && v["error"].as_str().unwrap().contains("not enough data"));
    let bad = d.path().join("bad.csv");
    std::fs::write(&bad, "1,2\n2,x\n3,4,5\n").unwrap();
    let o = allot(&["analyze", "--csv", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.csv:2: expected `timestamp_seconds,value`") && err.contains("bad.csv:3:"), "{err}");
}

#[test]
fn the_corpus_evaluation_prints_the_confusion_matrix() {
    let o = allot(&["bench", "analytics", "--per-class", "100", "--json"]);
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["series"], 600, "100 per class and 100 steady series with correlated noise");
    for variant in ["ar1", "random_walk", "pink", "cpu_trace", "memory_trace"] {
        assert_eq!(v["steady_variants"][variant]["series"], 20, "{v}");
    }
    assert!(v["accuracy"].as_f64().unwrap() >= 0.95, "{v}");
    assert_eq!(v["confusion"].as_array().unwrap().len(), 5);
    assert!(v["forecast_median_rel_error"].as_f64().unwrap() <= 0.10);
}

#[test]
fn text_output_uses_units_and_wire_names() {
    let d = tempfile::tempdir().unwrap();
    // 100 MB growing 100 kB/s for 5 minutes against a hard limit of 200 MB.
    let f = csv(d.path(), "leak.csv", (0..300).map(|t| (t as f64, 100e6 + 1e5 * t as f64 + ((t * 7919) % 13) as f64 * 1e4)));
    let o = allot(&["analyze", "--csv", &f, "--resource", "memory", "--limit", "soft=150M,hard=200M"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("recommendation: increase_quota hard "), "{text}");
    assert!(!text.contains("IncreaseQuota"), "{text}");
    // Memory in Mi, the slope per second, durations human.
    assert!(text.contains("mean 109Mi") || text.contains("mean 110Mi"), "{text}");
    assert!(text.contains("Ki/s"), "{text}");
    assert!(text.contains("over 4m59s"), "{text}");
    assert!(text.contains("reaches the hard limit 200M in 11m40s"), "{text}");
    assert!(text.contains("p95 123Mi"), "{text}");
    // No raw byte counts.
    let raw: Vec<&str> = text.split(|c: char| !c.is_ascii_digit()).filter(|w| w.len() >= 7).collect();
    assert!(raw.is_empty(), "{raw:?} in {text}");
    // cpu in millicores.
    let f = csv(d.path(), "cpu.csv", (0..300).map(|t| (t as f64, 120.0 + ((t * 7919) % 13) as f64)));
    let o = allot(&["analyze", "--csv", &f, "--resource", "cpu", "--group", "standard_agent"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("mean 126m") && text.contains("peak 132m"), "{text}");
}
