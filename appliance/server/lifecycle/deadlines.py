"""The deadline scheduler: one task that sleeps on the injected clock until the earliest stored
deadline and hands due ones to their owners.

Deadlines live in the store (``call_sessions.auto_cancel_at``, ``session_ring.deadline``,
``participants.gone_at``, ``call_sessions.max_duration_at``), so a restarted server picks them
up where the old one left them. Storing a new deadline calls ``wake()``; the sleep is also
capped at ``poll_seconds`` so that deadlines stored by another replica are not missed. Each
handler re-checks its row inside its own transaction (``... WHERE deadline <= now``), so two
replicas racing for the same deadline process it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from sqlalchemy import func, select

from appliance.server.context import ServerContext, now_ns
from appliance.server.store.schema import call_sessions, participants, session_ring

log = logging.getLogger(__name__)

NS = 1_000_000_000
BATCH = 200
# One handler (a transaction and its publish) at stop: not cut between commit and NOTIFY.
STOP_GRACE = 15.0


@dataclass
class Handlers:
    attempt: Callable[[str], Awaitable[None]]  # session id: auto_cancel_at
    callee: Callable[[str, str], Awaitable[None]]  # session id, user id: per-callee deadline
    participant: Callable[[str], Awaitable[None]]  # participant id: grace period over
    max_duration: Callable[[str], Awaitable[None]]  # session id: max_duration_at


class Scheduler:
    def __init__(self, ctx: ServerContext, handlers: Handlers, poll_seconds: float = 30.0) -> None:
        self.ctx = ctx
        self.handlers = handlers
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Number of passes over due deadlines (tests wait on it instead of sleeping).
        self.passes = 0
        self._sleeping = False
        self._woken = False
        self._stopping = False

    def __repr__(self) -> str:
        return f"Scheduler(passes={self.passes})"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deadline-scheduler")

    def stop_taking(self) -> None:
        """Hand out no more deadlines: the replica is shutting down (SIGTERM), the others take
        them (they are in the store). Only sets a flag: safe from a signal handler."""
        self._stopping = True

    async def stop(self) -> None:
        """Stop; the handler under way finishes first, none is started after it (up to
        ``STOP_GRACE`` seconds). A pass over many due deadlines once ran past the grace and
        was cancelled inside a handler, between its commit and its NOTIFY: the others'
        devices never heard of that ``call.missed`` (a replica stopped in a rolling restart
        under load). The deadlines left undone are the other replicas' (or the next start's)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        if self._sleeping:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_GRACE)
        except TimeoutError:
            log.warning(
                "%r: a deadline handler ran past %.0f s at stop: cancelled", self, STOP_GRACE
            )
            task.cancel()
        except asyncio.CancelledError:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def wake(self) -> None:
        self._wake.set()
        if self._sleeping and not self._woken and self._task is not None:
            self._woken = True
            self._task.cancel()

    async def next_deadline(self) -> int | None:
        """The earliest stored deadline: one statement (the four kinds' minimums)."""
        q = select(
            select(func.min(call_sessions.c.auto_cancel_at))
            .where(call_sessions.c.ended_at.is_(None))
            .scalar_subquery(),
            select(func.min(call_sessions.c.max_duration_at))
            .where(call_sessions.c.ended_at.is_(None))
            .scalar_subquery(),
            select(func.min(session_ring.c.deadline))
            .where(session_ring.c.state == "ringing")
            .scalar_subquery(),
            select(func.min(participants.c.gone_at))
            .where(participants.c.left_at.is_(None))
            .scalar_subquery(),
        )
        async with self.ctx.store.connect() as db:
            candidates = (await db.execute(q)).one()
        found = [c for c in candidates if c is not None]
        return min(found) if found else None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                # A wake after a ring stored its deadlines (seconds away) costs one statement:
                # the four reads of due rows only when something is due.
                nxt = await self.next_deadline()
                if nxt is not None and nxt <= now_ns(self.ctx.clock):
                    await self.process_due()
                    nxt = await self.next_deadline()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%r: processing deadlines failed; retrying", self)
                nxt = None
            if self._stopping:
                return
            now = now_ns(self.ctx.clock)
            delay = self.poll_seconds if nxt is None else min(self.poll_seconds, (nxt - now) / NS)
            if delay > 0 and not self._wake.is_set():
                await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        """Sleep on the injected clock until ``seconds`` pass or ``wake()`` is called.

        The clock's sleep is awaited directly (not in a side task) so that it is registered in
        the same step that read the time: a test's ``ManualClock.advance`` cannot slip in
        between and leave the scheduler asleep past a due deadline.
        """
        self._sleeping = True
        try:
            await self.ctx.clock.sleep(seconds)
        except asyncio.CancelledError:
            if self._stopping or not self._woken:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        finally:
            self._sleeping = False
            self._woken = False

    async def process_due(self) -> None:
        """Hand every due deadline to its handler (each checks and claims its row)."""
        now = now_ns(self.ctx.clock)
        async with self.ctx.store.connect() as db:
            attempts = list(
                (
                    await db.execute(
                        select(call_sessions.c.id)
                        .where(
                            call_sessions.c.ended_at.is_(None),
                            call_sessions.c.auto_cancel_at <= now,
                        )
                        .limit(BATCH)
                    )
                ).scalars()
            )
            callees = [
                (r[0], r[1])
                for r in await db.execute(
                    select(session_ring.c.session_id, session_ring.c.user_id)
                    .where(session_ring.c.state == "ringing", session_ring.c.deadline <= now)
                    .limit(BATCH)
                )
            ]
            gone = list(
                (
                    await db.execute(
                        select(participants.c.id)
                        .where(participants.c.left_at.is_(None), participants.c.gone_at <= now)
                        .order_by(participants.c.gone_at)
                        .limit(BATCH)
                    )
                ).scalars()
            )
            long = list(
                (
                    await db.execute(
                        select(call_sessions.c.id)
                        .where(
                            call_sessions.c.ended_at.is_(None),
                            call_sessions.c.max_duration_at <= now,
                        )
                        .limit(BATCH)
                    )
                ).scalars()
            )
        # The attempt's deadline first: when it coincides with the callees' own, everyone
        # still ringing is missed by the attempt and the call ends with reason "timeout".
        jobs: list[tuple[Callable[[], Awaitable[None]], str, str]] = [
            *((partial(self.handlers.attempt, sid), "auto-cancel", sid) for sid in attempts),
            *(
                (partial(self.handlers.callee, sid, uid), "callee", f"{sid}/{uid}")
                for sid, uid in callees
            ),
            *((partial(self.handlers.participant, pid), "grace", pid) for pid in gone),
            *((partial(self.handlers.max_duration, sid), "max-duration", sid) for sid in long),
        ]
        for job, what, key in jobs:
            if self._stopping:  # shutting down: the rest are the other replicas'
                return
            await self._guard(job(), what, key)
        self.passes += 1
        if attempts or callees or gone or long:
            log.debug(
                "%r: %d attempts, %d callees, %d participants, %d sessions due",
                self,
                len(attempts),
                len(callees),
                len(gone),
                len(long),
            )
            if BATCH in (len(attempts), len(callees), len(gone), len(long)):
                self.wake()

    async def _guard(self, job: Awaitable[None], what: str, key: str) -> None:
        try:
            await job
        except Exception:
            log.exception("%r: %s deadline of %s failed", self, what, key)
