"""Typed exceptions for the daemon's error answers.

Every error the daemon answers has one JSON shape::

    {"error": {"code": "...", "message": "...", "field": "..."?, ...}}

:func:`error_from_response` turns such an answer into one of the classes
below, chosen by the ``code`` first and the HTTP status second, so a code the
client does not know still lands on the class of its status. Every exception
carries ``code``, ``message``, ``field`` (the request field at fault, or
``None``), ``status`` (the HTTP status) and ``details`` (any other members of
the error object).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
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
    "error_from_response",
]


class AllotError(Exception):
    """Base of every error this package raises.

    Attributes:
        code: The daemon's error code (``"not_found"``, ``"exhausted"``, ...).
        message: The daemon's message, meant for people.
        field: The request field at fault (``"limits.memory.soft"``), if any.
        status: The HTTP status of the answer; ``None`` when there was none.
        details: Other members of the error object, as answered.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        field: Optional[str] = None,
        status: Optional[int] = None,
        details: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        self.details: Dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r}, field={self.field!r})"


class BadRequest(AllotError):
    """400 (and 413, 415): a body or query the daemon could not read."""


class Unauthorized(AllotError):
    """401: a TCP request without the right bearer token."""


class Forbidden(AllotError):
    """403: not allowed for this caller (decided by the socket's peer credentials).

    An agent reading or acting on another agent gets this.
    """


class NotFound(AllotError):
    """404: no such agent, group, pool or open reservation."""


class Conflict(AllotError):
    """409: the agent is not running, the name exists, the group is in use,
    or the kernel refused a change (``field`` names it)."""


class Invalid(AllotError):
    """422: a value the daemon refuses; ``field`` names it."""


class TooManyRequests(AllotError):
    """429: try again later.

    Attributes:
        retry_after: Seconds to wait before trying again, or ``None`` when
            waiting will not help (a budget refusal of an amount above the
            limit).
    """

    def __init__(self, message: str, *, retry_after: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BudgetExceeded(TooManyRequests):
    """429 ``exhausted``: a reservation (or report) a budget refused.

    Attributes:
        level: The level that refused: ``agent:ID``, ``group:G`` or ``pool:P``.
        resource: The resource it refused (``tokens``, ``usd_micros``, ...).
        retry_after: Seconds until the window frees enough or a reservation
            held there expires; ``None`` when the amount is above the limit.
    """

    def __init__(self, message: str, *, level: Optional[str] = None, resource: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.level = level
        self.resource = resource


class Throttled(TooManyRequests):
    """429 ``throttled``: the policy paces this agent's reservations on ``resource``."""

    def __init__(self, message: str, *, resource: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.resource = resource


class Busy(TooManyRequests):
    """429 ``busy``: too many heavy reads (analyses, reports) at once."""


class ServerError(AllotError):
    """5xx other than 503: the daemon failed (``failed``: the kernel refused)."""


class Unavailable(AllotError):
    """503: the governor cannot answer, or the state store is unreadable."""


class Unrecorded(Unavailable):
    """503 ``unrecorded``: the state store cannot record; nothing was changed."""


class DaemonUnavailable(AllotError):
    """No daemon answers where the client looked.

    Attributes:
        socket: The Unix socket path tried, or ``None`` over TCP.
        base_url: The TCP base URL tried, or ``None`` over the socket.
    """

    def __init__(self, message: str, *, socket: Optional[str] = None, base_url: Optional[str] = None) -> None:
        super().__init__(message, code="daemon_unavailable")
        self.socket = socket
        self.base_url = base_url


class NotAnAgent(AllotError):
    """An agent method was called without an agent id: the process was not
    started by allot (no ``ALLOT_AGENT_ID``) and none was given."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="not_an_agent")


_BY_CODE: Dict[str, Type[AllotError]] = {
    "bad_request": BadRequest,
    "too_large": BadRequest,
    "unsupported_media_type": BadRequest,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "invalid": Invalid,
    "exhausted": BudgetExceeded,
    "throttled": Throttled,
    "busy": Busy,
    "failed": ServerError,
    "unrecorded": Unrecorded,
    "unavailable": Unavailable,
}

_BY_STATUS: Dict[int, Type[AllotError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    415: BadRequest,
    422: Invalid,
    429: TooManyRequests,
    503: Unavailable,
}

_CODE_OF_STATUS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
                   413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "busy", 500: "failed",
                   503: "unavailable"}


def _float_or_none(v: Any) -> Optional[float]:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def error_from_response(status: int, body: Any, headers: Optional[Mapping[str, str]] = None) -> AllotError:
    """The typed exception for an error answer.

    Args:
        status: The HTTP status (4xx or 5xx).
        body: The decoded JSON body, or the text when it was not JSON.
        headers: The answer's headers (``Retry-After`` is read for 429).
    """
    err: Dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = dict(body["error"])
    code = str(err.pop("code", None) or _CODE_OF_STATUS.get(status, "error"))
    message = err.pop("message", None)
    if message is None:
        message = body.strip() if isinstance(body, str) and body.strip() else f"HTTP {status}"
    message = str(message)
    field = err.pop("field", None)
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else AllotError)
    common: Dict[str, Any] = {"code": code, "field": field, "status": status, "details": err}
    if issubclass(cls, TooManyRequests):
        if "retry_after" in err:
            retry_after = _float_or_none(err.get("retry_after"))
        else:
            header = None
            for k, v in (headers or {}).items():
                if k.lower() == "retry-after":
                    header = v
            retry_after = _float_or_none(header)
        if cls is BudgetExceeded:
            return BudgetExceeded(message, level=err.get("level"), resource=err.get("resource"), retry_after=retry_after, **common)
        if cls is Throttled:
            return Throttled(message, resource=err.get("resource"), retry_after=retry_after, **common)
        return cls(message, retry_after=retry_after, **common)
    return cls(message, **common)
