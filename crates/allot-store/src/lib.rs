//! allot-store: persistence of groups, quotas, agents, events, enforcement
//! history and rollups in SQLite (rusqlite, bundled, WAL, versioned
//! migrations).
//!
//! Not built yet: the governor issue (`allot up`) fills this crate. It
//! exists now so that the workspace's dependency direction
//! (`allot -> allot-store -> allot-core`) holds from the start; it knows
//! nothing of HTTP or the kernel.
#![forbid(unsafe_code)]
