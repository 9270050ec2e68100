"""Call sessions: the rules are in docs/architecture.md, "Sessions".

A call id lives forever; each ring or join on a call with no live session opens a new session
(``calls.current_session_id`` points at it, ``calls.ended_at`` is cleared). Ended sessions stay
as history: who rang, who answered, who missed, who joined when. ``end_session`` ends one for
every reason (last participant left, rejected, cancelled, timeout, max_duration, ended).
Participants are ``participant.py``.

Functions taking ``db`` run inside the caller's transaction and put events in an ``Outbox``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls import events as ev
from appliance.calls.settings import CallSettings, effective_settings
from appliance.server.lifecycle.outbox import Outbox
from appliance.server.outbound.ringpush import stop_reason, stopped
from appliance.server.realtime.hub import Target
from appliance.server.store import calltypes
from appliance.server.store.schema import call_sessions, calls, participants, session_ring

log = logging.getLogger(__name__)


async def settings_of(
    db: AsyncConnection, call: dict[str, Any], ctype: Mapping[str, Any] | None = None
) -> CallSettings:
    """The call's effective settings (``ctype``: its type's row, when the caller has read it)."""
    if ctype is None:
        ctype = await calltypes.get_row(db, call["type"])
    return effective_settings(ctype["settings"], call["settings_override"])


async def call_for_update(db: AsyncConnection, cid: str) -> dict[str, Any] | None:
    """The call row, locked until the transaction ends (PostgreSQL: concurrent rings and joins
    of one call queue up here, so they never open two sessions; SQLite serialises writers)."""
    q = select(calls).where(calls.c.cid == cid).with_for_update()
    row = (await db.execute(q)).mappings().first()
    return dict(row) if row is not None else None


async def live_session(db: AsyncConnection, call: dict[str, Any]) -> dict[str, Any] | None:
    sid = call["current_session_id"]
    if not sid:
        return None
    row = (
        (
            await db.execute(
                select(call_sessions).where(
                    call_sessions.c.id == sid, call_sessions.c.ended_at.is_(None)
                )
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


async def open_session(
    db: AsyncConnection,
    call: dict[str, Any],
    now: int,
    out: Outbox,
    starting: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """The live session of ``call``, or a new one (``True``) when none is live; a new one is
    inserted with the columns in ``starting`` (a ring's, so that it needs no UPDATE after)."""
    live = await live_session(db, call)
    if live is not None:
        return live, False
    sid = str(uuid.uuid4())
    row = {**(starting or {}), "id": sid, "call_cid": call["cid"], "created_at": now}
    inserted = await db.execute(call_sessions.insert().values(**row).returning(*call_sessions.c))
    session = dict(inserted.mappings().one())
    await db.execute(
        update(calls)
        .where(calls.c.cid == call["cid"])
        .values(current_session_id=sid, ended_at=None, updated_at=now)
    )
    call.update(current_session_id=sid, ended_at=None, updated_at=now)
    log.info("Call(%s) session %s started", call["cid"], sid)
    out.add(ev.CALL_SESSION_STARTED, call["cid"], session_id=sid)
    return session, True


async def end_session(
    db: AsyncConnection,
    session: dict[str, Any],
    reason: str,
    now: int,
    out: Outbox,
    user: dict[str, Any] | None = None,
) -> bool:
    """End a live session: participants leave, ringing stops, the call gets ``ended_at``."""
    done = await db.execute(
        update(call_sessions)
        .where(call_sessions.c.id == session["id"], call_sessions.c.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason, auto_cancel_at=None, max_duration_at=None)
    )
    if done.rowcount == 0:
        return False
    await db.execute(
        update(participants)
        .where(participants.c.session_id == session["id"], participants.c.left_at.is_(None))
        .values(left_at=now, gone_at=None)
    )
    still_ringing = await db.execute(
        update(session_ring)
        .where(session_ring.c.session_id == session["id"], session_ring.c.state == "ringing")
        .values(state="cancelled", reason=reason, deadline=None, updated_at=now)
        .returning(session_ring.c.user_id)
    )
    stopped(out.pushes, session, still_ringing.scalars(), stop_reason(reason))
    cid = session["call_cid"]
    await db.execute(update(calls).where(calls.c.cid == cid).values(ended_at=now, updated_at=now))
    log.info("Call(%s) session %s ended: %s", cid, session["id"], reason)
    # The caller hears the end even when not a member (a device ringing residents).
    caller = session.get("rung_by_id")
    target = Target(call_cid=cid, user_ids=(caller,) if caller else ())
    out.add(ev.CALL_SESSION_ENDED, cid, target=target, session_id=session["id"])
    fields: dict[str, Any] = {"session_id": session["id"], "reason": reason}
    if user is not None:
        fields["user"] = user
    out.add(ev.CALL_ENDED, cid, target=target, **fields)
    return True


async def active_participants(db: AsyncConnection, session_id: str) -> list[dict[str, Any]]:
    q = (
        select(participants)
        .where(participants.c.session_id == session_id, participants.c.left_at.is_(None))
        .order_by(participants.c.joined_at, participants.c.id)
    )
    return [dict(r) for r in (await db.execute(q)).mappings()]
