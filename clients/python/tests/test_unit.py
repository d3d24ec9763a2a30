"""Unit tests without a daemon: requests and answers through httpx.MockTransport."""

from __future__ import annotations

import json
import socket as socketlib
from datetime import timedelta
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Tuple

import httpx
import pytest

import allot
from allot import _core as core
from allot import models as m

RESERVATION = {
    "id": 7,
    "agent": "a1",
    "resources": {"tokens": 4000, "usd_micros": 12000},
    "levels": {"tokens": ["agent:a1", "group:llm"], "usd_micros": ["pool:money"]},
    "created_at": "2026-01-01T00:00:00Z",
    "expires_at": "2026-01-01T00:01:00Z",
    "expires_ms": 1767225660000,
}

AGENT = {
    "id": "a1", "group": "llm", "state": "running", "exit": None, "exit_cause": None, "pids": [42],
    "usage": {"memory": 1024}, "disk_io_source": None, "last_action": "none",
    "held_by": {"freeze": [], "throttle": ["operator"]}, "quota": {"agent": "w", "group": "g", "limits": {"memory": {"hard": 2048}}},
    "uid": 1000, "root": False, "budgets": None, "something_new": 1,
}

COMPLIANCE = {
    "agent": "a1", "compliant": True, "status": "ok",
    "resources": [{"resource": "memory", "unit": "bytes", "usage": 1024, "measured_ms": 1, "soft": 1500, "hard": 2048,
                   "burst": 2048, "action": "throttle", "status": "ok", "pending": None}],
    "throttled": True, "throttled_by": ["operator"], "suspended": False, "suspended_by": [], "in_force": {}, "state": "running",
}


class Fake:
    """A scripted daemon: routes (method, path) to (status, body, headers); records requests."""

    def __init__(self) -> None:
        self.requests: List[httpx.Request] = []
        self.routes: Dict[Tuple[str, str], Callable[[httpx.Request], httpx.Response]] = {}

    def on(self, method: str, path: str, status: int = 200, body: Any = None, headers: Optional[Dict[str, str]] = None,
           text: Optional[str] = None) -> None:
        def answer(_req: httpx.Request) -> httpx.Response:
            if text is not None:
                return httpx.Response(status, text=text, headers=headers)
            if body is None:
                return httpx.Response(status, headers=headers)
            return httpx.Response(status, json=body, headers=headers)

        self.routes[(method, path)] = answer

    def handler(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        key = (req.method, req.url.raw_path.split(b"?")[0].decode())  # as sent, percent-encoded
        if key not in self.routes:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": f"no route {key}"}})
        return self.routes[key](req)

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)

    def sync(self, **kw: Any) -> allot.Client:
        return allot.Client(socket="/nonexistent.sock", agent_id=kw.pop("agent_id", "a1"), transport=httpx.MockTransport(self.handler), **kw)

    def aio(self, **kw: Any) -> allot.AsyncClient:
        return allot.AsyncClient(socket="/nonexistent.sock", agent_id=kw.pop("agent_id", "a1"),
                                 transport=httpx.MockTransport(self.handler), **kw)


@pytest.fixture
def fake() -> Fake:
    return Fake()


# ---- error mapping -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "status,code,cls",
    [
        (400, "bad_request", allot.BadRequest),
        (401, "unauthorized", allot.Unauthorized),
        (403, "forbidden", allot.Forbidden),
        (404, "not_found", allot.NotFound),
        (409, "conflict", allot.Conflict),
        (413, "too_large", allot.BadRequest),
        (422, "invalid", allot.Invalid),
        (429, "busy", allot.Busy),
        (429, "throttled", allot.Throttled),
        (429, "exhausted", allot.BudgetExceeded),
        (500, "failed", allot.ServerError),
        (503, "unrecorded", allot.Unrecorded),
        (503, "unavailable", allot.Unavailable),
    ],
)
def test_every_code_has_its_class(fake: Fake, status: int, code: str, cls: type) -> None:
    fake.on("GET", "/v1/agents", status, {"error": {"code": code, "message": "m", "field": "limits.memory.soft"}})
    with pytest.raises(cls) as e:
        fake.sync().ps()
    assert isinstance(e.value, allot.AllotError)
    assert (e.value.status, e.value.code, e.value.message, e.value.field) == (status, code, "m", "limits.memory.soft")


def test_unknown_code_falls_back_on_status() -> None:
    e = allot.errors.error_from_response(409, {"error": {"code": "new_kind", "message": "x"}})
    assert type(e) is allot.Conflict and e.code == "new_kind"
    e = allot.errors.error_from_response(502, "bad gateway")
    assert type(e) is allot.ServerError and e.message == "bad gateway"
    e = allot.errors.error_from_response(418, None)
    assert type(e) is allot.AllotError and e.message == "HTTP 418"


def test_budget_refusal_carries_level_resource_retry_after(fake: Fake) -> None:
    err = {"code": "exhausted", "message": "group:llm tokens: 4000 more would pass 10000", "level": "group:llm",
           "resource": "tokens", "retry_after": 12.5}
    fake.on("POST", "/v1/agents/a1/reservations", 429, {"error": err}, headers={"Retry-After": "13"})
    with pytest.raises(allot.BudgetExceeded) as e:
        fake.sync().reserve(tokens=4000)
    assert (e.value.level, e.value.resource, e.value.retry_after) == ("group:llm", "tokens", 12.5)
    assert isinstance(e.value, allot.TooManyRequests)


def test_budget_refusal_above_the_limit_has_no_retry_after(fake: Fake) -> None:
    err = {"code": "exhausted", "message": "more than the limit", "level": "agent:a1", "resource": "tokens", "retry_after": None}
    fake.on("POST", "/v1/agents/a1/reservations", 429, {"error": err})
    with pytest.raises(allot.BudgetExceeded) as e:
        fake.sync().reserve(tokens=10**9)
    assert e.value.retry_after is None


def test_throttled_and_busy_retry_after(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 429,
            {"error": {"code": "throttled", "message": "paced", "resource": "tokens", "retry_after": 1.5}}, headers={"Retry-After": "2"})
    with pytest.raises(allot.Throttled) as e:
        fake.sync().reserve(tokens=1)
    assert (e.value.retry_after, e.value.resource) == (1.5, "tokens")
    fake.on("GET", "/v1/report", 429, {"error": {"code": "busy", "message": "2 heavy reads run"}}, headers={"Retry-After": "1"})
    with pytest.raises(allot.Busy) as b:
        fake.sync().report_of()
    assert b.value.retry_after == 1.0


def test_no_daemon_names_the_socket(tmp_path: Any) -> None:
    path = str(tmp_path / "allot.sock")
    with pytest.raises(allot.DaemonUnavailable) as e:
        allot.Client(socket=path).ps()
    assert e.value.socket == path and path in str(e.value)


def test_no_daemon_on_a_dead_socket_names_it(tmp_path: Any) -> None:
    path = str(tmp_path / "dead.sock")
    s = socketlib.socket(socketlib.AF_UNIX)
    s.bind(path)
    s.close()  # bound, nobody listens: connection refused
    with pytest.raises(allot.DaemonUnavailable) as e:
        allot.Client(socket=path).healthz()
    assert path in str(e.value)


async def test_no_daemon_async(tmp_path: Any) -> None:
    path = str(tmp_path / "allot.sock")
    with pytest.raises(allot.DaemonUnavailable) as e:
        await allot.AsyncClient(socket=path).ps()
    assert e.value.socket == path


# ---- usd conversion and amounts --------------------------------------------------------------

@pytest.mark.parametrize(
    "usd,micros",
    [(0.012, 12000), (1, 1_000_000), (0, 0), (Decimal("0.0000001"), 1), (0.1 + 0.2, 300001), ("2.5", 2_500_000), (0.000001, 1)],
)
def test_usd_to_micros(usd: Any, micros: int) -> None:
    assert allot.usd_to_micros(usd) == micros


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf"), True, "lots"])
def test_usd_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        allot.usd_to_micros(bad)


def test_amounts() -> None:
    assert core.amounts({"tokens": 4000, "usd": 0.012, "calls": "2k", "skip": None}) == {"tokens": 4000, "usd_micros": 12000, "calls": "2k"}
    assert core.amounts({"tokens": 10.0}) == {"tokens": 10}
    for bad in ({"usd": 1, "usd_micros": 5}, {"tokens": -1}, {"tokens": 1.5}, {"tokens": True}, {"tokens": [1]}):
        with pytest.raises(ValueError):
            core.amounts(bad)


def test_reserve_sends_usd_micros_and_ttl(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 201, RESERVATION)
    c = fake.sync()
    r = c.reserve(tokens=4000, usd=0.012)
    assert fake.body() == {"resources": {"tokens": 4000, "usd_micros": 12000}, "ttl": "60s"}
    assert r.id == 7 and r.resources == {"tokens": 4000, "usd_micros": 12000} and isinstance(r.info, m.Reservation)
    c.reserve(ttl=1.5, tokens=1)
    assert fake.body()["ttl"] == "1500ms"
    c.reserve(ttl=timedelta(minutes=2), tokens=1)
    assert fake.body()["ttl"] == "120000ms"
    c.reserve(ttl=None, tokens=1)
    assert "ttl" not in fake.body()
    with pytest.raises(ValueError):
        c.reserve()


def test_settle_converts_usd(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 201, RESERVATION)
    settled = {"id": 7, "agent": "a1", "over_limit": [],
               "settled": [{"resource": "tokens", "reserved": 4000, "actual": 3100, "returned": 900, "overrun": 0}]}
    fake.on("POST", "/v1/reservations/7/settle", 200, settled)
    with fake.sync().reserve(tokens=4000, usd=0.012) as r:
        s = r.settle(tokens=3100, usd=0.009)
    assert fake.body() == {"resources": {"tokens": 3100, "usd_micros": 9000}}
    assert s.settled[0].returned == 900 and r.settlement is s and r.closed
    assert [q.method for q in fake.requests] == ["POST", "POST"]  # no release after a settle


# ---- context manager release -----------------------------------------------------------------

def test_leaving_unsettled_releases(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 201, RESERVATION)
    fake.on("DELETE", "/v1/reservations/7", 200, {"id": 7, "agent": "a1", "released": True})
    with fake.sync().reserve(tokens=4000) as r:
        pass
    assert r.closed
    assert [(q.method, q.url.path) for q in fake.requests][-1] == ("DELETE", "/v1/reservations/7")


def test_exception_releases_and_propagates(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 201, RESERVATION)
    fake.on("DELETE", "/v1/reservations/7", 200, {"id": 7, "agent": "a1", "released": True})
    with pytest.raises(KeyError):
        with fake.sync().reserve(tokens=4000):
            raise KeyError("boom")
    assert fake.requests[-1].method == "DELETE"


def test_exception_is_not_masked_by_a_failing_release(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 201, RESERVATION)
    fake.on("DELETE", "/v1/reservations/7", 503, {"error": {"code": "unavailable", "message": "down"}})
    with pytest.raises(KeyError):
        with fake.sync().reserve(tokens=4000):
            raise KeyError("boom")


def test_release_of_an_expired_reservation_is_quiet(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 201, RESERVATION)
    fake.on("DELETE", "/v1/reservations/7", 404, {"error": {"code": "not_found", "message": "no open reservation 7"}})
    with fake.sync().reserve(tokens=4000) as r:
        pass
    assert r.closed


async def test_async_context_manager_releases_on_exception(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 201, RESERVATION)
    fake.on("DELETE", "/v1/reservations/7", 200, {"id": 7, "agent": "a1", "released": True})
    c = fake.aio()
    with pytest.raises(RuntimeError):
        async with c.reserve(tokens=4000, usd=0.012) as r:
            assert isinstance(r, allot.AsyncReservationHandle)
            raise RuntimeError("x")
    assert fake.requests[-1].method == "DELETE" and r.closed
    assert fake.body(0)["resources"] == {"tokens": 4000, "usd_micros": 12000}


async def test_async_await_then_settle(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 201, RESERVATION)
    fake.on("POST", "/v1/reservations/7/settle", 200, {"id": 7, "agent": "a1", "settled": [], "over_limit": []})
    async with fake.aio() as c:
        r = await c.reserve(tokens=4000)
        async with r:
            await r.settle(tokens=10)
    assert [q.method for q in fake.requests] == ["POST", "POST"]


async def test_async_refusal_raises_before_the_block(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 429,
            {"error": {"code": "exhausted", "message": "no", "level": "pool:p", "resource": "usd_micros", "retry_after": 3.0}})
    ran = False
    with pytest.raises(allot.BudgetExceeded) as e:
        async with fake.aio().reserve(usd=1):
            ran = True
    assert not ran and e.value.level == "pool:p" and e.value.retry_after == 3.0


# ---- governed ---------------------------------------------------------------------------------

def test_governed_settles_in_full_or_as_told_and_releases_on_error(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 201, RESERVATION)
    fake.on("POST", "/v1/reservations/7/settle", 200, {"id": 7, "agent": "a1", "settled": [], "over_limit": []})
    fake.on("DELETE", "/v1/reservations/7", 200, {"id": 7, "agent": "a1", "released": True})
    c = fake.sync()

    @allot.governed(tokens=4000, usd=0.012, client=c)
    def full() -> str:
        return "ok"

    assert full() == "ok"
    assert fake.requests[-1].url.path == "/v1/reservations/7/settle" and fake.body() == {"resources": {}}

    @allot.governed(tokens=4000, client=c)
    def told() -> None:
        allot.current_reservation().settle(tokens=5)

    told()
    assert fake.body() == {"resources": {"tokens": 5}}
    n = len(fake.requests)
    assert [q.url.path for q in fake.requests[n - 2:]] == ["/v1/agents/a1/reservations", "/v1/reservations/7/settle"]

    @allot.governed(tokens=1, client=c)
    def fails() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError):
        fails()
    assert fake.requests[-1].method == "DELETE"
    with pytest.raises(LookupError):
        allot.current_reservation()


async def test_governed_async(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/reservations", 201, RESERVATION)
    fake.on("POST", "/v1/reservations/7/settle", 200, {"id": 7, "agent": "a1", "settled": [], "over_limit": []})
    c = fake.aio()

    @allot.governed(tokens=4000, client=c)
    async def work(x: int) -> int:
        await allot.current_reservation().settle(tokens=x)  # type: ignore[misc]
        return x

    assert await work(12) == 12
    assert fake.body() == {"resources": {"tokens": 12}}


# ---- socket discovery -------------------------------------------------------------------------

def test_socket_from_allot_socket() -> None:
    assert core.discover_socket({"ALLOT_SOCKET": "/tmp/x.sock", "XDG_RUNTIME_DIR": "/run/user/1"}, euid=0) == ("/tmp/x.sock", "ALLOT_SOCKET")


def test_socket_default_as_root() -> None:
    assert core.discover_socket({"XDG_RUNTIME_DIR": "/run/user/0"}, euid=0)[0] == "/run/allot/allot.sock"


def test_socket_default_from_xdg() -> None:
    assert core.discover_socket({"XDG_RUNTIME_DIR": "/run/user/1000"}, euid=1000)[0] == "/run/user/1000/allot.sock"


def test_socket_none_found() -> None:
    with pytest.raises(allot.DaemonUnavailable) as e:
        core.discover_socket({}, euid=1000)
    assert "XDG_RUNTIME_DIR" in str(e.value)


def test_client_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOT_SOCKET", "/tmp/env.sock")
    monkeypatch.setenv("ALLOT_AGENT_ID", "worker-3")
    c = allot.Client()
    assert (c.socket, c.socket_source, c.agent_id) == ("/tmp/env.sock", "ALLOT_SOCKET", "worker-3")
    monkeypatch.delenv("ALLOT_AGENT_ID")
    with pytest.raises(allot.NotAnAgent):
        allot.Client().me()


def test_tcp_sends_the_bearer_token() -> None:
    seen: List[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json=[])

    c = allot.Client(base_url="http://127.0.0.1:7070", token="s3cret", transport=httpx.MockTransport(handler))
    assert c.ps() == [] and c.socket is None
    assert seen[0].headers["authorization"] == "Bearer s3cret" and seen[0].url.host == "127.0.0.1"


# ---- agent and operator methods: requests and parsed answers --------------------------------

def test_me_reads_agent_and_compliance(fake: Fake) -> None:
    fake.on("GET", "/v1/agents/a1", 200, AGENT)
    fake.on("GET", "/v1/agents/a1/compliance", 200, COMPLIANCE)
    me = fake.sync().me()
    assert me.agent.held_by.throttle == ["operator"] and me.quota is not None and me.quota.limits["memory"].hard == 2048
    assert me.compliance.resources[0].status == "ok" and me.agent.model_extra == {"something_new": 1}


def test_report_one_request_per_resource(fake: Fake) -> None:
    fake.on("POST", "/v1/agents/a1/usage", 200, {"agent": "a1", "resource": "tokens", "value": 1200, "per": "m", "usage": 1200})
    out = fake.sync().report(tokens=1200, usd=0.5)
    assert [fake.body(i) for i in range(2)] == [{"resource": "tokens", "value": 1200}, {"resource": "usd_micros", "value": 500000}]
    assert set(out) == {"tokens", "usd_micros"}


def test_operator_requests(fake: Fake) -> None:
    act = {"agent": "a b", "action": "x", "outcome": "success", "detail": None}
    for path in ("suspend", "resume", "terminate", "throttle", "clear"):
        fake.on("POST", f"/v1/agents/a%20b/{path}", 200, act)
    fake.on("POST", "/v1/agents", 201, {"id": "w", "pid": 1, "state": "running"})
    fake.on("POST", "/v1/adopt", 201, {"id": "w", "pid": 1, "state": "running"})
    fake.on("PATCH", "/v1/agents/w/quota", 200, {"agent": "w", "group": "g", "limits": {"memory": {}}})
    fake.on("PUT", "/v1/groups/g", 200, {"name": "g"})
    fake.on("POST", "/v1/groups/g", 201, {"name": "g"})
    fake.on("DELETE", "/v1/groups/g", 204)
    fake.on("GET", "/v1/history", 200, [])
    fake.on("GET", "/v1/agents/w/report", 200, text="report text")
    fake.on("GET", "/v1/budgets", 200, {"budgets": [
        {"level": "pool:p", "resource": "usd_micros", "window": {"kind": "calendar", "text": "monthly"}, "hard": 5, "spent": 1},
        {"level": "agent:w", "resource": "tokens", "window": {"kind": "rolling", "length_ms": 60000, "text": "rolling 1m"}, "hard": 9}],
        "reservations": [], "open_reservations": 0, "reservations_truncated": False})
    fake.on("PUT", "/v1/pools/p", 200, {"pool": "p"})
    c = fake.sync()
    c.suspend("a b")
    c.resume("a b", force=True)
    assert fake.requests[-1].url.params["force"] == "true"
    c.throttle("a b", 200)
    assert fake.requests[-1].url.params["cpu"] == "200m"
    assert c.terminate("a b").outcome == "success"
    c.run("python3 -c 'print(1)'", name="w", group="batch", limits={"memory.hard": "300Mi"}, pools=["p"])
    assert fake.body() == {"name": "w", "group": "batch", "command": ["python3", "-c", "print(1)"],
                           "limits": {"memory": {"hard": "300Mi"}}, "pools": ["p"]}
    c.adopt(1234, name="w", group="batch", move=True)
    assert fake.body() == {"name": "w", "group": "batch", "pid": 1234, "move": True}
    c.set_quota("w", {"memory.hard": "300Mi", "cpu": {"soft": "200m"}})
    assert fake.body() == {"limits": {"memory": {"hard": "300Mi"}, "cpu": {"soft": "200m"}}}
    c.put_group("g", {"totals": {"memory": "1Gi"}})
    assert fake.requests[-1].method == "PUT"
    c.put_group("g", create=True, description="d")
    assert fake.requests[-1].method == "POST" and fake.body() == {"description": "d"}
    assert c.delete_group("g") is None
    c.history("w")
    assert fake.requests[-1].url.params["agent"] == "w"
    c.history()
    assert "agent" not in fake.requests[-1].url.params
    assert c.report_of("w", since="2h", format="text") == "report text"
    assert fake.requests[-1].url.params["since"] == "2h" and "until" not in fake.requests[-1].url.params
    pools = c.pools()
    assert [b.level for b in pools.budgets] == ["pool:p"]
    assert c.budgets().budgets[1].window.length_ms == 60000
    c.put_pool("p", {"usd_micros": {"hard": "50M", "calendar": "month"}})
    assert fake.body() == {"usd_micros": {"hard": "50M", "calendar": "month"}}


async def test_async_has_the_same_methods() -> None:
    sync_methods = {n for n in dir(allot.Client) if not n.startswith("_")}
    async_methods = {n for n in dir(allot.AsyncClient) if not n.startswith("_")}
    assert sync_methods - {"close"} <= async_methods
    assert "aclose" in async_methods


async def test_async_operator_and_agent_methods(fake: Fake) -> None:
    fake.on("GET", "/v1/agents", 200, [AGENT])
    fake.on("GET", "/v1/agents/a1", 200, AGENT)
    fake.on("GET", "/v1/agents/a1/compliance", 200, COMPLIANCE)
    fake.on("POST", "/v1/agents/a1/usage", 200, {"agent": "a1", "resource": "tokens", "value": 5})
    async with fake.aio() as c:
        agents = await c.ps()
        assert agents[0].id == "a1" and (await c.list())[0].group == "llm"
        assert (await c.me()).compliance.throttled
        assert (await c.report(tokens=5))["tokens"].value == 5
