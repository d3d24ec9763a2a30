//! Architecture invariants checked on the source (as rust-analyzer's tidy
//! tests do): every change to an agent goes through `governor/intent.rs`,
//! and only allot-sys touches /proc, cgroupfs and signals.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Source lines (outside `#[cfg(test)]` modules) of the files under `dir` that contain any of `needles`.
fn offending(dir: &Path, needles: &[&str], allowed: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    let mut hits = Vec::new();
    for f in files {
        if allowed.iter().any(|a| f.ends_with(a)) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let l = line.trim_start();
            if l.starts_with("//") {
                continue;
            }
            if needles.iter().any(|n| l.contains(n)) {
                hits.push(format!("{}:{}: {}", f.display(), i + 1, l));
            }
        }
    }
    hits
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(name).join("src")
}

#[test]
fn every_agent_change_goes_through_intent_apply() {
    // Actuator calls (the core's `Holds::freeze(holder)` takes an argument; `actuator.pids()` only reads).
    let calls = [
        ".freeze()",
        ".thaw()",
        ".kill()",
        ".signal(rustix",
        "set_cpu_limit(",
        "set_cpu_weight(",
        "set_memory_high(",
        "set_memory_max(",
        "set_pids_max(",
        "actuator.as_mut()",
        "actuator.freeze",
        "actuator.thaw",
        "actuator.kill",
        "actuator.set_",
        "actuator.signal",
    ];
    let hits = offending(&crate_src("allot").join("governor"), &calls, &["governor/intent.rs"]);
    assert!(hits.is_empty(), "actuator calls outside governor/intent.rs:\n{}", hits.join("\n"));
    let hits = offending(&crate_src("allot").join("api"), &calls, &[]);
    assert!(hits.is_empty(), "actuator calls in the API:\n{}", hits.join("\n"));
}

#[test]
fn only_allot_sys_touches_the_kernel() {
    let kernel = ["\"/proc", "/sys/fs/cgroup", "kill_process", "remove_dir(", "/proc/{"];
    for krate in ["allot", "allot-core", "allot-store"] {
        let hits = offending(&crate_src(krate), &kernel, &[]);
        assert!(hits.is_empty(), "{krate} touches the kernel directly:\n{}", hits.join("\n"));
    }
}
