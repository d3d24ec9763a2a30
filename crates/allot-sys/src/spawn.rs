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
/// `cgroup.procs` between fork and exec, so nothing it runs escapes.
pub fn spawn(cmd: &mut Command, cg: Option<&AgentCgroup>) -> Result<Child, SysError> {
    cmd.process_group(0);
    if let Some(cg) = cg {
        let fds = open_procs(cg)?;
        // SAFETY: the closure only calls write(2) on descriptors opened
        // before the fork; it allocates nothing and takes no locks, so it is
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &fds {
                    rustix::io::write(fd, b"0").map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
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

/// The current soft open-files limit.
pub fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
}
