"""The asynchronous client: the same methods as :class:`allot.Client`, awaited.

    import allot

    async with allot.AsyncClient() as client:
        print((await client.me()).compliance.status)
        async with client.reserve(tokens=4000, usd=0.012) as r:
            answer = await call_the_model()
            await r.settle(tokens=answer.tokens_used)

Agent methods act on the caller's own agent (``ALLOT_AGENT_ID``, set by
allot for every agent it starts, or ``agent_id=``); operator methods are
named like the CLI's commands.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from types import TracebackType
from typing import Any, AsyncIterator, TypeVar, Generator, Dict, List, Mapping, Optional, Sequence, Type, Union

import httpx

from . import _core as core
from . import models as m
from .errors import NotFound

__all__ = ["AsyncClient", "AsyncReservationHandle", "PendingReservation"]

log = logging.getLogger("allot")

T = TypeVar("T")


class AsyncReservationHandle:
    """An open reservation: settle it with what was used, or release it.

    Used as an async context manager, leaving the block without a settle releases
    it (everything it holds is returned), also when the block raises::

        async with client.reserve(tokens=4000, usd=0.012) as r:
            await r.settle(tokens=3100, usd=0.009)

    Attributes:
        info: The reservation as the daemon answered it.
        settlement: The settle's answer once settled, else ``None``.
    """

    def __init__(self, client: "AsyncClient", info: m.Reservation) -> None:
        self._client = client
        self.info = info
        self.settlement: Optional[m.Settlement] = None
        self._closed = False

    @property
    def id(self) -> int:
        """The reservation id."""
        return self.info.id

    @property
    def resources(self) -> Dict[str, int]:
        """The amounts held, by resource (money in ``usd_micros``)."""
        return self.info.resources

    @property
    def expires_at(self) -> Optional[str]:
        """When it expires unsettled (RFC 3339)."""
        return self.info.expires_at

    @property
    def closed(self) -> bool:
        """Whether it was settled or released through this handle."""
        return self._closed

    async def settle(self, **actual: Any) -> m.Settlement:
        """Settle with the amounts actually used.

        ``usd=`` is dollars (converted to ``usd_micros``); other keywords are
        resources. The unused part is returned; a reserved resource left out
        is charged as reserved (``settle()`` charges everything); an overrun
        is charged and reported by the daemon.
        """
        s = await self._client._send(core.c_settle(self.id, core.amounts(actual)))
        self._closed = True
        self.settlement = s
        return s

    async def release(self) -> Optional[m.Released]:
        """Return everything held. ``None`` when the daemon no longer holds it
        (it expired, or was settled or released elsewhere)."""
        if self._closed:
            return None
        try:
            r: m.Released = await self._client._send(core.c_release(self.id))
        except NotFound:
            self._closed = True
            return None
        self._closed = True
        return r

    async def __aenter__(self) -> "AsyncReservationHandle":
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        if self._closed:
            return
        if exc_type is None:
            await self.release()
            return
        try:
            await self.release()
        except Exception as e:  # the block's own exception is the one to see
            log.warning("allot: releasing reservation %s after %r failed: %s", self.id, exc, e)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<AsyncReservationHandle {self.id} {state} {self.resources}>"


class PendingReservation:
    """A reservation being asked for: await it for the handle, or use it in
    ``async with`` (the handle is released if the block leaves unsettled)."""

    def __init__(self, client: "AsyncClient", call: "core.Call[m.Reservation]") -> None:
        self._client = client
        self._call = call
        self._handle: Optional[AsyncReservationHandle] = None

    async def _get(self) -> AsyncReservationHandle:
        if self._handle is None:
            self._handle = AsyncReservationHandle(self._client, await self._client._send(self._call))
        return self._handle

    def __await__(self) -> Generator[Any, None, AsyncReservationHandle]:
        return self._get().__await__()

    async def __aenter__(self) -> AsyncReservationHandle:
        return await (await self._get()).__aenter__()

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        if self._handle is not None:
            await self._handle.__aexit__(exc_type, exc, tb)


class AsyncClient(core.ClientBase):
    """An asynchronous client of the allot daemon.

    Args:
        socket: The daemon's Unix socket. Default: ``ALLOT_SOCKET``, else
            ``/run/allot/allot.sock`` as root, else ``$XDG_RUNTIME_DIR/allot.sock``.
        base_url: Talk TCP instead (``http://127.0.0.1:7070``, a daemon run
            with ``--tcp``); needs ``token``.
        token: The bearer token for TCP (the daemon's ``--token-file``).
        agent_id: The agent the agent methods act for. Default
            ``ALLOT_AGENT_ID`` (set by allot in every agent it starts).
        timeout: Seconds for each request.
        transport: An httpx transport to use instead (tests).

    Raises:
        DaemonUnavailable: No socket was given or found (the daemon is
            reached only at the first request; one that does not answer then
            raises it too, naming the socket tried).
    """

    def __init__(
        self,
        socket: Optional[Union[str, "os.PathLike[str]"]] = None,
        *,
        base_url: Optional[str] = None,
        token: Optional[str] = None,
        agent_id: Optional[str] = None,
        timeout: Optional[float] = 30.0,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self._init_connection(socket, base_url, token, agent_id)
        if transport is None:
            transport = httpx.AsyncHTTPTransport(uds=self.socket) if self.socket is not None else httpx.AsyncHTTPTransport()
        self._timeout = timeout
        self._http = httpx.AsyncClient(transport=transport, base_url=base_url or "http://allot", headers=self._headers, timeout=timeout)

    # ---- plumbing ---------------------------------------------------------------------

    async def _send(self, call: "core.Call[T]") -> T:
        try:
            response = await self._http.request(call.method, call.path, **call.request_kwargs())
        except httpx.TransportError as e:  # refused, timed out, cut off: no answer
            raise self._unreachable(e) from e
        return core.read(call, response)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # ---- system -----------------------------------------------------------------------

    async def healthz(self) -> bool:
        """Whether the daemon answers (``GET /healthz``)."""
        return await self._send(core.c_healthz())

    async def readyz(self) -> bool:
        """Whether the governor answers and its store can record; raises
        :class:`~allot.errors.Unavailable` with the reason when not."""
        return await self._send(core.c_readyz())

    async def openapi(self) -> Dict[str, Any]:
        """The daemon's OpenAPI document (``GET /v1/openapi.json``)."""
        return await self._send(core.c_openapi())

    async def host(self) -> m.Host:
        """Host capacity: total, reserved, allocatable, available (operator)."""
        return await self._send(core.c_host())

    async def metrics(self) -> str:
        """Prometheus metrics, OpenMetrics text (operator)."""
        return await self._send(core.c_metrics())

    # ---- what an agent does -----------------------------------------------------------

    async def me(self, agent_id: Optional[str] = None) -> m.Me:
        """The caller's own agent: its status, quota and compliance.

        An agent may read only its own (another's answers
        :class:`~allot.errors.Forbidden`).
        """
        a = self._me(agent_id)
        agent = await self._send(core.c_agent(a))
        return core.me_of(agent, await self._send(core.c_compliance(a)))

    async def report(self, *, agent_id: Optional[str] = None, **amounts: Any) -> Dict[str, m.UsageReport]:
        """Report usage of custom resources, added to the agent's spend:
        ``client.report(tokens=1200, usd=0.003)``.

        One request per resource (the daemon takes one at a time), in the
        order given; a refusal raises and leaves the later ones unsent.
        Values are counts or quantity strings (``"1.2k"``, ``"400/h"``);
        ``usd=`` is dollars.
        """
        a = self._me(agent_id)
        res = core.amounts(amounts)
        if not res:
            raise ValueError("report needs at least one amount, such as tokens=1200")
        out: Dict[str, m.UsageReport] = {}
        for resource, value in res.items():
            out[resource] = await self._send(core.c_usage(a, resource, value))
        return out

    def reserve(self, ttl: Optional[core.Ttl] = "60s", *, agent_id: Optional[str] = None, **amounts: Any) -> "PendingReservation":
        """Reserve amounts at every budget that applies, all or nothing.

        ``client.reserve(tokens=4000, usd=0.012)``: ``usd=`` is dollars
        (``usd_micros``, rounded up), other keywords name custom resources.
        The reservation is held ``ttl`` (``"60s"``, seconds, a timedelta);
        one that expires unsettled is charged in full (unless its budget
        releases expiries).

        Returns:
            An awaitable of the handle (``r = await client.reserve(...)``)
            that is also an async context manager releasing it when the
            block leaves without a settle (``async with client.reserve(...) as r:``).

        Raises:
            BudgetExceeded: A budget refused, naming ``level`` and ``resource``,
                with ``retry_after`` (``None``: the amount is above the limit).
            Throttled: The policy paces this agent's reservations.
        """
        a = self._me(agent_id)
        res = core.amounts(amounts)
        if not res:
            raise ValueError("reserve needs at least one amount, such as tokens=4000")
        return PendingReservation(self, core.c_reserve(a, res, ttl))

    async def settle(self, reservation_id: int, **actual: Any) -> m.Settlement:
        """Settle a reservation by id (see :meth:`AsyncReservationHandle.settle`)."""
        return await self._send(core.c_settle(reservation_id, core.amounts(actual)))

    async def release(self, reservation_id: int) -> m.Released:
        """Release a reservation by id: everything it holds is returned."""
        return await self._send(core.c_release(reservation_id))

    async def ack(self, seq: int, note: str = "", *, agent_id: Optional[str] = None) -> m.Ack:
        """Acknowledge request ``seq`` of the agent channel."""
        return await self._send(core.c_ack(self._me(agent_id), seq, note))

    # ---- what an operator does (named like the CLI) -----------------------------------

    async def ps(self) -> List[m.AgentStatus]:
        """Every agent (an agent caller gets itself): state, holders, pids, usage, quota."""
        return await self._send(core.c_ps())

    list = ps

    async def agent(self, agent_id: str) -> m.AgentStatus:
        """One agent."""
        return await self._send(core.c_agent(agent_id))

    async def run(
        self,
        command: Union[str, Sequence[str]],
        *,
        name: str,
        group: str,
        priority: Optional[int] = None,
        limits: Optional[Mapping[str, Any]] = None,
        env: Optional[Mapping[str, str]] = None,
        workdir: Optional[str] = None,
        user: Optional[str] = None,
        pools: Optional[Sequence[str]] = None,
    ) -> m.Started:
        """Start a command as an agent (``allot run``); the daemon's answer
        (``id``, ``pid``, ``pids``, ``cgroup``, ...).

        ``limits`` is ``{"memory": {"hard": "300Mi"}}`` or the CLI's
        ``{"memory.hard": "300Mi"}``; a string ``command`` is split as a shell would.
        """
        return await self._send(core.c_run(command, name, group, priority, limits, env, workdir, user, pools))

    start = run

    async def adopt(
        self,
        pid: int,
        *,
        name: str,
        group: str,
        move: bool = False,
        priority: Optional[int] = None,
        limits: Optional[Mapping[str, Any]] = None,
        pools: Optional[Sequence[str]] = None,
    ) -> m.Started:
        """Adopt a running process as an agent (``allot adopt``); moved into a cgroup only with ``move=True``."""
        return await self._send(core.c_adopt(pid, name, group, move, priority, limits, pools))

    async def terminate(self, agent_id: str) -> m.ActionResult:
        """Stop an agent: notice, grace, kill."""
        return await self._send(core.c_act(agent_id, "terminate"))

    async def stop(self, agent_id: str) -> m.ActionResult:
        """Stop an agent (``DELETE /v1/agents/{id}``): notice, grace, kill, as :meth:`terminate`."""
        return await self._send(core.c_stop(agent_id))

    async def suspend(self, agent_id: str) -> m.ActionResult:
        """Freeze the agent's tree (the operator's hold)."""
        return await self._send(core.c_act(agent_id, "suspend"))

    async def resume(self, agent_id: str, *, force: bool = False) -> m.ActionResult:
        """Lift the operator's freeze and throttle; ``force=True`` lifts every
        holder's and cancels the policy's pending escalations."""
        return await self._send(core.c_act(agent_id, "resume", {"force": "true"} if force else None))

    async def throttle(self, agent_id: str, cpu: Union[str, int]) -> m.ActionResult:
        """Limit the agent's cpu (the operator's hold): ``"200m"``, or an int of millicores."""
        return await self._send(core.c_act(agent_id, "throttle", {"cpu": f"{cpu}m" if isinstance(cpu, int) else cpu}))

    async def clear(self, agent_id: str) -> m.ActionResult:
        """Lift the operator's throttle."""
        return await self._send(core.c_act(agent_id, "clear"))

    async def quota(self, agent_id: Optional[str] = None) -> m.Quota:
        """An agent's quota (default the caller's own)."""
        return await self._send(core.c_quota(self._me(agent_id)))

    async def set_quota(self, agent_id: str, limits: Optional[Mapping[str, Any]] = None, **flat: Any) -> m.Quota:
        """Change an agent's limits at run time (``allot quota set``): merged
        over its current ones, in force at once; answers the resulting quota.

        ``client.set_quota("a1", {"memory": {"hard": "300Mi"}})``, or the
        CLI's dotted names as a mapping: ``{"memory.hard": "300Mi"}``.
        """
        return await self._send(core.c_set_quota(agent_id, core.nest_limits(limits, flat)))

    async def compliance(self, agent_id: Optional[str] = None) -> m.Compliance:
        """Quota compliance (default the caller's own): per resource usage,
        limits, status and pending escalation; who holds it throttled or suspended."""
        return await self._send(core.c_compliance(self._me(agent_id)))

    async def analysis(self, agent_id: Optional[str] = None, *, resource: Optional[str] = None, window: Optional[str] = None,
                 horizon: Optional[str] = None) -> m.Analysis:
        """Pattern, forecast and recommendation of an agent's recorded samples (``allot analyze --agent``)."""
        return await self._send(core.c_analysis(self._me(agent_id), resource, window, horizon))

    async def groups(self) -> List[m.Group]:
        """Groups with limits, totals and members."""
        return await self._send(core.c_groups())

    async def put_group(self, name: str, group: Optional[Mapping[str, Any]] = None, *, create: bool = False, **fields: Any) -> m.Group:
        """Replace a group (``create=True``: create one), in the fleet file's
        shape: ``{extends?, description?, scaling_policy?, limits?, totals?}``."""
        body = dict(group or {})
        body.update(fields)
        return await self._send(core.c_put_group(name, body, create))

    async def delete_group(self, name: str) -> None:
        """Delete a group without members."""
        await self._send(core.c_delete_group(name))

    async def history(self, agent_id: Optional[str] = None) -> List[m.HistoryEntry]:
        """Enforcement history with real outcomes (``allot history``)."""
        return await self._send(core.c_history(agent_id))

    async def recommendations(self, agent_id: Optional[str] = None) -> List[m.Recommendation]:
        """The latest recommendation per agent and resource (``allot recommend``)."""
        return await self._send(core.c_recommendations(agent_id))

    async def report_of(self, agent_id: Optional[str] = None, *, since: Optional[str] = None, until: Optional[str] = None,
                  format: str = "json") -> Any:
        """A report (``allot report``): one agent's, or every agent's.

        ``since``/``until`` are RFC 3339 times or durations ago (``"2h"``);
        ``format`` ``json`` answers a dict, ``text``, ``svg``, ``html`` a string.
        (Named ``report_of`` because :meth:`report` reports usage.)
        """
        return await self._send(core.c_report_of(agent_id, since, until, format))

    async def budgets(self, agent_id: Optional[str] = None) -> m.Budgets:
        """Budgets and open reservations (``allot budget``): every one, or
        those that apply to an agent."""
        return await self._send(core.c_budgets(agent_id))

    async def pools(self, name: Optional[str] = None) -> m.Budgets:
        """One pool's budgets and reservations (``allot budget --pool``), or
        with no name every pool budget."""
        if name is None:
            return core.pool_budgets(await self._send(core.c_budgets(None)))
        return await self._send(core.c_pool(name))

    async def put_pool(self, name: str, budgets: Mapping[str, Any]) -> m.PoolChange:
        """Declare or replace a pool's budgets:
        ``{"usd_micros": {"hard": "50M", "calendar": "month"}, "tokens": "5M/day"}``."""
        return await self._send(core.c_put_pool(name, budgets))

    async def delete_pool(self, name: str) -> m.PoolChange:
        """Delete a pool declared through the API (refused while an agent draws on it)."""
        return await self._send(core.c_delete_pool(name))

    recommend = recommendations
    budget = budgets

    # ---- events -----------------------------------------------------------------------

    async def events(
        self,
        since: Optional[int] = None,
        *,
        topic: Optional[str] = None,
        follow: bool = True,
        reconnect: bool = True,
        retry_delay: float = 0.5,
        give_up_after: Optional[float] = 60.0,
    ) -> AsyncIterator[m.Event]:
        """The recorded events after ``since``, as :meth:`allot.Client.events`
        (``async for e in client.events(): ...``): resumed after a reconnect."""
        if not follow:
            after = since
            while True:
                page = await self._send(core.c_events_page(after, topic))
                for e in page:
                    yield e
                if len(page) < core.EVENTS_PAGE:
                    return
                after = page[-1].seq
        last = since
        down: Optional[float] = None
        while True:
            path, params, headers = core.events_request(last, topic)
            try:
                async with self._http.stream("GET", path, params=params, headers=headers,
                                             timeout=httpx.Timeout(self._timeout, read=None)) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        core.raise_for(resp)
                    down = None
                    parser = core.SseParser()
                    async for line in resp.aiter_lines():
                        ev = parser.feed(line)
                        if ev is not None:
                            last = ev.seq
                            yield ev
                broken: Exception = httpx.RemoteProtocolError("the event stream ended")
            except core.STREAM_BROKEN as e:
                broken = e
            if not reconnect:
                raise self._unreachable(broken)
            down = time.monotonic() if down is None else down
            if give_up_after is not None and time.monotonic() - down > give_up_after:
                raise self._unreachable(broken)
            await asyncio.sleep(retry_delay)
