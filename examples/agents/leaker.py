"""Leaks memory slowly (4 MiB/s up to 100 MiB): warned, then throttled."""
import time
from allot_agent import hold

leak = []
while True:
    if len(leak) < 25:
        leak.append(hold(4))
    time.sleep(1)
