//! The open-files budget of the probes and agents: descriptors set aside per
//! agent (its leader, its kernel notifications) before any probe keeps a
//! file open, and what a probe may keep ([`KeepOpen`]) as leases from shared
//! pools ([`FdBudget`], [`FdLease`]).

/// Processes per agent whose `/proc/<pid>/fd` and `/proc/<pid>/io` stay
/// open (with `keep_slow_open`): a kept descriptor spares the path walk of
/// every slow sample; further processes are read by path.
pub(super) const PROCS_KEPT: usize = 2;

/// The most files one probe keeps open (with `keep_slow_open`): six of the
/// cgroup and two per kept process.
pub const FILES_PER_AGENT: usize = 6 + 2 * PROCS_KEPT;

/// The files a probe keeps open with [`KeepOpen::Hot`]: memory, cpu, pids.
pub const HOT_FILES_PER_AGENT: usize = 3;

/// The descriptors an agent holds besides its probe's: its leader's pidfd
/// (the standard library keeps one per child) and its kernel notifications
/// (v1: two memory-threshold eventfds and the usage file they watch; the
/// exit watch's pidfd). [`FdBudget::new`] sets them aside first: an agent
/// without them cannot start, or is not notified; an agent whose probe keeps
/// nothing open is only slower to sample.
pub const OTHER_FILES_PER_AGENT: usize = 5;

/// Which of its files a probe keeps open between samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepOpen {
    /// Every file it reads often ([`FILES_PER_AGENT`] at most).
    All,
    /// The fast sample's (memory, cpu, pids).
    Hot,
    /// None: each read opens its file (about 5 us more a read).
    None,
}

impl KeepOpen {
    /// What `agents` probes may each keep open under an open-files limit of
    /// `limit`, with [`FdBudget::RESERVED`] descriptors left for everything else.
    pub fn for_budget(agents: usize, limit: u64) -> KeepOpen {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let fits = |per: usize| agents.saturating_mul(per + OTHER_FILES_PER_AGENT).saturating_add(FdBudget::RESERVED) < limit;
        if fits(FILES_PER_AGENT) {
            KeepOpen::All
        } else if fits(HOT_FILES_PER_AGENT) {
            KeepOpen::Hot
        } else {
            KeepOpen::None
        }
    }

    fn files(self) -> usize {
        match self {
            KeepOpen::All => FILES_PER_AGENT,
            KeepOpen::Hot => HOT_FILES_PER_AGENT,
            KeepOpen::None => 0,
        }
    }
}

/// The process's descriptors beyond [`FdBudget::RESERVED`], shared by its
/// agents in two pools: the part set aside for what each agent must hold
/// ([`OTHER_FILES_PER_AGENT`]: its leader, its notifications), leased with
/// [`FdBudget::lease`], and the rest, which probes may keep open, each taking
/// what it keeps ([`FdBudget::take`]) and giving it back when dropped. Where
/// the rest is too small for every agent to keep its hot files, as many as
/// fit keep them and the others open each file per read.
#[derive(Clone, Debug)]
pub struct FdBudget {
    left: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The pool set aside for notifications.
    others: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The pool set aside for leaders (one each), taken first: an agent
    /// without its notifications runs, one without its leader does not.
    leaders: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// What each probe asks for while the budget lasts.
    wanted: KeepOpen,
}

/// Descriptors of an [`FdBudget`] held by one probe, leader or set of
/// notifications, given back on drop.
#[derive(Debug)]
pub struct FdLease {
    pool: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    files: usize,
}

pub(super) type Lease = FdLease;

impl Drop for FdLease {
    fn drop(&mut self) {
        self.pool.fetch_add(self.files, std::sync::atomic::Ordering::Relaxed);
    }
}

fn take_from(pool: &std::sync::Arc<std::sync::atomic::AtomicUsize>, n: usize) -> Option<FdLease> {
    use std::sync::atomic::Ordering;
    pool.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(n))
        .ok()
        .map(|_| FdLease { pool: pool.clone(), files: n })
}

impl FdBudget {
    /// Descriptors left for everything but agents (sockets, the store, spawning).
    pub const RESERVED: usize = 1024;

    /// The budget of an open-files limit of `limit` for about `agents`
    /// agents: [`OTHER_FILES_PER_AGENT`] each set aside, then each probe
    /// keeps every file when all fit ([`KeepOpen::for_budget`]), else its hot
    /// files while they last.
    pub fn new(agents: usize, limit: u64) -> FdBudget {
        let files = usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(FdBudget::RESERVED);
        let leaders = agents.min(files);
        let others = agents.saturating_mul(OTHER_FILES_PER_AGENT - 1).min(files - leaders);
        let wanted = match KeepOpen::for_budget(agents, limit) {
            KeepOpen::None => KeepOpen::Hot,
            k => k,
        };
        let pool = |n: usize| std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(n));
        FdBudget { left: pool(files - leaders - others), others: pool(others), leaders: pool(leaders), wanted }
    }

    /// How many agents an open-files limit of `limit` holds with their
    /// leaders, notifications and hot files: what a daemon, whose agents
    /// come through its API, sets aside for ([`FdBudget::new`]), so that
    /// probes keeping files open never leave a later agent without its leader.
    pub fn agents_that_fit(limit: u64) -> usize {
        usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(FdBudget::RESERVED) / (OTHER_FILES_PER_AGENT + HOT_FILES_PER_AGENT)
    }

    /// Descriptors probes may still take.
    pub fn left(&self) -> usize {
        self.left.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `n` descriptors for an agent's notifications: from the pool set
    /// aside for them, else from what probes may keep; `None` when neither
    /// has them.
    pub fn lease(&self, n: usize) -> Option<FdLease> {
        take_from(&self.others, n).or_else(|| take_from(&self.left, n))
    }

    /// The descriptor of an agent's leader: from the pool set aside for
    /// leaders, else as [`FdBudget::lease`]; `None` when none is left.
    pub fn lease_leader(&self) -> Option<FdLease> {
        take_from(&self.leaders, 1).or_else(|| self.lease(1))
    }

    /// What one more probe may keep, and the lease of its descriptors.
    pub(super) fn take(&self) -> (KeepOpen, Lease) {
        for keep in [self.wanted, KeepOpen::Hot] {
            if let Some(lease) = take_from(&self.left, keep.files()) {
                return (keep, lease);
            }
        }
        (KeepOpen::None, FdLease { pool: self.left.clone(), files: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_budget_gives_hot_files_while_they_last_and_takes_them_back() {
        // Room for 25 kept descriptors beyond what agents must hold: every file of 2 agents, or the hot files of 8.
        let other = |agents: usize| agents * OTHER_FILES_PER_AGENT;
        let roomy = FdBudget::new(2, (FdBudget::RESERVED + 25 + other(2)) as u64);
        assert_eq!(roomy.take().0, KeepOpen::All, "two agents fit with every file");
        let budget = FdBudget::new(10, (FdBudget::RESERVED + 25 + other(10)) as u64);
        let leases: Vec<(KeepOpen, Lease)> = (0..10).map(|_| budget.take()).collect();
        let kinds: Vec<KeepOpen> = leases.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds.iter().filter(|k| **k == KeepOpen::Hot).count(), 8, "{kinds:?}");
        assert_eq!(kinds[8..], [KeepOpen::None, KeepOpen::None]);
        assert_eq!(budget.left(), 1);
        // What agents must hold comes from the pools set aside, then from what is left to probes.
        let notified: Vec<FdLease> = (0..10).map(|_| budget.lease(OTHER_FILES_PER_AGENT - 1).unwrap()).collect();
        assert_eq!(budget.left(), 1, "the pool set aside served them");
        let extra = budget.lease(1).unwrap();
        assert_eq!(budget.left(), 0);
        assert!(budget.lease(1).is_none(), "nothing left for notifications");
        // Leaders have their own pool: notifications never take it.
        let leaders: Vec<FdLease> = (0..10).map(|_| budget.lease_leader().unwrap()).collect();
        assert!(budget.lease_leader().is_none(), "nothing left anywhere");
        drop((leases, notified, extra, leaders));
        assert_eq!(budget.left(), 25, "every lease given back");
        assert!(budget.lease(other(10) - 10).is_some());
    }

    /// A daemon sets aside for as many agents as its limit holds: each of
    /// them gets its leader and its notifications whatever its probe kept
    /// (the probes of the first ones keeping every file).
    #[test]
    fn a_daemon_s_budget_holds_every_agent_that_fits_with_its_leader_and_notifications() {
        let limit = 20_000u64;
        let n = FdBudget::agents_that_fit(limit);
        assert_eq!(n, (20_000 - FdBudget::RESERVED) / 8);
        let budget = FdBudget::new(n, limit);
        let mut held = Vec::new();
        for i in 0..n {
            let (keep, probe) = budget.take();
            let leader = budget.lease_leader().unwrap_or_else(|| panic!("agent {i} got no leader"));
            let notices = budget.lease(OTHER_FILES_PER_AGENT - 1).unwrap_or_else(|| panic!("agent {i} got no notifications"));
            held.push((keep, probe, leader, notices));
        }
        assert_eq!(held[0].0, KeepOpen::Hot, "a daemon's probes keep their hot files at first");
        let used: usize = held.iter().map(|(_, p, l, o)| p.files + l.files + o.files).sum();
        assert!(used <= 20_000 - FdBudget::RESERVED, "{used}");
    }
}
