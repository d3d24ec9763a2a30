"""Pydantic models of the daemon's answers.

Every model allows extra fields: a field the daemon adds later is kept
(``model.model_extra``) rather than refused. Amounts are in internal units:
bytes, millicores, counts, bytes per second; money budgets count
``usd_micros`` (millionths of a dollar).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Model",
    "HeldBy",
    "AgentStatus",
    "Reservation",
    "BudgetWindow",
    "BudgetView",
    "Budgets",
    "SettledLine",
    "OverLimit",
    "Settlement",
    "Released",
    "UsageReport",
    "ActionResult",
    "Escalation",
    "ResourceCompliance",
    "Compliance",
    "Me",
    "Ack",
    "Event",
    "Limit",
    "Quota",
    "GroupLimit",
    "Group",
    "HistoryEntry",
    "Recommendation",
    "HostResource",
    "Host",
    "Started",
    "PoolChange",
    "InForce",
    "Analysis",
    "ResourceReport",
    "AgentReport",
    "unknown_fields",
]


class Model(BaseModel):
    """Base of every answer model: extra fields allowed and kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class HeldBy(Model):
    """Who holds an agent frozen or throttled (``policy:cpu``, ``operator``, ``host_pressure``)."""

    freeze: List[str] = Field(default_factory=list)
    throttle: List[str] = Field(default_factory=list)


class AgentStatus(Model):
    """An agent as ``GET /v1/agents`` and ``GET /v1/agents/{id}`` answer it."""

    id: str
    group: str
    state: str
    exit: Optional[str] = None
    """Why it exited, if it did."""
    exit_cause: Optional[str] = None
    """What ended it: ``exit`` (its own), ``oom_kill``, ``allot`` (terminated)."""
    pids: List[int] = Field(default_factory=list)
    usage: Dict[str, int] = Field(default_factory=dict)
    """Latest usage per resource, in internal units."""
    disk_io_source: Optional[str] = None
    last_action: str = ""
    held_by: HeldBy = Field(default_factory=HeldBy)
    quota: Optional["Quota"] = None
    """Its quota (limits per resource)."""
    uid: Optional[int] = None
    root: bool = False
    budgets: Optional[Dict[str, Any]] = None
    """Budget use per custom resource at its tightest level (``level``,
    ``spent``, ``reserved``, ``hard``, ``remaining``); ``None`` without budgets."""


class Reservation(Model):
    """An open reservation, as ``POST /v1/agents/{id}/reservations`` answers it."""

    id: int
    agent: str
    resources: Dict[str, int] = Field(default_factory=dict)
    """Amounts held, by resource."""
    levels: Dict[str, List[str]] = Field(default_factory=dict)
    """Where each resource is held: ``agent:ID``, ``group:G``, ``pool:P``."""
    created_at: Optional[str] = None
    expires_at: Optional[str] = None
    expires_ms: Optional[int] = None


class BudgetWindow(Model):
    """A budget's window: ``rolling`` (with ``length_ms``) or ``calendar``."""

    kind: str
    text: str = ""
    length_ms: Optional[int] = None


class BudgetView(Model):
    """One budget: a level's limit on one resource and where it stands."""

    level: str
    resource: str
    window: BudgetWindow
    hard: int
    cap: Optional[int] = None
    """Cluster mode: this node's slice of the budget (reservations stop there); ``None`` otherwise."""
    soft: Optional[int] = None
    spent: int = 0
    reserved: int = 0
    remaining: int = 0
    over_soft: bool = False
    resets_at: Optional[str] = None
    resets_in_ms: Optional[int] = None
    on_expiry: Optional[str] = None
    """``charge`` or ``release``: what an unsettled reservation's expiry does."""


class Budgets(Model):
    """``GET /v1/budgets``, ``/v1/agents/{id}/budgets``, ``/v1/pools/{name}``."""

    at: Optional[str] = None
    budgets: List[BudgetView] = Field(default_factory=list)
    reservations: List[Reservation] = Field(default_factory=list)
    open_reservations: int = 0
    reservations_truncated: bool = False


class SettledLine(Model):
    """One resource of a settled reservation."""

    resource: str
    reserved: int
    actual: int
    returned: int
    overrun: int


class OverLimit(Model):
    """A level whose hard limit a settle's overrun passed."""

    level: str
    resource: str
    used: int
    hard: int


class Settlement(Model):
    """The answer of ``POST /v1/reservations/{rid}/settle``."""

    id: int
    agent: str
    settled: List[SettledLine] = Field(default_factory=list)
    over_limit: List[OverLimit] = Field(default_factory=list)


class Released(Model):
    """The answer of ``DELETE /v1/reservations/{rid}``."""

    id: int
    agent: str
    released: bool = True


class UsageReport(Model):
    """The answer of ``POST /v1/agents/{id}/usage``."""

    agent: str
    resource: str
    value: int
    per: Optional[str] = None
    usage: Any = None
    violation: Any = None
    decisions: Any = None


class ActionResult(Model):
    """The answer of an operator action (suspend, resume, throttle, clear, terminate)."""

    agent: str
    action: str
    outcome: str
    detail: Any = None


class Escalation(Model):
    """An escalation pending on a resource."""

    action: Any = None
    due_ms: Optional[int] = None
    in_ms: Optional[int] = None
    due: Optional[str] = None


class ResourceCompliance(Model):
    """One resource of an agent's compliance."""

    resource: str
    unit: Optional[str] = None
    usage: Optional[int] = None
    measured_ms: Optional[int] = None
    soft: Optional[int] = None
    hard: Optional[int] = None
    burst: Optional[int] = None
    action: Any = None
    status: str
    """``ok``, ``soft``, ``burst`` or ``hard``."""
    pending: Optional[Escalation] = None


class Compliance(Model):
    """``GET /v1/agents/{id}/compliance``: limits, status, holds."""

    agent: str
    compliant: bool
    status: str
    resources: List[ResourceCompliance] = Field(default_factory=list)
    throttled: bool = False
    throttled_by: List[str] = Field(default_factory=list)
    suspended: bool = False
    suspended_by: List[str] = Field(default_factory=list)
    in_force: Optional["InForce"] = None
    state: Optional[str] = None
    at: Optional[str] = None


class Me(Model):
    """What :meth:`allot.Client.me` answers: the caller's own agent, its quota and compliance."""

    agent: AgentStatus
    quota: Optional["Quota"] = None
    compliance: Compliance


class Ack(Model):
    """The answer of ``POST /v1/agents/{id}/ack``."""

    agent: str
    request_seq: int
    event_seq: Optional[int] = None


class InForce(Model):
    """What allot has written to the kernel for an agent now."""

    cpu_millicores: Optional[int] = None
    frozen: bool = False
    memory_high: Optional[int] = None


class Event(Model):
    """One recorded event (``GET /v1/events``): ``seq`` orders them and resumes a stream."""

    seq: int
    at_ms: int
    at: Optional[str] = None
    """RFC 3339 time (in listings; a stream has ``at_ms`` only)."""
    topic: str
    agent: Optional[str] = None
    data: Any = None


class Limit(Model):
    """One resource's limits in an agent's quota, in internal units."""

    soft: Optional[int] = None
    hard: Optional[int] = None
    burst: Optional[int] = None
    burst_window: Optional[int] = None
    """Milliseconds."""
    action: Optional[str] = None
    window: Optional[str] = None
    """A budget's window (``minute``, ``day``, ...), for custom resources."""


class Quota(Model):
    """An agent's quota (``GET /v1/agents/{id}/quota``)."""

    agent: str
    group: str
    priority: Optional[int] = None
    custom_handler: Optional[str] = None
    limits: Dict[str, Limit] = Field(default_factory=dict)


class GroupLimit(Model):
    """One resource's limits in a group."""

    soft: Optional[int] = None
    hard: Optional[int] = None
    burst: Optional[int] = None
    burst_window_ms: Optional[int] = None
    action: Optional[str] = None
    unit: Optional[str] = None
    window: Optional[str] = None


class Group(Model):
    """A quota group (``GET /v1/groups``; the answer of a create or replace)."""

    name: str
    description: Optional[str] = None
    extends: Optional[str] = None
    scaling_policy: Optional[str] = None
    limits: Dict[str, GroupLimit] = Field(default_factory=dict)
    totals: Dict[str, int] = Field(default_factory=dict)
    budgets: Dict[str, Any] = Field(default_factory=dict)
    """Its budgets on custom resources, by resource."""
    members: List[str] = Field(default_factory=list)
    kernel: Any = None
    """What a create or replace wrote to the kernel (its totals)."""


class HistoryEntry(Model):
    """One enforcement attempt with its real outcome (``GET /v1/history``)."""

    id: int
    seq: Optional[int] = None
    at_ms: int
    agent: str
    resource: str
    action: str
    outcome: str
    detail: Optional[str] = None
    decision: Any = None
    stage: Optional[str] = None


class Recommendation(Model):
    """The latest recommendation for one agent and resource."""

    agent: str
    resource: str
    at_ms: int
    pattern: Any = None
    recommendation: Any = None


class HostResource(Model):
    """One resource of the host's capacity."""

    total: int
    reserved: int
    allocatable: int
    available: Optional[int] = None
    unit: str


class Host(Model):
    """``GET /v1/host``."""

    cgroups: Optional[str] = None
    resources: Dict[str, HostResource] = Field(default_factory=dict)


class Started(Model):
    """The answer of ``POST /v1/agents`` (run) and ``POST /v1/adopt``."""

    id: str
    pid: int
    pids: List[int] = Field(default_factory=list)
    cgroup: List[str] = Field(default_factory=list)
    root: bool = False
    state: str
    uid: Optional[int] = None
    warning: Optional[str] = None
    """Why an adopted process is followed less strictly (no ``move``)."""


class PoolChange(Model):
    """The answer of ``PUT`` or ``DELETE /v1/pools/{name}``."""

    pool: str
    created: Optional[bool] = None
    deleted: Optional[bool] = None
    detail: Optional[str] = None
    budgets: List[BudgetView] = Field(default_factory=list)


class Analysis(Model):
    """``GET /v1/agents/{id}/analysis``: pattern, forecast and recommendation."""

    agent: str
    resource: str
    pattern: Optional[str] = None
    confidence: Optional[float] = None
    characteristics: Dict[str, Any] = Field(default_factory=dict)
    forecast: Dict[str, Any] = Field(default_factory=dict)
    limits: Dict[str, Any] = Field(default_factory=dict)
    recommendation: Any = None
    samples: int = 0
    max_samples: Optional[int] = None
    truncated: bool = False
    window_secs: Optional[float] = None


class ResourceReport(Model):
    """One resource of an agent's report."""

    resource: str
    unit: str
    samples: int = 0
    source: Optional[str] = None
    points: int = 0
    min: Optional[int] = None
    mean: Optional[float] = None
    p50: Optional[int] = None
    p95: Optional[int] = None
    max: Optional[int] = None
    soft: Optional[int] = None
    hard: Optional[int] = None
    burst: Optional[int] = None
    violations: int = 0
    actions: List[Any] = Field(default_factory=list)
    pattern: Any = None
    recommendation: Any = None


class AgentReport(Model):
    """One agent's report (``GET /v1/agents/{id}/report``, ``/v1/report``, format json)."""

    agent: str
    group: Optional[str] = None
    state: Optional[str] = None
    exit: Optional[str] = None
    resources: List[ResourceReport] = Field(default_factory=list)


def unknown_fields(value: Any, path: str = "") -> List[str]:
    """Where ``value`` (a model, or lists and dicts of them) holds fields its
    models do not declare: a field the daemon answers that this client
    does not know yet. Empty when every field is known."""
    out: List[str] = []
    if isinstance(value, BaseModel):
        for k in (value.model_extra or {}):
            out.append(f"{path}.{k}" if path else k)
        for name in type(value).model_fields:
            out.extend(unknown_fields(getattr(value, name), f"{path}.{name}" if path else name))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out.extend(unknown_fields(v, f"{path}[{i}]"))
    elif isinstance(value, dict):
        for k, v in value.items():
            out.extend(unknown_fields(v, f"{path}[{k!r}]"))
    return out


for _model in (AgentStatus, Compliance, Me):
    _model.model_rebuild()
