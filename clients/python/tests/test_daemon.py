"""Every method of the synchronous client against a real daemon (the
``daemon`` fixture); every answer is also checked for fields the models do
not know (conftest's ``strict_answers``)."""

from __future__ import annotations

import subprocess
import time

import pytest

import allot
from allot import models as m


def test_system_reads(client: allot.Client) -> None:
    assert client.healthz() is True
    assert client.readyz() is True
    doc = client.openapi()
    assert doc["openapi"].startswith("3.") and "/v1/agents/{id}/reservations" in doc["paths"]
    host = client.host()
    assert host.resources["memory"].total > 0 and host.resources["memory"].unit == "bytes"
    assert "allot_" in client.metrics()


def test_agent_methods_by_id(daemon, client: allot.Client) -> None:  # type: ignore[no-untyped-def]
    daemon.wait_running("sleeper")
    me = client.me("sleeper")
    assert me.agent.id == "sleeper" and me.agent.state == "running"
    assert me.quota is not None and me.quota.limits["tokens"].hard == 10_000
    assert me.compliance.agent == "sleeper" and me.compliance.status in ("ok", "soft", "burst", "hard")

    answers = client.report(tokens=1200, agent_id="sleeper")
    assert answers["tokens"].value == 1200 and answers["tokens"].agent == "sleeper"

    # usd= is dollars: 0.012 -> 12000 usd_micros.
    with client.reserve(tokens=4000, usd=0.012, agent_id="sleeper") as r:
        assert r.resources == {"tokens": 4000, "usd_micros": 12000}
        assert r.info.levels["tokens"] == ["agent:sleeper"]
        s = r.settle(tokens=3100)
        lines = {x.resource: x for x in s.settled}
        assert (lines["tokens"].actual, lines["tokens"].returned) == (3100, 900)
        assert lines["usd_micros"].actual == 12000, "a resource left out is charged as reserved"
    b = client.budgets("sleeper")
    tokens = next(v for v in b.budgets if v.resource == "tokens" and v.level == "agent:sleeper")
    assert (tokens.spent, tokens.reserved) == (1200 + 3100, 0)

    # Leaving the block without a settle releases: nothing is charged.
    with client.reserve(tokens=2000, agent_id="sleeper") as r:
        rid = r.id
    assert r.closed
    b = client.budget("sleeper")
    tokens = next(v for v in b.budgets if v.resource == "tokens" and v.level == "agent:sleeper")
    assert (tokens.spent, tokens.reserved) == (4300, 0)
    with pytest.raises(allot.NotFound):
        client.release(rid)

    # By id: settle and release.
    h = client.reserve(tokens=100, agent_id="sleeper")
    assert client.settle(h.id, tokens=50).settled[0].actual == 50
    h = client.reserve(tokens=100, agent_id="sleeper")
    assert client.release(h.id).released is True


def test_reservation_refused_with_retry_after(daemon, client: allot.Client) -> None:  # type: ignore[no-untyped-def]
    daemon.wait_running("sleeper")
    held = client.reserve(tokens=8000, ttl="30s", agent_id="sleeper")
    with pytest.raises(allot.BudgetExceeded) as e:
        client.reserve(tokens=5000, agent_id="sleeper")
    err = e.value
    assert (err.status, err.code, err.level, err.resource) == (429, "exhausted", "agent:sleeper", "tokens")
    assert err.retry_after is not None and 20 < err.retry_after <= 30, "free again when the 30 s hold ends"
    # More than the limit can ever give: waiting will not help.
    with pytest.raises(allot.BudgetExceeded) as e:
        client.reserve(tokens=10_001, agent_id="sleeper")
    assert e.value.retry_after is None
    held.release()
    with client.reserve(tokens=5000, agent_id="sleeper") as r:
        r.settle()


def test_typed_errors_name_code_and_field(daemon, client: allot.Client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(allot.NotFound) as nf:
        client.agent("nobody-here")
    assert nf.value.code == "not_found" and "nobody-here" in nf.value.message
    with pytest.raises(allot.Invalid) as inv:
        client.run(["sleep", "5"], name="bad", group="py_test", limits={"memory.soft": "2Gi", "memory.hard": "1Gi"})
    assert inv.value.status == 422 and (inv.value.field or "").startswith("limits") and "memory" in inv.value.message
    with pytest.raises(allot.Invalid) as unknown:
        client.reserve(nonsense_resource=5, agent_id="sleeper")
    assert unknown.value.code == "invalid"


def test_operator_methods(daemon, client: allot.Client) -> None:  # type: ignore[no-untyped-def]
    started = client.run(["sleep", "300"], name="op1", group="py_test", limits={"memory.hard": "300Mi"}, priority=3)
    assert started.id == "op1" and started.pid > 0 and started.state == "running"
    daemon.wait_running("op1")
    assert {a.id for a in client.ps()} >= {"sleeper", "op1"}
    assert client.list() == client.ps() or {a.id for a in client.list()} >= {"op1"}
    assert client.agent("op1").group == "py_test"

    assert client.suspend("op1").outcome == "success"
    assert client.agent("op1").held_by.freeze == ["operator"]
    assert client.compliance("op1").suspended_by == ["operator"]
    assert client.resume("op1").outcome == "success"
    assert client.throttle("op1", "100m").outcome == "success"
    assert client.compliance("op1").throttled_by == ["operator"]
    assert client.clear("op1").outcome == "success"
    assert client.resume("op1", force=True).outcome == "success"

    q = client.quota("op1")
    assert q.limits["memory"].hard == 300 * 1024 * 1024 and q.priority == 3
    q = client.set_quota("op1", {"memory.hard": "350Mi"})
    assert q.limits["memory"].hard == 350 * 1024 * 1024
    assert client.quota("op1").limits["memory"].hard == 350 * 1024 * 1024

    # adopt: a process this test started, followed as a process tree.
    proc = subprocess.Popen(["sleep", "300"])
    try:
        adopted = client.adopt(proc.pid, name="adopted", group="py_test")
        assert adopted.id == "adopted" and adopted.pid == proc.pid and adopted.warning
        assert client.terminate("adopted").outcome == "success"
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert client.stop("op1").action == "terminate"
    deadline = time.monotonic() + 15
    while client.agent("op1").state not in ("exited", "terminated"):
        assert time.monotonic() < deadline, "op1 did not end after stop"
        time.sleep(0.1)

    hist = client.history("op1")
    assert {h.action for h in hist} >= {"suspend", "throttle", "terminate"}
    assert all(h.agent == "op1" for h in hist)
    assert len(client.history()) >= len(hist)


def test_groups_and_pools(daemon, client: allot.Client) -> None:  # type: ignore[no-untyped-def]
    names = {g.name for g in client.groups()}
    assert {"py_test", "lightweight_agent"} <= names
    g = client.put_group("py_extra", {"description": "made by a test", "limits": {"memory": {"soft": "50Mi", "hard": "80Mi"}}},
                         create=True)
    assert g.name == "py_extra" and g.limits["memory"].hard == 80 * 1024 * 1024
    g = client.put_group("py_extra", description="changed", extends="lightweight_agent")
    assert g.description == "changed"
    with pytest.raises(allot.Conflict):
        client.put_group("py_extra", {"description": "again"}, create=True)
    client.delete_group("py_extra")
    assert "py_extra" not in {g.name for g in client.groups()}

    change = client.put_pool("py_pool", {"tokens": "5M/day", "usd_micros": {"hard": "50M", "calendar": "month"}})
    assert change.pool == "py_pool" and change.created is True
    assert {v.resource for v in change.budgets} == {"tokens", "usd_micros"}
    p = client.pools("py_pool")
    assert {v.level for v in p.budgets} == {"pool:py_pool"}
    assert {v.level for v in client.pools().budgets} == {"pool:py_pool"}
    assert client.delete_pool("py_pool").deleted is True
    with pytest.raises(allot.NotFound):
        client.pools("py_pool")
    with pytest.raises(allot.Invalid) as e:
        client.put_pool("bad", {"tokens": "five a day"})
    assert e.value.field is not None


def test_analysis_recommendations_and_reports(daemon, client: allot.Client) -> None:  # type: ignore[no-untyped-def]
    daemon.wait_running("sleeper")
    deadline = time.monotonic() + 30
    while not client.recommendations("sleeper"):
        assert time.monotonic() < deadline, "no recommendation within 30 s (analytics every 2 s)"
        time.sleep(0.5)
    recs = client.recommend("sleeper")
    assert all(r.agent == "sleeper" for r in recs)
    assert {r.agent for r in client.recommendations()} >= {"sleeper"}

    a = client.analysis("sleeper", resource="memory", window="1h", horizon="10m")
    assert a.agent == "sleeper" and a.resource == "memory" and a.samples > 0

    rep = client.report_of("sleeper", since="1h")
    assert [r.agent for r in rep] == ["sleeper"]
    assert any(x.resource == "memory" and x.samples > 0 for x in rep[0].resources)
    assert "sleeper" in client.report_of(since="1h", format="text")
    assert client.report_of("sleeper", format="svg").lstrip().startswith("<")
    assert {r.agent for r in client.report_of()} >= {"sleeper"}


def test_events_listing_and_ack(daemon, client: allot.Client) -> None:  # type: ignore[no-untyped-def]
    daemon.wait_running("sleeper")
    ack = client.ack(1, "seen", agent_id="sleeper")
    assert ack.agent == "sleeper" and ack.request_seq == 1 and ack.event_seq
    events = list(client.events(follow=False))
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert any(e.topic.endswith("agent.started") and e.agent == "sleeper" for e in events)
    acked = [e for e in client.events(follow=False, topic="*acknowledged*")]
    assert acked and acked[-1].seq == ack.event_seq and acked[-1].data["note"] == "seen"
    later = list(client.events(since=ack.event_seq, follow=False))
    assert all(e.seq > ack.event_seq for e in later)
    for e in events:
        assert m.unknown_fields(e) == []


def test_client_finds_the_socket_from_the_environment(daemon, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ALLOT_SOCKET", daemon.socket)
    monkeypatch.setenv("ALLOT_AGENT_ID", "sleeper")
    with allot.Client() as c:
        assert c.socket == daemon.socket and c.socket_source == "ALLOT_SOCKET"
        assert c.quota().agent == "sleeper", "agent methods act for ALLOT_AGENT_ID"


def test_no_daemon_names_the_socket_tried(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    gone = str(tmp_path / "nobody-listens.sock")
    monkeypatch.setenv("ALLOT_SOCKET", gone)
    with allot.Client() as c:
        with pytest.raises(allot.DaemonUnavailable) as e:
            c.ps()
    assert e.value.socket == gone and gone in str(e.value) and "ALLOT_SOCKET" in str(e.value)


def test_governed_reserves_around_each_call(daemon, client: allot.Client) -> None:  # type: ignore[no-untyped-def]
    daemon.wait_running("sleeper")
    c = daemon.client(agent_id="sleeper")

    def spent() -> int:
        b = client.budgets("sleeper")
        v = next(v for v in b.budgets if v.level == "agent:sleeper" and v.resource == "tokens")
        assert v.reserved == 0, "nothing is left held after a governed call"
        return v.spent

    @allot.governed(tokens=3000, client=c)
    def ask(actual: int) -> str:
        held = allot.current_reservation()
        assert held.resources == {"tokens": 3000}
        assert client.budgets("sleeper").open_reservations == 1
        held.settle(tokens=actual)
        return "answer"

    @allot.governed(tokens=2000, client=c)
    def unsettled() -> None:
        pass

    @allot.governed(tokens=2000, client=c)
    def fails() -> None:
        raise RuntimeError("the model failed")

    assert ask(1234) == "answer"
    assert spent() == 1234
    unsettled()
    assert spent() == 1234 + 2000, "a call that does not settle is charged as reserved"
    with pytest.raises(RuntimeError):
        fails()
    assert spent() == 3234, "a call that raises releases its reservation"

    @allot.governed(tokens=9000, client=c)
    def too_big() -> None:
        raise AssertionError("must not run when the budget refuses")

    with pytest.raises(allot.BudgetExceeded) as e:
        too_big()
    assert e.value.resource == "tokens"
    c.close()
