#!/usr/bin/env python3
"""Reaction benchmark for `allot up`: how long from an agent crossing its
hard memory limit (its own timestamp, taken when its RSS passes the limit)
to allot's action event for that violation (enforcement.warn, kind hard),
over N crossings, with kernel notifications and with sampling alone.

    python3 bench/reaction.py [--crossings 50] [--allot target/release/allot]

Needs root and cgroups. Prints one JSON object per mode.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

AGENT = r'''
import json, mmap, os, random, sys, time
hard = int(sys.argv[2]); n = int(sys.argv[3])
out = open(sys.argv[1], "w")
random.seed(7)
# Measure ourselves exactly as allot does: the cgroup's usage less inactive file cache.
cg = {}
for line in open("/proc/self/cgroup"):
    hid, ctrl, path = line.rstrip("\n").split(":", 2)
    cg[ctrl] = path
if "memory" in cg:
    mount = "/sys/fs/cgroup/memory"
    base = None
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        if f[4] == mount:
            base = f[3]
    rel = cg["memory"][len(base):] if base and base != "/" and cg["memory"].startswith(base) else cg["memory"]
    d = mount + rel
    usage_file, stat_key = d + "/memory.usage_in_bytes", "total_inactive_file"
else:
    d = "/sys/fs/cgroup" + cg[""]
    usage_file, stat_key = d + "/memory.current", "inactive_file"
def rss():
    usage = int(open(usage_file).read())
    inactive = 0
    for line in open(d + "/memory.stat"):
        k, v = line.split()
        if k == stat_key:
            inactive = int(v)
    return usage - inactive
time.sleep(1.5)
for i in range(n):
    time.sleep(random.uniform(1.6, 2.4))  # longer than a sample interval, so each crossing is a new violation
    maps, crossed = [], None
    while crossed is None:
        m = mmap.mmap(-1, 1 << 20)
        for off in range(0, 1 << 20, 4096):
            m[off] = 1
        maps.append(m)
        if rss() > hard:
            crossed = time.time()
    for _ in range(2):  # a little more, so the crossing is not a hair's breadth
        m = mmap.mmap(-1, 1 << 20)
        for off in range(0, 1 << 20, 4096):
            m[off] = 1
        maps.append(m)
    out.write(json.dumps({"i": i, "crossed": crossed}) + "\n"); out.flush()
    time.sleep(1.1)
    for m in maps:
        m.close()
'''


def percentile(v, p):
    v = sorted(v)
    k = max(0, min(len(v) - 1, int(round(p / 100 * len(v) + 0.5)) - 1))
    return v[k]


def run(allot, crossings, notify):
    d = tempfile.mkdtemp(prefix="allot-reaction-")
    agent = os.path.join(d, "agent.py")
    open(agent, "w").write(AGENT)
    hard = 40 << 20
    marks = os.path.join(d, "crossings.jsonl")
    fleet = os.path.join(d, "fleet.toml")
    open(fleet, "w").write(f"""
[policy]
sample_interval = "1s"
delays = {{ throttle = "1h" }}
[[agents]]
name = "crosser"
group = "standard_agent"
command = ["python3", "{agent}", "{marks}", "{hard}", "{crossings}"]
limits.memory = {{ soft = "30Mi", hard = "40Mi", action = "throttle" }}
limits.cpu = {{ soft = "2", hard = "2", action = "warn" }}
""")
    events = os.path.join(d, "ev.jsonl")
    seconds = int(crossings * 3.5 + 8)
    cmd = [allot, "up", fleet, "--quiet", "--for", f"{seconds}s", "--events", events, "--state", os.path.join(d, "state.db"),
           "--cgroup-name", f"allot-reaction-{os.getpid()}"]
    if not notify:
        cmd.append("--no-notify")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    from datetime import datetime
    warns = []
    for line in open(events):
        e = json.loads(line)
        data = e.get("data", {})
        dec = data.get("decision") or {}
        if e["topic"] == "resource_management.enforcement.warn" and dec.get("resource") == "memory" \
                and (dec.get("violation") or {}).get("kind") == "hard":
            warns.append(datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp())
    reactions = []
    for line in open(marks):
        c = json.loads(line)["crossed"]
        after = [w for w in warns if w >= c - 0.05]
        if after:
            reactions.append((min(after) - c) * 1000)
    return {
        "mode": "kernel notifications" if notify else "sampling alone at 1 s",
        "crossings": len(reactions),
        "p50_ms": round(statistics.median(reactions), 1) if reactions else None,
        "p99_ms": round(percentile(reactions, 99), 1) if reactions else None,
        "max_ms": round(max(reactions), 1) if reactions else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crossings", type=int, default=50)
    ap.add_argument("--allot", default="target/release/allot")
    a = ap.parse_args()
    for notify in (True, False):
        print(json.dumps(run(a.allot, a.crossings, notify)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
