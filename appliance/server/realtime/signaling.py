"""The signaling relay: the rules are in docs/architecture.md, "Signaling".

Client → server::

    {"type": "signal", "call_cid": "default:door-1", "to": "<participant session id>",
     "signal": {"kind": "offer" | "answer" | "candidate" | "restart", ...}}

The sender's connection must be bound to a participant of the live session of ``call_cid``
(join with ``connection_id``, or ``participant.attach``), and ``to`` must be another
participant of that same session with a connection. The server stamps ``from`` (the sender's
participant session id) and delivers ``{"type": "call.signal", "call_cid", "from", "to",
"signal"}`` to the addressee's connection only. Anything else is answered with an error frame
naming what was wrong; nothing is delivered.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from appliance.calls import events as ev
from appliance.errors import Conflict, InvalidRequest, NotFound
from appliance.server.context import ServerContext, now_ns
from appliance.server.realtime.connection import Connection
from appliance.server.realtime.hub import Hub, Target
from appliance.server.store.schema import call_sessions, calls, participants

log = logging.getLogger(__name__)

KINDS = ("offer", "answer", "candidate", "restart")


class SignalRelay:
    """Passes `call.signal` frames (offer, answer, candidate, restart) between two participants of
    one call; the door relay of the panel is `appliance.hardware.DoorRelay`."""

    def __init__(self, ctx: ServerContext, hub: Hub) -> None:
        self.ctx = ctx
        self.hub = hub
        self.relayed = 0

    def __repr__(self) -> str:
        return f"SignalRelay(relayed={self.relayed})"

    async def handle(self, conn: Connection, frame: dict[str, Any]) -> None:
        cid = frame.get("call_cid")
        to = frame.get("to")
        signal = frame.get("signal")
        if not isinstance(cid, str) or not cid:
            raise InvalidRequest("signal frame needs call_cid (a string)", field="call_cid")
        conn.require_call(cid)
        if not isinstance(to, str) or not to:
            raise InvalidRequest(
                "signal frame needs to (a participant session id)", field="to", cid=cid
            )
        if not isinstance(signal, dict):
            raise InvalidRequest("signal must be an object", field="signal", cid=cid)
        kind = signal.get("kind")
        if kind not in KINDS:
            raise InvalidRequest(
                f"signal.kind {kind!r} is not one of {', '.join(KINDS)}",
                field="signal.kind",
                cid=cid,
            )
        async with self.ctx.store.connect() as db:
            live = (
                await db.execute(
                    select(calls.c.current_session_id)
                    .join(call_sessions, call_sessions.c.id == calls.c.current_session_id)
                    .where(calls.c.cid == cid, call_sessions.c.ended_at.is_(None))
                )
            ).scalar()
            if live is None:
                raise NotFound(f"call {cid} has no live session", field="call_cid", cid=cid)
            rows = {
                r["id"]: dict(r)
                for r in (
                    await db.execute(
                        select(participants).where(
                            participants.c.session_id == live, participants.c.left_at.is_(None)
                        )
                    )
                ).mappings()
            }
        sender = next(
            (
                p
                for p in rows.values()
                if p["connection_id"] == conn.id
                and p["gone_at"] is None
                and p["user_id"] == conn.user_id
            ),
            None,
        )
        if sender is None:
            raise Conflict(
                f"this connection is not a participant of the live session of {cid} "
                "(join with connection_id, or send participant.attach)",
                field="call_cid",
                cid=cid,
            )
        target = rows.get(to)
        if target is None:
            raise NotFound(
                f"{to} is not a participant of the live session of {cid}", field="to", cid=cid
            )
        if target["id"] == sender["id"]:
            raise InvalidRequest("a participant cannot signal itself", field="to", cid=cid)
        if target["connection_id"] is None or target["gone_at"] is not None:
            raise Conflict(
                f"participant {to} is not connected right now (it may come back within the "
                "grace period)",
                field="to",
                cid=cid,
            )
        event = {
            "type": ev.CALL_SIGNAL,
            "call_cid": cid,
            "session_id": live,
            "from": sender["id"],
            "from_user_id": sender["user_id"],
            "to": to,
            "signal": signal,
            "created_at": now_ns(self.ctx.clock),
        }
        self.relayed += 1
        log.debug("Call(%s) %s %s -> %s", cid, kind, sender["id"][:8], to[:8])
        await self.hub.publish_to(
            event,
            Target(connection_ids=(target["connection_id"],), connection_user=target["user_id"]),
        )
