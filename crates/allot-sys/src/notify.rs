//! Kernel notifications, so the governor reacts in milliseconds instead of
//! at the next sample: v1 memory usage thresholds (`cgroup.event_control` +
//! eventfd), inotify on v2 `cgroup.events` and `memory.events`, PSI triggers
//! on `*.pressure` (POLLPRI), and process exit through pidfds. One thread
//! waits on an epoll instance holding every descriptor (each registered once:
//! a notice costs the same with ten agents or ten thousand) and sends
//! `(agent, Notice)` into a tokio channel: the receiver is an async stream.

use crate::cgroup::{v1, v2};
use crate::error::SysError;
use rustix::event::epoll;
use rustix::fd::OwnedFd;
use rustix::fs::inotify;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// What the kernel said about an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// v1: memory usage crossed the armed threshold (in either direction).
    MemoryThreshold {
        /// The threshold.
        bytes: u64,
    },
    /// v2: `memory.events` changed.
    MemoryEvents(v2::memory::Events),
    /// v2: `cgroup.events` changed.
    CgroupEvents(v2::core::Events),
    /// A PSI trigger fired on the named pressure file.
    Pressure {
        /// `memory.pressure`, `cpu.pressure`, ...
        file: String,
    },
    /// A tracked process exited.
    Exited {
        /// Its pid.
        pid: u32,
    },
    /// The agent's tree has no process left.
    TreeEmpty,
}

enum Kind {
    Threshold { bytes: u64 },
    CgroupEvents { dir: PathBuf },
    MemoryEvents { dir: PathBuf },
    Pressure { file: String },
    Pidfd { pid: u32, procs_dir: Option<PathBuf> },
}

struct Watch {
    agent: String,
    fd: OwnedFd,
    kind: Kind,
}

/// The watches by id (the epoll data of their descriptor), and each agent's ids.
#[derive(Debug, Default)]
struct Watches {
    by_id: HashMap<u64, Watch>,
    by_agent: HashMap<String, Vec<u64>>,
}

impl Watches {
    /// Take a watch out, its descriptor out of the epoll set.
    fn remove(&mut self, epoll: &OwnedFd, id: u64) {
        if let Some(w) = self.by_id.remove(&id) {
            let _ = epoll::delete(epoll, &w.fd);
            if let Some(ids) = self.by_agent.get_mut(&w.agent) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.by_agent.remove(&w.agent);
                }
            }
        }
    }
}

/// Watches kernel notifications for many agents from one thread.
#[derive(Debug)]
pub struct Notifier {
    watches: Arc<Mutex<Watches>>,
    epoll: Arc<OwnedFd>,
    next_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watch({})", self.agent)
    }
}

fn sys(call: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> SysError {
    let call = call.into();
    move |e| SysError::Sys { call, source: e.into() }
}

fn inotify_on(path: &Path) -> Result<OwnedFd, SysError> {
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).map_err(sys("inotify_init"))?;
    inotify::add_watch(&fd, path, inotify::WatchFlags::MODIFY).map_err(sys(format!("inotify_add_watch({})", path.display())))?;
    Ok(fd)
}

impl Notifier {
    /// Start the polling thread; returns the notifier and the stream of notices.
    pub fn start() -> Result<(Notifier, UnboundedReceiver<(String, Notice)>), SysError> {
        let epoll = Arc::new(epoll::create(epoll::CreateFlags::CLOEXEC).map_err(sys("epoll_create"))?);
        let watches: Arc<Mutex<Watches>> = Arc::new(Mutex::new(Watches::default()));
        let (tx, rx) = unbounded_channel();
        let (w, e) = (Arc::clone(&watches), Arc::clone(&epoll));
        std::thread::Builder::new()
            .name("allot-notify".into())
            .spawn(move || run(&w, &e, &tx))
            .map_err(|source| SysError::Sys { call: "spawn notifier thread".into(), source })?;
        Ok((Notifier { watches, epoll, next_id: std::sync::atomic::AtomicU64::new(1) }, rx))
    }

    /// Register a watch (under the lock, so the thread finds it when its descriptor fires).
    fn add(&self, agent: &str, fd: OwnedFd, kind: Kind) -> Result<(), SysError> {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let flags = if matches!(kind, Kind::Pressure { .. }) { epoll::EventFlags::PRI } else { epoll::EventFlags::IN };
        let mut w = self
            .watches
            .lock()
            .map_err(|_| SysError::Sys { call: "notifier lock".into(), source: std::io::Error::other("the notifier thread panicked") })?;
        epoll::add(&*self.epoll, &fd, epoll::EventData::new_u64(id), flags).map_err(sys("epoll_ctl(ADD)"))?;
        w.by_agent.entry(agent.to_owned()).or_default().push(id);
        w.by_id.insert(id, Watch { agent: agent.to_owned(), fd, kind });
        Ok(())
    }

    /// v1: notify when memory usage of the cgroup at `dir` crosses `bytes`.
    pub fn memory_threshold(&self, agent: &str, dir: &Path, bytes: u64) -> Result<(), SysError> {
        let fd = v1::memory::threshold(dir, bytes)?;
        self.add(agent, fd, Kind::Threshold { bytes })
    }

    /// v2: notify on changes of `cgroup.events` (populated, frozen) of `dir`.
    pub fn cgroup_events(&self, agent: &str, dir: &Path) -> Result<(), SysError> {
        let fd = inotify_on(&dir.join("cgroup.events"))?;
        self.add(agent, fd, Kind::CgroupEvents { dir: dir.to_path_buf() })
    }

    /// v2: notify on changes of `memory.events` of `dir`.
    pub fn memory_events(&self, agent: &str, dir: &Path) -> Result<(), SysError> {
        let fd = inotify_on(&dir.join("memory.events"))?;
        self.add(agent, fd, Kind::MemoryEvents { dir: dir.to_path_buf() })
    }

    /// A PSI trigger on `file` (such as `dir/memory.pressure`): stall of
    /// `stall_us` within each `window_us` ("some" tasks).
    pub fn pressure(&self, agent: &str, file: &Path, stall_us: u64, window_us: u64) -> Result<(), SysError> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .map_err(|source| SysError::Read { path: file.to_path_buf(), source })?;
        let trigger = format!("some {stall_us} {window_us}");
        let fd = OwnedFd::from(f);
        rustix::io::write(&fd, trigger.as_bytes()).map_err(|e| SysError::Write {
            path: file.to_path_buf(),
            value: trigger.clone(),
            source: e.into(),
        })?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.add(agent, fd, Kind::Pressure { file: name })
    }

    /// Notify when `pid` exits; with `procs_dir`, also say when that cgroup is then empty.
    pub fn process_exit(&self, agent: &str, pid: u32, procs_dir: Option<&Path>) -> Result<(), SysError> {
        let p = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| SysError::Sys { call: format!("pidfd_open({pid})"), source: std::io::Error::from_raw_os_error(22) })?;
        let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).map_err(sys(format!("pidfd_open({pid})")))?;
        self.add(agent, fd, Kind::Pidfd { pid, procs_dir: procs_dir.map(Path::to_path_buf) })
    }

    /// Stop watching an agent.
    pub fn forget(&self, agent: &str) {
        if let Ok(mut w) = self.watches.lock() {
            for id in w.by_agent.get(agent).cloned().unwrap_or_default() {
                w.remove(&self.epoll, id);
            }
        }
    }

    /// How many descriptors are watched (for tests).
    #[doc(hidden)]
    pub fn watched(&self) -> usize {
        self.watches.lock().map_or(0, |w| w.by_id.len())
    }
}

fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 4096];
    while matches!(rustix::io::read(fd, &mut buf), Ok(n) if n > 0) {}
}

fn run(watches: &Mutex<Watches>, epoll: &OwnedFd, tx: &UnboundedSender<(String, Notice)>) {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    loop {
        if tx.is_closed() {
            return;
        }
        // Wake at least every second to notice a closed receiver.
        let timeout = rustix::time::Timespec { tv_sec: 1, tv_nsec: 0 };
        events.clear();
        if epoll::wait(epoll, rustix::buffer::spare_capacity(&mut events), Some(&timeout)).is_err() {
            continue;
        }
        let Ok(mut guard) = watches.lock() else {
            return;
        };
        let mut dead = Vec::new();
        for ev in &events {
            let (id, revents) = (ev.data.u64(), ev.flags);
            let Some(w) = guard.by_id.get(&id) else {
                continue;
            };
            let notice = match &w.kind {
                Kind::Threshold { bytes } => {
                    drain(&w.fd);
                    Some(Notice::MemoryThreshold { bytes: *bytes })
                }
                Kind::CgroupEvents { dir } => {
                    drain(&w.fd);
                    v2::core::events(dir).ok().map(Notice::CgroupEvents)
                }
                Kind::MemoryEvents { dir } => {
                    drain(&w.fd);
                    v2::memory::events(dir).ok().map(Notice::MemoryEvents)
                }
                Kind::Pressure { file } => {
                    if revents.contains(epoll::EventFlags::ERR) {
                        dead.push(id);
                        None
                    } else {
                        Some(Notice::Pressure { file: file.clone() })
                    }
                }
                Kind::Pidfd { pid, procs_dir } => {
                    dead.push(id);
                    let _ = tx.send((w.agent.clone(), Notice::Exited { pid: *pid }));
                    let empty = procs_dir.as_ref().is_some_and(|d| crate::cgroup::fs::procs(d).is_ok_and(|p| p.is_empty()));
                    empty.then_some(Notice::TreeEmpty)
                }
            };
            if let Some(n) = notice {
                let _ = tx.send((w.agent.clone(), n));
            }
        }
        for id in dead {
            guard.remove(epoll, id);
        }
    }
}
