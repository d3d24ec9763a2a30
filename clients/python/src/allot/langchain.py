"""A LangChain rate limiter backed by allot reservations (the ``langchain`` extra).

    from allot.langchain import AllotRateLimiter

    limiter = AllotRateLimiter(tokens=4000, usd=0.01, max_wait=60)
    model = ChatAnthropic(model_name="...", rate_limiter=limiter, callbacks=limiter.callbacks())
    model.invoke("hello")       # reserves 4000 tokens and $0.01 first; settled with the real usage

Before each model call LangChain calls :meth:`AllotRateLimiter.acquire`
(``aacquire`` for ``ainvoke``), which reserves the estimate at every budget
that applies to the agent (its own limit, its group's totals, its pools).
A refusal with a ``retry_after`` is waited out (asking again at
least every ``poll`` seconds; ``max_wait`` bounds the wait); a refusal that waiting cannot cure (the estimate is above the limit)
or a wait longer than ``max_wait`` raises :class:`~allot.BudgetExceeded`:
the limiter never hangs.

Settling: the handler from :meth:`AllotRateLimiter.callbacks` reads the
call's real usage when the model answers (``AIMessage.usage_metadata``,
else the provider's ``llm_output["token_usage"]``) and settles the
reservation with it, so the unused part of the estimate goes back to the
budget; a failed call releases its reservation. **Without the handler a
reservation is never settled, and the daemon charges it in full when its
``ttl`` passes.** The handler finds the reservation of its call through a
context variable (the model's start callback, its rate-limiter call and its
end callback run in the same context, or copies of it, in LangChain's sync,
async, batch and streaming paths); within one context the reservations are
settled first in, first out.

Importing this module needs ``langchain-core``:
``pip install ./clients/python[langchain]``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Set, Union
from uuid import UUID

try:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.outputs import LLMResult
    from langchain_core.rate_limiters import BaseRateLimiter
except ImportError as e:  # pragma: no cover - exercised in a subprocess without langchain
    raise ImportError(
        "allot.langchain needs langchain-core, which is not installed: "
        "pip install ./clients/python[langchain] (from the repository's root)"
    ) from e

from ._core import Ttl, ttl_text
from ._core import amounts as check_amounts
from .aclient import AsyncClient, AsyncReservationHandle
from .client import Client, ReservationHandle
from .errors import AllotError, BudgetExceeded, Throttled

__all__ = ["AllotRateLimiter", "AllotCallbackHandler", "usage_of"]

log = logging.getLogger("allot")

#: The usage of one model call: ``input_tokens``, ``output_tokens``, ``total_tokens``.
Usage = Dict[str, int]

#: The shortest sleep between two tries (a ``retry_after`` of 0 does not spin).
MIN_SLEEP = 0.05


@dataclass
class _Pending:
    handle: Union[ReservationHandle, AsyncReservationHandle]
    #: ``time.monotonic()`` after which the daemon has charged it (its ttl passed).
    deadline: float


@dataclass
class _Slot:
    """The reservations made in one context and not yet settled, oldest first."""

    pending: Deque[_Pending] = field(default_factory=deque)
    #: Model runs started with this slot (run ids of the start callbacks).
    runs: Set[UUID] = field(default_factory=set)
    #: Whether a reservation was ever added (a later start then makes a new slot).
    used: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def usage_of(response: LLMResult) -> Optional[Usage]:
    """The token usage of a model call's result, or ``None`` when it tells none.

    The sum of the generations' ``message.usage_metadata`` when any has one,
    else ``llm_output["token_usage"]`` (or ``["usage"]``) with OpenAI's
    (``prompt_tokens``, ``completion_tokens``, ``total_tokens``) or
    LangChain's (``input_tokens``, ...) names.
    """
    found = False
    inp = out = total = 0
    for gens in response.generations:
        for g in gens:
            um = getattr(getattr(g, "message", None), "usage_metadata", None)
            if um:
                found = True
                i, o = int(um.get("input_tokens", 0) or 0), int(um.get("output_tokens", 0) or 0)
                inp, out = inp + i, out + o
                total += int(um.get("total_tokens", 0) or 0) or i + o
    if found:
        return {"input_tokens": inp, "output_tokens": out, "total_tokens": total}
    lo = response.llm_output or {}
    tu = lo.get("token_usage") or lo.get("usage")
    if not isinstance(tu, Mapping):
        return None
    i = int(tu.get("prompt_tokens", tu.get("input_tokens", 0)) or 0)
    o = int(tu.get("completion_tokens", tu.get("output_tokens", 0)) or 0)
    t = int(tu.get("total_tokens", 0) or 0) or i + o
    if not (i or o or t):
        return None
    return {"input_tokens": i, "output_tokens": o, "total_tokens": t}


class AllotRateLimiter(BaseRateLimiter):
    """A LangChain rate limiter that reserves an estimate at the allot daemon
    before each model call.

    Args:
        client: The :class:`~allot.Client` for ``acquire`` (sync calls).
            Default: one made from the environment (``ALLOT_SOCKET``,
            ``ALLOT_AGENT_ID``) at first use. To act for an agent from
            outside it, give a client made with ``agent_id=``.
        async_client: The :class:`~allot.AsyncClient` for ``aacquire``
            (``ainvoke``, ``astream``). Default: one made from the
            environment at first use in each event loop.
        ttl: How long each reservation is held unsettled; one not settled by
            then (no handler, a lost callback) is charged in full.
        max_wait: The most seconds one ``acquire`` waits for refusals to
            clear before raising (``None``: as long as each refusal's
            ``retry_after`` says).
        settle: A function from the call's usage (``{"input_tokens",
            "output_tokens", "total_tokens"}``) to the amounts to settle
            with (keywords as for ``reserve``: ``tokens=``, ``usd=`` in
            dollars). Default: ``tokens`` = ``total_tokens`` when tokens
            are reserved; a reserved resource it leaves out is charged as
            reserved.
        poll: The longest sleep between two tries. A refusal's
            ``retry_after`` counts until the window frees enough or until
            the reservations held there *expire*; those of calls in flight
            are settled much sooner, so a waiting limiter asks again at
            least this often.
        **amounts: The estimate reserved before each call: ``tokens=4000``,
            ``usd=0.01`` (dollars), any custom resource.

    Attributes:
        refusals: How many refusals ``acquire``/``aacquire`` waited on or raised.
        waited: Seconds spent sleeping on refusals, in total.
        settled: How many reservations the handler settled.
        last_usage: The usage the handler read last (``None`` if the call told none).
    """

    def __init__(
        self,
        client: Optional[Client] = None,
        async_client: Optional[AsyncClient] = None,
        *,
        ttl: Ttl = "120s",
        max_wait: Optional[float] = None,
        settle: Optional[Callable[[Usage], Mapping[str, Any]]] = None,
        poll: float = 1.0,
        **amounts: Any,
    ) -> None:
        if not amounts:
            raise ValueError("AllotRateLimiter needs an estimate to reserve, such as tokens=4000")
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"max_wait must be at least 0 seconds, not {max_wait!r}")
        if not poll > 0:
            raise ValueError(f"poll must be more than 0 seconds, not {poll!r}")
        if client is not None and not isinstance(client, Client):
            raise TypeError(f"client must be an allot.Client, not {type(client).__name__} (give an AsyncClient as async_client=)")
        if async_client is not None and not isinstance(async_client, AsyncClient):
            raise TypeError(f"async_client must be an allot.AsyncClient, not {type(async_client).__name__}")
        check_amounts(amounts)  # a bad amount fails here, not at the first model call
        self.ttl_seconds = _seconds(ttl_text(ttl))
        self.client = client
        self.async_client = async_client
        self._async_loop: Optional[asyncio.AbstractEventLoop] = None
        self.ttl = ttl
        self.max_wait = max_wait
        self.poll = poll
        self.settle_fn = settle
        self.amounts = dict(amounts)
        self.refusals = 0
        self.waited = 0.0
        self.settled = 0
        self.last_usage: Optional[Usage] = None
        self._slot: contextvars.ContextVar[Optional[_Slot]] = contextvars.ContextVar(f"allot_limiter_{id(self)}", default=None)
        self._handler = AllotCallbackHandler(self)

    # ---- the handler ------------------------------------------------------------------

    @property
    def handler(self) -> "AllotCallbackHandler":
        """The callback handler that settles this limiter's reservations."""
        return self._handler

    def callbacks(self) -> List[BaseCallbackHandler]:
        """``[self.handler]``, to pass as a model's ``callbacks=`` (or in a
        run's ``config={"callbacks": ...}``)."""
        return [self._handler]

    # ---- acquiring ---------------------------------------------------------------------

    def _sync_client(self) -> Client:
        if self.client is None:
            self.client = Client()
        return self.client

    def _aclient(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        if self.async_client is None or (self._async_loop is not None and self._async_loop is not loop):
            self.async_client = AsyncClient()
            self._async_loop = loop
        return self.async_client

    def _wait_for(self, e: Union[BudgetExceeded, Throttled], blocking: bool, deadline: Optional[float]) -> Optional[float]:
        """Seconds to sleep before the next try, ``None`` to answer False; raises ``e`` when waiting cannot help."""
        self.refusals += 1
        if e.retry_after is None:
            raise e
        if not blocking:
            return None
        wait = max(min(float(e.retry_after), self.poll), MIN_SLEEP)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise e
            wait = min(wait, left)
        log.info("allot: %s; waiting %.2f s", e, wait)
        self.waited += wait
        return wait

    def _remember(self, handle: Union[ReservationHandle, AsyncReservationHandle]) -> None:
        now = time.monotonic()
        slot = self._slot.get()
        if slot is None:
            slot = _Slot()
            self._slot.set(slot)
        with slot.lock:
            while slot.pending and slot.pending[0].deadline <= now:
                slot.pending.popleft()  # charged by the daemon at its expiry already
            slot.pending.append(_Pending(handle, now + self.ttl_seconds))
            slot.used = True

    def acquire(self, *, blocking: bool = True) -> bool:
        """Reserve the estimate (before a sync model call).

        Returns:
            ``True`` once reserved; ``False`` when refused and ``blocking``
            is false.

        Raises:
            BudgetExceeded: The estimate can never fit (``retry_after`` is
                ``None``), or the refusals outlasted ``max_wait``.
            Throttled: The policy paces the agent longer than ``max_wait``.
        """
        client = self._sync_client()
        deadline = None if self.max_wait is None else time.monotonic() + self.max_wait
        while True:
            try:
                handle = client.reserve(self.ttl, **self.amounts)
            except (BudgetExceeded, Throttled) as e:
                wait = self._wait_for(e, blocking, deadline)
                if wait is None:
                    return False
                time.sleep(wait)
                continue
            self._remember(handle)
            return True

    async def aacquire(self, *, blocking: bool = True) -> bool:
        """:meth:`acquire` with the :class:`~allot.AsyncClient`, sleeping with ``asyncio.sleep``."""
        client = self._aclient()
        deadline = None if self.max_wait is None else time.monotonic() + self.max_wait
        while True:
            try:
                handle = await client.reserve(self.ttl, **self.amounts)
            except (BudgetExceeded, Throttled) as e:
                wait = self._wait_for(e, blocking, deadline)
                if wait is None:
                    return False
                await asyncio.sleep(wait)
                continue
            self._remember(handle)
            return True

    # ---- settling (called by the handler) ----------------------------------------------

    def _started(self, run_id: UUID) -> None:
        slot = self._slot.get()
        if slot is None or slot.used:
            slot = _Slot()
            self._slot.set(slot)
        with slot.lock:
            slot.runs.add(run_id)

    def _take(self, run_id: UUID) -> Optional[_Pending]:
        slot = self._slot.get()
        if slot is None:
            return None
        with slot.lock:
            if run_id not in slot.runs:
                return None
            slot.runs.discard(run_id)
            return slot.pending.popleft() if slot.pending else None

    def settle_amounts(self, usage: Optional[Usage]) -> Dict[str, Any]:
        """What a call with ``usage`` is settled with (``{}``: as reserved)."""
        if usage is None:
            return {}
        if self.settle_fn is not None:
            return dict(self.settle_fn(usage))
        if "tokens" in self.amounts:
            return {"tokens": usage["total_tokens"]}
        return {}

    async def _settle(self, run_id: UUID, response: LLMResult) -> None:
        p = self._take(run_id)
        if p is None:
            return
        usage = usage_of(response)
        self.last_usage = usage
        try:
            actual = self.settle_amounts(usage)
            if isinstance(p.handle, AsyncReservationHandle):
                await p.handle.settle(**actual)
            else:
                p.handle.settle(**actual)
            self.settled += 1
        except (AllotError, ValueError) as e:
            log.warning("allot: settling reservation %s with %s failed: %s", p.handle.id, usage, e)

    async def _release(self, run_id: UUID) -> None:
        p = self._take(run_id)
        if p is None:
            return
        try:
            if isinstance(p.handle, AsyncReservationHandle):
                await p.handle.release()
            else:
                p.handle.release()
        except AllotError as e:
            log.warning("allot: releasing reservation %s failed: %s", p.handle.id, e)


class AllotCallbackHandler(BaseCallbackHandler):
    """Settles an :class:`AllotRateLimiter`'s reservation when its model
    call ends (released when it fails). Get it from
    :meth:`AllotRateLimiter.callbacks` or :attr:`AllotRateLimiter.handler`.

    Its start callbacks run inline in the caller's context (they mark the
    context the call's reservation is found in); its end callbacks are
    coroutines, awaited in the event loop of an async call (so an
    :class:`~allot.AsyncClient` reservation is settled on its own loop) and
    run to completion by LangChain before a sync call returns.
    """

    run_inline = True

    def __init__(self, limiter: AllotRateLimiter) -> None:
        self.limiter = limiter

    def on_chat_model_start(self, serialized: Dict[str, Any], messages: List[List[Any]], *, run_id: UUID,
                            parent_run_id: Optional[UUID] = None, **kwargs: Any) -> Any:
        self.limiter._started(run_id)

    def on_llm_start(self, serialized: Dict[str, Any], prompts: List[str], *, run_id: UUID,
                     parent_run_id: Optional[UUID] = None, **kwargs: Any) -> Any:
        self.limiter._started(run_id)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, parent_run_id: Optional[UUID] = None,
                         **kwargs: Any) -> None:
        await self.limiter._settle(run_id, response)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, parent_run_id: Optional[UUID] = None,
                           **kwargs: Any) -> None:
        await self.limiter._release(run_id)


def _seconds(text: str) -> float:
    """Seconds of a simple duration text (``"120s"``, ``"1500ms"``, ``"2m"``);
    infinity for any other form (the daemon reads the ttl; this only decides
    when the limiter forgets a reservation nobody settled)."""
    t = text.strip()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)):
        if t.endswith(suffix):
            try:
                return float(t[: -len(suffix)]) * scale
            except ValueError:
                break
    return float("inf")
