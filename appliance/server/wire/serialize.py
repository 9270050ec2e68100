"""Response bodies exactly as Stream's SDK (``getstream``) parses them.

Timestamps are integer nanoseconds since the epoch. Every field the SDK requires is present;
fields for features this server does not offer say *disabled* (``recording: false``, empty
``egress``). ``call.session`` also carries ``ringing`` (user ids still ringing in that session),
``rung_by`` and ``ring_started_at``: the SDK ignores them, our clients resync from them.

``call_response(conn, ctx, cid)`` builds a call from the store; the realtime layer uses it for
the ``call`` of its events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls.settings import effective_settings
from appliance.errors import NotFound
from appliance.server.context import ServerContext
from appliance.server.store import calltypes
from appliance.server.store.schema import call_sessions, calls, participants, session_ring
from appliance.server.store.users import KnownUsers, user_rows


def user_response(
    row: Mapping[str, Any] | None, user_id: str, online: bool = False
) -> dict[str, Any]:
    """``UserResponse``; a user missing from the store is answered as a bare id."""
    r: Mapping[str, Any] = row or {}
    return {
        "id": user_id,
        "name": r.get("name") or "",
        "image": r.get("image") or "",
        "role": r.get("role") or "user",
        "teams": list(r.get("teams") or []),
        "custom": dict(r.get("custom") or {}),
        "language": "",
        "banned": False,
        "shadow_banned": False,
        "invisible": False,
        "online": online,
        "blocked_user_ids": [],
        "created_at": r.get("created_at") or 0,
        "updated_at": r.get("updated_at") or 0,
        "last_active": r.get("last_active"),
        "revoke_tokens_issued_before": r.get("revoke_tokens_issued_before"),
        "deleted_at": None,
        "deactivated_at": None,
    }


def full_user_response(row: Mapping[str, Any], online: bool = False) -> dict[str, Any]:
    """``FullUserResponse`` (answer of users upsert)."""
    out = user_response(row, row["id"], online)
    out.update(
        total_unread_count=0,
        unread_channels=0,
        unread_count=0,
        unread_threads=0,
        channel_mutes=[],
        devices=[],
        mutes=[],
    )
    return out


def member_response(
    row: Mapping[str, Any], user: Mapping[str, Any] | None, online: bool = False
) -> dict[str, Any]:
    return {
        "user_id": row["user_id"],
        "user": user_response(user, row["user_id"], online),
        "role": row["role"],
        "custom": dict(row["custom"] or {}),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "deleted_at": None,
    }


def is_online(ctx: ServerContext, user_id: str) -> bool:
    presence = ctx.presence
    return presence is not None and presence.is_online(user_id)


async def members_response(
    conn: AsyncConnection,
    ctx: ServerContext,
    rows: Iterable[Mapping[str, Any]],
    known: KnownUsers | None = None,
) -> list[dict[str, Any]]:
    rows = list(rows)
    found = await user_rows(conn, (r["user_id"] for r in rows), known)
    return [member_response(r, found.get(r["user_id"]), is_online(ctx, r["user_id"])) for r in rows]


@dataclass(frozen=True)
class OpenedSession:
    """A session as the transaction that opened it for a ring wrote it: its row (as inserted),
    its ``session_ring`` rows, nobody in it yet. Its ``session_response`` in that transaction
    needs no read (a create with ring answers with the session it opened)."""

    row: Mapping[str, Any]
    rings: list[dict[str, Any]]


# Sessions opened by the running transaction, by id (``RingEngine.ring_in(opened=…)``).
OpenedSessions = dict[str, OpenedSession]


async def session_response(
    conn: AsyncConnection,
    ctx: ServerContext,
    session_id: str,
    known: KnownUsers | None = None,
    opened: OpenedSessions | None = None,
) -> dict[str, Any] | None:
    written = opened.get(session_id) if opened else None
    s: Mapping[Any, Any] | None
    rings: Sequence[Mapping[Any, Any]]
    parts: Sequence[Mapping[Any, Any]]
    if written is not None:
        s, rings, parts = written.row, written.rings, []
    else:
        s = (
            (await conn.execute(select(call_sessions).where(call_sessions.c.id == session_id)))
            .mappings()
            .first()
        )
        if s is None:
            return None
        rings = (
            (
                await conn.execute(
                    select(session_ring).where(session_ring.c.session_id == session_id)
                )
            )
            .mappings()
            .all()
        )
        parts = (
            (
                await conn.execute(
                    select(participants)
                    .where(
                        participants.c.session_id == session_id, participants.c.left_at.is_(None)
                    )
                    .order_by(participants.c.joined_at, participants.c.id)
                )
            )
            .mappings()
            .all()
        )
    people = await user_rows(conn, (p["user_id"] for p in parts), known)
    by_state: dict[str, dict[str, int]] = {"accepted": {}, "rejected": {}, "missed": {}}
    ringing: list[str] = []
    for r in rings:
        if r["state"] in by_state:
            by_state[r["state"]][r["user_id"]] = r["updated_at"]
        elif r["state"] == "ringing":
            ringing.append(r["user_id"])
    count_by_role: dict[str, int] = {}
    plist = []
    for p in parts:
        role = p["role"] or "user"
        count_by_role[role] = count_by_role.get(role, 0) + 1
        plist.append(
            {
                "user_session_id": p["id"],
                "user": user_response(people.get(p["user_id"]), p["user_id"], True),
                "role": role,
                "joined_at": p["joined_at"],
            }
        )
    return {
        "id": s["id"],
        "participants": plist,
        "participants_count_by_role": count_by_role,
        "anonymous_participant_count": 0,
        "accepted_by": by_state["accepted"],
        "rejected_by": by_state["rejected"],
        "missed_by": by_state["missed"],
        "ringing": sorted(ringing),
        "rung_by": s["rung_by_id"],
        "ring_started_at": s["ring_started_at"],
        "started_at": s["started_at"],
        "ended_at": s["ended_at"],
        "end_reason": s["end_reason"],
        "live_started_at": None,
        "live_ended_at": None,
        "timer_ends_at": s["max_duration_at"],
    }


async def call_row(conn: AsyncConnection, cid: str) -> dict[str, Any]:
    row = (await conn.execute(select(calls).where(calls.c.cid == cid))).mappings().first()
    if row is None:
        raise NotFound(f"call {cid} not found", cid=cid)
    return dict(row)


async def call_response(
    conn: AsyncConnection,
    ctx: ServerContext,
    cid: str,
    row: Mapping[str, Any] | None = None,
    ctype: Mapping[str, Any] | None = None,
    known: KnownUsers | None = None,
    opened: OpenedSessions | None = None,
) -> dict[str, Any]:
    """``CallResponse`` of call ``cid`` from the store (``row``, the call's row, ``ctype``, its
    type's row, ``known``, users the transaction has read, and ``opened``, sessions it opened,
    each save reads when at hand)."""
    call = dict(row) if row is not None else await call_row(conn, cid)
    if ctype is None:
        ctype = await calltypes.get_row(conn, call["type"])
    settings = effective_settings(ctype["settings"], call["settings_override"])
    creator = (await user_rows(conn, [call["created_by_id"]], known)).get(call["created_by_id"])
    session = None
    if call["current_session_id"]:
        session = await session_response(conn, ctx, call["current_session_id"], known, opened)
    return {
        "type": call["type"],
        "id": call["id"],
        "cid": call["cid"],
        "created_by": user_response(
            creator, call["created_by_id"], is_online(ctx, call["created_by_id"])
        ),
        "custom": dict(call["custom"] or {}),
        "settings": settings.response(),
        "team": call["team"],
        "starts_at": call["starts_at"],
        "ended_at": call["ended_at"],
        "created_at": call["created_at"],
        "updated_at": call["updated_at"],
        "current_session_id": call["current_session_id"] or "",
        "session": session,
        "backstage": settings.backstage.enabled,
        "join_ahead_time_seconds": settings.backstage.join_ahead_time_seconds,
        "blocked_user_ids": [],
        "recording": False,
        "transcribing": False,
        "captioning": False,
        "translating": False,
        "egress": {"broadcasting": False, "rtmps": [], "hls": None},
        "ingress": {
            "rtmp": {"address": ""},
            "srt": {"address": ""},
            "whip": {"address": ""},
        },
        "thumbnails": None,
        "channel_cid": None,
        "routing_number": None,
    }


def call_type_response(row: Mapping[str, Any]) -> dict[str, Any]:
    settings = effective_settings(row["settings"], None)
    return {
        "name": row["name"],
        "settings": settings.response(),
        "grants": row["grants"],
        "notification_settings": row["notification_settings"] or {},
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "external_storage": None,
    }


# Users inside events carry what a console shows: who, presence, and which users are devices
# (``custom.device``, ``custom.location``). A ring to 100 members carries ~100 users, once per
# socket: a resident's whole custom data in each (up to ``limits.max_custom_bytes``) would be
# sent thousands of times. REST answers keep the whole user.
EVENT_USER_FIELDS = ("id", "name", "image", "role", "online")
EVENT_USER_CUSTOM = ("device", "location")


def event_user(user: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: user[k] for k in EVENT_USER_FIELDS if k in user}
    custom = user.get("custom")
    if isinstance(custom, Mapping):
        out["custom"] = {k: custom[k] for k in EVENT_USER_CUSTOM if k in custom}
    return out


def _event_member(member: Any) -> Any:
    if isinstance(member, Mapping) and isinstance(member.get("user"), Mapping):
        return {**member, "user": event_user(member["user"])}
    return member


def _event_call(call: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(call)
    if isinstance(out.get("created_by"), Mapping):
        out["created_by"] = event_user(out["created_by"])
    session = out.get("session")
    if isinstance(session, Mapping) and isinstance(session.get("participants"), list):
        out["session"] = {
            **session,
            "participants": [_event_member(p) for p in session["participants"]],
        }
    return out


def slim_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """``event`` with every user in it cut to ``event_user`` (a copy: the REST answer that
    shares its dicts keeps the whole users)."""
    out = dict(event)
    if isinstance(out.get("user"), Mapping):
        out["user"] = event_user(out["user"])
    if isinstance(out.get("call"), Mapping):
        out["call"] = _event_call(out["call"])
    if isinstance(out.get("members"), list):
        out["members"] = [_event_member(m) for m in out["members"]]
    return out
