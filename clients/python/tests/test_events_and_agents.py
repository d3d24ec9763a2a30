"""The SSE stream resumed across a daemon restart, and the client used from
inside an agent process (the daemon knows it by its peer credentials)."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import List

import pytest

import allot
from allot import models as m


def test_sse_stream_resumes_after_a_daemon_restart(daemon, client: allot.Client) -> None:  # type: ignore[no-untyped-def]
    daemon.wait_running("sleeper")
    base = list(client.events(follow=False))[-1].seq
    got: List[m.Event] = []
    failed: List[BaseException] = []

    def follow() -> None:
        try:
            with daemon.client() as c:
                for e in c.events(since=base, topic="*acknowledged*", retry_delay=0.1, give_up_after=30):
                    got.append(e)
                    if len(got) == 6:
                        return
        except BaseException as e:  # seen by the test below
            failed.append(e)

    t = threading.Thread(target=follow, daemon=True)
    t.start()

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 15
        while len(got) < n and not failed:
            assert time.monotonic() < deadline, f"the stream has {len(got)} of {n} events"
            time.sleep(0.02)
        assert not failed, failed

    for i in (1, 2, 3):
        client.ack(i, f"before {i}", agent_id="sleeper")
    wait_for(3)
    daemon.restart()  # SIGKILL and start again: the stream breaks
    daemon.wait_running("sleeper")
    for i in (10, 11, 12):
        client.ack(i, f"after {i}", agent_id="sleeper")
    wait_for(6)
    t.join(5)
    assert [e.data["request_seq"] for e in got] == [1, 2, 3, 10, 11, 12], "none lost, none repeated"
    seqs = [e.seq for e in got]
    assert seqs == sorted(set(seqs)) and seqs[0] > base
    assert all(m.unknown_fields(e) == [] for e in got)


def test_a_stream_without_reconnect_names_the_socket(daemon) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        stream = c.events(reconnect=False)
        first = next(stream)
        assert first.seq >= 1
        daemon.kill()
        with pytest.raises(allot.DaemonUnavailable) as e:
            for _ in stream:
                pass
        assert daemon.socket in str(e.value) and e.value.socket == daemon.socket
        with pytest.raises(allot.DaemonUnavailable) as e:
            c.ps()
        assert daemon.socket in str(e.value)


AGENT = textwrap.dedent(
    """
    import json, os, sys, time
    import allot

    out = {}
    client = allot.Client()                      # ALLOT_SOCKET and ALLOT_AGENT_ID from allot
    me = client.me()
    out["me"] = me.agent.id
    out["tokens_hard"] = me.quota.limits["tokens"].hard
    out["own_quota_group"] = client.quota().group
    try:
        client.quota("sleeper")
        out["other"] = "allowed"
    except allot.Forbidden as e:
        out["other"] = ["Forbidden", e.status, e.code]
    try:
        client.run(["sleep", "1"], name="sneaky", group="py_test")
        out["run"] = "allowed"
    except allot.Forbidden as e:
        out["run"] = ["Forbidden", e.status]
    out["report"] = client.report(tokens=700)["tokens"].value
    with client.reserve(tokens=1000, usd=0.001) as r:
        out["settled"] = r.settle(tokens=600).settled[0].actual
    out["own_agents"] = [a.id for a in client.ps()]

    channel = allot.AgentChannel()
    channel.defer_sigterm()
    heard = []

    @channel.on("termination")
    def stopping(msg):
        heard.append(msg.fields["grace_ms"])
        with open(sys.argv[1], "w") as f:
            json.dump(dict(out, termination=msg.fields), f)
        return "saving and leaving"

    with open(sys.argv[1] + ".ready", "w") as f:
        json.dump(out, f)
    deadline = time.monotonic() + 60
    while not heard and time.monotonic() < deadline:
        channel.poll()
        time.sleep(0.05)
    """
)


def test_an_agent_reads_its_own_quota_and_not_anothers(daemon, client: allot.Client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    result = tmp_path / "result.json"
    tmp_path.chmod(0o777)
    started = client.run([sys.executable, str(script), str(result)], name="pyagent", group="py_test", user="root",
                         limits={"tokens": {"soft": "8k/min", "hard": "10k/min", "action": "warn"}, "usd_micros": {"hard": "1M/day"}})
    assert started.id == "pyagent"
    ready = Path(str(result) + ".ready")
    deadline = time.monotonic() + 30
    while not ready.exists():
        a = client.agent("pyagent")
        assert a.state == "running", f"the agent ended: {a.exit} {daemon.logs()}"
        assert time.monotonic() < deadline, "the agent did not get ready in 30 s"
        time.sleep(0.05)
    out = json.loads(ready.read_text())
    assert out["me"] == "pyagent" and out["tokens_hard"] == 10_000 and out["own_quota_group"] == "py_test"
    assert out["other"] == ["Forbidden", 403, "forbidden"], "an agent may not read another's quota"
    assert out["run"] == ["Forbidden", 403], "an agent is not an operator"
    assert out["report"] == 700 and out["settled"] == 600
    assert out["own_agents"] == ["pyagent"], "an agent lists itself only"
    spent = next(v for v in client.budgets("pyagent").budgets if v.level == "agent:pyagent" and v.resource == "tokens")
    assert spent.spent == 1300

    # The channel helper hears the termination notice and acknowledges it.
    client.terminate("pyagent")
    deadline = time.monotonic() + 20
    while not result.exists():
        assert time.monotonic() < deadline, "the agent did not hear its termination"
        time.sleep(0.05)
    final = json.loads(result.read_text())
    assert final["termination"]["grace_ms"] == 1000
    deadline = time.monotonic() + 10
    while True:
        acks = [e for e in client.events(follow=False, topic="*acknowledged*") if e.agent == "pyagent"]
        if acks:
            break
        assert time.monotonic() < deadline, "no acknowledgement recorded"
        time.sleep(0.05)
    assert acks[0].data["note"] == "saving and leaving"


def test_tcp_with_a_bearer_token(tmp_path: Path, strict_answers: List[str]) -> None:
    import socket as sk

    from conftest import Daemon

    with sk.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = tmp_path / "token"
    token.write_text("s3cret-token-for-the-python-client-test-0123\n")
    token.chmod(0o600)
    d = Daemon(extra_args=["--tcp", f"127.0.0.1:{port}", "--token-file", str(token)])
    try:
        with allot.Client(base_url=f"http://127.0.0.1:{port}", token="s3cret-token-for-the-python-client-test-0123") as c:
            assert "sleeper" in {a.id for a in c.ps()}
        with allot.Client(base_url=f"http://127.0.0.1:{port}", token="wrong") as c:
            with pytest.raises(allot.Unauthorized) as e:
                c.ps()
            assert e.value.status == 401
    finally:
        d.stop()
    with allot.Client(base_url=f"http://127.0.0.1:{port}", token="x") as c:
        with pytest.raises(allot.DaemonUnavailable) as gone:
            c.ps()
        assert f"127.0.0.1:{port}" in str(gone.value)
