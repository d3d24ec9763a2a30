//! Cgroup discovery: which hierarchies the host has (v1, v2 or hybrid), from
//! `/proc/self/mountinfo`, and where allot's own cgroup is in each, from
//! `/proc/self/cgroup`.

pub mod fs;
pub mod limits;
pub mod tree;
pub mod v1;
pub mod v2;

use crate::Roots;
use crate::error::{SysError, read};
use std::path::{Path, PathBuf};

/// A cgroup's memory counters that tell an OOM kill and whose limit caused it
/// (`v1::memory::oom_counters`, `v2::memory::oom_counters`). Compare two
/// readings: the counters only grow while the cgroup exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomCounters {
    /// Processes of this cgroup killed by the kernel's OOM killer.
    pub oom_kills: u64,
    /// Times this cgroup's own memory limit was hit (v1: charges refused at
    /// it, which recent kernels may not count; v2: the OOM killer invoked at it).
    pub limit_hits: u64,
    /// The highest usage seen (v1 `memory.max_usage_in_bytes`, or the
    /// memory+swap one; v2 `memory.peak` where the kernel has it).
    pub peak: Option<u64>,
    /// This cgroup's own memory limit in bytes, if it has one.
    pub limit: Option<u64>,
}

/// How far below its limit a usage peak still counts as having reached it:
/// the kernel charges up to 64 pages at a time and refuses a charge that
/// would cross the limit.
pub const LIMIT_SLACK: u64 = 64 * 4096;

impl OomCounters {
    /// Whether this cgroup's own limit was reached since `base` (an earlier
    /// reading of the same cgroup): a hit counted, or its usage peak within
    /// [`LIMIT_SLACK`] of the limit (a peak never falls back, so one reached
    /// before `base` counts too).
    pub fn limit_reached_since(&self, base: Option<&OomCounters>) -> bool {
        let Some(limit) = self.limit else { return false };
        self.limit_hits > base.map_or(0, |b| b.limit_hits) || self.peak.is_some_and(|p| p.saturating_add(LIMIT_SLACK) >= limit)
    }
}

/// A cgroup hierarchy version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// cgroup v1: one hierarchy per controller (or a few bound together).
    V1,
    /// cgroup v2: the unified hierarchy.
    V2,
}

/// How the host's cgroups are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Only the unified hierarchy.
    Unified,
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controllers and a v2 mount beside them (controllers usually bound to v1).
    Hybrid,
    /// No cgroup filesystem is mounted.
    None,
}

impl Mode {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Unified => "cgroup v2",
            Mode::Legacy => "cgroup v1",
            Mode::Hybrid => "cgroup v1 + v2 (hybrid)",
            Mode::None => "no cgroups",
        }
    }
}

/// A mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// v1 or v2.
    pub version: Version,
    /// Where it is mounted (absolute, on the host).
    pub mount_point: PathBuf,
    /// Which cgroup of the hierarchy the mount shows at its top (`/` unless in a container).
    pub root: PathBuf,
    /// For v1, the controllers bound to it (`memory`, `cpu`, `cpuacct`, ...).
    pub controllers: Vec<String>,
}

/// One line of `/proc/<pid>/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The hierarchy id (0 for v2).
    pub hierarchy: u32,
    /// The controllers of a v1 hierarchy (empty for v2; `name=systemd` kept as is).
    pub controllers: Vec<String>,
    /// The process's cgroup in that hierarchy.
    pub path: PathBuf,
}

/// The host's cgroup mounts and a process's place in them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Mounted hierarchies.
    pub mounts: Vec<Mount>,
    /// The process's cgroups.
    pub memberships: Vec<Membership>,
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse the cgroup mounts out of `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((pre, post)) = line.split_once(" - ") else {
            return Err(format!("line {}: no \" - \" separator", n + 1));
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            return Err(format!("line {}: too few fields", n + 1));
        }
        let version = match post[0] {
            "cgroup" => Version::V1,
            "cgroup2" => Version::V2,
            _ => continue,
        };
        let controllers = match version {
            Version::V1 => post[2]
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('=') || o.starts_with("name="))
                .filter(|o| !matches!(*o, "nosuid" | "nodev" | "noexec" | "relatime" | "clone_children" | "noprefix" | "xattr"))
                .map(str::to_owned)
                .collect(),
            Version::V2 => Vec::new(),
        };
        mounts.push(Mount { version, mount_point: PathBuf::from(unescape(pre[4])), root: PathBuf::from(unescape(pre[3])), controllers });
    }
    Ok(mounts)
}

/// Parse `/proc/<pid>/cgroup` text.
pub fn parse_proc_cgroup(text: &str) -> Result<Vec<Membership>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected ID:CONTROLLERS:PATH, got {line:?}", n + 1));
            };
            let hierarchy = id.parse().map_err(|_| format!("line {}: bad hierarchy id {id:?}", n + 1))?;
            let controllers = if ctrl.is_empty() { Vec::new() } else { ctrl.split(',').map(str::to_owned).collect() };
            Ok(Membership { hierarchy, controllers, path: PathBuf::from(path) })
        })
        .collect()
}

impl Layout {
    /// Build from the two files' text.
    pub fn parse(mountinfo: &str, proc_cgroup: &str) -> Result<Layout, String> {
        Ok(Layout { mounts: parse_mountinfo(mountinfo)?, memberships: parse_proc_cgroup(proc_cgroup)? })
    }

    /// Read the layout of the process whose procfs is `roots.proc/self`.
    pub fn discover(roots: &Roots) -> Result<Layout, SysError> {
        let mi = roots.proc.join("self/mountinfo");
        let cg = roots.proc.join("self/cgroup");
        let mountinfo = read(&mi)?;
        let proc_cgroup = read(&cg)?;
        let mounts = parse_mountinfo(&mountinfo).map_err(|problem| SysError::Parse { path: mi, problem })?;
        let memberships = parse_proc_cgroup(&proc_cgroup).map_err(|problem| SysError::Parse { path: cg, problem })?;
        Ok(Layout { mounts, memberships })
    }

    /// Which layout the host has.
    pub fn mode(&self) -> Mode {
        let v1 = self.mounts.iter().any(|m| m.version == Version::V1 && m.controllers.iter().any(|c| !c.starts_with("name=")));
        let v2 = self.mounts.iter().any(|m| m.version == Version::V2);
        match (v1, v2) {
            (true, true) => Mode::Hybrid,
            (true, false) => Mode::Legacy,
            (false, true) => Mode::Unified,
            (false, false) => Mode::None,
        }
    }

    fn join(mount: &Mount, path: &Path) -> PathBuf {
        let rel = path.strip_prefix(&mount.root).unwrap_or(path);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        if rel.as_os_str().is_empty() { mount.mount_point.clone() } else { mount.mount_point.join(rel) }
    }

    /// The process's own cgroup directory in the v1 hierarchy of `controller`
    /// (absolute, on the host).
    pub fn v1_dir(&self, controller: &str) -> Option<PathBuf> {
        let mount = self.mounts.iter().find(|m| m.version == Version::V1 && m.controllers.iter().any(|c| c == controller))?;
        let member = self.memberships.iter().find(|m| m.hierarchy != 0 && m.controllers.iter().any(|c| c == controller))?;
        Some(Self::join(mount, &member.path))
    }

    /// The process's own cgroup directory in the unified hierarchy.
    pub fn v2_dir(&self) -> Option<PathBuf> {
        let mount = self.mounts.iter().find(|m| m.version == Version::V2)?;
        let member = self.memberships.iter().find(|m| m.hierarchy == 0)?;
        Some(Self::join(mount, &member.path))
    }

    /// The same mounts with process `pid`'s memberships (its
    /// `/proc/<pid>/cgroup` under `proc_root`): where that process is.
    pub fn of_pid(&self, proc_root: &Path, pid: u32) -> Result<Layout, SysError> {
        let path = proc_root.join(pid.to_string()).join("cgroup");
        let text = read(&path)?;
        let memberships = parse_proc_cgroup(&text).map_err(|problem| SysError::Parse { path, problem })?;
        Ok(Layout { mounts: self.mounts.clone(), memberships })
    }

    /// Every cgroup directory of the process (absolute, on the host): the
    /// unified one and each mounted v1 controller's.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.v2_dir().into_iter().collect();
        for c in tree::V1::ALL {
            if let Some(d) = self.v1_dir(c.name()) {
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
        out
    }

    /// The mount point of the hierarchy holding `dir`.
    pub fn mount_of(&self, dir: &Path) -> Option<&Path> {
        self.mounts.iter().filter(|m| dir.starts_with(&m.mount_point)).map(|m| m.mount_point.as_path()).max_by_key(|p| p.as_os_str().len())
    }
}

#[cfg(test)]
pub(crate) mod tests_fixtures {
    /// Taken from a machine of the kind allot is developed on (v1 controllers, a bare v2 mount).
    pub(crate) const HYBRID_MOUNTINFO: &str = "\
24 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
34 30 0:30 / /sys/fs/cgroup/cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpuacct
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,freezer
";
    pub(crate) const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/c129
2:cpuacct:/
1:cpu:/
0::/
";
}

#[cfg(test)]
mod tests {
    use super::tests_fixtures::*;
    use super::*;

    const UNIFIED_MOUNTINFO: &str = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_host_finds_each_controller_and_the_unified_mount() {
        let l = Layout::parse(HYBRID_MOUNTINFO, HYBRID_CGROUP).unwrap();
        assert_eq!(l.mode(), Mode::Hybrid);
        assert_eq!(l.v1_dir("memory").unwrap(), Path::new("/sys/fs/cgroup/memory/process_api/c129"));
        assert_eq!(l.v1_dir("cpu").unwrap(), Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(l.v1_dir("pids").unwrap(), Path::new("/sys/fs/cgroup/pids"));
        assert_eq!(l.v1_dir("blkio"), None, "not mounted in the fixture");
        assert_eq!(l.v2_dir().unwrap(), Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(l.mount_of(Path::new("/sys/fs/cgroup/memory/process_api/c129")).unwrap(), Path::new("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn unified_host_with_a_nested_cgroup_and_a_container_root() {
        let l = Layout::parse(UNIFIED_MOUNTINFO, "0::/user.slice/session-1.scope\n").unwrap();
        assert_eq!(l.mode(), Mode::Unified);
        assert_eq!(l.v2_dir().unwrap(), Path::new("/sys/fs/cgroup/user.slice/session-1.scope"));
        assert_eq!(l.v1_dir("memory"), None);
        // In a cgroup namespace the mount root is the namespace's root.
        let mi = UNIFIED_MOUNTINFO.replace(" / /sys/fs/cgroup ", " /kubepods/pod1 /sys/fs/cgroup ");
        let l = Layout::parse(&mi, "0::/kubepods/pod1/app\n").unwrap();
        assert_eq!(l.v2_dir().unwrap(), Path::new("/sys/fs/cgroup/app"));
    }

    #[test]
    fn escaped_mount_points_and_bad_lines() {
        let m = parse_mountinfo("40 1 0:9 / /mnt/my\\040cg rw - cgroup2 none rw\n").unwrap();
        assert_eq!(m[0].mount_point, Path::new("/mnt/my cg"));
        assert!(parse_mountinfo("garbage line\n").unwrap_err().contains("line 1"));
        assert!(parse_proc_cgroup("x:memory:/\n").unwrap_err().contains("bad hierarchy id"));
        assert!(parse_proc_cgroup("3\n").unwrap_err().contains("ID:CONTROLLERS:PATH"));
        assert_eq!(Layout::parse("", "").unwrap().mode(), Mode::None);
    }
}
