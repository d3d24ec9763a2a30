//! A process tree found through `/proc`, for agents without a usable cgroup.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `root` and all its descendants. Uses `/proc/<pid>/task/<tid>/children`
/// where the kernel has it, else a scan of every process's parent.
pub fn descendants(proc_root: &Path, root: u32) -> Vec<u32> {
    let root_dir = proc_root.join(root.to_string());
    if !root_dir.exists() {
        return Vec::new();
    }
    if root_dir.join("task").join(root.to_string()).join("children").exists() {
        let mut seen = BTreeSet::new();
        let mut stack = vec![root];
        while let Some(pid) = stack.pop() {
            if !seen.insert(pid) {
                continue;
            }
            let Ok(tasks) = std::fs::read_dir(proc_root.join(pid.to_string()).join("task")) else {
                continue;
            };
            for t in tasks.flatten() {
                if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                    stack.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
                }
            }
        }
        return seen.into_iter().collect();
    }
    scan(proc_root, root)
}

/// The slow path: parent of every process, then a walk from `root`.
pub fn scan(proc_root: &Path, root: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(proc_root) {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(bytes) = std::fs::read(e.path().join("stat")) {
                if let Some(s) = super::parse::stat(&bytes) {
                    children.entry(s.ppid).or_default().push(pid);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = BTreeSet::new();
    while let Some(p) = stack.pop() {
        if seen.insert(p) {
            out.push(p);
            stack.extend(children.get(&p).into_iter().flatten());
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn scan_walks_a_fixture_tree() {
        let t = tempfile::tempdir().unwrap();
        for (pid, ppid) in [(10, 1), (11, 10), (12, 11), (13, 1), (14, 10)] {
            let d = t.path().join(pid.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("stat"), format!("{pid} (p) S {ppid} 0 0 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 5 100 10 0\n")).unwrap();
        }
        assert_eq!(scan(t.path(), 10), [10, 11, 12, 14]);
        assert_eq!(descendants(t.path(), 10), [10, 11, 12, 14], "no children files: falls back to the scan");
        assert!(descendants(t.path(), 99).is_empty());
    }

    #[test]
    fn the_real_tree_of_a_child() {
        let mut child = std::process::Command::new("sh").args(["-c", "sleep 30 & sleep 30 & wait"]).spawn().unwrap();
        let pid = child.id();
        let mut found = Vec::new();
        for _ in 0..200 {
            found = descendants(Path::new("/proc"), pid);
            if found.len() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(scan(Path::new("/proc"), pid), found);
        for p in found.iter().rev() {
            let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(*p as i32).unwrap(), rustix::process::Signal::KILL);
        }
        let _ = child.wait();
    }
}
