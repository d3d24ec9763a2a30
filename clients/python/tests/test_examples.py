"""The example fleet examples/python-fleet.toml run by `allot up`: its two
Python agents (the client's research agent and the LangChain agent) reserve
and settle, are refused and go on, answer their channel's requests, and are
stopped by allot at the end, not by a failure of their own.

`allot up` runs with this interpreter's directory first on PATH (so the
agents' `python3` has the package and langchain-core), from the
repository's root, on a temporary state, socket and events file, with its
cgroup root named ``allot-test-py-up-*``; whatever is left under it is
killed (by pid) and removed after.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import REPO, allot_bin, own_cgroup_dirs, remove_tree

pytest.importorskip("langchain_core")

FLEET = REPO / "examples" / "python-fleet.toml"
RUN_FOR = 20


def events_of(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fleet_for_this_machine(tmp: Path) -> Path:
    """The example fleet; as root with `user = "root"` added to each agent.

    allot runs a root caller's agents as `nobody`, who may not reach this
    test's interpreter (a venv made from a Python under /root). The agents
    and their commands are the example's own.
    """
    text = FLEET.read_text()
    if os.geteuid() != 0:
        return FLEET
    patched, n = re.subn(r'^(group = "python_agents")$', r'\1' + '\nuser = "root"', text, flags=re.M)
    assert n == 2, "the example fleet has two agents in group python_agents"
    out = tmp / "python-fleet.toml"
    out.write_text(patched)
    return out


def test_python_fleet_under_allot_up(tmp_path: Path) -> None:
    name = f"allot-test-py-up-{os.getpid()}"
    ev_file = tmp_path / "ev.jsonl"
    env = dict(os.environ)
    env = {k: v for k, v in env.items() if not k.startswith("ALLOT_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    cmd = [allot_bin(), "up", str(fleet_for_this_machine(tmp_path)), "--for", f"{RUN_FOR}s", "--plain",
           "--state", str(tmp_path / "state.db"), "--events", str(ev_file), "--socket", str(tmp_path / "up.sock"),
           "--cgroup-name", name]
    try:
        run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_FOR + 40)
    finally:
        for root in own_cgroup_dirs(name):
            remove_tree(root)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    events = events_of(ev_file)

    def of(agent: str, topic: str) -> List[Dict[str, Any]]:
        return [e for e in events if e.get("agent") == agent and e["topic"] == f"resource_management.{topic}"]

    for agent in ("researcher", "lc-writer"):
        # Refused once its spend filled the window: what it settled before (spent > 0) shows it
        # reserved and settled (neither agent's spend comes from anything else but the
        # researcher's one report of 200 tokens).
        refused = of(agent, "budget.exhausted")
        assert refused, f"{agent} was never refused:\n{out[-4000:]}"
        assert refused[0]["data"]["resource"] == "tokens" and refused[0]["data"]["spent"] > 200, refused[0]
        # Stopped by allot at the end (--for), not by its own failure.
        exited = of(agent, "agent.exited")
        assert len(exited) == 1 and exited[0]["data"]["cause"] == "allot", exited
        assert "--for elapsed" in exited[0]["data"]["reason"], exited

    # The research agent went on after its first refusal: it kept reserving and settling
    # (its overruns are settles of reservations, recorded as budget.overrun).
    first_refusal = of("researcher", "budget.exhausted")[0]["seq"]
    overruns = of("researcher", "budget.overrun")
    assert any(e["seq"] > first_refusal for e in overruns), f"no settle after the refusal:\n{out[-4000:]}"
    # ... and the LangChain agent too: calls settled after waiting on a refusal, and more calls after that.
    calls = re.findall(r"^\[lc-writer\] call (\d+): \d+ tokens used of 1500 reserved, settled(.*)$", out, re.M)
    waited = [int(n) for n, rest in calls if "refusal" in rest]
    assert waited and max(int(n) for n, _ in calls) > waited[0], f"the LangChain agent did not go on after waiting:\n{out[-4000:]}"

    # The overruns took the researcher above its hard limit: allot asked it to scale down.
    # Every request its channel got was acknowledged, the termination notice at the end
    # included (`allot up` answers its API while it stops the fleet).
    channel = tmp_path / "agents" / "researcher.jsonl"
    msgs = [json.loads(line) for line in channel.read_text().splitlines() if line.strip()]
    ends = [m["at_ms"] for m in msgs if m["type"] == "termination"]
    assert ends, f"the researcher got no termination notice: {msgs}"
    requests = [m for m in msgs if m["type"] in ("throttle", "scale_down", "degradation")]
    assert any(m["type"] == "scale_down" for m in requests), msgs
    acked = {e["data"]["request_seq"] for e in of("researcher", "request.acknowledged")}
    assert acked, "no acknowledgement recorded"
    # Those sent at least 2 s before the end had the time to be read (every 0.2 s) and acknowledged.
    due = {m["seq"] for m in requests if m["at_ms"] < ends[0] - 2000}
    assert due and due <= acked, (requests, acked)
    terminations = {m["seq"] for m in msgs if m["type"] == "termination"}
    assert terminations <= acked, f"the termination notice was not acknowledged: {terminations} {sorted(acked)}"
