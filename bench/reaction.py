#!/usr/bin/env python3
"""Reaction benchmark for `allot up`: how long from an agent crossing its
hard memory limit to allot's action event for that violation
(enforcement.warn, kind hard), over N crossings, with kernel notifications
and with sampling alone; optionally with idle agents sampled alongside and
the API under load.

The zero point is the agent's own timestamp taken just before the 256 KiB
write after which its cgroup's counter may be over the limit: the write
that took its usage, measured as allot measures it, past the limit less the
kernel's charge slack (64 pages per cpu, charged ahead of use). An event's
time (allot's wall time at its start plus monotonic time since, truncated
to the millisecond) counts as the end of its millisecond. Every reaction
measured is an upper bound of the real one, never negative.

    python3 bench/reaction.py [--crossings 50] [--idle 1000] [--api-load 4] [--allot target/release/allot]

Needs root and cgroups. Prints one JSON object per mode, with allot's own
cpu time over the steady part of the run as a share of one core (the
governor, its API and the store, everything in the process).
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
SLACK = 64 * 4096 * os.cpu_count()
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
    maps, crossed, zero = [], False, None
    while not crossed:
        # The zero point: a timestamp taken just before the write after which the cgroup's
        # counter may be over the limit. The kernel charges a cgroup in per-cpu batches of
        # 64 pages ahead of use, so its counter may lead what this process measures by
        # SLACK: the zero is the write that first takes the measure past hard - SLACK.
        before = time.time()
        m = mmap.mmap(-1, 1 << 18)
        for off in range(0, 1 << 18, 4096):
            m[off] = 1
        maps.append(m)
        used = rss()
        if zero is None and used > hard - SLACK:
            zero = before
        crossed = used > hard
    crossed = zero
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


def api_load(sock, stop, counter):
    """Quota reads over the run's socket, as fast as one connection goes, until `stop` is set."""
    import socket
    import time
    while not os.path.exists(sock) and not stop.is_set():
        time.sleep(0.05)
    while not stop.is_set():
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            while not stop.is_set():
                s.sendall(b"GET /v1/agents/crosser/quota HTTP/1.1\r\nHost: a\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = int([h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0])
                while len(body) < length:
                    body += s.recv(65536)
                counter[0] += 1
        except (OSError, ConnectionError, IndexError, ValueError):
            time.sleep(0.05)


def run(allot, crossings, notify, idle=0, load=0):
    d = tempfile.mkdtemp(prefix="allot-reaction-")
    # Run as root, allot runs the agent as nobody: it must reach its script and write its marks.
    os.chmod(d, 0o755)
    agent = os.path.join(d, "agent.py")
    open(agent, "w").write(AGENT)
    os.chmod(agent, 0o644)
    hard = 40 << 20
    marks = os.path.join(d, "crossings.jsonl")
    open(marks, "w").close()
    os.chmod(marks, 0o666)
    # An interpreter nobody can run (not one under /root).
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
    fleet = os.path.join(d, "fleet.toml")
    open(fleet, "w").write(f"""
[policy]
sample_interval = "1s"
delays = {{ throttle = "1h" }}
[[agents]]
name = "crosser"
group = "standard_agent"
command = ["{python}", "{agent}", "{marks}", "{hard}", "{crossings}"]
limits.memory = {{ soft = "30Mi", hard = "40Mi", action = "throttle" }}
limits.cpu = {{ soft = "2", hard = "2", action = "warn" }}
""" + ("\n[groups.idle]\ndescription = \"idle agents sampled alongside\"\n" if idle else "") + "".join(f"""
[[agents]]
name = "idle{i}"
group = "idle"
command = ["sleep", "100000"]
""" for i in range(idle)))
    events = os.path.join(d, "ev.jsonl")
    seconds = int(crossings * 3.5 + 8)
    sock = os.path.join(d, "up.sock")
    cmd = [allot, "up", fleet, "--quiet", "--for", f"{seconds}s", "--events", events, "--state", os.path.join(d, "state.db"),
           "--cgroup-name", f"allot-reaction-{os.getpid()}", "--socket", sock]
    if not notify:
        cmd.append("--no-notify")
    import threading
    stop, served = threading.Event(), [0]
    loaders = [threading.Thread(target=api_load, args=(sock, stop, served), daemon=True) for _ in range(load)]
    for t in loaders:
        t.start()
    cpu = {}

    def governor_cpu(proc):
        # allot's own cpu time (user + system, all threads) over a steady window:
        # from 15 s after its start (every agent started) to 5 s before its end.
        import time
        tck = os.sysconf("SC_CLK_TCK")

        def ticks():
            f = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
            return int(f[11]) + int(f[12])
        try:
            time.sleep(15)
            t0, c0 = time.monotonic(), ticks()
            time.sleep(max(1, seconds - 20))
            cpu["core_percent"] = round((ticks() - c0) / tck / (time.monotonic() - t0) * 100, 1)
        except (OSError, IndexError, ValueError):
            pass
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        watcher = threading.Thread(target=governor_cpu, args=(proc,), daemon=True)
        watcher.start()
        if proc.wait() != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd)
    finally:
        stop.set()
    from datetime import datetime
    warns = []
    for line in open(events):
        e = json.loads(line)
        data = e.get("data", {})
        dec = data.get("decision") or {}
        if e["topic"] == "resource_management.enforcement.warn" and dec.get("resource") == "memory" \
                and (dec.get("violation") or {}).get("kind") == "hard":
            # The end of the event's millisecond (its time is written to the millisecond).
            warns.append(datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp() + 0.001)
    reactions = []
    for line in open(marks):
        c = json.loads(line)["crossed"]
        after = [w for w in warns if w >= c]
        if after:
            reactions.append((min(after) - c) * 1000)
    assert all(r >= 0 for r in reactions)
    return {
        "mode": ("kernel notifications" if notify else "sampling alone at 1 s")
        + (f", {idle} idle agents sampled alongside" if idle else "")
        + (f", the API under load ({load} connections reading quotas, {served[0] / seconds:.0f}/s)" if load else ""),
        "crossings": len(reactions),
        "p50_ms": round(statistics.median(reactions), 1) if reactions else None,
        "p99_ms": round(percentile(reactions, 99), 1) if reactions else None,
        "max_ms": round(max(reactions), 1) if reactions else None,
        "allot_core_percent": cpu.get("core_percent"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crossings", type=int, default=50)
    ap.add_argument("--allot", default="target/release/allot")
    ap.add_argument("--idle", type=int, default=0, help="also measure with this many idle agents sampled alongside")
    ap.add_argument("--api-load", type=int, default=0, help="and this many connections reading quotas meanwhile")
    a = ap.parse_args()
    for notify in (True, False):
        print(json.dumps(run(a.allot, a.crossings, notify)), flush=True)
    if a.idle and a.api_load:
        print(json.dumps(run(a.allot, a.crossings, True, a.idle, 0)), flush=True)
    if a.idle or a.api_load:
        print(json.dumps(run(a.allot, a.crossings, True, a.idle, a.api_load)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
