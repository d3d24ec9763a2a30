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

from . import models as m
from .errors import DaemonUnavailable, NotAnAgent, error_from_response

#: The socket of a daemon run as root (``allot daemon``'s default then).
ROOT_SOCKET = "/run/allot/allot.sock"

#: An amount: a count, or a quantity string the daemon parses (``"4k"``).
Amount = Union[int, str]

USD_MICROS = 1_000_000

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
            a float count, or a value of another type.
    """
    out: Dict[str, Amount] = {}
    for name, v in given.items():
        if v is None:
            continue
        if name == "usd":
            if given.get("usd_micros") is not None:
                raise ValueError("give usd (dollars) or usd_micros, not both")
            out["usd_micros"] = usd_to_micros(v)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            if isinstance(v, float) and v.is_integer() and v >= 0:
                v = int(v)
            else:
                raise ValueError(f"{name}: an amount is a whole count (int) or a quantity string such as '4k', not {v!r}")
        if isinstance(v, int) and v < 0:
            raise ValueError(f"{name}: an amount cannot be negative ({v})")
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
    """The parsed answer of ``call``, or the typed exception for an error answer."""
    if response.status_code >= 400:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        raise error_from_response(response.status_code, body, response.headers)
    if call.text:
        return call.parse(response.text)
    if response.status_code == 204 or not response.content:
        return call.parse(None)
    return call.parse(response.json())


def unreachable(e: Exception, socket: Optional[str], source: Optional[str], base_url: Optional[str]) -> DaemonUnavailable:
    """The exception for a daemon that cannot be reached."""
    if socket is not None:
        return DaemonUnavailable(
            f"no allot daemon answers at {socket} (socket from {source}): {e}. "
            "Start one (`allot daemon`, or `allot up FLEET.toml`) or point ALLOT_SOCKET at its socket",
            socket=socket,
        )
    return DaemonUnavailable(f"no allot daemon answers at {base_url}: {e}", base_url=base_url)


def agent_id_or_raise(given: Optional[str], default: Optional[str]) -> str:
    """The agent id of an agent method: the one given, else the client's."""
    a = given or default
    if not a:
        raise NotAnAgent(
            "no agent id: this process was not started by allot (ALLOT_AGENT_ID is not set); "
            "pass agent_id= to the client or the method"
        )
    return a


def _agents(v: Any) -> List[m.AgentStatus]:
    return [m.AgentStatus.model_validate(x) for x in (v or [])]


# ---- the calls, one per method --------------------------------------------------------

def c_healthz() -> Call[bool]:
    return Call("GET", "/healthz", text=True, parse=lambda t: t.strip() == "ok")


def c_readyz() -> Call[bool]:
    return Call("GET", "/readyz", text=True, parse=lambda t: True)


def c_openapi() -> Call[Dict[str, Any]]:
    return Call("GET", "/v1/openapi.json")


def c_ps() -> Call[List[m.AgentStatus]]:
    return Call("GET", "/v1/agents", parse=_agents)


def c_agent(agent: str) -> Call[m.AgentStatus]:
    return Call("GET", f"/v1/agents/{seg(agent)}", parse=m.AgentStatus.model_validate)


def c_run(command: Union[str, Sequence[str]], name: str, group: str, priority: Optional[int], limits: Optional[Mapping[str, Any]],
          env: Optional[Mapping[str, str]], workdir: Optional[str], user: Optional[str], pools: Optional[Sequence[str]]) -> Call[Dict[str, Any]]:
    body = drop_none({
        "name": name,
        "group": group,
        "command": split_command(command),
        "priority": priority,
        "limits": nest_limits(limits) if limits else None,
        "env": dict(env) if env is not None else None,
        "workdir": str(workdir) if workdir is not None else None,
        "user": user,
        "pools": list(pools) if pools is not None else None,
    })
    return Call("POST", "/v1/agents", json=body)


def c_adopt(pid: int, name: str, group: str, move: bool, priority: Optional[int], limits: Optional[Mapping[str, Any]],
            pools: Optional[Sequence[str]]) -> Call[Dict[str, Any]]:
    body = drop_none({
        "name": name,
        "group": group,
        "pid": int(pid),
        "move": bool(move),
        "priority": priority,
        "limits": nest_limits(limits) if limits else None,
        "pools": list(pools) if pools is not None else None,
    })
    return Call("POST", "/v1/adopt", json=body)


def c_act(agent: str, action: str, params: Optional[Dict[str, Any]] = None) -> Call[m.ActionResult]:
    return Call("POST", f"/v1/agents/{seg(agent)}/{action}", params=params, parse=m.ActionResult.model_validate)


def c_quota(agent: str) -> Call[Any]:
    return Call("GET", f"/v1/agents/{seg(agent)}/quota")


def c_set_quota(agent: str, limits: Mapping[str, Any]) -> Call[Any]:
    return Call("PATCH", f"/v1/agents/{seg(agent)}/quota", json={"limits": limits})


def c_usage(agent: str, resource: str, value: Amount) -> Call[m.UsageReport]:
    return Call("POST", f"/v1/agents/{seg(agent)}/usage", json={"resource": resource, "value": value},
                parse=m.UsageReport.model_validate)


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
    body: Dict[str, Any] = {"resources": dict(resources)}
    if ttl is not None:
        body["ttl"] = ttl_text(ttl)
    return Call("POST", f"/v1/agents/{seg(agent)}/reservations", json=body, parse=m.Reservation.model_validate)


def c_settle(rid: int, resources: Mapping[str, Amount]) -> Call[m.Settlement]:
    return Call("POST", f"/v1/reservations/{seg(rid)}/settle", json={"resources": dict(resources)},
                parse=m.Settlement.model_validate)


def c_release(rid: int) -> Call[m.Released]:
    return Call("DELETE", f"/v1/reservations/{seg(rid)}", parse=m.Released.model_validate)


def c_budgets(agent: Optional[str]) -> Call[m.Budgets]:
    path = "/v1/budgets" if agent is None else f"/v1/agents/{seg(agent)}/budgets"
    return Call("GET", path, parse=m.Budgets.model_validate)


def c_pool(name: str) -> Call[m.Budgets]:
    return Call("GET", f"/v1/pools/{seg(name)}", parse=m.Budgets.model_validate)


def pool_budgets(b: m.Budgets) -> m.Budgets:
    """Only the pool levels of a budget listing."""
    views = [v for v in b.budgets if v.level.startswith("pool:")]
    res = [r for r in b.reservations if any(lv.startswith("pool:") for ls in r.levels.values() for lv in ls)]
    return b.model_copy(update={"budgets": views, "reservations": res, "open_reservations": len(res),
                                "reservations_truncated": b.reservations_truncated})


def c_put_pool(name: str, budgets: Mapping[str, Any]) -> Call[Dict[str, Any]]:
    return Call("PUT", f"/v1/pools/{seg(name)}", json=dict(budgets))


def c_delete_pool(name: str) -> Call[Dict[str, Any]]:
    return Call("DELETE", f"/v1/pools/{seg(name)}")


def c_ack(agent: str, seq: int, note: str) -> Call[m.Ack]:
    return Call("POST", f"/v1/agents/{seg(agent)}/ack", json={"seq": int(seq), "note": note}, parse=m.Ack.model_validate)


def c_compliance(agent: str) -> Call[m.Compliance]:
    return Call("GET", f"/v1/agents/{seg(agent)}/compliance", parse=m.Compliance.model_validate)


def c_analysis(agent: str, resource: Optional[str], window: Optional[str], horizon: Optional[str]) -> Call[Dict[str, Any]]:
    return Call("GET", f"/v1/agents/{seg(agent)}/analysis",
                params={"resource": resource, "window": window, "horizon": horizon})


def c_recommendations(agent: Optional[str]) -> Call[List[Dict[str, Any]]]:
    path = "/v1/recommendations" if agent is None else f"/v1/agents/{seg(agent)}/recommendations"
    return Call("GET", path)


def c_report_of(agent: Optional[str], since: Optional[str], until: Optional[str], format: str) -> Call[Any]:
    path = "/v1/report" if agent is None else f"/v1/agents/{seg(agent)}/report"
    return Call("GET", path, params={"since": since, "until": until, "format": format}, text=format != "json")


def c_groups() -> Call[List[Dict[str, Any]]]:
    return Call("GET", "/v1/groups")


def c_put_group(name: str, body: Mapping[str, Any], create: bool) -> Call[Dict[str, Any]]:
    return Call("POST" if create else "PUT", f"/v1/groups/{seg(name)}", json=dict(body))


def c_delete_group(name: str) -> Call[None]:
    return Call("DELETE", f"/v1/groups/{seg(name)}", parse=lambda v: None)


def c_history(agent: Optional[str]) -> Call[List[Dict[str, Any]]]:
    return Call("GET", "/v1/history", params={"agent": agent})


def c_host() -> Call[Dict[str, Any]]:
    return Call("GET", "/v1/host")


def c_metrics() -> Call[str]:
    return Call("GET", "/metrics", text=True)


def me_of(agent: m.AgentStatus, compliance: m.Compliance) -> m.Me:
    """The :class:`~allot.models.Me` of an agent's status and compliance."""
    return m.Me(agent=agent, quota=agent.quota, compliance=compliance)
