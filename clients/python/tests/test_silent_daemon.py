"""A daemon that accepts a connection but does not answer (as `allot up`
does while it stops its fleet): the client raises DaemonUnavailable naming
the socket, not a bare httpx timeout, and the agent-channel helper goes on."""

from __future__ import annotations

import json
import socket as socketlib
import threading
from pathlib import Path
from typing import Iterator, List

import pytest

import allot


@pytest.fixture
def silent_socket(tmp_path: Path) -> Iterator[str]:
    """A Unix socket that accepts connections and never answers."""
    path = str(tmp_path / "silent.sock")
    srv = socketlib.socket(socketlib.AF_UNIX)
    srv.bind(path)
    srv.listen(8)
    held: List[socketlib.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield path
    finally:
        stop.set()
        t.join(2)
        for c in held:
            c.close()
        srv.close()


def test_a_daemon_that_does_not_answer_is_named(silent_socket: str) -> None:
    with pytest.raises(allot.DaemonUnavailable) as e:
        allot.Client(socket=silent_socket, timeout=0.3).ps()
    assert e.value.socket == silent_socket and silent_socket in str(e.value)


async def test_a_daemon_that_does_not_answer_is_named_async(silent_socket: str) -> None:
    async with allot.AsyncClient(socket=silent_socket, timeout=0.3) as c:
        with pytest.raises(allot.DaemonUnavailable) as e:
            await c.ps()
    assert e.value.socket == silent_socket


def test_the_channel_goes_on_when_an_acknowledgement_times_out(silent_socket: str, tmp_path: Path) -> None:
    path = tmp_path / "channel.jsonl"
    path.write_text(json.dumps({"seq": 1, "type": "scale_down", "at_ms": 1, "resource": "tokens"}) + "\n")
    seen: List[int] = []
    ch = allot.AgentChannel(path, client=allot.Client(socket=silent_socket, agent_id="a1", timeout=0.3))
    ch.on("scale_down", lambda m: seen.append(m.seq))
    assert [m.seq for m in ch.poll()] == [1]  # the acknowledgement failed: logged, not raised
    assert seen == [1]
