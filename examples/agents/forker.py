"""Forks a child every second (up to 12): held by its process limit, then suspended."""
import os
import time

children = []
while True:
    if len(children) < 12:
        try:
            pid = os.fork()
        except OSError:
            pid = None
        if pid == 0:
            time.sleep(3600)
            os._exit(0)
        if pid:
            children.append(pid)
    time.sleep(1)
