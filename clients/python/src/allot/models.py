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
    quota: Any = None
    """Its quota (limits per resource), as the daemon answers it."""
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
    in_force: Any = None
    state: Optional[str] = None
    at: Optional[str] = None


class Me(Model):
    """What :meth:`allot.Client.me` answers: the caller's own agent, its quota and compliance."""

    agent: AgentStatus
    quota: Any = None
    compliance: Compliance


class Ack(Model):
    """The answer of ``POST /v1/agents/{id}/ack``."""

    agent: str
    request_seq: int
    event_seq: Optional[int] = None
