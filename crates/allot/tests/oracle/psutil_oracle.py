#!/usr/bin/env python3
"""Independent measurement for tests/oracle.rs: psutil (and os.walk for the
workspace) measures the same agents allot measures.

Input (argv[1], JSON): {"window": seconds, "agents": {NAME: {"pids": [...],
"workdir": PATH or null}}}. Output (stdout, JSON): {"t0_ms", "t1_ms",
"agents": {NAME: {"cpu_m", "disk_io", "memory", "processes", "threads",
"files", "disk"}}}: cpu (millicores) and disk_io (read_bytes + write_bytes
per second) over the window [t0, t1]; the rest at t1.
"""
import json
import os
import sys
import time

import psutil


def counters(procs):
    cpu = 0.0
    io = 0
    for p in procs:
        with p.oneshot():
            t = p.cpu_times()
            cpu += t.user + t.system
            c = p.io_counters()
            io += c.read_bytes + c.write_bytes
    return cpu, io


def workspace_bytes(root):
    total = 0
    seen = set()
    dev = os.lstat(root).st_dev
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(d, name))
            if st.st_dev != dev:
                continue
            if st.st_nlink > 1 and not os.path.isdir(os.path.join(d, name)):
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total


def main():
    spec = json.loads(sys.argv[1])
    procs = {name: [psutil.Process(p) for p in a["pids"]] for name, a in spec["agents"].items()}
    t0 = time.time()
    before = {name: counters(ps) for name, ps in procs.items()}
    time.sleep(spec["window"])
    t1 = time.time()
    after = {name: counters(ps) for name, ps in procs.items()}
    out = {}
    for name, ps in procs.items():
        dt = t1 - t0
        a = {
            "cpu_m": (after[name][0] - before[name][0]) / dt * 1000.0,
            "disk_io": (after[name][1] - before[name][1]) / dt,
            "memory": sum(p.memory_info().rss for p in ps),
            "processes": len(ps),
            "threads": sum(p.num_threads() for p in ps),
            "files": sum(p.num_fds() for p in ps),
        }
        workdir = spec["agents"][name].get("workdir")
        if workdir:
            a["disk"] = workspace_bytes(workdir)
        out[name] = a
    print(json.dumps({"t0_ms": int(t0 * 1000), "t1_ms": int(t1 * 1000), "agents": out}))


if __name__ == "__main__":
    main()
