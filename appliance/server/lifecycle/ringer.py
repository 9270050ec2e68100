"""Server-authoritative ringing: the rules are in docs/architecture.md, "Ringing".

A ring attempt has a caller and ringed users; their state lives in ``session_ring`` (one row
per ringed user: ringing | accepted | rejected | missed | cancelled) and the attempt's
deadline in ``call_sessions.auto_cancel_at``. Every transition is decided here inside one
transaction and announced after it commits:

- ring → ``call.ring {call, user: caller, members, session_id, video}`` to every connection of
  every ringed user (and again on each new connection while the user still rings);
- accept → ``call.accepted {user}``; the other ringed users stop ringing (``cancelled``);
- reject → ``call.rejected {user, reason}``; nobody left ringing and nobody accepted →
  ``call.ended {reason: "rejected"}`` (or ``"timeout"`` when some of them missed it);
- the caller cancels (reject, or leaves before anyone accepted) → ``call.rejected {user:
  caller, reason: "cancel"}``, ``call.ended {reason: "cancelled"}``;
- per-callee deadline → ``call.missed {user}``; the attempt's deadline with nobody accepted →
  ``call.missed`` for everyone still ringing, then ``call.ended {reason: "timeout"}``;
- a reject with reason ``timeout`` (Stream's SDKs run ring timers of their own) is that deadline
  come early: a callee's is a miss, the caller's ends the attempt as above. Any other reason
  text (up to ``REJECT_REASON_CHARS``) is kept as given; rejecting a ring already over does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls import events as ev
from appliance.errors import Conflict, InvalidRequest, NotFound
from appliance.server.context import ServerContext, now_ns
from appliance.server.lifecycle.outbox import Outbox, Transactor
from appliance.server.lifecycle.sessions import (
    active_participants,
    call_for_update,
    end_session,
    live_session,
    open_session,
    settings_of,
)
from appliance.server.metrics import RingOutcome
from appliance.server.outbound.ringpush import UNTIMED_RING_SECONDS, RingPush, stopped
from appliance.server.realtime.connection import Connection
from appliance.server.realtime.hub import Hub, Target
from appliance.server.store.arrays import insert_rows, one_of
from appliance.server.store.members import FirstMembers, member_rows
from appliance.server.store.schema import call_members, call_sessions, calls, session_ring
from appliance.server.store.users import KnownUsers, user_rows
from appliance.server.wire.serialize import (
    OpenedSession,
    OpenedSessions,
    call_response,
    is_online,
    member_response,
    members_response,
    user_response,
)

log = logging.getLogger(__name__)

NS = 1_000_000_000
MS = 1_000_000
# The reasons our clients send; any other text up to REJECT_REASON_CHARS is kept as given.
REJECT_REASONS = ("decline", "busy", "cancel")
REJECT_REASON_CHARS = 32  # the session_ring.reason column
# Members listed in a call.ring event (the full list of a huge call does not belong in it).
RING_MEMBERS_LISTED = 25
BATCH = 500


def nobody_to_ring(cid: str, caller_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"nobody to ring in call {cid}: no member other than the caller {caller_id} "
        "who is not already in the call",
        field="members_ids",
        cid=cid,
    )


class RingEngine:
    """The ``Ringer`` of ``context.py`` plus accept, reject and the ring deadlines."""

    def __init__(self, ctx: ServerContext, hub: Hub, tx: Transactor) -> None:
        self.ctx = ctx
        self.hub = hub
        self.tx = tx

    def __repr__(self) -> str:
        return "RingEngine()"

    async def user(self, db: AsyncConnection, user_id: str) -> dict[str, Any]:
        row = (await user_rows(db, [user_id])).get(user_id)
        return user_response(row, user_id, self.hub.presence.is_online(user_id))

    # -- ring ---------------------------------------------------------------------------

    async def ring(
        self,
        call_cid: str,
        caller_id: str,
        member_ids: list[str] | None,
        video: bool | None,
    ) -> None:
        await self.ring_users(call_cid, caller_id, member_ids, video)

    async def ring_users(
        self,
        call_cid: str,
        caller_id: str,
        member_ids: list[str] | None,
        video: bool | None,
    ) -> list[str]:
        """Start a ring attempt; the user ids rung."""

        async def run(db: AsyncConnection, out: Outbox) -> list[str]:
            call = await call_for_update(db, call_cid)
            if call is None:
                raise NotFound(f"call {call_cid} not found", cid=call_cid)
            return await self._ring(db, call, caller_id, member_ids, video, out)

        return await self.tx(run)

    async def ring_in(
        self,
        db: AsyncConnection,
        out: Outbox,
        call: dict[str, Any],
        caller_id: str,
        member_ids: list[str] | None,
        video: bool | None,
        ctype: Mapping[str, Any] | None = None,
        known: KnownUsers | None = None,
        first: FirstMembers | None = None,
        opened: OpenedSessions | None = None,
    ) -> list[str]:
        """``ring_users`` inside the caller's transaction (run by ``self.tx``); ``call`` is the
        call's row as read by ``call_for_update`` or just inserted (locked either way), ``ctype``
        its call type's row when the caller has read it, ``known`` the user rows and ``first``
        the first members it has read in this transaction; ``opened`` gets the session when
        the ring opens one."""
        return await self._ring(
            db, call, caller_id, member_ids, video, out, ctype, known, first, opened
        )

    async def _ring(
        self,
        db: AsyncConnection,
        call: dict[str, Any],
        caller_id: str,
        member_ids: list[str] | None,
        video: bool | None,
        out: Outbox,
        ctype: Mapping[str, Any] | None = None,
        known: KnownUsers | None = None,
        first: FirstMembers | None = None,
        opened: OpenedSessions | None = None,
    ) -> list[str]:
        cid = call["cid"]
        now = now_ns(self.ctx.clock)
        ring = (await settings_of(db, call, ctype)).ring
        auto_cancel_at = (
            now + ring.auto_cancel_timeout_ms * MS if ring.auto_cancel_timeout_ms else None
        )
        values: dict[str, Any] = {
            "rung_by_id": caller_id,
            "ring_started_at": now,
            "ring_video": video,
        }
        # A session opened by this ring starts rung (nobody in it has accepted yet).
        starting = dict(values, auto_cancel_at=auto_cancel_at) if auto_cancel_at else values
        session, new = await open_session(db, call, now, out, starting)
        sid = session["id"]
        member_q = select(call_members.c.user_id).where(call_members.c.call_cid == cid)
        if member_ids is not None:
            named = list(dict.fromkeys(member_ids))
            found = set(
                (
                    await db.execute(member_q.where(one_of(db, call_members.c.user_id, named)))
                ).scalars()
            )
            missing = [u for u in named if u not in found]
            if missing:
                raise InvalidRequest(
                    f"not members of call {cid}: {', '.join(missing)}", field="members_ids", cid=cid
                )
            ringed = [u for u in named if u != caller_id]
        else:
            # A session opened just now has nobody in it yet.
            present = set() if new else {p["user_id"] for p in await active_participants(db, sid)}
            ringed = [
                u
                for u in (await db.execute(member_q.order_by(call_members.c.user_id))).scalars()
                if u != caller_id and u not in present
            ]
        if not ringed:
            raise nobody_to_ring(cid, caller_id)
        callee_deadline = (
            now + ring.incoming_call_timeout_ms * MS if ring.incoming_call_timeout_ms else None
        )
        states = (
            {}
            if new  # nobody was rung in it yet
            else {
                r["user_id"]: r["state"]
                for r in (
                    await db.execute(select(session_ring).where(session_ring.c.session_id == sid))
                ).mappings()
            }
        )
        row_values = {
            "state": "ringing",
            "reason": None,
            "deadline": callee_deadline,
            "updated_at": now,
        }
        again = [u for u in ringed if u in states]
        fresh = [u for u in ringed if u not in states]
        for i in range(0, len(again), BATCH):
            await db.execute(
                update(session_ring)
                .where(
                    session_ring.c.session_id == sid,
                    session_ring.c.user_id.in_(again[i : i + BATCH]),
                )
                .values(**row_values)
            )
        if fresh:
            await insert_rows(
                db, session_ring, [{"session_id": sid, "user_id": u, **row_values} for u in fresh]
            )
        if new:
            values = starting
            if opened is not None:
                opened[sid] = OpenedSession(session, [{"user_id": u, **row_values} for u in fresh])
        else:
            if auto_cancel_at and "accepted" not in states.values():
                values["auto_cancel_at"] = auto_cancel_at
            await db.execute(
                update(call_sessions).where(call_sessions.c.id == sid).values(**values)
            )
            # A ring changes the call (a new session did so already): a device that was away
            # finds the rings it missed among its calls changed since (the client's resync).
            await db.execute(update(calls).where(calls.c.cid == cid).values(updated_at=now))
            call["updated_at"] = now
        out.deadlines_changed = True
        out.outcomes.append(RingOutcome("started", cid))
        ends = [t for t in (callee_deadline, values.get("auto_cancel_at")) if t is not None]
        shown = ringed[:RING_MEMBERS_LISTED]
        listed = first.of(shown) if first is not None else None
        if listed is None:
            listed = await member_rows(db, cid, RING_MEMBERS_LISTED, shown)
        log.info("Call(%s) %s rings %d users in session %s", cid, caller_id, len(ringed), sid)
        # The caller and the listed members in one read of users.
        people = await user_rows(db, [caller_id, *(r["user_id"] for r in listed)], known)
        out.add(
            ev.CALL_RING,
            cid,
            target=Target(user_ids=tuple(ringed)),
            session_id=sid,
            user=user_response(
                people.get(caller_id), caller_id, self.hub.presence.is_online(caller_id)
            ),
            members=[
                member_response(r, people.get(r["user_id"]), is_online(self.ctx, r["user_id"]))
                for r in listed
            ],
            video=bool(video) if video is not None else bool(session.get("ring_video")),
        )
        caller = people.get(caller_id) or {}
        out.pushes.append(
            RingPush(
                "ring",
                cid,
                sid,
                now,
                tuple(ringed),
                caller={"id": caller_id, "name": caller.get("name")},
                video=bool(video) if video is not None else bool(session.get("ring_video")),
                expires_at=min(ends) if ends else now + UNTIMED_RING_SECONDS * NS,
            )
        )
        return ringed

    async def resend_rings(self, conn: Connection) -> None:
        """A new connection of a user who is still being rung rings too."""
        async with self.ctx.store.connect() as db:
            q = (
                select(call_sessions, session_ring.c.user_id.label("callee"))
                .join(session_ring, session_ring.c.session_id == call_sessions.c.id)
                .where(
                    session_ring.c.user_id == conn.user_id,
                    session_ring.c.state == "ringing",
                    call_sessions.c.ended_at.is_(None),
                )
            )
            pending = [dict(r) for r in (await db.execute(q)).mappings()]
            for s in pending:
                cid = s["call_cid"]
                if conn.call_cids is not None and cid not in conn.call_cids:
                    continue
                listed = await member_rows(db, cid, RING_MEMBERS_LISTED, [conn.user_id])
                conn.send(
                    {
                        "type": ev.CALL_RING,
                        "call_cid": cid,
                        "call": await call_response(db, self.ctx, cid),
                        "session_id": s["id"],
                        "user": await self.user(db, s["rung_by_id"] or ""),
                        "members": await members_response(db, self.ctx, listed),
                        "video": bool(s["ring_video"]),
                        "created_at": s["ring_started_at"],
                    }
                )
                log.info("Call(%s) ring re-sent to %r", cid, conn)

    async def members_removed(self, call_cid: str, user_ids: list[str]) -> None:
        """Removed members who were being rung stop ringing: their row becomes ``cancelled``
        (reason ``removed``), ``call.rejected {user, reason: "removed"}`` goes to them alone (what
        makes every client, ours and Stream's, drop the ring of its own user), a ``ring_stopped``
        push to their phones; the attempt ends when nobody is left ringing."""

        async def run(db: AsyncConnection, out: Outbox) -> None:
            call = await call_for_update(db, call_cid)
            session = None if call is None else await live_session(db, call)
            if session is None:
                return
            sid = session["id"]
            rows = await self.rows(db, sid)
            gone = sorted(u for u in user_ids if rows.get(u, {}).get("state") == "ringing")
            if not gone:
                return
            now = now_ns(self.ctx.clock)
            await db.execute(
                update(session_ring)
                .where(session_ring.c.session_id == sid, session_ring.c.user_id.in_(gone))
                .values(state="cancelled", reason="removed", deadline=None, updated_at=now)
            )
            out.deadlines_changed = True
            log.info("Call(%s) %s removed while ringing: ring stopped", call_cid, gone)
            people = await user_rows(db, gone)
            online = self.hub.presence.is_online
            for u in gone:
                user = user_response(people.get(u), u, online(u))
                out.add(
                    ev.CALL_REJECTED,
                    call_cid,
                    target=Target(user_ids=(u,)),
                    session_id=sid,
                    user=user,
                    reason="removed",
                )
            stopped(out.pushes, session, gone, "ended")
            await self.attempt_over(db, session, now, out)

        await self.tx(run)

    # -- accept / reject ----------------------------------------------------------------

    async def _live(self, db: AsyncConnection, cid: str, verb: str) -> dict[str, Any]:
        call = await call_for_update(db, cid)
        if call is None:
            raise NotFound(f"call {cid} not found", cid=cid)
        session = await live_session(db, call)
        if session is None:
            raise Conflict(f"call {cid} has no live session to {verb} (it has ended)", cid=cid)
        return session

    async def rows(self, db: AsyncConnection, sid: str) -> dict[str, dict[str, Any]]:
        q = select(session_ring).where(session_ring.c.session_id == sid)
        return {r["user_id"]: dict(r) for r in (await db.execute(q)).mappings()}

    async def _set(
        self, db: AsyncConnection, sid: str, user_id: str, exists: bool, now: int, **values: Any
    ) -> None:
        values.update(updated_at=now, deadline=None)
        if exists:
            await db.execute(
                update(session_ring)
                .where(session_ring.c.session_id == sid, session_ring.c.user_id == user_id)
                .values(**values)
            )
        else:
            await db.execute(
                session_ring.insert().values(session_id=sid, user_id=user_id, **values)
            )

    async def accept(self, call_cid: str, user_id: str, *, only_if_ringing: bool = False) -> None:
        """``user_id`` answers. ``only_if_ringing``: the implicit accept of a ringed user who
        joins without accepting first (nothing happens when that user is not ringing)."""

        async def run(db: AsyncConnection, out: Outbox) -> None:
            session = await self._live(db, call_cid, "accept")
            sid = session["id"]
            now = now_ns(self.ctx.clock)
            rows = await self.rows(db, sid)
            mine = rows.get(user_id)
            if mine is not None and mine["state"] == "accepted":
                return
            if only_if_ringing and (mine is None or mine["state"] != "ringing"):
                return
            await self._set(db, sid, user_id, mine is not None, now, state="accepted", reason=None)
            if mine is not None and mine["state"] == "ringing":
                rung = session.get("ring_started_at")
                seconds = (now - rung) / NS if rung else None
                out.outcomes.append(RingOutcome("answered", call_cid, seconds=seconds))
            ringing = [u for u, r in rows.items() if r["state"] == "ringing" and u != user_id]
            stopped(out.pushes, session, [user_id, *ringing], "accepted")
            await db.execute(
                update(session_ring)
                .where(session_ring.c.session_id == sid, session_ring.c.state == "ringing")
                .values(
                    state="cancelled", reason="accepted_elsewhere", deadline=None, updated_at=now
                )
            )
            await db.execute(
                update(call_sessions).where(call_sessions.c.id == sid).values(auto_cancel_at=None)
            )
            out.deadlines_changed = True
            log.info("Call(%s) %s accepted", call_cid, user_id)
            out.add(
                ev.CALL_ACCEPTED,
                call_cid,
                target=self.members_and(call_cid, session["rung_by_id"]),
                session_id=sid,
                user=await self.user(db, user_id),
            )

        await self.tx(run)

    def members_and(self, cid: str, *user_ids: str | None) -> Target:
        return Target(call_cid=cid, user_ids=tuple(u for u in user_ids if u))

    async def reject(self, call_cid: str, user_id: str, reason: str | None) -> None:
        # Any short text: Stream's SDKs send "timeout" and whatever an app passes to
        # ``leave({reject: true, reason})``; "cancel" stays the caller's (below).
        reason = reason or "decline"

        async def run(db: AsyncConnection, out: Outbox) -> None:
            call = await call_for_update(db, call_cid)
            if call is None:
                raise NotFound(f"call {call_cid} not found", cid=call_cid)
            session = await live_session(db, call)
            if session is None:
                # The ring is over already (a client's own timer lost the race with ours, or
                # the caller cancels after everyone declined): what the client wants holds.
                log.info("Call(%s) %s rejected a ring that is over (%s)", call_cid, user_id, reason)
                return
            now = now_ns(self.ctx.clock)
            if user_id == session["rung_by_id"]:
                if reason == "timeout":  # the caller's own "nobody answered" timer
                    await self.time_out(db, session, now, out)
                    return
                if not await self._cancel(db, session, now, out):
                    raise Conflict(
                        f"the ring of call {call_cid} was already accepted; leave the call to "
                        "hang up",
                        cid=call_cid,
                    )
                return
            if reason == "cancel":
                raise InvalidRequest(
                    "only the caller can cancel a ring; decline or busy", field="reason"
                )
            sid = session["id"]
            rows = await self.rows(db, sid)
            mine = rows.get(user_id)
            if mine is not None and mine["state"] == "rejected":
                return
            if reason == "timeout" and mine is not None:
                # A callee's own ring timer (Stream's SDKs): missed, as if ours had fired.
                if mine["state"] == "ringing":
                    await self._set(db, sid, user_id, True, now, state="missed", reason=reason)
                    await self.missed(db, session, [user_id], out)
                    await self.attempt_over(db, session, now, out)
                return
            await self._set(
                db, sid, user_id, mine is not None, now, state="rejected", reason=reason
            )
            if mine is not None and mine["state"] == "ringing":
                stopped(out.pushes, session, [user_id], "rejected")
                out.outcomes.append(RingOutcome("rejected", call_cid))
            log.info("Call(%s) %s rejected (%s)", call_cid, user_id, reason)
            user = await self.user(db, user_id)
            out.add(
                ev.CALL_REJECTED,
                call_cid,
                target=self.members_and(call_cid, session["rung_by_id"], user_id),
                session_id=sid,
                user=user,
                reason=reason,
            )
            await self.attempt_over(db, session, now, out)

        await self.tx(run)

    async def missed(
        self, db: AsyncConnection, session: dict[str, Any], user_ids: list[str], out: Outbox
    ) -> None:
        """``call.missed`` for each of ``user_ids`` (their rows already say so)."""
        cid = session["call_cid"]
        stopped(out.pushes, session, user_ids, "missed")
        if user_ids:
            out.outcomes.append(RingOutcome("missed", cid, count=len(user_ids)))
        for user_id in user_ids:
            log.info("Call(%s) %s missed the ring", cid, user_id)
            out.add(
                ev.CALL_MISSED,
                cid,
                target=self.members_and(cid, session["rung_by_id"], user_id),
                session_id=session["id"],
                user=await self.user(db, user_id),
                caller=await self.user(db, session["rung_by_id"] or ""),
            )

    async def time_out(
        self, db: AsyncConnection, session: dict[str, Any], now: int, out: Outbox
    ) -> None:
        """Nobody accepted in time: everyone still ringing missed it, and the call ends unless
        someone besides the caller is in it."""
        sid = session["id"]
        await db.execute(
            update(call_sessions).where(call_sessions.c.id == sid).values(auto_cancel_at=None)
        )
        rows = await self.rows(db, sid)
        if any(r["state"] == "accepted" for r in rows.values()):
            return
        still = sorted(u for u, r in rows.items() if r["state"] == "ringing")
        await db.execute(
            update(session_ring)
            .where(session_ring.c.session_id == sid, session_ring.c.state == "ringing")
            .values(state="missed", reason="timeout", deadline=None, updated_at=now)
        )
        await self.missed(db, session, still, out)
        others = [
            p for p in await active_participants(db, sid) if p["user_id"] != session["rung_by_id"]
        ]
        if not others:  # someone in the call with the caller keeps it going
            await end_session(db, session, "timeout", now, out)

    async def attempt_over(
        self, db: AsyncConnection, session: dict[str, Any], now: int, out: Outbox
    ) -> None:
        """Nobody still ringing and nobody accepted: the attempt is over."""
        if session["rung_by_id"] is None:
            return
        states = [r["state"] for r in (await self.rows(db, session["id"])).values()]
        if not states or "ringing" in states or "accepted" in states:
            return
        if any(
            p["user_id"] != session["rung_by_id"]
            for p in await active_participants(db, session["id"])
        ):
            return
        reason = "rejected" if all(s == "rejected" for s in states) else "timeout"
        await end_session(db, session, reason, now, out)

    async def _cancel(
        self, db: AsyncConnection, session: dict[str, Any], now: int, out: Outbox
    ) -> bool:
        rows = await self.rows(db, session["id"])
        states = [r["state"] for r in rows.values()]
        if "accepted" in states:
            return False
        await db.execute(
            update(session_ring)
            .where(session_ring.c.session_id == session["id"], session_ring.c.state == "ringing")
            .values(state="cancelled", reason="cancel", deadline=None, updated_at=now)
        )
        caller = session["rung_by_id"]
        stopped(
            out.pushes,
            session,
            [u for u, r in rows.items() if r["state"] == "ringing"],
            "cancelled",
        )
        log.info("Call(%s) ring cancelled by %s", session["call_cid"], caller)
        out.add(
            ev.CALL_REJECTED,
            session["call_cid"],
            target=self.members_and(session["call_cid"], caller, *rows),
            session_id=session["id"],
            user=await self.user(db, caller),
            reason="cancel",
        )
        await end_session(db, session, "cancelled", now, out)
        return True

    async def caller_left(
        self, db: AsyncConnection, session: dict[str, Any], user_id: str, now: int, out: Outbox
    ) -> bool:
        """Hook for sessions: the caller leaving before anyone accepted cancels the ring."""
        if session["rung_by_id"] != user_id:
            return False
        rows = await self.rows(db, session["id"])
        states = [r["state"] for r in rows.values()]
        if "ringing" not in states or "accepted" in states:
            return False
        if any(p["user_id"] == user_id for p in await active_participants(db, session["id"])):
            return False  # the caller is still in the call on another connection
        return await self._cancel(db, session, now, out)
