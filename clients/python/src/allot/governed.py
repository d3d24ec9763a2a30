"""``@allot.governed``: a reservation around each call of a function.

    @allot.governed(tokens=4000, usd=0.012)
    def answer(question: str) -> str:
        reply = llm.invoke(question)
        allot.current_reservation().settle(tokens=reply.usage.total_tokens)
        return reply.text

Each call reserves the amounts first (a refusal raises
:class:`~allot.errors.BudgetExceeded` and the function does not run). The
function may settle the reservation itself through
:func:`current_reservation`; if it returns without doing so the reservation
is settled as reserved (charged in full: a budget never undercounts), and if
it raises the reservation is released. Coroutine functions are governed
with an :class:`~allot.AsyncClient` the same way. A generator function (sync
or async) holds its reservation while it is iterated: reserved at the first
item, settled when it ends or the consumer closes it, released if it raises;
:func:`current_reservation` is its reservation inside its body only.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from typing import Any, AsyncIterator, Callable, Generator, Optional, TypeVar, Union, cast

from ._core import Ttl, amounts as checked_amounts, ttl_text
from .aclient import AsyncClient, AsyncReservationHandle
from .client import Client, ReservationHandle

__all__ = ["governed", "current_reservation", "default_client", "default_async_client"]

F = TypeVar("F", bound=Callable[..., Any])

_current: contextvars.ContextVar[Optional[Union[ReservationHandle, AsyncReservationHandle]]] = contextvars.ContextVar(
    "allot_current_reservation", default=None
)
_lock = threading.Lock()
_sync_client: Optional[Client] = None


def default_client() -> Client:
    """The process's shared :class:`Client` (made at first use from the environment)."""
    global _sync_client
    with _lock:
        if _sync_client is None:
            _sync_client = Client()
        return _sync_client


def default_async_client() -> AsyncClient:
    """A new :class:`AsyncClient` from the environment (an async client's
    connections belong to one event loop, so none is shared)."""
    return AsyncClient()


def current_reservation() -> Union[ReservationHandle, AsyncReservationHandle]:
    """The reservation of the innermost governed call running here.

    Raises:
        LookupError: No governed call is running.
    """
    r = _current.get()
    if r is None:
        raise LookupError("no governed call is running: current_reservation() is for functions decorated with @allot.governed")
    return r


def governed(
    *,
    ttl: Optional[Ttl] = "60s",
    client: Optional[Union[Client, AsyncClient, Callable[[], Union[Client, AsyncClient]]]] = None,
    **amounts: Any,
) -> Callable[[F], F]:
    """Reserve ``amounts`` (``tokens=4000``, ``usd=0.012``, any custom
    resource) around each call of the decorated function.

    Args:
        ttl: How long each reservation is held unsettled.
        client: The client to use, or a function returning one. Default: a
            shared :class:`Client` for plain functions; for coroutine
            functions a new :class:`AsyncClient` per call, closed after it.
        **amounts: The amounts to reserve; ``usd`` is dollars.
    """
    if not amounts:
        raise ValueError("governed needs at least one amount, such as tokens=4000")
    checked_amounts(amounts)  # a bad amount fails here, not at every call
    if ttl is not None:
        try:
            ttl_text(ttl)
        except ValueError as e:
            raise ValueError(f"ttl: {e}") from None

    def sync_client() -> Client:
        c = client() if callable(client) and not isinstance(client, (Client, AsyncClient)) else client
        sc = default_client() if c is None else c
        if not isinstance(sc, Client):
            raise TypeError("a plain function is governed with a Client (use an AsyncClient for coroutine functions)")
        return sc

    def decorate(fn: F) -> F:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                handle = sync_client().reserve(ttl, **amounts)
                gen = fn(*args, **kwargs)
                try:
                    step: Callable[[Any], Any] = gen.send
                    arg: Any = None
                    while True:
                        token = _current.set(handle)  # set for each step only: the consumer is not inside
                        try:
                            item = step(arg)
                        except StopIteration as stop:
                            result = stop.value
                            break
                        finally:
                            _current.reset(token)
                        try:
                            arg, step = (yield item), gen.send
                        except GeneratorExit:
                            token = _current.set(handle)  # the body's cleanup runs inside too
                            try:
                                gen.close()
                            finally:
                                _current.reset(token)
                            raise
                        except BaseException as e:  # thrown in by the consumer: the body sees it
                            arg, step = e, gen.throw
                except GeneratorExit:  # the consumer stopped early: as a return
                    if not handle.closed:
                        handle.settle()
                    raise
                except BaseException:
                    handle.__exit__(Exception, None, None)
                    raise
                if not handle.closed:
                    handle.settle()
                return result

            return cast(F, gen_wrapper)

        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                c = client() if callable(client) and not isinstance(client, (Client, AsyncClient)) else client
                own = c is None
                ac = default_async_client() if c is None else c
                if not isinstance(ac, AsyncClient):
                    raise TypeError("an async generator function is governed with an AsyncClient")
                try:
                    handle = await ac.reserve(ttl, **amounts)
                    agen = fn(*args, **kwargs)
                    try:
                        step: Callable[[Any], Any] = agen.asend
                        arg: Any = None
                        while True:
                            token = _current.set(handle)
                            try:
                                item = await step(arg)
                            except StopAsyncIteration:
                                break
                            finally:
                                _current.reset(token)
                            try:
                                arg, step = (yield item), agen.asend
                            except GeneratorExit:
                                token = _current.set(handle)
                                try:
                                    await agen.aclose()
                                finally:
                                    _current.reset(token)
                                raise
                            except BaseException as e:
                                arg, step = e, agen.athrow
                    except GeneratorExit:
                        if not handle.closed:
                            await handle.settle()
                        raise
                    except BaseException:
                        await handle.__aexit__(Exception, None, None)
                        raise
                    if not handle.closed:
                        await handle.settle()
                finally:
                    if own:
                        await ac.aclose()

            return cast(F, agen_wrapper)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                c = client() if callable(client) and not isinstance(client, (Client, AsyncClient)) else client
                own = c is None
                ac = default_async_client() if c is None else c
                if not isinstance(ac, AsyncClient):
                    raise TypeError("a coroutine function is governed with an AsyncClient")
                try:
                    handle = await ac.reserve(ttl, **amounts)
                    token = _current.set(handle)
                    try:
                        result = await fn(*args, **kwargs)
                    except BaseException:
                        await handle.__aexit__(Exception, None, None)
                        raise
                    finally:
                        _current.reset(token)
                    if not handle.closed:
                        await handle.settle()
                    return result
                finally:
                    if own:
                        await ac.aclose()

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            handle = sync_client().reserve(ttl, **amounts)
            token = _current.set(handle)
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                handle.__exit__(Exception, None, None)
                raise
            finally:
                _current.reset(token)
            if not handle.closed:
                handle.settle()
            return result

        return cast(F, wrapper)

    return decorate
