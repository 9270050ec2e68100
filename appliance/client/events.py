"""Typed events and their local fan-out to every consumer of the one connection.

The server's frames (``call.ring``, ``call.accepted``, ``call.signal``, …) become :class:`Event`.
The connection adds two of its own: ``connection.lost`` (the WebSocket dropped; it reconnects by
itself) and, after each reconnect, ``connection.ok`` followed by the events a resync found
(``resynced=True``: a ring that started while the device was away, a ring that was answered
elsewhere, a call that ended).

Consumers subscribe with a filter and read with ``async for``; a slow consumer's queue is bounded
and drops its oldest event (with a warning) rather than grow for years.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from pydantic import Field, ValidationError

from appliance.calls import events as ev
from appliance.client.models import CallInfo, Member, Model, Participant, Timestamp, User

logger = logging.getLogger(__name__)

# Event types the connection itself emits.
CONNECTION_OK = ev.CONNECTION_OK
CONNECTION_LOST = "connection.lost"


class Event(Model):
    type: str
    call_cid: str | None = None
    created_at: Timestamp | None = None
    call: CallInfo | None = None
    user: User | None = None
    members: list[Member] = Field(default_factory=list)
    reason: str | None = None
    session_id: str | None = None
    participant: Participant | None = None
    custom: dict[str, Any] | None = None
    connection_id: str | None = None
    me: User | None = None
    # call.signal: the sender's participant session id and the signal itself.
    from_: str | None = Field(default=None, alias="from")
    signal: dict[str, Any] | None = None
    # Synthesized by the client from the server's state after a reconnect.
    resynced: bool = False
    # connection.ok: whether this is a reconnect (the resync follows).
    reconnected: bool | None = None

    @property
    def cid(self) -> str | None:
        if self.call_cid:
            return self.call_cid
        return self.call.cid if self.call else None

    @property
    def call_session_id(self) -> str | None:
        """The call session this event belongs to (not a participant session id)."""
        if self.call is not None:
            if self.call.session is not None:
                return self.call.session.id
            return self.call.current_session_id
        return None

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> Event:
        """Parse a frame; a frame of an unexpected shape still becomes an event (with its type)."""
        try:
            return cls.model_validate(frame)
        except ValidationError as err:
            logger.warning("Event %r: unexpected shape (%s)", frame.get("type"), err)
            return cls.model_construct(type=str(frame.get("type", "unknown")), **_plain(frame))


def _plain(frame: dict[str, Any]) -> dict[str, Any]:
    keep = ("call_cid", "reason", "session_id", "custom", "connection_id")
    return {key: frame[key] for key in keep if key in frame}


EventFilter = Callable[[Event], bool]


class Subscription:
    """One consumer's view of the event stream: ``async for event in subscription``."""

    def __init__(
        self,
        hub: EventHub,
        *,
        types: Iterable[str] | str | None = None,
        call_cid: str | None = None,
        where: EventFilter | None = None,
        maxsize: int = 1000,
    ) -> None:
        self._hub = hub
        if isinstance(types, str):
            types = [types]
        self.types = frozenset(types) if types is not None else None
        self.call_cid = call_cid
        self.where = where
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=maxsize)
        self.closed = False
        self.dropped = 0

    def matches(self, event: Event) -> bool:
        if self.types is not None and event.type not in self.types:
            return False
        if self.call_cid is not None and event.cid not in (self.call_cid, None):
            return False
        return self.where is None or self.where(event)

    def put(self, event: Event) -> None:
        if self.closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            logger.warning("%r: consumer too slow, dropped oldest event", self)
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        """The next event; raises ``StopAsyncIteration`` once closed."""
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._hub.discard(self)
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        types = ",".join(sorted(self.types)) if self.types else "*"
        return (
            f"Subscription(types={types}, call_cid={self.call_cid}, queued={self._queue.qsize()})"
        )


Callback = Callable[[Event], Any]


class EventHub:
    """Hands every event to every matching subscription and callback, in order."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._callbacks: list[tuple[frozenset[str] | None, Callback]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def subscribe(
        self,
        types: Iterable[str] | str | None = None,
        *,
        call_cid: str | None = None,
        where: EventFilter | None = None,
        maxsize: int = 1000,
    ) -> Subscription:
        sub = Subscription(self, types=types, call_cid=call_cid, where=where, maxsize=maxsize)
        self._subscriptions.append(sub)
        return sub

    def on(self, types: Iterable[str] | str | None, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` (sync, or async: scheduled as a task) for matching events;
        returns the function that removes it."""
        wanted = frozenset([types] if isinstance(types, str) else types) if types else None
        entry = (wanted, callback)
        self._callbacks.append(entry)

        def remove() -> None:
            if entry in self._callbacks:
                self._callbacks.remove(entry)

        return remove

    def discard(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    def emit(self, event: Event) -> None:
        for sub in list(self._subscriptions):
            if sub.matches(event):
                sub.put(event)
        for wanted, callback in list(self._callbacks):
            if wanted is not None and event.type not in wanted:
                continue
            try:
                result = callback(event)
                if asyncio.iscoroutine(result):
                    task = asyncio.get_running_loop().create_task(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:
                logger.exception("EventHub: callback %r failed on %s", callback, event.type)

    def close(self) -> None:
        for sub in list(self._subscriptions):
            sub.close()
        self._callbacks.clear()
