"""Tiny helper for example agents: read allot's messages and hold memory.

allot appends JSON lines to the file named in ALLOT_EVENTS_FILE: the quota
first, then throttle notices, scale-down requests, degradation plans,
recovery stages and termination notices.
"""
import json
import mmap
import os


class Channel:
    def __init__(self):
        self.path = os.environ.get("ALLOT_EVENTS_FILE")
        self.offset = 0

    def messages(self):
        """New messages since the last call."""
        if not self.path or not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            f.seek(self.offset)
            lines = f.readlines()
            self.offset = f.tell()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


def hold(mib):
    """Allocate and touch `mib` MiB; keep the returned object alive.

    Anonymous mappings, so that dropping the object gives the memory back to
    the kernel at once (malloc'd memory often stays with the process).
    """
    size = int(mib) << 20
    if size == 0:
        return None
    m = mmap.mmap(-1, size)
    for off in range(0, size, 4096):
        m[off] = 1
    return m


def log(msg):
    print(f"[{os.environ.get('ALLOT_AGENT_ID', '?')}] {msg}", flush=True)
