//! `TreeProbe`: an agent's usage summed over its process tree found through `/proc` (no cgroup).

use super::{Fast, HotFile, IoFrom, Probe, Slow, netns, network};
use crate::error::SysError;
use crate::proc::{fds, parse, tree};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Files and (when `io` is true) block I/O summed over `pids`.
fn per_process(proc_root: &Path, pids: &[u32], io: bool) -> (u64, u64) {
    let (mut files, mut io_bytes) = (0, 0);
    let mut buf = [0u8; 512];
    for &p in pids {
        files += fds::count(proc_root, p).unwrap_or(0);
        if io {
            if let Ok(f) = HotFile::open(proc_root.join(p.to_string()).join("io")) {
                if let Ok(b) = f.read(&mut buf) {
                    io_bytes += parse::io_bytes(b).unwrap_or(0);
                }
            }
        }
    }
    (files, io_bytes)
}

/// A probe summing over a process tree found through `/proc` (no cgroup).
/// Keeps each process's `stat` open (one file per process). CPU time of
/// processes that already exited is not counted.
#[derive(Debug)]
pub struct TreeProbe {
    proc_root: PathBuf,
    root: u32,
    stats: BTreeMap<u32, (u64, HotFile)>,
    page_size: u64,
    ns_per_tick: u64,
    own_netns: Option<u64>,
}

impl TreeProbe {
    /// Probe the tree rooted at `root`.
    pub fn new(proc_root: PathBuf, root: u32) -> Self {
        let own_netns = netns(&proc_root, "self");
        TreeProbe {
            proc_root,
            root,
            stats: BTreeMap::new(),
            page_size: rustix::param::page_size() as u64,
            ns_per_tick: 1_000_000_000 / rustix::param::clock_ticks_per_second().max(1),
            own_netns,
        }
    }
}

impl Probe for TreeProbe {
    fn fast(&mut self) -> Result<Fast, SysError> {
        let pids = tree::descendants(&self.proc_root, self.root);
        self.stats.retain(|p, _| pids.contains(p));
        let mut out = Fast::default();
        let mut buf = [0u8; 1024];
        for p in pids {
            if !self.stats.contains_key(&p) {
                let Ok(f) = HotFile::open(self.proc_root.join(p.to_string()).join("stat")) else {
                    continue;
                };
                self.stats.insert(p, (0, f));
            }
            let Some((start, f)) = self.stats.get_mut(&p) else {
                continue;
            };
            let Ok(bytes) = f.read(&mut buf) else {
                self.stats.remove(&p);
                continue;
            };
            let Some(s) = parse::stat(bytes) else {
                continue;
            };
            if *start != 0 && *start != s.starttime {
                continue; // the pid was reused by a new process: reopened next time
            }
            *start = s.starttime;
            if s.state == b'Z' {
                continue;
            }
            out.memory += s.rss_pages * self.page_size;
            out.cpu_ns += (s.utime + s.stime) * self.ns_per_tick;
            out.processes += 1;
            out.threads += s.num_threads.max(1);
        }
        out.memory_raw = out.memory;
        Ok(out)
    }

    fn slow(&mut self) -> Result<Slow, SysError> {
        let pids = tree::descendants(&self.proc_root, self.root);
        let (files, io_bytes) = per_process(&self.proc_root, &pids, true);
        Ok(Slow { files, io_bytes, io_from: IoFrom::Proc, network_bytes: network(&self.proc_root, self.own_netns, &pids) })
    }

    fn pids(&self) -> Result<Vec<u32>, SysError> {
        Ok(tree::descendants(&self.proc_root, self.root))
    }

    fn proc_root(&self) -> &Path {
        &self.proc_root
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Measure;
    use std::time::Duration;

    #[test]
    fn the_tree_probe_measures_a_real_child() {
        let mut child = std::process::Command::new("sh").args(["-c", "sleep 30 & sleep 30 & wait"]).spawn().unwrap();
        let mut p = TreeProbe::new(PathBuf::from("/proc"), child.id());
        let mut fast = Fast::default();
        for _ in 0..200 {
            fast = p.fast().unwrap();
            if fast.processes == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(fast.processes, 3);
        assert_eq!(fast.threads, 3, "single-threaded processes");
        assert!(fast.memory > 0);
        let slow = p.slow().unwrap();
        assert!(slow.files >= 3, "{slow:?}");
        assert_eq!(slow.network_bytes, Measure::Unsupported, "same network namespace as allot");
        for pid in p.pids().unwrap().iter().rev() {
            let _ = crate::signal::signal_all(&[*pid], rustix::process::Signal::KILL);
        }
        let _ = child.wait();
    }
}
