"""Every method of :class:`allot.AsyncClient` against a real daemon."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import AsyncIterator

import pytest

import allot


@pytest.fixture
async def aclient(daemon) -> AsyncIterator[allot.AsyncClient]:  # type: ignore[no-untyped-def]
    async with allot.AsyncClient(daemon.socket) as c:
        yield c


async def test_async_agent_methods(daemon, aclient: allot.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    daemon.wait_running("sleeper")
    c = aclient
    assert await c.healthz() and await c.readyz()
    assert "/v1/events" in (await c.openapi())["paths"]
    assert (await c.host()).resources["cpu"].unit == "millicores"
    assert "allot_" in await c.metrics()

    me = await c.me("sleeper")
    assert me.agent.id == "sleeper" and me.quota is not None and me.quota.limits["tokens"].soft == 8000
    assert (await c.report(tokens=500, agent_id="sleeper"))["tokens"].value == 500

    async with c.reserve(tokens=4000, usd=0.012, agent_id="sleeper") as r:
        s = await r.settle(tokens=1000)
        assert {x.resource: x.returned for x in s.settled}["tokens"] == 3000
    async with c.reserve(tokens=1000, agent_id="sleeper") as r:
        pass
    assert r.closed
    h = await c.reserve(tokens=100, agent_id="sleeper")
    assert (await c.settle(h.id, tokens=100)).settled[0].overrun == 0
    h = await c.reserve(tokens=100, agent_id="sleeper")
    assert (await c.release(h.id)).released

    b = await c.budgets("sleeper")
    tokens = next(v for v in b.budgets if v.level == "agent:sleeper" and v.resource == "tokens")
    assert (tokens.spent, tokens.reserved) == (500 + 1000 + 100, 0)

    held = await c.reserve(tokens=8000, ttl=30, agent_id="sleeper")
    with pytest.raises(allot.BudgetExceeded) as e:
        await c.reserve(tokens=2000, agent_id="sleeper")
    assert e.value.level == "agent:sleeper" and e.value.retry_after is not None and 0 < e.value.retry_after <= 61
    await held.release()

    ack = await c.ack(1, "async seen", agent_id="sleeper")
    assert ack.request_seq == 1
    listed = [e async for e in c.events(follow=False, topic="*acknowledged*")]
    assert listed[-1].seq == ack.event_seq


async def test_async_operator_methods(daemon, aclient: allot.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    c = aclient
    started = await c.run("sleep 300", name="aop", group="py_test", limits={"memory": {"hard": "300Mi"}})
    assert started.id == "aop"
    daemon.wait_running("aop")
    assert "aop" in {a.id for a in await c.ps()} and (await c.agent("aop")).group == "py_test"
    assert (await c.suspend("aop")).outcome == "success"
    assert (await c.compliance("aop")).suspended
    assert (await c.resume("aop")).outcome == "success"
    assert (await c.throttle("aop", 200)).outcome == "success"
    assert (await c.clear("aop")).outcome == "success"
    assert (await c.set_quota("aop", memory={"hard": "320Mi"})).limits["memory"].hard == 320 * 1024 * 1024
    assert (await c.quota("aop")).limits["memory"].hard == 320 * 1024 * 1024

    proc = subprocess.Popen(["sleep", "300"])
    try:
        assert (await c.adopt(proc.pid, name="aadopted", group="py_test")).pid == proc.pid
        assert (await c.terminate("aadopted")).outcome == "success"
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (await c.stop("aop")).outcome == "success"
    deadline = time.monotonic() + 15
    while (await c.agent("aop")).state not in ("exited", "terminated"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert {h.action for h in await c.history("aop")} >= {"suspend", "throttle", "terminate"}

    g = await c.put_group("apy", {"description": "async"}, create=True)
    assert g.name == "apy" and "apy" in {x.name for x in await c.groups()}
    await c.delete_group("apy")
    change = await c.put_pool("apool", {"tokens": "1M/day"})
    assert change.created and (await c.pools("apool")).budgets[0].hard == 1_000_000
    assert (await c.delete_pool("apool")).deleted

    deadline = time.monotonic() + 30
    while not await c.recommendations():
        assert time.monotonic() < deadline, "no recommendation within 30 s"
        await asyncio.sleep(0.5)
    assert (await c.analysis("sleeper")).resource == "memory"
    assert [r.agent for r in await c.report_of("sleeper")] == ["sleeper"]
    assert "<html" in (await c.report_of("sleeper", format="html")).lower()


async def test_async_sse_follows_live_events(daemon, aclient: allot.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    daemon.wait_running("sleeper")
    c = aclient
    last = [e async for e in c.events(follow=False)][-1].seq
    seen = []

    async def follow() -> None:
        async for e in c.events(since=last, topic="*acknowledged*"):
            seen.append(e)
            if len(seen) == 3:
                return

    task = asyncio.create_task(follow())
    for i in range(3):
        await c.ack(100 + i, f"live {i}", agent_id="sleeper")
    await asyncio.wait_for(task, 10)
    assert [e.data["request_seq"] for e in seen] == [100, 101, 102]
    assert all(e.seq > last for e in seen)


async def test_async_governed(daemon, aclient: allot.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    daemon.wait_running("sleeper")
    c = allot.AsyncClient(daemon.socket, agent_id="sleeper")

    @allot.governed(tokens=3000, client=c)
    async def ask() -> int:
        await allot.current_reservation().settle(tokens=700)  # type: ignore[misc]
        return 7

    @allot.governed(tokens=1000, client=c)
    async def fails() -> None:
        raise ValueError("boom")

    assert await ask() == 7
    with pytest.raises(ValueError):
        await fails()
    b = await aclient.budgets("sleeper")
    v = next(v for v in b.budgets if v.level == "agent:sleeper" and v.resource == "tokens")
    assert (v.spent, v.reserved) == (700, 0)
    await c.aclose()
