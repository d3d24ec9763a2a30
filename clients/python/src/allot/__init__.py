"""allot: a Python client for the allot resource governor.

An agent started by allot finds the daemon (``ALLOT_SOCKET``) and itself
(``ALLOT_AGENT_ID``) from its environment::

    import allot

    client = allot.Client()
    me = client.me()                                   # its agent, quota, compliance
    client.report(tokens=1200)                         # usage it spent
    with client.reserve(tokens=4000, usd=0.012) as r:  # BudgetExceeded when refused
        r.settle(tokens=3100)                          # unused part returned

    @allot.governed(tokens=4000, usd=0.012)
    def ask(question): ...

    for event in client.events(topic="budget.*"):      # SSE, resumed after a reconnect
        ...
    allot.AgentChannel().run()                         # handlers for throttle, termination, ...

:class:`AsyncClient` has the same methods, awaited. Operator methods are
named like the CLI's commands (``run``, ``adopt``, ``ps``, ``terminate``,
``suspend``, ``resume``, ``throttle``, ``quota``, ``set_quota``, ...).
"""

from . import models, requests
from ._core import discover_socket, usd_to_micros
from .aclient import AsyncClient, AsyncReservationHandle, PendingReservation
from .channel import AgentChannel, ChannelMessage
from .client import Client, ReservationHandle
from .errors import (
    AllotError,
    BadRequest,
    BudgetExceeded,
    Busy,
    Conflict,
    DaemonUnavailable,
    Forbidden,
    Invalid,
    NotAnAgent,
    NotFound,
    ServerError,
    Throttled,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unrecorded,
)
from .governed import current_reservation, governed

__version__ = "0.1.0"

__all__ = [
    "Client",
    "AsyncClient",
    "ReservationHandle",
    "AsyncReservationHandle",
    "PendingReservation",
    "governed",
    "current_reservation",
    "discover_socket",
    "usd_to_micros",
    "models",
    "requests",
    "AgentChannel",
    "ChannelMessage",
    "AllotError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Invalid",
    "TooManyRequests",
    "BudgetExceeded",
    "Throttled",
    "Busy",
    "ServerError",
    "Unavailable",
    "Unrecorded",
    "DaemonUnavailable",
    "NotAnAgent",
]
