//! Throttle targets: the factor for usage over a limit and the value a throttle writes.

use crate::limits::Limit;

/// A throttle never allows more than this share (per mille) of the soft limit.
pub const THROTTLE_HEADROOM_PERMILLE: u64 = 900;

/// The value a throttle of a resource writes (a cpu limit in millicores,
/// `memory.high` in bytes): `factor` x current use, of at most the hard
/// limit, and never above 90 % of the soft limit
/// ([`THROTTLE_HEADROOM_PERMILLE`]), so that a throttled agent settles under
/// its soft limit with headroom instead of hovering on it; at least `floor`.
/// Without a limit for the resource it is `factor` x current use.
pub fn throttle_target(factor: f64, usage: u64, limit: Option<&Limit>, floor: u64) -> u64 {
    let base = limit.map_or(usage, |l| usage.min(l.hard));
    let mut target = (base as f64 * factor.clamp(0.0, 1.0)) as u64;
    if let Some(l) = limit {
        target = target.min((u128::from(l.soft) * u128::from(THROTTLE_HEADROOM_PERMILLE) / 1000) as u64);
    }
    target.max(floor)
}

/// The throttle factor for usage over a limit (SPEC section 7).
pub fn throttle_factor(usage: u64, limit: u64) -> f64 {
    if limit == 0 {
        return 0.5;
    }
    let excess = (usage as f64 - limit as f64) / limit as f64;
    if excess > 1.0 {
        0.5
    } else if excess > 0.5 {
        0.7
    } else if excess > 0.2 {
        0.85
    } else {
        0.9
    }
}
