"""Holds 40 MiB for a few seconds, then little: degraded, then recovered in stages."""
import time
from allot_agent import Channel, hold, log

ch = Channel()
time.sleep(2)
burst = hold(40)
time.sleep(6)
burst = None
while True:
    for m in ch.messages():
        if m.get("type") in ("degradation", "recovery"):
            log(f"{m['type']}: {m.get('plan', m.get('stage'))}")
    time.sleep(0.5)
