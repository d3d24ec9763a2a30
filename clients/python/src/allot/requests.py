"""Pydantic models of the daemon's request bodies, and the route table.

Request models refuse unknown fields (as the daemon does). :data:`ROUTES`
lists every route the client calls, with its body model and query
parameters; the client builds each request from it, and a test compares it
with the daemon's ``/v1/openapi.json`` so a route or field added on either
side without the other fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Type, Union

from pydantic import BaseModel, ConfigDict, RootModel

__all__ = [
    "Request",
    "LimitSpec",
    "StartRequest",
    "AdoptRequest",
    "QuotaRequest",
    "UsageRequest",
    "AckRequest",
    "ReserveRequest",
    "SettleRequest",
    "GroupRequest",
    "HandlerSpec",
    "BudgetSpec",
    "Budget",
    "PoolRequest",
    "Route",
    "ROUTES",
    "route",
]

#: A quantity: a count in the resource's unit, or text the daemon parses (``"300Mi"``, ``"4k"``, ``"5M/day"``).
Quantity = Union[int, str]


class Request(BaseModel):
    """Base of request bodies: unknown fields refused, ``None`` left out when sent."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def body(self) -> Dict[str, Any]:
        """The JSON body (fields left ``None`` are not sent)."""
        out: Dict[str, Any] = self.model_dump(by_alias=True, exclude_none=True)
        return out


class LimitSpec(Request):
    """One resource's limits: ``soft``, ``hard``, ``burst`` (quantities; a
    budget resource's carry a window, ``"80k/min"``), ``burst_window``
    (``"30s"``) and ``action`` (``warn``, ``throttle``, ``suspend``,
    ``scale_down``, ``terminate``, ...)."""

    soft: Optional[Quantity] = None
    hard: Optional[Quantity] = None
    burst: Optional[Quantity] = None
    burst_window: Optional[str] = None
    action: Optional[str] = None


class StartRequest(Request):
    """``POST /v1/agents``: start a command as an agent."""

    name: str
    group: str
    command: List[str]
    priority: Optional[int] = None
    limits: Optional[Dict[str, LimitSpec]] = None
    env: Optional[Dict[str, str]] = None
    workdir: Optional[str] = None
    user: Optional[str] = None
    """A user name, uid or ``uid:gid``; unset: the caller's own (``nobody`` for root)."""
    pools: Optional[List[str]] = None


class AdoptRequest(Request):
    """``POST /v1/adopt``: govern a running process."""

    name: str
    group: str
    pid: int
    move: bool = False
    priority: Optional[int] = None
    limits: Optional[Dict[str, LimitSpec]] = None
    pools: Optional[List[str]] = None


class QuotaRequest(Request):
    """``PATCH /v1/agents/{id}/quota``: limits merged over the agent's."""

    limits: Dict[str, LimitSpec]


class UsageRequest(Request):
    """``POST /v1/agents/{id}/usage``: usage of a custom resource, added within its window."""

    resource: str
    value: Quantity


class AckRequest(Request):
    """``POST /v1/agents/{id}/ack``: a request of the agent channel handled."""

    seq: int
    note: Optional[str] = None


class ReserveRequest(Request):
    """``POST /v1/agents/{id}/reservations``."""

    resources: Dict[str, Quantity]
    ttl: Optional[str] = None


class SettleRequest(Request):
    """``POST /v1/reservations/{rid}/settle``: the actual amounts (a resource
    left out is charged as reserved)."""

    resources: Optional[Dict[str, Quantity]] = None


class HandlerSpec(Request):
    """A group's custom action handler: a ``command`` (program and arguments) or an ``http://`` ``url``."""

    command: Optional[List[str]] = None
    url: Optional[str] = None


class BudgetSpec(Request):
    """One budget of a pool: ``hard`` (and ``soft``) per rolling window
    (``per = "day"``) or calendar window (``calendar = "month"``, ``day``,
    ``at``, ``tz`` as ``"+02:00"``); ``on_expiry`` ``charge`` or ``release``."""

    hard: Quantity
    soft: Optional[Quantity] = None
    per: Optional[str] = None
    calendar: Optional[str] = None
    day: Optional[int] = None
    at: Optional[str] = None
    tz: Optional[str] = None
    on_expiry: Optional[str] = None


#: A budget: ``"5M/day"``, a count (per minute), or its table.
Budget = Union[str, int, BudgetSpec]


class GroupRequest(Request):
    """``POST``/``PUT /v1/groups/{name}``, in the fleet file's shape: ``totals``
    are quantities on measured resources and budgets on custom ones."""

    extends: Optional[str] = None
    description: Optional[str] = None
    scaling_policy: Optional[str] = None
    limits: Optional[Dict[str, LimitSpec]] = None
    totals: Optional[Dict[str, Budget]] = None
    custom_handler: Optional[HandlerSpec] = None


class PoolRequest(RootModel[Dict[str, Budget]]):
    """``PUT /v1/pools/{name}``: ``{RESOURCE: "5M/day" | BudgetSpec}``."""

    def body(self) -> Dict[str, Any]:
        """The JSON body."""
        out: Dict[str, Any] = self.model_dump(by_alias=True, exclude_none=True)
        return out


@dataclass(frozen=True)
class Route:
    """One route the client calls."""

    method: str
    path: str
    #: The body model, if the route takes a body.
    body: Optional[Type[BaseModel]] = None
    #: The query parameters it takes.
    query: Tuple[str, ...] = ()
    #: The client methods that call it (on both clients).
    methods: Tuple[str, ...] = ()

    def format(self, **params: Any) -> str:
        """The path with its ``{param}`` segments filled in, percent-encoded.

        Raises:
            ValueError: A segment that is empty, ``"."`` or ``".."``: httpx
                removes dot segments, so ``/v1/agents/../budgets`` would be sent
                as ``/v1/budgets``, another route.
        """
        from urllib.parse import quote

        for k, v in params.items():
            if str(v) in ("", ".", ".."):
                what = {"id": "agent id", "rid": "reservation id"}.get(k, k)
                raise ValueError(f"{what} {str(v)!r} names nothing: give a name (not empty, '.' or '..')")
        return self.path.format(**{k: quote(str(v), safe="") for k, v in params.items()})


def _r(method: str, path: str, methods: Tuple[str, ...], body: Optional[Type[BaseModel]] = None, query: Tuple[str, ...] = ()) -> Route:
    return Route(method, path, body, query, methods)


#: Every route of the daemon's API the client knows, by ``"METHOD /path"``.
ROUTES: Dict[str, Route] = {
    f"{r.method} {r.path}": r
    for r in [
        _r("GET", "/healthz", ("healthz",)),
        _r("GET", "/readyz", ("readyz",)),
        _r("GET", "/v1/openapi.json", ("openapi",)),
        _r("GET", "/v1/agents", ("ps",)),
        _r("POST", "/v1/agents", ("run",), StartRequest),
        _r("GET", "/v1/agents/{id}", ("agent", "me")),
        _r("DELETE", "/v1/agents/{id}", ("stop",)),
        _r("POST", "/v1/adopt", ("adopt",), AdoptRequest),
        _r("POST", "/v1/agents/{id}/suspend", ("suspend",)),
        _r("POST", "/v1/agents/{id}/resume", ("resume",), query=("force",)),
        _r("POST", "/v1/agents/{id}/terminate", ("terminate",)),
        _r("POST", "/v1/agents/{id}/throttle", ("throttle",), query=("cpu",)),
        _r("POST", "/v1/agents/{id}/clear", ("clear",)),
        _r("GET", "/v1/agents/{id}/quota", ("quota",)),
        _r("PATCH", "/v1/agents/{id}/quota", ("set_quota",), QuotaRequest),
        _r("POST", "/v1/agents/{id}/usage", ("report",), UsageRequest),
        _r("POST", "/v1/agents/{id}/reservations", ("reserve",), ReserveRequest),
        _r("GET", "/v1/agents/{id}/budgets", ("budgets",)),
        _r("POST", "/v1/reservations/{rid}/settle", ("settle",), SettleRequest),
        _r("DELETE", "/v1/reservations/{rid}", ("release",)),
        _r("GET", "/v1/budgets", ("budgets", "pools")),
        _r("GET", "/v1/pools/{name}", ("pools",)),
        _r("PUT", "/v1/pools/{name}", ("put_pool",), PoolRequest),
        _r("DELETE", "/v1/pools/{name}", ("delete_pool",)),
        _r("POST", "/v1/agents/{id}/ack", ("ack",), AckRequest),
        _r("GET", "/v1/agents/{id}/compliance", ("compliance", "me")),
        _r("GET", "/v1/agents/{id}/analysis", ("analysis",), query=("resource", "window", "horizon")),
        _r("GET", "/v1/agents/{id}/recommendations", ("recommendations",)),
        _r("GET", "/v1/agents/{id}/report", ("report_of",), query=("since", "until", "format")),
        _r("GET", "/v1/recommendations", ("recommendations",)),
        _r("GET", "/v1/report", ("report_of",), query=("since", "until", "format")),
        _r("GET", "/v1/events", ("events",), query=("since", "topic", "follow")),
        _r("GET", "/v1/groups", ("groups",)),
        _r("POST", "/v1/groups/{name}", ("put_group",), GroupRequest),
        _r("PUT", "/v1/groups/{name}", ("put_group",), GroupRequest),
        _r("DELETE", "/v1/groups/{name}", ("delete_group",)),
        _r("GET", "/v1/history", ("history",), query=("agent",)),
        _r("GET", "/v1/host", ("host",)),
        _r("GET", "/metrics", ("metrics",)),
    ]
}


def route(key: str) -> Route:
    """The route ``"METHOD /path"`` (a KeyError names a route the table lacks)."""
    return ROUTES[key]

