//! Starting a command inside an agent's cgroup before it runs anything, and
//! adopting an existing process.

use crate::cgroup::tree::AgentCgroup;
use crate::error::SysError;
use rustix::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Open every `cgroup.procs` of the agent for writing, before the fork.
fn open_procs(cg: &AgentCgroup) -> Result<Vec<OwnedFd>, SysError> {
    cg.procs_files()
        .into_iter()
        .map(|p| {
            std::fs::OpenOptions::new().write(true).open(&p).map(OwnedFd::from).map_err(|source| SysError::Write {
                path: p,
                value: "0".into(),
                source,
            })
        })
        .collect()
}

/// Spawn `cmd` in its own process group and, when `cg` is given, inside the
/// agent's cgroup in every hierarchy: the child writes `0` to each
/// `cgroup.procs` between fork and exec, so nothing it runs escapes. Every
/// agent also gets `no_new_privs` (no setuid binary raises its privileges)
/// and inherits no descriptor of allot's beyond stdin, stdout and stderr
/// (every other one is marked close-on-exec with `close_range`).
pub fn spawn(cmd: &mut Command, cg: Option<&AgentCgroup>) -> Result<Child, SysError> {
    cmd.process_group(0);
    let fds = match cg {
        Some(cg) => open_procs(cg)?,
        None => Vec::new(),
    };
    // SAFETY: the closure only makes system calls (write(2) on descriptors
    // opened before the fork, prctl, close_range); it allocates nothing and
    // takes no locks, so it is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                rustix::io::write(fd, b"0").map_err(std::io::Error::from)?;
            }
            rustix::thread::set_no_new_privs(true).map_err(std::io::Error::from)?;
            // Close-on-exec rather than close: std's own exec-error pipe must live until the exec.
            if libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| SysError::Sys { call: format!("spawn {:?}", cmd.get_program()), source })
}

/// Move an existing process into the agent's cgroup (every hierarchy). Only
/// call this when the caller asked for the move.
pub fn adopt(pid: u32, cg: &AgentCgroup) -> Result<Vec<crate::cgroup::fs::Written>, SysError> {
    let mut out = Vec::new();
    for d in cg.dirs.all() {
        out.push(crate::cgroup::fs::write(d, "cgroup.procs", &pid.to_string())?);
    }
    Ok(out)
}

/// Raise the soft open-files limit to the hard limit; returns (old, new).
pub fn raise_nofile_limit() -> Result<(u64, u64), SysError> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    let old = lim.current.unwrap_or(u64::MAX);
    lim.current = lim.maximum;
    setrlimit(Resource::Nofile, lim).map_err(|e| SysError::Sys { call: "setrlimit(RLIMIT_NOFILE)".into(), source: e.into() })?;
    Ok((old, lim.current.unwrap_or(u64::MAX)))
}

/// Raise the open-files limit to at least `want` where the host allows it:
/// the soft limit up to the hard one, and, with the privilege to (root),
/// the hard limit too, up to the kernel's `fs.nr_open`; returns (old, new)
/// soft limits. For a process that keeps many files open (a benchmark);
/// agents started after it inherit the limit.
pub fn raise_nofile_limit_to(want: u64) -> Result<(u64, u64), SysError> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    let old = lim.current.unwrap_or(u64::MAX);
    if old >= want {
        return Ok((old, old));
    }
    let hard = lim.maximum.unwrap_or(u64::MAX);
    if hard < want {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|t| t.trim().parse::<u64>().ok()).unwrap_or(hard);
        let raised = rustix::process::Rlimit { current: Some(want.min(nr_open)), maximum: Some(want.min(nr_open).max(hard)) };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return Ok((old, want.min(nr_open)));
        }
    }
    lim.current = Some(want.min(hard));
    setrlimit(Resource::Nofile, lim).map_err(|e| SysError::Sys { call: "setrlimit(RLIMIT_NOFILE)".into(), source: e.into() })?;
    Ok((old, want.min(hard)))
}

/// The current soft open-files limit.
pub fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
}
