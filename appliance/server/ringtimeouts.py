"""The ring deadlines (DESIGN §4 "Ringing"), handed over by the deadline scheduler.

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

from appliance.calls import events as ev
from appliance.server.context import now_ns
from appliance.server.outbox import Outbox
from appliance.server.ringer import RingEngine
from appliance.server.schema import call_sessions, session_ring
from appliance.server.sessions import active_participants, end_session

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
            await self._missed(db, session, [user_id], out)
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
            rows = await self.engine.rows(db, session_id)
            if any(r["state"] == "accepted" for r in rows.values()):
                return
            still = sorted(u for u, r in rows.items() if r["state"] == "ringing")
            await db.execute(
                update(session_ring)
                .where(session_ring.c.session_id == session_id, session_ring.c.state == "ringing")
                .values(state="missed", reason="timeout", deadline=None, updated_at=now)
            )
            await self._missed(db, session, still, out)
            others = [
                p
                for p in await active_participants(db, session_id)
                if p["user_id"] != session["rung_by_id"]
            ]
            if not others:  # someone in the call with the caller keeps it going
                await end_session(db, session, "timeout", now, out)

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

    async def _missed(
        self, db: AsyncConnection, session: dict[str, Any], user_ids: list[str], out: Outbox
    ) -> None:
        cid = session["call_cid"]
        for user_id in user_ids:
            log.info("Call(%s) %s missed the ring", cid, user_id)
            out.add(
                ev.CALL_MISSED,
                cid,
                target=self.engine.members_and(cid, session["rung_by_id"], user_id),
                session_id=session["id"],
                user=await self.engine.user(db, user_id),
                caller=await self.engine.user(db, session["rung_by_id"] or ""),
            )
