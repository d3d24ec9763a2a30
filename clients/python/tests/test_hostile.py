"""The client used carelessly and by a hostile agent: bad input refused
before anything is sent (a ``ValueError`` naming what is wrong) or answered
by the daemon's typed error, never a request on another route, never an
httpx or pydantic exception reaching the user; governed generators, the
agent channel rewritten under its reader, and the public types under
``mypy --strict``."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import httpx
import pydantic
import pytest

import allot
from allot import models as m

# ---- a recording transport ------------------------------------------------------------------

AGENT = {
    "id": "a1", "group": "llm", "state": "running", "exit": None, "exit_cause": None, "pids": [42],
    "usage": {}, "disk_io_source": None, "last_action": "none", "held_by": {"freeze": [], "throttle": []},
    "quota": {"agent": "a1", "group": "llm", "limits": {}}, "uid": 0, "root": False, "budgets": None,
}


class Recorder:
    """Answers every request with ``answer`` and records it."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: List[httpx.Request] = []

    def handler(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        return self.answer(req)

    def client(self, **kw: Any) -> allot.Client:
        return allot.Client(socket="/nonexistent.sock", agent_id=kw.pop("agent_id", "a1"), transport=httpx.MockTransport(self.handler), **kw)

    def aclient(self, **kw: Any) -> allot.AsyncClient:
        return allot.AsyncClient(socket="/nonexistent.sock", agent_id=kw.pop("agent_id", "a1"),
                                 transport=httpx.MockTransport(self.handler), **kw)


def not_found(req: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json={"error": {"code": "not_found", "message": f"no route {req.url.raw_path!r}"}})


# ---- path segments: never another route -----------------------------------------------------

ID_METHODS: Dict[str, Callable[[allot.Client, str], Any]] = {
    "agent": lambda c, a: c.agent(a),
    "me": lambda c, a: c.me(a),
    "quota": lambda c, a: c.quota(a),
    "set_quota": lambda c, a: c.set_quota(a, {"memory.hard": "300Mi"}),
    "compliance": lambda c, a: c.compliance(a),
    "analysis": lambda c, a: c.analysis(a),
    "budgets": lambda c, a: c.budgets(a),
    "recommendations": lambda c, a: c.recommendations(a),
    "report_of": lambda c, a: c.report_of(a),
    "report": lambda c, a: c.report(tokens=1, agent_id=a),
    "reserve": lambda c, a: c.reserve(tokens=1, agent_id=a),
    "ack": lambda c, a: c.ack(1, agent_id=a),
    "terminate": lambda c, a: c.terminate(a),
    "stop": lambda c, a: c.stop(a),
    "suspend": lambda c, a: c.suspend(a),
    "resume": lambda c, a: c.resume(a),
    "throttle": lambda c, a: c.throttle(a, 100),
    "clear": lambda c, a: c.clear(a),
    "pools": lambda c, a: c.pools(a),
    "put_pool": lambda c, a: c.put_pool(a, {"tokens": "1k/min"}),
    "delete_pool": lambda c, a: c.delete_pool(a),
    "put_group": lambda c, a: c.put_group(a, {"description": "x"}),
    "delete_group": lambda c, a: c.delete_group(a),
}


@pytest.mark.parametrize("bad", ["", ".", ".."])
@pytest.mark.parametrize("method", sorted(ID_METHODS))
def test_a_dot_or_empty_name_is_refused_before_sending(method: str, bad: str) -> None:
    # httpx removes dot segments: /v1/agents/../budgets was sent as /v1/budgets (every budget),
    # /v1/agents/. as /v1/agents/ (the list); an empty agent id fell back on the client's own.
    rec = Recorder(not_found)
    with rec.client() as c:
        with pytest.raises(ValueError) as e:
            ID_METHODS[method](c, bad)
    assert repr(bad) in str(e.value), f"the message names the value: {e.value}"
    assert rec.requests == [], f"nothing is sent, not {[str(r.url) for r in rec.requests]}"


async def test_a_dot_name_is_refused_before_sending_async() -> None:
    rec = Recorder(not_found)
    async with rec.aclient() as c:
        for call in (lambda: c.budgets(".."), lambda: c.report_of(".."), lambda: c.agent("."), lambda: c.quota("")):
            with pytest.raises(ValueError):
                await call()
    assert rec.requests == []


@pytest.mark.parametrize("rid", [True, 1.5, "..", "", "7/../../agents", -1, None])
def test_a_reservation_id_is_a_whole_number(rid: Any) -> None:
    rec = Recorder(not_found)
    with rec.client() as c:
        for call in (lambda: c.settle(rid, tokens=1), lambda: c.release(rid)):
            with pytest.raises(ValueError) as e:
                call()
            assert "reservation id" in str(e.value)
    assert rec.requests == []


def test_an_operator_asking_for_agent_dotdot_does_not_get_every_budget(daemon: Any, client: allot.Client) -> None:
    daemon.wait_running("sleeper")
    with pytest.raises(ValueError):
        client.budgets("..")
    with pytest.raises(ValueError):
        client.report_of("..")
    with pytest.raises(ValueError):
        client.agent(".")
    assert client.budgets("sleeper").budgets, "a real id still works"


# ---- request values: a ValueError naming the field, never a pydantic error ------------------

BAD_REQUESTS: Dict[str, Callable[[allot.Client], Any]] = {
    "run name not a string": lambda c: c.run(["true"], name=5, group="g"),  # type: ignore[arg-type]
    "run limit field unknown": lambda c: c.run(["true"], name="n", group="g", limits={"memory": {"hardd": "1Gi"}}),
    "set_quota field unknown": lambda c: c.set_quota("a1", {"memory": {"hardd": 5}}),
    "set_quota value a list": lambda c: c.set_quota("a1", {"memory": {"hard": [1]}}),
    "adopt pid not a number": lambda c: c.adopt("init", name="n", group="g"),  # type: ignore[arg-type]
    "put_pool budget unknown field": lambda c: c.put_pool("p", {"tokens": {"hardd": 5}}),
    "put_group limits not a table": lambda c: c.put_group("g", {"limits": 5}),
    "put_group unknown field": lambda c: c.put_group("g", {"limitz": {}}),
    "ack seq not a number": lambda c: c.ack("x"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_bad_request_value_is_a_plain_value_error(case: str) -> None:
    rec = Recorder(not_found)
    with rec.client() as c:
        with pytest.raises(ValueError) as e:
            BAD_REQUESTS[case](c)
    assert not isinstance(e.value, pydantic.ValidationError), f"a pydantic error reached the user: {e.value!r}"
    assert rec.requests == []


def test_a_bad_request_value_names_its_field() -> None:
    rec = Recorder(not_found)
    with rec.client() as c:
        with pytest.raises(ValueError, match=r"limits\.memory\.hardd"):
            c.set_quota("a1", {"memory": {"hardd": 5}})
        with pytest.raises(ValueError, match=r"seq"):
            c.ack("x")  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [2**64, 2**70])
def test_an_amount_above_the_daemons_largest_is_refused(amount: int) -> None:
    rec = Recorder(not_found)
    with rec.client() as c:
        with pytest.raises(ValueError, match="tokens"):
            c.reserve(tokens=amount)
        with pytest.raises(ValueError, match="tokens"):
            c.report(tokens=amount)
        with pytest.raises(ValueError, match="usd"):
            c.reserve(usd=1e30)
    assert rec.requests == []


def test_report_without_an_amount_is_refused() -> None:
    rec = Recorder(not_found)
    with rec.client() as c:
        with pytest.raises(ValueError, match="at least one amount"):
            c.report()
        with pytest.raises(ValueError, match="at least one amount"):
            c.report(tokens=None)
    assert rec.requests == []


@pytest.mark.parametrize("token", ["tökén", "two words", "line\nbreak", ""])
def test_a_token_that_cannot_be_a_header_is_refused_when_made(token: str) -> None:
    with pytest.raises(ValueError, match="token"):
        allot.Client(base_url="http://127.0.0.1:9", token=token)
    with pytest.raises(ValueError, match="token"):
        allot.AsyncClient(base_url="http://127.0.0.1:9", token=token)


def test_a_token_read_from_a_file_with_its_newline_is_sent_without_it() -> None:
    rec = Recorder(lambda req: httpx.Response(200, json=[]))
    c = allot.Client(base_url="http://127.0.0.1:9", token="s3cret\n", transport=httpx.MockTransport(rec.handler))
    c.ps()
    assert rec.requests[0].headers["authorization"] == "Bearer s3cret"


# ---- answers the client cannot read: a typed error ------------------------------------------

UNREADABLE = {
    "200 html": lambda req: httpx.Response(200, text="<html>a proxy's page</html>"),
    "200 bad utf-8": lambda req: httpx.Response(200, content=b"\xff\xfe"),
    "200 wrong shape": lambda req: httpx.Response(200, json=[1, 2, 3]),
    "302 redirect": lambda req: httpx.Response(302, headers={"location": "/elsewhere"}),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_an_unreadable_answer_is_a_typed_error(case: str) -> None:
    rec = Recorder(UNREADABLE[case])
    with rec.client() as c:
        with pytest.raises(allot.AllotError) as e:
            c.agent("a1")
    assert isinstance(e.value, allot.ServerError) and e.value.code == "bad_answer"
    assert e.value.status == int(case.split()[0])
    assert "GET /v1/agents/a1" in str(e.value), "the message names the request"


async def test_an_unreadable_answer_is_a_typed_error_async() -> None:
    rec = Recorder(UNREADABLE["200 html"])
    async with rec.aclient() as c:
        with pytest.raises(allot.ServerError) as e:
            await c.host()
    assert e.value.code == "bad_answer"


def test_a_proxys_html_502_and_an_empty_500_are_server_errors() -> None:
    for answer, status in ((lambda req: httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"), 502),
                           (lambda req: httpx.Response(500), 500)):
        with Recorder(answer).client() as c:
            with pytest.raises(allot.ServerError) as e:
                c.host()
            assert e.value.status == status and e.value.message


def test_a_malformed_event_in_the_stream_is_a_typed_error() -> None:
    def sse(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=b'id: 1\ndata: {"seq": 1, "not": "an event"\n\n')

    with Recorder(sse).client() as c:
        with pytest.raises(allot.ServerError) as e:
            next(iter(c.events()))
    assert e.value.code == "bad_answer"


# ---- governed generators hold their reservation while they run ------------------------------

def test_a_governed_generator_holds_its_reservation_while_it_runs(daemon: Any, client: allot.Client) -> None:
    daemon.wait_running("sleeper")
    c = daemon.client(agent_id="sleeper")

    def open_ids() -> List[int]:
        return [r.id for r in client.budgets("sleeper").reservations]

    @allot.governed(tokens=50, client=c)
    def words() -> Iterator[str]:
        r = allot.current_reservation()
        assert isinstance(r, allot.ReservationHandle)
        yield f"held {r.id}"
        assert open_ids() == [r.id], "held between items"
        yield "second"
        r.settle(tokens=20)

    got = []
    for w in words():
        got.append(w)
        held = open_ids()
        assert len(held) == 1, "the reservation is held while the consumer reads"
    assert got[1] == "second" and open_ids() == []
    spent = next(v for v in client.budgets("sleeper").budgets if v.level == "agent:sleeper" and v.resource == "tokens")
    assert spent.spent == 20, "settled with what the body said"

    @allot.governed(tokens=30, client=c)
    def fails() -> Iterator[int]:
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        list(fails())
    assert open_ids() == []
    spent_after = next(v for v in client.budgets("sleeper").budgets if v.level == "agent:sleeper" and v.resource == "tokens")
    assert spent_after.spent == 20, "released when it raises"

    @allot.governed(tokens=40, client=c)
    def endless() -> Iterator[int]:
        while True:
            yield 1

    for _ in endless():
        break
    assert open_ids() == [], "closed by the consumer: settled as reserved, nothing left open"
    spent_end = next(v for v in client.budgets("sleeper").budgets if v.level == "agent:sleeper" and v.resource == "tokens")
    assert spent_end.spent == 60


async def test_a_governed_async_generator_holds_its_reservation(daemon: Any, client: allot.Client) -> None:
    daemon.wait_running("sleeper")
    ids: List[int] = []

    @allot.governed(tokens=10, client=lambda: allot.AsyncClient(daemon.socket, agent_id="sleeper"))
    async def stream() -> Any:
        r = allot.current_reservation()
        ids.append(r.id)
        yield 1
        assert allot.current_reservation() is r
        yield 2

    got = [x async for x in stream()]
    assert got == [1, 2] and len(ids) == 1
    assert client.budgets("sleeper").reservations == []
    spent = next(v for v in client.budgets("sleeper").budgets if v.level == "agent:sleeper" and v.resource == "tokens")
    assert spent.spent == 10


def test_current_reservation_is_not_left_set_between_items() -> None:
    rec = Recorder(lambda req: httpx.Response(200, json={
        "id": 3, "agent": "a1", "resources": {"tokens": 1}, "levels": {"tokens": ["agent:a1"]},
        "created_at": "2026-01-01T00:00:00Z", "expires_at": "2026-01-01T00:01:00Z", "expires_ms": 1})
        if req.method == "POST" and req.url.path.endswith("/reservations") else
        httpx.Response(200, json={"id": 3, "agent": "a1", "settled": [], "over_limit": []}))
    c = rec.client()

    @allot.governed(tokens=1, client=c)
    def gen() -> Iterator[int]:
        yield allot.current_reservation().id

    it = gen()
    assert next(it) == 3
    with pytest.raises(LookupError):
        allot.current_reservation()  # the consumer is not inside the governed body
    assert list(it) == []


def test_governed_checks_its_amounts_when_it_decorates() -> None:
    with pytest.raises(ValueError, match="tokens"):
        allot.governed(tokens=-1)
    with pytest.raises(ValueError, match="usd"):
        allot.governed(usd="lots")
    with pytest.raises(ValueError, match="ttl"):
        allot.governed(tokens=1, ttl=-5)


# ---- the agent channel ----------------------------------------------------------------------

def line(seq: int, kind: str, **fields: Any) -> str:
    return json.dumps(dict(seq=seq, type=kind, at_ms=1_000 + seq, **fields)) + "\n"


def ack_recorder() -> Recorder:
    return Recorder(lambda req: httpx.Response(200, json={"agent": "a1", "request_seq": json.loads(req.content)["seq"]}))


def test_a_channel_rewritten_past_the_read_offset_is_read_from_its_start(tmp_path: Path) -> None:
    # allot makes the channel anew (truncates it) when it starts the agent again; a reader that
    # polls after the new file grew past its old offset read from the middle and lost the start.
    path = tmp_path / "a1.jsonl"
    rec = ack_recorder()
    ch = allot.AgentChannel(path, client=rec.client())
    heard: List[Any] = []
    ch.on("*", lambda msg: heard.append((msg.seq, msg.type)))
    path.write_text(line(1, "quota") + line(2, "throttle", factor=0.5))
    assert [(x.seq, x.type) for x in ch.poll()] == [(1, "quota"), (2, "throttle")]
    path.write_text(line(1, "quota", note="the agent's next run, a longer first line") + line(2, "scale_down") + line(3, "termination"))
    heard.clear()
    ch.poll()
    assert heard == [(1, "quota"), (2, "scale_down"), (3, "termination")]
    assert ch.last_seq == 3


def test_a_channel_replaced_by_another_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "a1.jsonl"
    ch = allot.AgentChannel(path, ack=False)
    path.write_text(line(1, "quota"))
    assert [x.seq for x in ch.poll()] == [1]
    other = tmp_path / "new.jsonl"
    other.write_text(line(1, "quota") + line(2, "suspend"))
    other.replace(path)
    assert [x.seq for x in ch.poll()] == [1, 2]


def test_an_ack_that_cannot_be_sent_does_not_lose_the_rest_of_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    # No daemon can be found (not started by allot, not root): the first acknowledgement
    # raised out of poll() and the messages after it, already read, were never handled.
    for k in ("ALLOT_SOCKET", "XDG_RUNTIME_DIR", "ALLOT_AGENT_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    path = tmp_path / "a1.jsonl"
    path.write_text(line(1, "throttle") + line(2, "scale_down") + line(3, "termination"))
    ch = allot.AgentChannel(path)
    heard: List[int] = []
    ch.on("*", lambda msg: heard.append(msg.seq))
    with caplog.at_level(logging.WARNING, logger="allot"):
        ch.poll()
    assert heard == [1, 2, 3]
    assert "acknowledging" in caplog.text


def test_poll_with_an_async_client_refuses_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "a1.jsonl"
    path.write_text(line(1, "throttle") + line(2, "throttle"))
    ch = allot.AgentChannel(path, client=ack_recorder().aclient())
    heard: List[int] = []
    ch.on("throttle", lambda msg: heard.append(msg.seq))
    with pytest.raises(TypeError):
        ch.poll()
    assert heard == [], "nothing read, nothing handled"
    ch.client = ack_recorder().client()
    ch.poll()
    assert heard == [1, 2], "the messages are still there to handle"


async def test_apoll_with_a_sync_client_refuses_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "a1.jsonl"
    path.write_text(line(1, "throttle") + line(2, "throttle"))
    ch = allot.AgentChannel(path, client=ack_recorder().client())
    heard: List[int] = []
    ch.on("throttle", lambda msg: heard.append(msg.seq))
    with pytest.raises(TypeError):
        await ch.apoll()
    assert heard == [], "nothing read, nothing handled"
    ch.client = ack_recorder().aclient()
    await ch.apoll()
    assert heard == [1, 2]


def test_garbage_and_partial_lines_are_skipped_and_completed(tmp_path: Path) -> None:
    path = tmp_path / "a1.jsonl"
    ch = allot.AgentChannel(path, ack=False)
    whole = line(4, "throttle")
    path.write_bytes(b"garbage\n[1,2]\n{\"seq\": \"x\"}\n\xff\xfe\n" + line(3, "quota").encode() + whole[:10].encode())
    assert [x.seq for x in ch.poll()] == [3]
    with open(path, "a") as f:
        f.write(whole[10:])
    assert [x.seq for x in ch.poll()] == [4]


# ---- a hostile agent, through the client ----------------------------------------------------

HOSTILE = textwrap.dedent(
    """
    import json, sys
    import allot

    victim_rid = int(sys.argv[2])
    c = allot.Client()
    out = {}

    def attempt(label, f):
        try:
            f()
            out[label] = "allowed"
        except allot.AllotError as e:
            out[label] = [type(e).__name__, e.status]
        except Exception as e:
            out[label] = ["leak", type(e).__name__, str(e)]

    attempt("settle", lambda: c.settle(victim_rid, tokens=1))
    attempt("release", lambda: c.release(victim_rid))
    for name, call in [
        ("agent", lambda: c.agent("sleeper")), ("me", lambda: c.me("sleeper")), ("quota", lambda: c.quota("sleeper")),
        ("compliance", lambda: c.compliance("sleeper")), ("analysis", lambda: c.analysis("sleeper")),
        ("budgets", lambda: c.budgets("sleeper")), ("recommendations", lambda: c.recommendations("sleeper")),
        ("report_of", lambda: c.report_of("sleeper")), ("report", lambda: c.report(tokens=1, agent_id="sleeper")),
        ("reserve", lambda: c.reserve(tokens=1, agent_id="sleeper")), ("ack", lambda: c.ack(1, agent_id="sleeper")),
        ("set_quota", lambda: c.set_quota("sleeper", {"tokens.hard": "1/min"})),
        ("own set_quota", lambda: c.set_quota("hostile", {"tokens.hard": "1M/min"})),
        ("terminate", lambda: c.terminate("sleeper")), ("stop", lambda: c.stop("sleeper")),
        ("suspend", lambda: c.suspend("sleeper")), ("throttle", lambda: c.throttle("sleeper", 10)),
        ("own resume force", lambda: c.resume("hostile", force=True)),
        ("put_pool", lambda: c.put_pool("evil", {"tokens": "1/min"})), ("put_group", lambda: c.put_group("py_test", {"description": "x"})),
        ("delete_group", lambda: c.delete_group("py_test")), ("host", lambda: c.host()), ("metrics", lambda: c.metrics()),
        ("adopt", lambda: c.adopt(1, name="init", group="py_test")),
    ]:
        attempt(name, call)
    out["seen agents"] = sorted({a.id for a in c.ps()} | {e.agent or "" for e in c.events(follow=False) if e.agent}
                                | {r.agent for r in c.report_of()} | {v.level for v in c.budgets().budgets})
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
    """
)


def test_a_hostile_agent_cannot_act_on_another_through_the_client(daemon: Any, client: allot.Client, tmp_path: Path) -> None:
    daemon.wait_running("sleeper")
    victim = client.reserve(tokens=100, agent_id="sleeper")
    client.report(tokens=3, agent_id="sleeper")
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE)
    result = tmp_path / "out.json"
    tmp_path.chmod(0o777)
    client.run([sys.executable, str(script), str(result), str(victim.id)], name="hostile", group="py_test", user="root",
               limits={"tokens": {"hard": "10k/min"}})
    deadline = time.monotonic() + 60
    while not result.exists() or result.stat().st_size == 0:
        a = client.agent("hostile")
        assert a.state == "running" or result.exists(), f"the agent ended: {a.exit} {daemon.logs()}"
        assert time.monotonic() < deadline, "the hostile agent did not finish in 60 s"
        time.sleep(0.1)
    time.sleep(0.2)
    out = json.loads(result.read_text())
    assert out.pop("settle") == ["NotFound", 404] and out.pop("release") == ["NotFound", 404], "another's reservation is not its own"
    assert out.pop("seen agents") == ["agent:hostile", "hostile"], "it sees only itself"
    assert {k: v for k, v in out.items() if v != ["Forbidden", 403]} == {}, "every other attempt is the typed 403"
    assert [r.id for r in client.budgets("sleeper").reservations] == [victim.id], "the victim's reservation is still held"
    tokens = next(v for v in client.budgets("sleeper").budgets if v.level == "agent:sleeper" and v.resource == "tokens")
    assert (tokens.spent, tokens.reserved) == (3, 100)
    assert client.agent("sleeper").state == "running"
    assert client.quota("sleeper").limits["tokens"].hard == 10_000


# ---- the public types -----------------------------------------------------------------------

USER_SCRIPT = textwrap.dedent(
    """
    from __future__ import annotations

    from typing import Iterator, List, Optional

    import allot
    from allot import models as m

    client = allot.Client()
    me: m.Me = client.me()
    try:
        with client.reserve(tokens=4000, usd=0.012) as r:
            s: m.Settlement = r.settle(tokens=3100)
    except allot.BudgetExceeded as e:
        wait: Optional[float] = e.retry_after

    @allot.governed(tokens=4000, usd=0.01)
    def ask(q: str) -> str:
        allot.current_reservation()
        return q

    answer: str = ask("x")
    events: Iterator[m.Event] = client.events(follow=False)
    agents: List[m.AgentStatus] = client.ps()

    channel = allot.AgentChannel()

    @channel.on("termination")
    def bye(msg: allot.ChannelMessage) -> str:
        return f"leaving within {msg.fields.get('grace_ms')} ms"

    def shrink(msg: allot.ChannelMessage) -> None:
        pass

    channel.on("scale_down", shrink)
    channel.run(until=0)
    """
)


def test_a_user_script_type_checks_under_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    script = tmp_path / "user_agent.py"
    script.write_text(USER_SCRIPT)
    run = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
