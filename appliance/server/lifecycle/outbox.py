"""Events decided inside a transaction and published after it commits: the one way an event
leaves the server's store work (docs/architecture.md, "The server").

A ring, a join or an expired deadline changes the store and produces events; publishing them
before the commit could announce a change that then rolls back. ``Outbox`` collects them,
``flush`` adds the ``call`` (the CallResponse as committed) and hands them to the hub in order.
``Transactor`` runs a transaction with its outbox; a route that commits on its own (an update,
a delete) fills an ``Outbox`` after its commit and hands it to ``Transactor.send``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.server.context import ServerContext, now_ns
from appliance.server.metrics import RingOutcome
from appliance.server.outbound.ringpush import RingPush
from appliance.server.realtime.hub import Hub, Target
from appliance.server.wire.serialize import call_response

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Item:
    event: dict[str, Any]
    target: Target
    with_call: bool


@dataclass
class Outbox:
    items: list[_Item] = field(default_factory=list)
    # Set when a deadline was stored, so the scheduler re-plans after the commit.
    deadlines_changed: bool = False
    # The events' ``call`` by cid, built by ``serialize`` inside the transaction.
    calls: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    # Rings started or stopped, for the users' push subscriptions (``pushsender.py``).
    pushes: list[RingPush] = field(default_factory=list)
    # Ring outcomes for ``/metrics``, counted only once the transaction committed.
    outcomes: list[RingOutcome] = field(default_factory=list)
    # Every member and participant of a call, by cid, when this transaction knows them all (it
    # created the call): its events are addressed to them by name, so no replica has to look
    # the call's audience up before delivering (a query ahead of a ring's call.ring).
    audiences: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def add(
        self,
        event_type: str,
        call_cid: str,
        *,
        target: Target | None = None,
        with_call: bool = True,
        **fields: Any,
    ) -> None:
        """An event for the members and participants of ``call_cid`` (or for ``target``)."""
        event = {"type": event_type, "call_cid": call_cid, **fields}
        target = target or Target(call_cid=call_cid)
        audience = self.audiences.get(target.call_cid or "")
        if audience is not None and target.sharing_with is None:
            named = tuple(dict.fromkeys((*audience, *target.user_ids)))
            target = replace(target, call_cid=None, user_ids=named)
        self.items.append(_Item(event, target, with_call))

    async def serialize(self, db: AsyncConnection, ctx: ServerContext) -> None:
        """Build the ``call`` of the events that carry one, on the transaction's own connection
        just before it commits (what it reads is what commits; no second connection on the
        way to publishing)."""
        for cid in {i.event["call_cid"] for i in self.items if i.with_call} - self.calls.keys():
            try:
                self.calls[cid] = await call_response(db, ctx, cid)
            except Exception:
                log.exception("Call(%s): cannot serialize for events", cid)
                self.calls[cid] = None

    async def flush(self, ctx: ServerContext, hub: Hub) -> None:
        items, self.items = self.items, []
        if not items:
            return
        calls = self.calls
        missing = {i.event["call_cid"] for i in items if i.with_call} - calls.keys()
        if missing:
            async with ctx.store.connect() as conn:
                for cid in missing:
                    try:
                        calls[cid] = await call_response(conn, ctx, cid)
                    except Exception:
                        log.exception("Call(%s): cannot serialize for events", cid)
                        calls[cid] = None
        stamp = now_ns(ctx.clock)
        batch = []
        for item in items:
            event = item.event
            event.setdefault("created_at", stamp)
            if item.with_call:
                event["call"] = calls.get(event["call_cid"])
            batch.append((event, item.target))
        try:
            await hub.publish_batch(batch)
        except Exception:
            log.exception("events %s not delivered", [e["type"] for e, _ in batch])


class Transactor:
    """Runs ``fn(db, out)`` in one transaction, then re-plans deadlines and publishes ``out``."""

    def __init__(self, ctx: ServerContext, hub: Hub) -> None:
        self.ctx = ctx
        self.hub = hub
        self.wake: Callable[[], None] = _nothing
        self.push: Callable[[list[RingPush]], None] = _no_push
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, fn: Callable[[AsyncConnection, Outbox], Awaitable[T]]) -> T:
        out = Outbox()
        async with self.ctx.store.begin() as db:
            result = await fn(db, out)
            if out.items:
                await out.serialize(db, self.ctx)
        if not (out.items or out.outcomes or out.pushes or out.deadlines_changed):
            return result
        # Committed: published even if the caller is cancelled now (a request cut by the
        # graceful-shutdown timeout, a deadline handler at stop); ``drain`` waits for it.
        sending = asyncio.create_task(self.send(out))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)
        await asyncio.shield(sending)
        return result

    async def drain(self, seconds: float) -> None:
        """Wait (up to ``seconds``) for the publishing of committed transactions whose caller
        was cancelled; before the NOTIFY connections close at stop."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=seconds)

    async def send(self, out: Outbox) -> None:
        """Publish what ``out`` collected, once the transaction that decided it has committed."""
        # Events first: the scheduler's re-plan (a read) would otherwise compete with their
        # delivery, and a stored deadline is seconds away.
        await out.flush(self.ctx, self.hub)
        if out.outcomes:
            figures = self.ctx.metrics
            if figures is not None:
                figures.record(out.outcomes)
        if out.pushes:  # after the WebSockets: a push never delays them
            self.push([_with_custom(p, out.calls) for p in out.pushes])
        if out.deadlines_changed:
            self.wake()


def _with_custom(note: RingPush, calls: dict[str, dict[str, Any] | None]) -> RingPush:
    call = calls.get(note.call_cid)
    if note.kind != "ring" or not call:
        return note
    return replace(note, custom=call.get("custom") or {})


def _nothing() -> None:
    return None


def _no_push(notes: list[RingPush]) -> None:
    return None
