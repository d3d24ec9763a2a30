//! Agent ids become one directory name (the agent's cgroup) and one file name
//! (its channel): no accepted id may name anything outside allot's subtree.
//! Found by the hostile check (issue 10): `.` and `..` acted on the group or
//! root cgroup.
#![allow(clippy::unwrap_used)]

use allot_core::AgentId;
use proptest::prelude::*;
use std::path::{Component, Path};

#[test]
fn dot_and_dot_dot_are_refused() {
    for id in [".", ".."] {
        let e = AgentId::new(id).unwrap_err();
        assert!(e.to_string().contains(id), "{e}");
    }
    assert!(AgentId::new("...").is_ok(), "three dots are an ordinary name");
    assert!(AgentId::new(".hidden").is_ok());
}

#[test]
fn names_of_cgroup_files_are_refused_for_agents_and_groups() {
    // An agent named `tasks` could not start on cgroup v1: its directory collides
    // with the group cgroup's `tasks` file (found by the readings work of issue 11).
    for name in
        ["tasks", "notify_on_release", "release_agent", "cgroup.procs", "memory.high", "cpu.max", "pids.max", "io.stat", "cpuacct.usage"]
    {
        let e = AgentId::new(name).unwrap_err();
        assert!(e.to_string().contains("cgroup file"), "{e}");
        assert!(!allot_core::group::valid_group_name(name), "{name}");
    }
    for name in ["tasks2", "memoryhog", "cpu-burner", "io_worker", "my.memory.agent", "pids"] {
        assert!(AgentId::new(name).is_ok(), "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]
    #[test]
    fn every_accepted_id_is_one_normal_path_component(id in "[A-Za-z0-9._:/-]{0,6}|.{0,12}") {
        if let Ok(a) = AgentId::new(id.clone()) {
            let root = Path::new("/sys/fs/cgroup/memory/allot/standard_agent");
            for p in [root.join(a.as_str()), root.join(format!("{}.jsonl", a.as_str()))] {
                let rel = p.strip_prefix(root).unwrap();
                let comps: Vec<Component<'_>> = rel.components().collect();
                prop_assert_eq!(comps.len(), 1, "{:?} -> {:?}", id, p);
                prop_assert!(matches!(comps[0], Component::Normal(_)), "{:?} -> {:?}", id, comps);
            }
        }
    }
}
