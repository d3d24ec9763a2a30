"""A real allot daemon for the client's tests.

The ``daemon`` fixture starts ``allot daemon`` (the binary in ``ALLOT_BIN``,
else the checkout's ``target/debug/allot``) on a temporary socket and state
database, with its cgroup root named ``allot-test-py-<pid>-<n>`` beneath this
process's own cgroup, and stops it after the test: every agent it started is
terminated through the API, the daemon gets SIGTERM, and whatever is left
under the test's cgroup root is killed (by pid, from its ``cgroup.procs``)
and removed.

Every answer the tests read is checked for fields the client's models do not
know (``allot.models.unknown_fields``): a field the daemon adds without the
client learning it fails the test that read it.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

import allot
from allot import _core
from allot.models import unknown_fields

REPO = Path(__file__).resolve().parents[3]
FLEET = """
[policy]
analytics_interval = "2s"
terminate_grace = "1s"

[groups.py_test]
description = "the Python client's tests"
limits.memory = { soft = "200Mi", hard = "400Mi" }

[[agents]]
name = "sleeper"
group = "py_test"
command = ["sleep", "600"]
limits.tokens = { soft = "8k/min", hard = "10k/min", action = "warn" }
limits.usd_micros = { hard = "1M/day" }
"""

_counter = itertools.count()


def allot_bin() -> str:
    given = os.environ.get("ALLOT_BIN")
    path = Path(given) if given else REPO / "target" / "debug" / "allot"
    if not path.is_file():
        pytest.fail(f"no allot binary at {path}: build it with `cargo build -p allot` or set ALLOT_BIN", pytrace=False)
    return str(path)


def own_cgroup_dirs(name: str) -> List[Path]:
    """``<own cgroup>/<name>`` in every hierarchy of /proc/self/cgroup."""
    out: List[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":
            base = Path("/sys/fs/cgroup")
            if (base / "cgroup.controllers").exists():
                out.append(base / rel / name)
            elif (base / "unified").is_dir():
                out.append(base / "unified" / rel / name)
            continue
        for c in controllers.split(","):
            c = c.replace("name=", "")
            d = Path("/sys/fs/cgroup") / c
            if d.is_dir():
                out.append(d / rel / name)
    return sorted(set(out))


def remove_tree(root: Path) -> None:
    """Kill what runs in the cgroups under ``root`` (ours, by pid) and remove them, deepest first."""
    if not root.is_dir():
        return
    dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [root]
    for d in dirs:
        for _ in range(200):
            try:
                pids = [int(x) for x in (d / "cgroup.procs").read_text().split()]
            except OSError:
                break
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        try:
            d.rmdir()
        except OSError:
            pass


class Daemon:
    """A running daemon: its socket, state, cgroup name and process."""

    def __init__(self, fleet: str = FLEET, extra_args: Optional[List[str]] = None) -> None:
        self.extra_args = list(extra_args or [])
        self.dir = tempfile.TemporaryDirectory(prefix="allot-py-")
        base = Path(self.dir.name)
        self.socket = str(base / "allot.sock")
        self.state = str(base / "state.db")
        self.name = f"allot-test-py-{os.getpid()}-{next(_counter)}"
        (base / "fleet.toml").write_text(fleet)
        self.log = open(base / "daemon.log", "w+")
        self.start()

    def start(self) -> None:
        base = Path(self.dir.name)
        self.proc = subprocess.Popen(
            [allot_bin(), "daemon", "--config", str(base / "fleet.toml"), "--socket", self.socket, "--state", self.state,
             "--cgroup-name", self.name, *self.extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=base,
        )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}): {self.logs()}")
            if os.path.exists(self.socket):
                try:
                    with allot.Client(self.socket) as c:
                        if c.healthz():
                            break
                except allot.DaemonUnavailable:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not open its socket in 20 s: {self.logs()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the daemon (its agents keep running) and reap it."""
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        """SIGKILL the daemon and start it again on the same socket, state and cgroup root."""
        self.kill()
        self.start()

    def logs(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def client(self, **kw: Any) -> allot.Client:
        return allot.Client(self.socket, **kw)

    def wait_running(self, agent: str, timeout: float = 15) -> allot.models.AgentStatus:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                try:
                    a = c.agent(agent)
                    if a.state == "running" and a.pids:
                        return a
                except allot.NotFound:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{agent} is not running after {timeout} s: {self.logs()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                with self.client(timeout=10) as c:
                    for a in c.ps():
                        if a.state not in ("exited", "terminated"):
                            try:
                                c.terminate(a.id)
                            except allot.AllotError:
                                pass
            except allot.AllotError:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for root in own_cgroup_dirs(self.name):
            remove_tree(root)
        self.log.close()
        self.dir.cleanup()


@pytest.fixture
def daemon(strict_answers: List[str]) -> Iterator[Daemon]:
    d = Daemon()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[allot.Client]:
    with daemon.client() as c:
        yield c


@pytest.fixture
def strict_answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[List[str]]:
    """Fail on any answer with a field the client's models do not know."""
    seen: List[str] = []
    real = _core.read

    def checked(call: Any, response: Any) -> Any:
        out = real(call, response)
        unknown = unknown_fields(out)
        if unknown:
            seen.extend(unknown)
            raise AssertionError(f"{call.method} {call.path} answered fields the client does not know: {unknown}")
        return out

    monkeypatch.setattr(_core, "read", checked)
    yield seen


def python_for_agents() -> str:
    """The interpreter this test runs in (it has the package installed), for agent commands."""
    return sys.executable


def env_without_allot() -> Dict[str, Optional[str]]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ALLOT_")}
