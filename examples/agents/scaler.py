"""Grows to 60 MiB; with --honour it frees memory when asked to scale down."""
import sys
import time
from allot_agent import Channel, hold, log

honour = "--honour" in sys.argv
ch = Channel()
time.sleep(2)
big = hold(60)
while True:
    for m in ch.messages():
        if m.get("type") == "scale_down":
            if honour:
                log(f"scale_down to {m['target']} bytes by {m['deadline']}: freeing memory")
                big = hold(8)
            else:
                log("scale_down request ignored")
    time.sleep(0.5)
