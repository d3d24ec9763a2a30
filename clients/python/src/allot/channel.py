"""The agent channel: what allot asks of an agent, and the agent's answers.

allot appends one JSON object per line to the file in ``ALLOT_EVENTS_FILE``
(``{"seq", "type", "at_ms", ...}``): ``quota`` first, then ``throttle``
(``resource``, ``factor``), ``scale_down`` (a target and a deadline),
``degradation`` (a plan), ``recovery`` (a stage), ``suspend``, ``restore``
and ``termination`` (``reason``, ``grace_ms``). :class:`AgentChannel` reads
new lines as they come, calls the handler registered for each type and
acknowledges each request it handled (``POST /v1/agents/{id}/ack``), so the
operator sees in the history that the agent heard it::

    channel = allot.AgentChannel()

    @channel.on("scale_down")
    def shrink(msg):
        cache.clear()
        return "cache dropped"          # the acknowledgement's note

    @channel.on("termination")
    def finish(msg):
        save_work(deadline_ms=msg.fields["grace_ms"])

    channel.defer_sigterm()             # SIGTERM follows the notice: handle it, then leave
    channel.run()                       # or channel.poll() from your own loop
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union, overload

from .aclient import AsyncClient
from .client import Client
from .errors import AllotError
from .models import Model

__all__ = ["ChannelMessage", "AgentChannel", "REQUESTS"]

log = logging.getLogger("allot")

#: Message types that ask something of the agent (acknowledged once handled).
REQUESTS = frozenset({"throttle", "scale_down", "degradation", "recovery", "suspend", "restore", "termination"})

Handler = Callable[["ChannelMessage"], Any]
H = TypeVar("H", bound=Handler)

#: How many of the file's first bytes are kept to notice it was made anew.
_HEAD = 256


class ChannelMessage(Model):
    """One message of the channel; its own fields (``factor``, ``grace_ms``, ...) are in :attr:`fields`."""

    seq: int
    type: str
    at_ms: Optional[int] = None

    @property
    def fields(self) -> Dict[str, Any]:
        """The message's fields other than ``seq``, ``type`` and ``at_ms``."""
        return dict(self.model_extra or {})


class AgentChannel:
    """Reads the agent channel file and calls the agent's handlers.

    Args:
        path: The channel file. Default ``ALLOT_EVENTS_FILE``.
        client: The client acknowledgements go through (a :class:`Client`;
            :meth:`arun` and :meth:`apoll` take an :class:`AsyncClient`).
            Default: one made from the environment at the first acknowledgement.
        ack: Acknowledge each request a handler handled (default true).

    Raises:
        ValueError: No path was given and ``ALLOT_EVENTS_FILE`` is not set
            (the process was not started by allot).
    """

    def __init__(self, path: Optional[Union[str, "os.PathLike[str]"]] = None, *, client: Optional[Union[Client, AsyncClient]] = None,
                 ack: bool = True) -> None:
        given = os.fspath(path) if path is not None else os.environ.get("ALLOT_EVENTS_FILE")
        if not given:
            raise ValueError("no agent channel: ALLOT_EVENTS_FILE is not set (this process was not started by allot); pass path=")
        self.path = Path(given)
        self.client = client
        self.ack = ack
        self.handlers: Dict[str, Handler] = {}
        self._offset = 0
        self._partial = b""
        #: The file read (device, inode) and its first bytes, to notice it made anew.
        self._ident: Optional[Tuple[int, int]] = None
        self._head = b""
        #: The highest sequence number read so far.
        self.last_seq = 0
        #: Set when SIGTERM arrived (after :meth:`defer_sigterm`).
        self.sigterm: Optional[threading.Event] = None

    @overload
    def on(self, kind: str) -> Callable[[H], H]: ...

    @overload
    def on(self, kind: str, handler: H) -> H: ...

    def on(self, kind: str, handler: Optional[H] = None) -> Union[H, Callable[[H], H]]:
        """Register ``handler`` for messages of type ``kind`` (``"*"``: every
        type without its own); usable as a decorator. Its return value (a
        string) is the acknowledgement's note."""
        if handler is not None:
            self.handlers[kind] = handler
            return handler

        def register(fn: H) -> H:
            self.handlers[kind] = fn
            return fn

        return register

    def read(self) -> List[ChannelMessage]:
        """The messages appended since the last read (complete lines only).

        A channel made anew (allot truncates it when it starts the agent
        again; or another file put in its place) is read from its start: it
        is noticed by a shorter file, another inode, or other first bytes.
        """
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        ident = (st.st_dev, st.st_ino)
        with open(self.path, "rb") as f:
            if self._offset and (ident != self._ident or st.st_size < self._offset or f.read(len(self._head)) != self._head):
                self._offset, self._partial, self.last_seq, self._head = 0, b"", 0, b""
            self._ident = ident
            if st.st_size <= self._offset:
                return []
            f.seek(self._offset)
            chunk = f.read(st.st_size - self._offset)
        if self._offset < _HEAD:
            self._head = (self._head + chunk)[:_HEAD]
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        out: List[ChannelMessage] = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                msg = ChannelMessage.model_validate(json.loads(raw))
            except (ValueError, TypeError) as e:
                log.warning("allot: unreadable line in %s: %s (%r)", self.path, e, raw[:200])
                continue
            self.last_seq = max(self.last_seq, msg.seq)
            out.append(msg)
        return out

    def _handler(self, msg: ChannelMessage) -> Optional[Handler]:
        return self.handlers.get(msg.type) or self.handlers.get("*")

    def _handle(self, msg: ChannelMessage) -> Optional[str]:
        """Run the handler; the note to acknowledge with, or None (no handler, it failed, or not a request)."""
        handler = self._handler(msg)
        if handler is None:
            return None
        try:
            result = handler(msg)
        except Exception as e:  # a failing handler is not an acknowledgement
            log.warning("allot: the %s handler failed on message #%s: %s", msg.type, msg.seq, e)
            return None
        if not self.ack or msg.type not in REQUESTS:
            return None
        return result if isinstance(result, str) else f"handled by {getattr(handler, '__name__', 'a handler')}"

    def poll(self) -> List[ChannelMessage]:
        """Read new messages, call their handlers and acknowledge the requests
        handled; the messages read. An acknowledgement that fails (no daemon
        found or answering) is logged, and the next messages are handled all
        the same."""
        if self.client is not None and not isinstance(self.client, Client):
            raise TypeError("poll() acknowledges through a Client; use apoll() with an AsyncClient")
        msgs = self.read()
        for msg in msgs:
            note = self._handle(msg)
            if note is not None:
                try:
                    if self.client is None:
                        self.client = Client()
                    assert isinstance(self.client, Client)
                    self.client.ack(msg.seq, note)
                except AllotError as e:
                    log.warning("allot: acknowledging message #%s failed: %s", msg.seq, e)
        return msgs

    async def apoll(self) -> List[ChannelMessage]:
        """:meth:`poll`, acknowledging through an :class:`AsyncClient` (handlers are plain functions)."""
        if self.client is not None and not isinstance(self.client, AsyncClient):
            raise TypeError("apoll() acknowledges through an AsyncClient; use poll() with a Client")
        msgs = self.read()
        for msg in msgs:
            note = self._handle(msg)
            if note is not None:
                try:
                    if self.client is None:
                        self.client = AsyncClient()
                    assert isinstance(self.client, AsyncClient)
                    await self.client.ack(msg.seq, note)
                except AllotError as e:
                    log.warning("allot: acknowledging message #%s failed: %s", msg.seq, e)
        return msgs

    def defer_sigterm(self) -> None:
        """Catch SIGTERM (allot sends it right after the ``termination``
        notice) instead of dying at once, so the next :meth:`poll` runs the
        termination handler within the grace period; allot kills the agent
        when the grace ends all the same. Call it from the main thread."""
        import signal

        self.sigterm = threading.Event()

        def caught(signum: int, frame: Any) -> None:
            assert self.sigterm is not None
            self.sigterm.set()

        signal.signal(signal.SIGTERM, caught)

    def run(self, *, interval: float = 0.2, stop: Optional[threading.Event] = None, until: Optional[float] = None) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set or ``until``
        (a ``time.monotonic()`` deadline) passes; run it in a thread beside the agent's work."""
        while not (stop is not None and stop.is_set()) and not (until is not None and time.monotonic() >= until):
            self.poll()
            if stop is not None:
                stop.wait(interval)
            else:
                time.sleep(interval)

    async def arun(self, *, interval: float = 0.2, until: Optional[float] = None) -> None:
        """:meth:`run` as a task: ``asyncio.create_task(channel.arun())``; cancel it to stop."""
        while until is None or time.monotonic() < until:
            await self.apoll()
            await asyncio.sleep(interval)
