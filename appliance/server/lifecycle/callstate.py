"""The state of a call as one caller sees it: ``{call, members, membership, own_capabilities}``.

Used by the call routes and by the realtime layer's join response.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.server.auth import Principal
from appliance.server.context import ServerContext
from appliance.server.lifecycle.permissions import Access, access
from appliance.server.store import calltypes
from appliance.server.store.members import FirstMembers, member_role, member_rows
from appliance.server.store.users import KnownUsers
from appliance.server.wire.serialize import (
    OpenedSessions,
    call_response,
    call_row,
    members_response,
)

DEFAULT_MEMBERS_LIMIT = 25
MAX_MEMBERS_LIMIT = 100


async def access_to(
    conn: AsyncConnection,
    who: Principal,
    row: dict[str, Any],
    ctype: Mapping[str, Any] | None = None,
) -> Access:
    """What ``who`` may do on the call stored as ``row`` (``ctype``: its type's row, when the
    caller has read it)."""
    if ctype is None:
        ctype = await calltypes.get_row(conn, row["type"])
    role = await member_role(conn, row["cid"], who.user_id)
    return access(who, row["cid"], row["team"], ctype["grants"], role)


async def load_access(
    conn: AsyncConnection, who: Principal, cid: str
) -> tuple[dict[str, Any], Access]:
    """The call row and ``who``'s access; an unreachable call is reported as not found."""
    row = await call_row(conn, cid)
    return row, await access_to(conn, who, row)


async def call_state(
    conn: AsyncConnection,
    ctx: ServerContext,
    who: Principal,
    row: dict[str, Any],
    acc: Access,
    members_limit: int | None = None,
    ctype: Mapping[str, Any] | None = None,
    known: KnownUsers | None = None,
    listed: FirstMembers | None = None,
    opened: OpenedSessions | None = None,
) -> dict[str, Any]:
    """``known``: user rows the transaction has read; ``listed``: the call's first members as
    this transaction read them, unchanged since (a create lists its new members once, for its
    ``call.created`` and for its answer); ``opened``: sessions the transaction opened."""
    limit = (
        DEFAULT_MEMBERS_LIMIT if members_limit is None else min(members_limit, MAX_MEMBERS_LIMIT)
    )
    cid = row["cid"]
    if limit <= 0:
        rows = []
    elif listed is not None and listed.covers(limit):
        rows = listed.rows[:limit]
    else:
        rows = await member_rows(conn, cid, limit)
    membership = None
    if who.user_id is not None:
        mine = [r for r in rows if r["user_id"] == who.user_id] or await member_rows(
            conn, cid, 1, [who.user_id]
        )
        if mine:
            membership = (await members_response(conn, ctx, mine, known))[0]
    return {
        "call": await call_response(conn, ctx, cid, row, ctype, known, opened),
        "members": await members_response(conn, ctx, rows, known),
        "membership": membership,
        "own_capabilities": acc.own_capabilities(),
    }
