"""The synchronous client.

    import allot

    client = allot.Client()            # ALLOT_SOCKET, else the daemon's default socket
    print(client.me().compliance.status)
    with client.reserve(tokens=4000, usd=0.012) as r:
        answer = call_the_model()
        r.settle(tokens=answer.tokens_used)

Agent methods act on the caller's own agent (``ALLOT_AGENT_ID``, set by
allot for every agent it starts, or ``agent_id=``); operator methods are
named like the CLI's commands.
"""

from __future__ import annotations

import logging
import os
import time
from types import TracebackType
from typing import Any, TypeVar, Dict, Iterator, List, Mapping, Optional, Sequence, Type, Union

import httpx

from . import _core as core
from . import models as m
from .errors import NotFound

__all__ = ["Client", "ReservationHandle"]

log = logging.getLogger("allot")

T = TypeVar("T")


class ReservationHandle:
    """An open reservation: settle it with what was used, or release it.

    Used as a context manager, leaving the block without a settle releases
    it (everything it holds is returned), also when the block raises::

        with client.reserve(tokens=4000, usd=0.012) as r:
            r.settle(tokens=3100, usd=0.009)

    Attributes:
        info: The reservation as the daemon answered it.
        settlement: The settle's answer once settled, else ``None``.
    """

    def __init__(self, client: "Client", info: m.Reservation) -> None:
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

    def settle(self, **actual: Any) -> m.Settlement:
        """Settle with the amounts actually used.

        ``usd=`` is dollars (converted to ``usd_micros``); other keywords are
        resources. The unused part is returned; a reserved resource left out
        is charged as reserved (``settle()`` charges everything); an overrun
        is charged and reported by the daemon.
        """
        s = self._client._send(core.c_settle(self.id, core.amounts(actual)))
        self._closed = True
        self.settlement = s
        return s

    def release(self) -> Optional[m.Released]:
        """Return everything held. ``None`` when the daemon no longer holds it
        (it expired, or was settled or released elsewhere)."""
        if self._closed:
            return None
        try:
            r: m.Released = self._client._send(core.c_release(self.id))
        except NotFound:
            self._closed = True
            return None
        self._closed = True
        return r

    def __enter__(self) -> "ReservationHandle":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.release()
            return
        try:
            self.release()
        except Exception as e:  # the block's own exception is the one to see
            log.warning("allot: releasing reservation %s after %r failed: %s", self.id, exc, e)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<ReservationHandle {self.id} {state} {self.resources}>"


class Client(core.ClientBase):
    """A synchronous client of the allot daemon.

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
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self._init_connection(socket, base_url, token, agent_id)
        if transport is None:
            transport = httpx.HTTPTransport(uds=self.socket) if self.socket is not None else httpx.HTTPTransport()
        self._timeout = timeout
        self._http = httpx.Client(transport=transport, base_url=base_url or "http://allot", headers=self._headers, timeout=timeout)

    # ---- plumbing ---------------------------------------------------------------------

    def _send(self, call: "core.Call[T]") -> T:
        try:
            response = self._http.request(call.method, call.path, **call.request_kwargs())
        except httpx.TransportError as e:  # refused, timed out, cut off: no answer
            raise self._unreachable(e) from e
        return core.read(call, response)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- system -----------------------------------------------------------------------

    def healthz(self) -> bool:
        """Whether the daemon answers (``GET /healthz``)."""
        return self._send(core.c_healthz())

    def readyz(self) -> bool:
        """Whether the governor answers and its store can record; raises
        :class:`~allot.errors.Unavailable` with the reason when not."""
        return self._send(core.c_readyz())

    def openapi(self) -> Dict[str, Any]:
        """The daemon's OpenAPI document (``GET /v1/openapi.json``)."""
        return self._send(core.c_openapi())

    def host(self) -> m.Host:
        """Host capacity: total, reserved, allocatable, available (operator)."""
        return self._send(core.c_host())

    def metrics(self) -> str:
        """Prometheus metrics, OpenMetrics text (operator)."""
        return self._send(core.c_metrics())

    # ---- what an agent does -----------------------------------------------------------

    def me(self, agent_id: Optional[str] = None) -> m.Me:
        """The caller's own agent: its status, quota and compliance.

        An agent may read only its own (another's answers
        :class:`~allot.errors.Forbidden`).
        """
        a = self._me(agent_id)
        agent = self._send(core.c_agent(a))
        return core.me_of(agent, self._send(core.c_compliance(a)))

    def report(self, *, agent_id: Optional[str] = None, **amounts: Any) -> Dict[str, m.UsageReport]:
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
            out[resource] = self._send(core.c_usage(a, resource, value))
        return out

    def reserve(self, ttl: Optional[core.Ttl] = "60s", *, agent_id: Optional[str] = None, **amounts: Any) -> ReservationHandle:
        """Reserve amounts at every budget that applies, all or nothing.

        ``client.reserve(tokens=4000, usd=0.012)``: ``usd=`` is dollars
        (``usd_micros``, rounded up), other keywords name custom resources.
        The reservation is held ``ttl`` (``"60s"``, seconds, a timedelta);
        one that expires unsettled is charged in full (unless its budget
        releases expiries).

        Returns:
            A handle to settle or release; a context manager that releases
            it when the block leaves without a settle.

        Raises:
            BudgetExceeded: A budget refused, naming ``level`` and ``resource``,
                with ``retry_after`` (``None``: the amount is above the limit).
            Throttled: The policy paces this agent's reservations.
        """
        a = self._me(agent_id)
        res = core.amounts(amounts)
        if not res:
            raise ValueError("reserve needs at least one amount, such as tokens=4000")
        return ReservationHandle(self, self._send(core.c_reserve(a, res, ttl)))

    def settle(self, reservation_id: int, **actual: Any) -> m.Settlement:
        """Settle a reservation by id (see :meth:`ReservationHandle.settle`)."""
        return self._send(core.c_settle(reservation_id, core.amounts(actual)))

    def release(self, reservation_id: int) -> m.Released:
        """Release a reservation by id: everything it holds is returned."""
        return self._send(core.c_release(reservation_id))

    def ack(self, seq: int, note: str = "", *, agent_id: Optional[str] = None) -> m.Ack:
        """Acknowledge request ``seq`` of the agent channel."""
        return self._send(core.c_ack(self._me(agent_id), seq, note))

    # ---- what an operator does (named like the CLI) -----------------------------------

    def ps(self) -> List[m.AgentStatus]:
        """Every agent (an agent caller gets itself): state, holders, pids, usage, quota."""
        return self._send(core.c_ps())

    list = ps

    def agent(self, agent_id: str) -> m.AgentStatus:
        """One agent."""
        return self._send(core.c_agent(agent_id))

    def run(
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
        return self._send(core.c_run(command, name, group, priority, limits, env, workdir, user, pools))

    start = run

    def adopt(
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
        return self._send(core.c_adopt(pid, name, group, move, priority, limits, pools))

    def terminate(self, agent_id: str) -> m.ActionResult:
        """Stop an agent: notice, grace, kill."""
        return self._send(core.c_act(agent_id, "terminate"))

    def stop(self, agent_id: str) -> m.ActionResult:
        """Stop an agent (``DELETE /v1/agents/{id}``): notice, grace, kill, as :meth:`terminate`."""
        return self._send(core.c_stop(agent_id))

    def suspend(self, agent_id: str) -> m.ActionResult:
        """Freeze the agent's tree (the operator's hold)."""
        return self._send(core.c_act(agent_id, "suspend"))

    def resume(self, agent_id: str, *, force: bool = False) -> m.ActionResult:
        """Lift the operator's freeze and throttle; ``force=True`` lifts every
        holder's and cancels the policy's pending escalations."""
        return self._send(core.c_act(agent_id, "resume", {"force": "true"} if force else None))

    def throttle(self, agent_id: str, cpu: Union[str, int]) -> m.ActionResult:
        """Limit the agent's cpu (the operator's hold): ``"200m"``, or an int of millicores."""
        return self._send(core.c_act(agent_id, "throttle", {"cpu": f"{cpu}m" if isinstance(cpu, int) else cpu}))

    def clear(self, agent_id: str) -> m.ActionResult:
        """Lift the operator's throttle."""
        return self._send(core.c_act(agent_id, "clear"))

    def quota(self, agent_id: Optional[str] = None) -> m.Quota:
        """An agent's quota (default the caller's own)."""
        return self._send(core.c_quota(self._me(agent_id)))

    def set_quota(self, agent_id: str, limits: Optional[Mapping[str, Any]] = None, **flat: Any) -> m.Quota:
        """Change an agent's limits at run time (``allot quota set``): merged
        over its current ones, in force at once; answers the resulting quota.

        ``client.set_quota("a1", {"memory": {"hard": "300Mi"}})``, or the
        CLI's dotted names as a mapping: ``{"memory.hard": "300Mi"}``.
        """
        return self._send(core.c_set_quota(agent_id, core.nest_limits(limits, flat)))

    def compliance(self, agent_id: Optional[str] = None) -> m.Compliance:
        """Quota compliance (default the caller's own): per resource usage,
        limits, status and pending escalation; who holds it throttled or suspended."""
        return self._send(core.c_compliance(self._me(agent_id)))

    def analysis(self, agent_id: Optional[str] = None, *, resource: Optional[str] = None, window: Optional[str] = None,
                 horizon: Optional[str] = None) -> m.Analysis:
        """Pattern, forecast and recommendation of an agent's recorded samples (``allot analyze --agent``)."""
        return self._send(core.c_analysis(self._me(agent_id), resource, window, horizon))

    def groups(self) -> List[m.Group]:
        """Groups with limits, totals and members."""
        return self._send(core.c_groups())

    def put_group(self, name: str, group: Optional[Mapping[str, Any]] = None, *, create: bool = False, **fields: Any) -> m.Group:
        """Replace a group (``create=True``: create one), in the fleet file's
        shape: ``{extends?, description?, scaling_policy?, limits?, totals?}``."""
        body = dict(group or {})
        body.update(fields)
        return self._send(core.c_put_group(name, body, create))

    def delete_group(self, name: str) -> None:
        """Delete a group without members."""
        self._send(core.c_delete_group(name))

    def history(self, agent_id: Optional[str] = None) -> List[m.HistoryEntry]:
        """Enforcement history with real outcomes (``allot history``)."""
        return self._send(core.c_history(agent_id))

    def recommendations(self, agent_id: Optional[str] = None) -> List[m.Recommendation]:
        """The latest recommendation per agent and resource (``allot recommend``)."""
        return self._send(core.c_recommendations(agent_id))

    def report_of(self, agent_id: Optional[str] = None, *, since: Optional[str] = None, until: Optional[str] = None,
                  format: str = "json") -> Any:
        """A report (``allot report``): one agent's, or every agent's.

        ``since``/``until`` are RFC 3339 times or durations ago (``"2h"``);
        ``format`` ``json`` answers a dict, ``text``, ``svg``, ``html`` a string.
        (Named ``report_of`` because :meth:`report` reports usage.)
        """
        return self._send(core.c_report_of(agent_id, since, until, format))

    def budgets(self, agent_id: Optional[str] = None) -> m.Budgets:
        """Budgets and open reservations (``allot budget``): every one, or
        those that apply to an agent."""
        return self._send(core.c_budgets(agent_id))

    def pools(self, name: Optional[str] = None) -> m.Budgets:
        """One pool's budgets and reservations (``allot budget --pool``), or
        with no name every pool budget."""
        if name is None:
            return core.pool_budgets(self._send(core.c_budgets(None)))
        return self._send(core.c_pool(name))

    def put_pool(self, name: str, budgets: Mapping[str, Any]) -> m.PoolChange:
        """Declare or replace a pool's budgets:
        ``{"usd_micros": {"hard": "50M", "calendar": "month"}, "tokens": "5M/day"}``."""
        return self._send(core.c_put_pool(name, budgets))

    def delete_pool(self, name: str) -> m.PoolChange:
        """Delete a pool declared through the API (refused while an agent draws on it)."""
        return self._send(core.c_delete_pool(name))

    recommend = recommendations
    budget = budgets

    # ---- events -----------------------------------------------------------------------

    def events(
        self,
        since: Optional[int] = None,
        *,
        topic: Optional[str] = None,
        follow: bool = True,
        reconnect: bool = True,
        retry_delay: float = 0.5,
        give_up_after: Optional[float] = 60.0,
    ) -> Iterator[m.Event]:
        """The recorded events after ``since`` (``allot events``), oldest first.

        ``follow=True`` streams them live (server-sent events) and never ends
        on its own; when the stream breaks (the daemon restarts) it
        reconnects after ``retry_delay`` seconds and resumes after the last
        event it yielded (``Last-Event-ID``), so none is lost or repeated. It
        raises :class:`~allot.errors.DaemonUnavailable` when the daemon stays
        unreachable for ``give_up_after`` seconds (``None``: keep trying).
        ``follow=False`` yields those recorded so far and ends. An agent
        gets its own events. ``topic`` is a glob (``"budget.*"``).

        To resume in another process, keep the last ``event.seq`` and pass it
        as ``since``.
        """
        if not follow:
            after = since
            while True:
                page = self._send(core.c_events_page(after, topic))
                yield from page
                if len(page) < core.EVENTS_PAGE:
                    return
                after = page[-1].seq
        last = since
        down: Optional[float] = None
        while True:
            path, params, headers = core.events_request(last, topic)
            try:
                with self._http.stream("GET", path, params=params, headers=headers,
                                       timeout=httpx.Timeout(self._timeout, read=None)) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        core.raise_for(resp)
                    down = None
                    parser = core.SseParser()
                    for line in resp.iter_lines():
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
            time.sleep(retry_delay)
