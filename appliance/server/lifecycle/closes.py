"""Closed WebSockets start their participants' grace period in batches.

A closed connection's participants (those bound to it) get ``gone_at = now + grace``. One
transaction per close was fine for one device at a time, but when a proxy restarts every
device's socket closes at once (~3,300 per replica in ``bench/fleet.py``'s scale phase), and
the closes queued on the pool for its 30 s timeout, failed by the thousand, and starved
everything else that needed a connection. Here a close only queues its connection id; one task
flushes the queue every ``FLUSH_SECONDS`` in batches of at most ``BATCH`` ids, one ``UPDATE …
WHERE connection_id IN (…)`` transaction each, so a storm of N closes is about N / ``BATCH``
transactions (at most one pooled connection at a time) and a lone close waits a few ms.

The close hook waits for its batch: when it returns, the grace period has started (or the
failure was logged, once per batch). ``stop()`` flushes what is queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance.server.context import ServerContext
from appliance.server.lifecycle.participant import connections_closed

if TYPE_CHECKING:
    from appliance.server.realtime.connection import Connection

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.005
BATCH = 500
ATTEMPTS = 3
RETRY_SECONDS = 1.0


class CloseBatcher:
    def __init__(self, ctx: ServerContext, wake: Callable[[], None]) -> None:
        self.ctx = ctx
        self.wake = wake  # re-plan the deadlines: grace periods were stored
        self._pending: list[tuple[str, asyncio.Future[None]]] = []
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.batches = 0  # transactions run (tests: a storm is batched)

    def __repr__(self) -> str:
        return f"CloseBatcher(pending={len(self._pending)}, batches={self.batches})"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="close-batcher")

    async def closed(self, conn: Connection) -> None:
        """The hub's close hook: queue ``conn`` and wait for its batch."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append((conn.id, done))
        self._due.set()
        if self._stopping or self._task is None:  # not running: flush it here
            await self._flush()
        await asyncio.shield(done)

    async def stop(self) -> None:
        """Flush what is queued and stop (not cancelled mid-transaction: a batch taken off the
        queue would be lost)."""
        self._stopping = True
        self._due.set()
        task, self._task = self._task, None
        if task is not None:
            await task
        await self._flush()

    async def _run(self) -> None:
        while not self._stopping:
            await self._due.wait()
            if not self._stopping:
                await asyncio.sleep(FLUSH_SECONDS)  # the rest of a burst joins this batch
            self._due.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
            await self._one(batch)

    async def _one(self, batch: list[tuple[str, asyncio.Future[None]]]) -> None:
        ids = [cid for cid, _ in batch]
        count = 0
        try:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    async with self.ctx.store.begin() as db:
                        count = await connections_closed(db, self.ctx, ids)
                    self.batches += 1
                    break
                except Exception as err:
                    if attempt == ATTEMPTS:
                        log.error(
                            "%r: grace periods of %d closed connections not started: %s",
                            self,
                            len(ids),
                            err,
                        )
                    else:
                        log.warning("%r: closing %d connections failed: %s", self, len(ids), err)
                        await asyncio.sleep(RETRY_SECONDS * attempt)
        finally:
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
        if count:
            log.info(
                "%d participants of %d closed connections in their grace period", count, len(ids)
            )
            self.wake()
