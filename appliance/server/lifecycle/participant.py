"""Participants of a call session: the rules are in docs/architecture.md, "Sessions".

A join makes a *participant* (its id is the participant session id used in signaling) bound
to one WebSocket connection. When that connection closes, the participant has
``ws_grace_seconds`` to be re-attached to a new connection (``participant.attach`` frame, or a
join with ``session_id``) before it counts as gone; a participant joined without a connection
has the same grace period to get one. The last one out ends the session. Deadlines are stored
(``gone_at``) and processed by ``deadlines.Scheduler``.

Functions taking ``db`` run inside the caller's transaction and put events in an ``Outbox``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls import events as ev
from appliance.calls.capabilities import Capability
from appliance.errors import Conflict, PermissionDenied
from appliance.server.context import ServerContext, now_ns
from appliance.server.lifecycle.outbox import Outbox
from appliance.server.lifecycle.sessions import (
    active_participants,
    end_session,
    open_session,
    settings_of,
)
from appliance.server.store.schema import call_sessions, participants, session_ring
from appliance.server.store.users import user_rows
from appliance.server.wire.serialize import is_online, user_response

log = logging.getLogger(__name__)

NS = 1_000_000_000

# ringer.caller_left: returns True when the leaving user's departure cancelled a ring.
CallerLeftHook = Callable[[AsyncConnection, dict[str, Any], str, int, Outbox], Awaitable[bool]]


@dataclass
class Joined:
    participant_id: str
    session_id: str
    reattached: bool
    # The participants there before this one, as of the join's transaction: the newcomer offers
    # to each of them, and two joins at the same moment never both list each other (glare).
    others: list[dict[str, Any]] = field(default_factory=list)
    # The joining user was being rung in this session (joining answers the ring).
    was_ringing: bool = False


async def participant_dicts(
    db: AsyncConnection, rows: list[dict[str, Any]], online: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """Participants as the join response and events carry them."""
    people = await user_rows(db, (r["user_id"] for r in rows))
    return [participant_dict(r, people.get(r["user_id"]), online(r["user_id"])) for r in rows]


def participant_dict(
    row: dict[str, Any], user: dict[str, Any] | None, online: bool = True
) -> dict[str, Any]:
    return {
        "user_session_id": row["id"],
        "user_id": row["user_id"],
        "user": user_response(user, row["user_id"], online),
        "role": row["role"] or "user",
        "joined_at": row["joined_at"],
        # False while the participant's WebSocket is gone (grace period) or not yet attached.
        "connected": row["gone_at"] is None,
    }


def _fills(row: dict[str, Any]) -> bool:
    """Counts against ``max_participants``: not a ghost (a dropped WebSocket in its grace
    period). A participant that joined without a connection and has not attached yet counts."""
    return row["gone_at"] is None or row["connection_id"] is None


async def join(
    db: AsyncConnection,
    ctx: ServerContext,
    call: dict[str, Any],
    user_id: str,
    role: str | None,
    connection_id: str | None,
    reattach_id: str | None,
    out: Outbox,
    *,
    may_join_ongoing: bool = True,
) -> Joined:
    """Make ``user_id`` a participant of the live session of ``call`` (opening one if needed).

    Without ``may_join_ongoing`` (the capability ``join-ongoing-call``), joining a session in
    which two other users are already present is refused (a re-attach is not a join)."""
    now = now_ns(ctx.clock)
    grace = int(float(ctx.settings.ws_grace_seconds) * NS)
    session, _ = await open_session(db, call, now, out)
    sid = session["id"]
    present = await active_participants(db, sid)
    mine = [
        p
        for p in present
        if p["user_id"] == user_id
        and (p["id"] == reattach_id or (connection_id and p["connection_id"] == connection_id))
    ]
    if mine:
        part = mine[0]
        values: dict[str, Any] = {"connection_id": connection_id, "gone_at": None}
        if connection_id is None:
            values = {"gone_at": part["gone_at"] or now + grace}
        await db.execute(
            update(participants).where(participants.c.id == part["id"]).values(**values)
        )
        out.deadlines_changed = True
        log.info("Call(%s) participant %s of %s re-attached", call["cid"], part["id"], user_id)
        others = await _listed(db, ctx, [p for p in present if p["id"] != part["id"]])
        return Joined(part["id"], sid, True, others)
    talking = sorted({p["user_id"] for p in present if _fills(p) and p["user_id"] != user_id})
    if not may_join_ongoing and len(talking) >= 2:
        raise PermissionDenied(
            f"call {call['cid']} is ongoing between {' and '.join(talking[:2])}"
            f"{' and others' if len(talking) > 2 else ''}: joining it as a further participant "
            f"needs the capability {Capability.JOIN_ONGOING_CALL}, which {user_id} lacks here",
            cid=call["cid"],
        )
    settings = await settings_of(db, call)
    limit = settings.limits.max_participants
    if limit is not None and sum(1 for p in present if _fills(p)) >= limit:
        raise Conflict(
            f"call {call['cid']} is full: it allows {limit} participants",
            cid=call["cid"],
        )
    pid = str(uuid.uuid4())
    row = {
        "id": pid,
        "session_id": sid,
        "call_cid": call["cid"],
        "user_id": user_id,
        "connection_id": connection_id,
        "role": role,
        "joined_at": now,
        "left_at": None,
        "gone_at": None if connection_id else now + grace,
    }
    await db.execute(participants.insert().values(**row))
    if row["gone_at"] is not None:
        out.deadlines_changed = True
    if session["started_at"] is None:
        values = {"started_at": now}
        if settings.limits.max_duration_seconds:
            values["max_duration_at"] = now + settings.limits.max_duration_seconds * NS
            out.deadlines_changed = True
        await db.execute(update(call_sessions).where(call_sessions.c.id == sid).values(**values))
    log.info("Call(%s) %s joined session %s as participant %s", call["cid"], user_id, sid, pid)
    people = await user_rows(db, [user_id])
    out.add(
        ev.CALL_SESSION_PARTICIPANT_JOINED,
        call["cid"],
        session_id=sid,
        participant=participant_dict(row, people.get(user_id)),
    )
    was_ringing = False
    if session["rung_by_id"] is not None:
        state = await db.scalar(
            select(session_ring.c.state).where(
                session_ring.c.session_id == sid, session_ring.c.user_id == user_id
            )
        )
        was_ringing = state == "ringing"
    return Joined(pid, sid, False, await _listed(db, ctx, present), was_ringing)


async def _listed(
    db: AsyncConnection, ctx: ServerContext, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    return await participant_dicts(db, rows, lambda uid: is_online(ctx, uid))


async def leave_participant(
    db: AsyncConnection,
    part: dict[str, Any],
    now: int,
    out: Outbox,
    caller_left: CallerLeftHook | None,
) -> bool:
    """``part`` leaves; the ring is cancelled or the session ends when that follows."""
    done = await db.execute(
        update(participants)
        .where(participants.c.id == part["id"], participants.c.left_at.is_(None))
        .values(left_at=now, gone_at=None)
    )
    if done.rowcount == 0:
        return False
    cid = part["call_cid"]
    log.info("Call(%s) participant %s of %s left", cid, part["id"], part["user_id"])
    people = await user_rows(db, [part["user_id"]])
    out.add(
        ev.CALL_SESSION_PARTICIPANT_LEFT,
        cid,
        session_id=part["session_id"],
        participant=participant_dict(part, people.get(part["user_id"]), False),
    )
    found = (
        (
            await db.execute(
                select(call_sessions).where(
                    call_sessions.c.id == part["session_id"], call_sessions.c.ended_at.is_(None)
                )
            )
        )
        .mappings()
        .first()
    )
    if found is None:
        return True
    session = dict(found)
    if caller_left is not None and await caller_left(db, session, part["user_id"], now, out):
        return True
    if not await active_participants(db, session["id"]):
        ringing = (
            await db.execute(
                select(func.count()).where(
                    session_ring.c.session_id == session["id"], session_ring.c.state == "ringing"
                )
            )
        ).scalar()
        if not ringing:
            await end_session(db, session, "last_participant_left", now, out)
    return True


async def attach(
    db: AsyncConnection,
    ctx: ServerContext,
    cid: str,
    participant_id: str,
    user_id: str,
    connection_id: str,
    out: Outbox,
) -> dict[str, Any]:
    """Bind participant ``participant_id`` (of ``user_id``) to a new connection."""
    row = (
        (await db.execute(select(participants).where(participants.c.id == participant_id)))
        .mappings()
        .first()
    )
    if row is None or row["call_cid"] != cid or row["user_id"] != user_id:
        raise Conflict(f"participant {participant_id} is not one of yours in call {cid}", cid=cid)
    if row["left_at"] is not None:
        raise Conflict(
            f"participant {participant_id} has left call {cid} (grace period over); join again",
            cid=cid,
        )
    await db.execute(
        update(participants)
        .where(participants.c.id == participant_id)
        .values(connection_id=connection_id, gone_at=None)
    )
    out.deadlines_changed = True
    log.info(
        "Call(%s) participant %s attached to connection %s", cid, participant_id, connection_id[:8]
    )
    return dict(row)


async def connections_closed(
    db: AsyncConnection, ctx: ServerContext, connection_ids: list[str]
) -> int:
    """Start the grace period of every participant bound to these closed connections (one
    statement; ``closes.py`` batches them)."""
    now = now_ns(ctx.clock)
    grace = int(float(ctx.settings.ws_grace_seconds) * NS)
    done = await db.execute(
        update(participants)
        .where(
            participants.c.connection_id.in_(connection_ids),
            participants.c.left_at.is_(None),
            participants.c.gone_at.is_(None),
        )
        .values(gone_at=now + grace)
    )
    return int(done.rowcount or 0)


async def orphaned_after_crash(db: AsyncConnection, ctx: ServerContext) -> int:
    """Participants bound to connections of a server that died without closing them.

    With SQLite there is one server: no connection survives its restart, so every participant
    still bound to one gets the grace period it would have had after a clean close.
    """
    now = now_ns(ctx.clock)
    grace = int(float(ctx.settings.ws_grace_seconds) * NS)
    done = await db.execute(
        update(participants)
        .where(
            participants.c.left_at.is_(None),
            participants.c.gone_at.is_(None),
            participants.c.connection_id.is_not(None),
        )
        .values(gone_at=now + grace)
    )
    return int(done.rowcount or 0)
