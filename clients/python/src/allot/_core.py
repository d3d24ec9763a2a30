"""What the sync and async clients share: socket discovery, amounts, the
request of every method (as a :class:`Call`) and reading answers.

Each client method builds a :class:`Call` here and sends it with its own
transport, so both clients send the same requests and read the same answers.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union
from urllib.parse import quote

import httpx
import pydantic

from . import models as m
from . import requests as rq
from .errors import DaemonUnavailable, NotAnAgent, ServerError, error_from_response

#: The socket of a daemon run as root (``allot daemon``'s default then).
ROOT_SOCKET = "/run/allot/allot.sock"

#: An amount: a count, or a quantity string the daemon parses (``"4k"``).
Amount = Union[int, str]

USD_MICROS = 1_000_000

#: The largest amount the daemon holds (a ``u64``).
MAX_AMOUNT = 2**64 - 1

T = TypeVar("T")


def discover_socket(env: Optional[Mapping[str, str]] = None, euid: Optional[int] = None) -> Tuple[str, str]:
    """The daemon's socket path and where it came from.

    ``ALLOT_SOCKET`` when set (allot gives it to every agent it starts);
    else the daemon's default for ``--socket``: ``/run/allot/allot.sock``
    as root, else ``$XDG_RUNTIME_DIR/allot.sock``.

    Args:
        env: The environment to read (default ``os.environ``).
        euid: The effective uid (default this process's).

    Returns:
        ``(path, source)``, source one of ``"ALLOT_SOCKET"``, ``"default (root)"``,
        ``"default ($XDG_RUNTIME_DIR)"``.

    Raises:
        DaemonUnavailable: Neither is set and this process is not root.
    """
    env = os.environ if env is None else env
    if env.get("ALLOT_SOCKET"):
        return env["ALLOT_SOCKET"], "ALLOT_SOCKET"
    if euid is None:
        euid = os.geteuid() if hasattr(os, "geteuid") else -1
    if euid == 0:
        return ROOT_SOCKET, "default (root)"
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "allot.sock"), "default ($XDG_RUNTIME_DIR)"
    raise DaemonUnavailable(
        "no allot socket: ALLOT_SOCKET is not set, this process is not root (default /run/allot/allot.sock) "
        "and XDG_RUNTIME_DIR is not set (default $XDG_RUNTIME_DIR/allot.sock); pass socket= or base_url="
    )


def usd_to_micros(usd: Union[int, float, Decimal, str]) -> int:
    """Dollars as whole ``usd_micros``, rounded up (a reservation never holds
    less than asked): ``0.012`` -> ``12000``, ``0.0000001`` -> ``1``.

    The value goes through its decimal text, so ``0.012`` is exactly 12000
    rather than a binary-float neighbour.

    Raises:
        ValueError: Negative, not finite, or not a number.
    """
    if isinstance(usd, bool):
        raise ValueError(f"usd must be a number of dollars, not {usd!r}")
    try:
        d = usd if isinstance(usd, Decimal) else Decimal(str(usd))
    except (InvalidOperation, ValueError) as e:
        raise ValueError(f"usd must be a number of dollars, not {usd!r}") from e
    if not d.is_finite() or d < 0:
        raise ValueError(f"usd must be a finite amount of dollars, at least 0, not {usd!r}")
    return int(math.ceil(d * USD_MICROS))


def amounts(given: Mapping[str, Any]) -> Dict[str, Amount]:
    """Keyword amounts as the daemon's ``resources`` object.

    ``usd=`` (dollars) becomes ``usd_micros`` (see :func:`usd_to_micros`);
    every other keyword is a custom resource name with a count (an int, or
    a quantity string such as ``"4k"``). ``None`` values are left out.

    Raises:
        ValueError: ``usd`` and ``usd_micros`` both given, a negative count,
            a float count, a count above :data:`MAX_AMOUNT`, or a value of
            another type.
    """
    out: Dict[str, Amount] = {}
    for name, v in given.items():
        if v is None:
            continue
        if name == "usd":
            if given.get("usd_micros") is not None:
                raise ValueError("give usd (dollars) or usd_micros, not both")
            micros = usd_to_micros(v)
            if micros > MAX_AMOUNT:
                raise ValueError(f"usd: {v!r} dollars is above the most the daemon holds ({MAX_AMOUNT} usd_micros)")
            out["usd_micros"] = micros
            continue
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            if isinstance(v, float) and v.is_integer() and v >= 0:
                v = int(v)
            else:
                raise ValueError(f"{name}: an amount is a whole count (int) or a quantity string such as '4k', not {v!r}")
        if isinstance(v, int) and v < 0:
            raise ValueError(f"{name}: an amount cannot be negative ({v})")
        if isinstance(v, int) and v > MAX_AMOUNT:
            raise ValueError(f"{name}: {v} is above the most the daemon holds ({MAX_AMOUNT})")
        out[name] = v
    return out


def seg(text: Union[str, int]) -> str:
    """One path segment, percent-encoded."""
    return quote(str(text), safe="")


def split_command(command: Union[str, Sequence[str]]) -> List[str]:
    """A command as a list of arguments (a string is split as a shell would)."""
    if isinstance(command, str):
        return shlex.split(command)
    return [str(c) for c in command]


def nest_limits(limits: Optional[Mapping[str, Any]] = None, flat: Optional[Mapping[str, Any]] = None) -> Dict[str, Dict[str, Any]]:
    """Limits as the daemon's ``{RESOURCE: {soft?, hard?, burst?, burst_window?, action?}}``.

    Accepts the nested form, the CLI's dotted form (``{"memory.hard": "300Mi"}``),
    or both merged (``flat`` wins).
    """
    out: Dict[str, Dict[str, Any]] = {}
    for src in (limits or {}, flat or {}):
        for key, v in src.items():
            if isinstance(v, Mapping):
                out.setdefault(key, {}).update(v)
            elif "." in key:
                res, _, fld = key.rpartition(".")
                out.setdefault(res, {})[fld] = v
            else:
                raise ValueError(f"limit {key!r}: give {{'{key}': {{'hard': ...}}}} or '{key}.hard'")
    return out


def drop_none(d: Mapping[str, Any]) -> Dict[str, Any]:
    """The mapping without ``None`` values."""
    return {k: v for k, v in d.items() if v is not None}


def _identity(v: Any) -> Any:
    return v


@dataclass
class Call(Generic[T]):
    """One request and how to read its answer (into a ``T``)."""

    method: str
    path: str
    params: Optional[Dict[str, Any]] = None
    json: Any = None
    parse: Callable[[Any], T] = _identity
    #: Read the body as text (reports in text, svg, html; metrics).
    text: bool = False
    headers: Dict[str, str] = field(default_factory=dict)

    def request_kwargs(self) -> Dict[str, Any]:
        kw: Dict[str, Any] = {}
        if self.params:
            kw["params"] = drop_none(self.params)
        if self.json is not None:
            kw["json"] = self.json
        if self.headers:
            kw["headers"] = self.headers
        return kw


def read(call: "Call[T]", response: httpx.Response) -> T:
    """The parsed answer of ``call``, or the typed exception for an error answer.

    Raises:
        AllotError: The typed exception of an error answer.
        ServerError: ``bad_answer``: an answer that is not a success (a
            redirect) or that the client cannot read (not JSON, not the
            answer's model), such as a proxy's page.
    """
    raise_for(response)
    status = response.status_code
    if not 200 <= status < 300:
        raise bad_answer(call, status, f"HTTP {status} is not an answer of the API")
    try:
        if call.text:
            return call.parse(response.text)
        if status == 204 or not response.content:
            return call.parse(None)
        return call.parse(response.json())
    except ValueError as e:  # not JSON, not UTF-8, or not the model (pydantic's ValidationError is one)
        raise bad_answer(call, status, str(e)) from None


def bad_answer(call: "Call[Any]", status: Optional[int], why: str) -> ServerError:
    """The error for an answer the client cannot read."""
    return ServerError(f"cannot read the answer to {call.method} {call.path}: {why}", code="bad_answer", status=status)


def request_body(model: Any, data: Any) -> Any:
    """``model.model_validate(data)``, a field the model refuses raised as a
    ``ValueError`` naming it (``limits.memory.hardd: Extra inputs are not permitted``)."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors())
        raise ValueError(f"{problems} (in {model.__name__})") from None


def reservation_id(rid: Any) -> int:
    """A reservation id: a whole number (an int, or its decimal text).

    Raises:
        ValueError: Anything else (a bool, a float, a path).
    """
    if isinstance(rid, int) and not isinstance(rid, bool) and rid >= 0:
        return rid
    if isinstance(rid, str) and rid.isascii() and rid.isdigit():
        return int(rid)
    raise ValueError(f"a reservation id is a whole number (the id reserve answered), not {rid!r}")


def bearer_token(token: Optional[str]) -> Optional[str]:
    """The token without surrounding whitespace (a token file's newline).

    Raises:
        ValueError: Empty, or not visible ASCII (it cannot be sent in a header).
    """
    if token is None:
        return None
    t = token.strip()
    if not t or not all(0x21 <= ord(ch) <= 0x7E for ch in t):
        raise ValueError("token: a bearer token is visible ASCII without spaces (the daemon's --token-file), "
                         f"not {'an empty string' if not t else 'one with other characters'}")
    return t


def unreachable(e: Exception, socket: Optional[str], source: Optional[str], base_url: Optional[str]) -> DaemonUnavailable:
    """The exception for a daemon that cannot be reached."""
    if socket is not None:
        return DaemonUnavailable(
            f"no allot daemon answers at {socket} (socket from {source}): {e}. "
            "Start one (`allot daemon`, or `allot up FLEET.toml`) or point ALLOT_SOCKET at its socket",
            socket=socket,
        )
    return DaemonUnavailable(f"no allot daemon answers at {base_url}: {e}", base_url=base_url)


class ClientBase:
    """Where both clients connect and for which agent they act."""

    base_url: Optional[str]
    socket: Optional[str]
    socket_source: Optional[str]
    agent_id: Optional[str]

    def _init_connection(self, socket: Optional[Union[str, "os.PathLike[str]"]], base_url: Optional[str], token: Optional[str],
                           agent_id: Optional[str]) -> None:
        self.base_url = base_url
        self.socket, self.socket_source = None, None
        if base_url is None:
            if socket is not None:
                self.socket, self.socket_source = os.fspath(socket), "socket="
            else:
                self.socket, self.socket_source = discover_socket()
        self.agent_id = agent_id if agent_id is not None else (os.environ.get("ALLOT_AGENT_ID") or None)
        token = bearer_token(token)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _unreachable(self, e: Exception) -> DaemonUnavailable:
        return unreachable(e, self.socket, self.socket_source, self.base_url)

    def _me(self, agent_id: Optional[str]) -> str:
        return agent_id_or_raise(agent_id, self.agent_id)


def agent_id_or_raise(given: Optional[str], default: Optional[str]) -> str:
    """The agent id of an agent method: the one given (an empty one is
    refused by the path, not replaced by the client's), else the client's."""
    if given is not None:
        return given
    if not default:
        raise NotAnAgent(
            "no agent id: this process was not started by allot (ALLOT_AGENT_ID is not set); "
            "pass agent_id= to the client or the method"
        )
    return default


def _agents(v: Any) -> List[m.AgentStatus]:
    return [m.AgentStatus.model_validate(x) for x in (v or [])]


# ---- the calls, one per method (paths and bodies from the route table) -------------------

def _list_of(model: Any) -> Callable[[Any], List[Any]]:
    return lambda v: [model.model_validate(x) for x in (v or [])]


def _call(key: str, params: Optional[Dict[str, Any]] = None, body: Optional[Union[rq.Request, rq.PoolRequest]] = None, parse: Callable[[Any], Any] = _identity,
          text: bool = False, **path: Any) -> Call[Any]:
    r = rq.route(key)
    if params:
        unknown = set(params) - set(r.query)
        if unknown:
            raise AssertionError(f"{key} takes no query parameter {sorted(unknown)}")
    return Call(r.method, r.format(**path), params=params, json=None if body is None else body.body(), parse=parse, text=text)


def c_healthz() -> Call[bool]:
    return _call("GET /healthz", text=True, parse=lambda t: t.strip() == "ok")


def c_readyz() -> Call[bool]:
    return _call("GET /readyz", text=True, parse=lambda t: True)


def c_openapi() -> Call[Dict[str, Any]]:
    return _call("GET /v1/openapi.json")


def c_ps() -> Call[List[m.AgentStatus]]:
    return _call("GET /v1/agents", parse=_list_of(m.AgentStatus))


def c_agent(agent: str) -> Call[m.AgentStatus]:
    return _call("GET /v1/agents/{id}", parse=m.AgentStatus.model_validate, id=agent)


def _limits(limits: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Dict[str, Any]]]:
    """Limits in the nested form, checked with the request they are part of."""
    if not limits:
        return None
    return nest_limits(limits)


def c_run(command: Union[str, Sequence[str]], name: str, group: str, priority: Optional[int], limits: Optional[Mapping[str, Any]],
          env: Optional[Mapping[str, str]], workdir: Optional[str], user: Optional[str], pools: Optional[Sequence[str]]) -> Call[m.Started]:
    body = request_body(rq.StartRequest, dict(
        name=name, group=group, command=split_command(command), priority=priority, limits=_limits(limits),
        env=dict(env) if env is not None else None, workdir=str(workdir) if workdir is not None else None, user=user,
        pools=list(pools) if pools is not None else None,
    ))
    return _call("POST /v1/agents", body=body, parse=m.Started.model_validate)


def c_adopt(pid: int, name: str, group: str, move: bool, priority: Optional[int], limits: Optional[Mapping[str, Any]],
            pools: Optional[Sequence[str]]) -> Call[m.Started]:
    body = request_body(rq.AdoptRequest, dict(name=name, group=group, pid=pid, move=bool(move), priority=priority, limits=_limits(limits),
                                              pools=list(pools) if pools is not None else None))
    return _call("POST /v1/adopt", body=body, parse=m.Started.model_validate)


def c_act(agent: str, action: str, params: Optional[Dict[str, Any]] = None) -> Call[m.ActionResult]:
    return _call(f"POST /v1/agents/{{id}}/{action}", params=params, parse=m.ActionResult.model_validate, id=agent)


def c_stop(agent: str) -> Call[m.ActionResult]:
    return _call("DELETE /v1/agents/{id}", parse=m.ActionResult.model_validate, id=agent)


def c_quota(agent: str) -> Call[m.Quota]:
    return _call("GET /v1/agents/{id}/quota", parse=m.Quota.model_validate, id=agent)


def c_set_quota(agent: str, limits: Mapping[str, Any]) -> Call[m.Quota]:
    body = request_body(rq.QuotaRequest, {"limits": dict(limits)})
    return _call("PATCH /v1/agents/{id}/quota", body=body, parse=m.Quota.model_validate, id=agent)


def c_usage(agent: str, resource: str, value: Amount) -> Call[m.UsageReport]:
    return _call("POST /v1/agents/{id}/usage", body=request_body(rq.UsageRequest, {"resource": resource, "value": value}),
                 parse=m.UsageReport.model_validate,
                 id=agent)


Ttl = Union[str, int, float, timedelta]


def ttl_text(ttl: Ttl) -> str:
    """A ttl as the daemon's duration text: strings as given (``"60s"``),
    numbers as seconds, timedeltas, both rounded up to whole milliseconds."""
    if isinstance(ttl, str):
        return ttl
    secs = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if isinstance(ttl, bool) or not math.isfinite(secs) or secs < 0:
        raise ValueError(f"ttl must be a duration ('60s', seconds, a timedelta), not {ttl!r}")
    return f"{int(math.ceil(secs * 1000))}ms"


def c_reserve(agent: str, resources: Mapping[str, Amount], ttl: Optional[Ttl]) -> Call[m.Reservation]:
    body = request_body(rq.ReserveRequest, {"resources": dict(resources), "ttl": None if ttl is None else ttl_text(ttl)})
    return _call("POST /v1/agents/{id}/reservations", body=body, parse=m.Reservation.model_validate, id=agent)


def c_settle(rid: int, resources: Mapping[str, Amount]) -> Call[m.Settlement]:
    return _call("POST /v1/reservations/{rid}/settle", body=request_body(rq.SettleRequest, {"resources": dict(resources)}),
                 parse=m.Settlement.model_validate, rid=reservation_id(rid))


def c_release(rid: int) -> Call[m.Released]:
    return _call("DELETE /v1/reservations/{rid}", parse=m.Released.model_validate, rid=reservation_id(rid))


def c_budgets(agent: Optional[str]) -> Call[m.Budgets]:
    if agent is None:
        return _call("GET /v1/budgets", parse=m.Budgets.model_validate)
    return _call("GET /v1/agents/{id}/budgets", parse=m.Budgets.model_validate, id=agent)


def c_pool(name: str) -> Call[m.Budgets]:
    return _call("GET /v1/pools/{name}", parse=m.Budgets.model_validate, name=name)


def pool_budgets(b: m.Budgets) -> m.Budgets:
    """Only the pool levels of a budget listing."""
    views = [v for v in b.budgets if v.level.startswith("pool:")]
    res = [r for r in b.reservations if any(lv.startswith("pool:") for ls in r.levels.values() for lv in ls)]
    return b.model_copy(update={"budgets": views, "reservations": res, "open_reservations": len(res),
                                "reservations_truncated": b.reservations_truncated})


def c_put_pool(name: str, budgets: Mapping[str, Any]) -> Call[m.PoolChange]:
    return _call("PUT /v1/pools/{name}", body=request_body(rq.PoolRequest, dict(budgets)), parse=m.PoolChange.model_validate, name=name)


def c_delete_pool(name: str) -> Call[m.PoolChange]:
    return _call("DELETE /v1/pools/{name}", parse=m.PoolChange.model_validate, name=name)


def c_ack(agent: str, seq: int, note: str) -> Call[m.Ack]:
    return _call("POST /v1/agents/{id}/ack", body=request_body(rq.AckRequest, {"seq": seq, "note": note}), parse=m.Ack.model_validate, id=agent)


def c_compliance(agent: str) -> Call[m.Compliance]:
    return _call("GET /v1/agents/{id}/compliance", parse=m.Compliance.model_validate, id=agent)


def c_analysis(agent: str, resource: Optional[str], window: Optional[str], horizon: Optional[str]) -> Call[m.Analysis]:
    return _call("GET /v1/agents/{id}/analysis", params={"resource": resource, "window": window, "horizon": horizon},
                 parse=m.Analysis.model_validate, id=agent)


def c_recommendations(agent: Optional[str]) -> Call[List[m.Recommendation]]:
    if agent is None:
        return _call("GET /v1/recommendations", parse=_list_of(m.Recommendation))
    return _call("GET /v1/agents/{id}/recommendations", parse=_list_of(m.Recommendation), id=agent)


def c_report_of(agent: Optional[str], since: Optional[str], until: Optional[str], format: str) -> Call[Any]:
    params = {"since": since, "until": until, "format": format}
    parse: Callable[[Any], Any] = _identity if format != "json" else _list_of(m.AgentReport)
    if agent is None:
        return _call("GET /v1/report", params=params, text=format != "json", parse=parse)
    return _call("GET /v1/agents/{id}/report", params=params, text=format != "json", parse=parse, id=agent)


def c_events_page(since: Optional[int], topic: Optional[str]) -> Call[List[m.Event]]:
    return _call("GET /v1/events", params={"since": since, "topic": topic, "follow": "false"}, parse=_list_of(m.Event))


def c_groups() -> Call[List[m.Group]]:
    return _call("GET /v1/groups", parse=_list_of(m.Group))


def c_put_group(name: str, body: Mapping[str, Any], create: bool) -> Call[m.Group]:
    return _call("POST /v1/groups/{name}" if create else "PUT /v1/groups/{name}", body=request_body(rq.GroupRequest, dict(body)),
                 parse=m.Group.model_validate, name=name)


def c_delete_group(name: str) -> Call[None]:
    return _call("DELETE /v1/groups/{name}", parse=lambda v: None, name=name)


def c_history(agent: Optional[str]) -> Call[List[m.HistoryEntry]]:
    return _call("GET /v1/history", params={"agent": agent}, parse=_list_of(m.HistoryEntry))


def c_host() -> Call[m.Host]:
    return _call("GET /v1/host", parse=m.Host.model_validate)


def c_metrics() -> Call[str]:
    return _call("GET /metrics", text=True)


class SseParser:
    """Server-sent events, line by line (the WHATWG rules the daemon's stream needs):
    ``id:``, ``event:`` and ``data:`` fields, a blank line ends an event,
    ``:`` lines are comments (keep-alives)."""

    def __init__(self) -> None:
        self.data: List[str] = []
        self.event_id: Optional[str] = None

    def feed(self, line: str) -> Optional[m.Event]:
        """One line (without its end); the event it completes, if any."""
        if line == "":
            if not self.data:
                return None
            text = "\n".join(self.data)
            self.data = []
            try:
                return m.Event.model_validate_json(text)
            except ValueError as e:
                raise ServerError(f"cannot read an event of GET /v1/events: {e}", code="bad_answer", status=200) from None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self.data.append(value)
        elif name == "id":
            self.event_id = value
        return None


def events_request(since: Optional[int], topic: Optional[str]) -> Tuple[str, Dict[str, Any], Dict[str, str]]:
    """The path, query and headers of a streaming ``GET /v1/events`` resumed after ``since``."""
    r = rq.route("GET /v1/events")
    headers = {"Accept": "text/event-stream"}
    if since is not None:
        headers["Last-Event-ID"] = str(since)
    return r.path, drop_none({"topic": topic}), headers


#: The most events one ``follow=false`` page holds (the daemon's ``EVENTS_PAGE``).
EVENTS_PAGE = 1000


def raise_for(response: httpx.Response) -> None:
    """Raise the typed exception of an error answer (a read body)."""
    if response.status_code >= 400:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        raise error_from_response(response.status_code, body, response.headers)


#: What ends an event stream that a reconnect may resume.
STREAM_BROKEN = (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError, httpx.ReadTimeout, httpx.WriteError)


def me_of(agent: m.AgentStatus, compliance: m.Compliance) -> m.Me:
    """The :class:`~allot.models.Me` of an agent's status and compliance."""
    return m.Me(agent=agent, quota=agent.quota, compliance=compliance)
