#!/usr/bin/env python3
"""Baseline for `allot bench sample`: psutil sampling the same agents.

Reads a JSON list of agents (each a list of pids) on stdin, samples every
process with psutil's oneshot() (memory, cpu times, fds, io: the same four
reads allot makes), and prints one JSON object with microseconds per agent
per full sample (median of the rounds).
"""
import json
import statistics
import sys
import time

try:
    import psutil
except ImportError:
    sys.stderr.write("psutil is not installed: pip install psutil\n")
    sys.exit(3)


def main():
    agents = json.load(sys.stdin)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    procs = [[psutil.Process(p) for p in pids] for pids in agents]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for group in procs:
            for p in group:
                try:
                    with p.oneshot():
                        p.memory_info()
                        p.cpu_times()
                        p.num_fds()
                        p.io_counters()
                except psutil.NoSuchProcess:
                    pass
        times.append((time.perf_counter() - start) / len(agents) * 1e6)
    print(json.dumps({"psutil_us": statistics.median(times), "rounds": rounds, "psutil_version": psutil.__version__}))


if __name__ == "__main__":
    main()
