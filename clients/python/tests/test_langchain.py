"""The LangChain rate limiter (``allot.langchain``) with a fake chat model
(no network) against a real daemon: reservations made before each call and
settled with the call's real usage, refusals waited out, ``blocking=False``,
``max_wait``, the async and batch paths, and the import without langchain."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any, Callable, Iterator, List, Optional

import httpx
import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import CallbackManagerForLLMRun  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult  # noqa: E402

import allot  # noqa: E402
from allot.langchain import AllotRateLimiter, usage_of  # noqa: E402

from conftest import Daemon  # noqa: E402

AGENT = "writer"  # a long window: what the calls spent stays counted
PACER = "pacer"  # 3k tokens per rolling second: refusals that clear soon
FLEET = f"""
[policy]
analytics_interval = "2s"
terminate_grace = "1s"

[groups.py_lc]
description = "the LangChain adapter's tests"
limits.memory = {{ soft = "200Mi", hard = "400Mi" }}

[[agents]]
name = "{AGENT}"
group = "py_lc"
command = ["sleep", "600"]
limits.tokens = {{ hard = "100k/h", action = "warn" }}
limits.usd_micros = {{ hard = "1M/day", action = "warn" }}

[[agents]]
name = "{PACER}"
group = "py_lc"
command = ["sleep", "600"]
limits.tokens = {{ hard = "3k/s", action = "warn" }}
"""


class FakeChat(BaseChatModel):
    """A chat model without network: answers "ok" and reports ``tokens`` used
    (``usage_metadata``, or ``llm_output`` with ``via_llm_output``, or nothing
    with ``tokens=None``). ``tokens_of`` picks the usage from the prompt;
    ``probe`` runs inside each call; ``fail`` makes the call raise."""

    tokens: Optional[int] = 700
    tokens_of: Optional[Callable[[str], int]] = None
    via_llm_output: bool = False
    fail: bool = False
    delay_of: Optional[Callable[[str], float]] = None
    probe: Optional[Callable[[], None]] = None

    @property
    def _llm_type(self) -> str:
        return "fake-allot"

    def _answer(self, messages: List[BaseMessage]) -> ChatResult:
        if self.probe is not None:
            self.probe()
        if self.fail:
            raise RuntimeError("the fake model failed")
        prompt = str(messages[-1].content)
        tokens = self.tokens_of(prompt) if self.tokens_of is not None else self.tokens
        if tokens is None:
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="ok"))])
        inp = tokens // 3
        if self.via_llm_output:
            usage = {"prompt_tokens": inp, "completion_tokens": tokens - inp, "total_tokens": tokens}
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="ok"))], llm_output={"token_usage": usage})
        msg = AIMessage(content="ok", usage_metadata={"input_tokens": inp, "output_tokens": tokens - inp, "total_tokens": tokens})
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _generate(self, messages: List[BaseMessage], stop: Optional[List[str]] = None,
                  run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any) -> ChatResult:
        if self.delay_of is not None:
            time.sleep(self.delay_of(str(messages[-1].content)))
        return self._answer(messages)

    async def _agenerate(self, messages: List[BaseMessage], stop: Optional[List[str]] = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        if self.delay_of is not None:
            await asyncio.sleep(self.delay_of(str(messages[-1].content)))
        return self._answer(messages)


@pytest.fixture
def lc_daemon(strict_answers: List[str]) -> Iterator[Daemon]:
    d = Daemon(FLEET)
    try:
        d.wait_running(AGENT)
        d.wait_running(PACER)
        yield d
    finally:
        d.stop()


@pytest.fixture
def op(lc_daemon: Daemon) -> Iterator[allot.Client]:
    """The operator's client (what the tests check with)."""
    with lc_daemon.client() as c:
        yield c


@pytest.fixture
def writer(lc_daemon: Daemon) -> Iterator[allot.Client]:
    """A client acting for the agent ``writer`` (the limiter's)."""
    with lc_daemon.client(agent_id=AGENT) as c:
        yield c


@pytest.fixture
def pacer(lc_daemon: Daemon) -> Iterator[allot.Client]:
    """A client acting for the agent ``pacer``."""
    with lc_daemon.client(agent_id=PACER) as c:
        yield c


def spent(op: allot.Client, resource: str = "tokens", agent: str = AGENT) -> "tuple[int, int]":
    """The agent budget's (spent, reserved) of ``resource``."""
    b = op.budgets(agent)
    v = next(v for v in b.budgets if v.resource == resource and v.level == f"agent:{agent}")
    return v.spent, v.reserved


def test_each_call_reserves_then_settles_with_the_real_usage(op: allot.Client, writer: allot.Client) -> None:
    price = 2e-6  # dollars a token
    limiter = AllotRateLimiter(writer, tokens=1000, usd=0.01,
                               settle=lambda u: {"tokens": u["total_tokens"], "usd": u["total_tokens"] * price})
    during: List["tuple[int, int]"] = []
    model = FakeChat(tokens=700, rate_limiter=limiter, callbacks=limiter.callbacks(), probe=lambda: during.append(spent(op)))
    assert model.invoke("hello").content == "ok"
    assert during == [(0, 1000)], "the estimate is held while the model runs"
    assert spent(op) == (700, 0) and spent(op, "usd_micros") == (1400, 0)
    model.invoke("again")
    assert spent(op) == (1400, 0) and spent(op, "usd_micros") == (2800, 0)
    assert (limiter.settled, limiter.refusals) == (2, 0)
    assert limiter.last_usage == {"input_tokens": 233, "output_tokens": 467, "total_tokens": 700}
    assert op.budgets(AGENT).open_reservations == 0


def test_usage_from_llm_output_or_none_and_a_failed_call(op: allot.Client, writer: allot.Client) -> None:
    limiter = AllotRateLimiter(writer, tokens=1000)
    # The provider's llm_output["token_usage"] when the message has no usage_metadata.
    FakeChat(tokens=450, via_llm_output=True, rate_limiter=limiter, callbacks=limiter.callbacks()).invoke("hi")
    assert spent(op) == (450, 0)
    # No usage at all: settled as reserved.
    FakeChat(tokens=None, rate_limiter=limiter, callbacks=limiter.callbacks()).invoke("hi")
    assert spent(op) == (1450, 0) and limiter.last_usage is None
    # A call that fails releases its reservation: nothing charged.
    with pytest.raises(RuntimeError, match="fake model failed"):
        FakeChat(fail=True, rate_limiter=limiter, callbacks=limiter.callbacks()).invoke("hi")
    assert spent(op) == (1450, 0)
    assert op.budgets(AGENT).open_reservations == 0


def test_without_the_handler_the_reservation_stays_until_its_ttl(op: allot.Client, writer: allot.Client) -> None:
    limiter = AllotRateLimiter(writer, tokens=1000, ttl="60s")
    FakeChat(tokens=10, rate_limiter=limiter).invoke("hi")  # no callbacks: nobody settles
    assert spent(op) == (0, 1000) and limiter.settled == 0


def test_a_refusal_is_waited_out(op: allot.Client, pacer: allot.Client) -> None:
    # 3k tokens per rolling second; each call spends its whole 1000-token estimate.
    limiter = AllotRateLimiter(pacer, tokens=1000, max_wait=20)
    model = FakeChat(tokens=1000, rate_limiter=limiter, callbacks=limiter.callbacks())
    t0 = time.monotonic()
    for _ in range(4):
        model.invoke("go")  # the fourth is refused until the first spend leaves the window
    took = time.monotonic() - t0
    assert limiter.refusals >= 1 and limiter.waited > 0
    assert 0.2 < took < 5, f"4000 tokens at 3000 a second took {took:.2f} s"
    assert limiter.settled == 4 and spent(op, agent=PACER)[1] == 0


def test_non_blocking_answers_false_and_max_wait_raises(op: allot.Client, pacer: allot.Client) -> None:
    held = op.reserve(tokens=3000, ttl="30s", agent_id=PACER)
    limiter = AllotRateLimiter(pacer, tokens=1000, max_wait=0.5)
    assert limiter.acquire(blocking=False) is False
    t0 = time.monotonic()
    with pytest.raises(allot.BudgetExceeded) as e:
        limiter.acquire()
    took = time.monotonic() - t0
    assert 0.4 < took < 3, f"max_wait 0.5 s, raised after {took:.2f} s"
    assert e.value.retry_after is not None and e.value.level == f"agent:{PACER}"
    held.release()
    assert limiter.acquire(blocking=False) is True
    # An estimate above the limit can never fit: raised at once, even blocking without max_wait.
    big = AllotRateLimiter(pacer, tokens=4000)
    t0 = time.monotonic()
    with pytest.raises(allot.BudgetExceeded) as e:
        big.acquire()
    assert e.value.retry_after is None and time.monotonic() - t0 < 2


class StreamingFake(FakeChat):
    """Streams its answer in three chunks, the usage on the last."""

    def _stream(self, messages: List[BaseMessage], stop: Optional[List[str]] = None,
                run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for word in ("o", "k"):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))
        tokens = self.tokens or 0
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata={
            "input_tokens": 0, "output_tokens": tokens, "total_tokens": tokens}))


def test_a_streamed_call_is_settled_at_its_end(op: allot.Client, writer: allot.Client) -> None:
    limiter = AllotRateLimiter(writer, tokens=1000)
    model = StreamingFake(tokens=321, rate_limiter=limiter, callbacks=limiter.callbacks())
    text = ""
    for chunk in model.stream("hi"):
        text += str(chunk.content)
        if text == "o":
            assert spent(op) == (0, 1000), "held while the answer streams"
    assert text == "ok" and spent(op) == (321, 0) and limiter.settled == 1


def test_batch_in_threads_settles_each_call(op: allot.Client, writer: allot.Client) -> None:
    limiter = AllotRateLimiter(writer, tokens=500)
    model = FakeChat(tokens_of=len, delay_of=lambda p: 0.05 * (4 - len(p)), rate_limiter=limiter, callbacks=limiter.callbacks())
    answers = model.batch(["a", "bb", "ccc"], config={"max_concurrency": 3})
    assert [a.content for a in answers] == ["ok"] * 3
    assert spent(op) == (6, 0) and limiter.settled == 3


async def test_async_calls_reserve_and_settle(op: allot.Client, lc_daemon: Daemon) -> None:
    async with allot.AsyncClient(lc_daemon.socket, agent_id=AGENT) as ac:
        limiter = AllotRateLimiter(async_client=ac, tokens=800, max_wait=20)
        during: List["tuple[int, int]"] = []
        model = FakeChat(tokens=600, rate_limiter=limiter, callbacks=limiter.callbacks(), probe=lambda: during.append(spent(op)))
        assert (await model.ainvoke("hello")).content == "ok"
        assert during == [(0, 800)]
        assert spent(op) == (600, 0)
        # Concurrent calls (abatch: each in its own task, their ends out of order) each settle theirs.
        model2 = FakeChat(tokens_of=len, delay_of=lambda p: 0.05 * (5 - len(p)), rate_limiter=limiter, callbacks=limiter.callbacks())
        await model2.abatch(["a", "bb", "ccc", "dddd"])
        assert spent(op) == (610, 0) and limiter.settled == 5
    async with allot.AsyncClient(lc_daemon.socket, agent_id=PACER) as ac:
        # 4 * 800 > 3000 within the 1 s window: one waits, asleep on the loop.
        limiter = AllotRateLimiter(async_client=ac, tokens=800, max_wait=20)
        model3 = FakeChat(tokens=800, rate_limiter=limiter, callbacks=limiter.callbacks())
        t0 = time.monotonic()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.1)
                ticks += 1

        t = asyncio.create_task(ticker())
        for _ in range(4):
            await model3.ainvoke("more")
        t.cancel()
        took = time.monotonic() - t0
        assert limiter.refusals >= 1 and took > 0.3 and ticks >= 2, "the wait let the loop run"
        assert spent(op, agent=PACER)[1] == 0 and limiter.settled == 4
        # Non-blocking and max_wait, awaited (once the window is empty again).
        deadline = time.monotonic() + 5
        while spent(op, agent=PACER) != (0, 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        held = op.reserve(tokens=3000, ttl="30s", agent_id=PACER)
        assert await limiter.aacquire(blocking=False) is False
        quick = AllotRateLimiter(async_client=ac, tokens=100, max_wait=0.3)
        with pytest.raises(allot.BudgetExceeded):
            await quick.aacquire()
        held.release()


def test_throttled_is_waited_out_like_a_refusal() -> None:
    calls: List[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(429, json={"error": {"code": "throttled", "message": "paced", "resource": "tokens",
                                                       "retry_after": 0.1}})
        body = json.loads(request.content)
        return httpx.Response(201, json={"id": 7, "agent": "a1", "resources": body["resources"]})

    c = allot.Client(socket="/nonexistent.sock", agent_id="a1", transport=httpx.MockTransport(handler))
    limiter = AllotRateLimiter(c, tokens=100)
    assert limiter.acquire() is True
    assert len(calls) == 2 and limiter.refusals == 1 and limiter.waited >= 0.1
    calls.clear()
    assert limiter.acquire(blocking=False) is False


def test_bad_arguments_fail_at_once() -> None:
    with pytest.raises(ValueError, match="estimate"):
        AllotRateLimiter()
    with pytest.raises(ValueError, match="tokens"):
        AllotRateLimiter(tokens=-1)
    with pytest.raises(ValueError, match="max_wait"):
        AllotRateLimiter(tokens=1, max_wait=-1)
    with pytest.raises(TypeError, match="AsyncClient"):
        AllotRateLimiter(allot.AsyncClient(socket="/nonexistent.sock"), tokens=1)  # type: ignore[arg-type]


def test_usage_of_sums_generations() -> None:
    from langchain_core.outputs import LLMResult

    m1 = AIMessage(content="a", usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3})
    m2 = AIMessage(content="b", usage_metadata={"input_tokens": 4, "output_tokens": 5, "total_tokens": 9})
    r = LLMResult(generations=[[ChatGeneration(message=m1), ChatGeneration(message=m2)]])
    assert usage_of(r) == {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}
    assert usage_of(LLMResult(generations=[[]], llm_output={"usage": {"input_tokens": 2, "output_tokens": 3}})) == \
        {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}
    assert usage_of(LLMResult(generations=[[]])) is None


def test_import_without_langchain_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['langchain_core'] = None\n"
        "import allot\n"
        "assert allot.Client is not None\n"
        "try:\n"
        "    import allot.langchain\n"
        "except ImportError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    raise SystemExit('allot.langchain imported without langchain_core')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install ./clients/python[langchain]" in out.stdout
