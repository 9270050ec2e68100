"""The ring deadlines (docs/architecture.md, "Ringing"), handed over by the deadline scheduler.

- a callee's ``incoming_call_timeout_ms`` passed while still ringing → ``call.missed {user}``
  (``missed_by``); when nobody is left ringing and nobody accepted, the call ends;
- the attempt's ``auto_cancel_timeout_ms`` passed with nobody accepted → ``call.missed`` for
  everyone still ringing, then ``call.ended {reason: "timeout"}``.

Each handler claims its row with a conditional update (``... WHERE deadline <= now``), so a
deadline seen by two replicas at once is processed once.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.server.context import now_ns
from appliance.server.lifecycle.outbox import Outbox
from appliance.server.lifecycle.ringer import RingEngine
from appliance.server.store.schema import call_sessions, session_ring

log = logging.getLogger(__name__)


class RingTimeouts:
    def __init__(self, engine: RingEngine) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return "RingTimeouts()"

    async def expire_callee(self, session_id: str, user_id: str) -> None:
        async def run(db: AsyncConnection, out: Outbox) -> None:
            now = now_ns(self.engine.ctx.clock)
            done = await db.execute(
                update(session_ring)
                .where(
                    session_ring.c.session_id == session_id,
                    session_ring.c.user_id == user_id,
                    session_ring.c.state == "ringing",
                    session_ring.c.deadline <= now,
                )
                .values(state="missed", reason="timeout", deadline=None, updated_at=now)
            )
            if done.rowcount == 0:
                return
            session = await self._session(db, session_id)
            if session is None:
                return
            await self.engine.missed(db, session, [user_id], out)
            await self.engine.attempt_over(db, session, now, out)

        await self.engine.tx(run)

    async def expire_attempt(self, session_id: str) -> None:
        async def run(db: AsyncConnection, out: Outbox) -> None:
            now = now_ns(self.engine.ctx.clock)
            done = await db.execute(
                update(call_sessions)
                .where(
                    call_sessions.c.id == session_id,
                    call_sessions.c.ended_at.is_(None),
                    call_sessions.c.auto_cancel_at <= now,
                )
                .values(auto_cancel_at=None)
            )
            if done.rowcount == 0:
                return
            session = await self._session(db, session_id)
            if session is None:
                return
            await self.engine.time_out(db, session, now, out)

        await self.engine.tx(run)

    async def _session(self, db: AsyncConnection, session_id: str) -> dict[str, Any] | None:
        row = (
            (
                await db.execute(
                    select(call_sessions).where(
                        call_sessions.c.id == session_id, call_sessions.c.ended_at.is_(None)
                    )
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row is not None else None
