"""``POST /api/v2/video/call/{type}/{id}/members``: add, update and remove call members."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import update

from appliance.calls import events
from appliance.calls.capabilities import Capability
from appliance.errors import InvalidRequest
from appliance.server.api.callrequests import (
    CallId,
    CallTypeName,
    UpdateCallMembersRequest,
)
from appliance.server.api.replies import ctx_of, reply
from appliance.server.auth import Principal, principal
from appliance.server.context import now_ns
from appliance.server.lifecycle.callstate import load_access
from appliance.server.lifecycle.outbox import Outbox
from appliance.server.lifecycle.permissions import check_member_changes
from appliance.server.lifecycle.services import services
from appliance.server.realtime.hub import Target
from appliance.server.store import calltypes
from appliance.server.store.members import (
    check_members,
    member_rows,
    remove_members,
    upsert_members,
)
from appliance.server.store.schema import calls
from appliance.server.wire.serialize import call_response, members_response
from appliance.server.wire.wirejson import check_custom

router = APIRouter(prefix="/api/v2/video", tags=["calls"])


@router.post("/call/{type}/{id}/members")
async def update_call_members(
    type: CallTypeName,
    id: CallId,
    body: UpdateCallMembersRequest,
    request: Request,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    ctx = ctx_of(request)
    cid = f"{type}:{id}"
    upserts = body.update_members or []
    removals = body.remove_members or []
    check_members(upserts, "update_members", ctx.settings.limits.max_members_per_request)
    if len(removals) > ctx.settings.limits.max_members_per_request:
        raise InvalidRequest("too many members to remove in one request", field="remove_members")
    overlap = {m.user_id for m in upserts} & set(removals)
    if overlap:
        raise InvalidRequest(
            f"users {sorted(overlap)} are both updated and removed", field="remove_members", cid=cid
        )
    for m in upserts:
        check_custom(ctx, m.custom, f"update_members[{m.user_id}].custom")
    now = now_ns(ctx.clock)
    async with ctx.store.begin() as conn:
        row, acc = await load_access(conn, who, cid)
        acc.require_read()
        if upserts:
            acc.require(Capability.UPDATE_CALL_MEMBER)
        if removals:
            acc.require(Capability.REMOVE_CALL_MEMBER)
        if not who.is_server:
            affected = [m.user_id for m in upserts] + list(removals)
            current = {
                r["user_id"]: r["role"]
                for r in await member_rows(conn, cid, len(affected), affected)
            }
            ctype = await calltypes.get_row(conn, type)
            check_member_changes(
                acc,
                ctype["grants"],
                current,
                [(i, m.user_id, m.role) for i, m in enumerate(upserts)],
                removals,
                row["created_by_id"],
            )
        added, updated = await upsert_members(conn, cid, upserts, now, "update_members")
        removed = await remove_members(conn, cid, removals)
        if upserts or removals:
            await conn.execute(update(calls).where(calls.c.cid == cid).values(updated_at=now))
    async with ctx.store.connect() as conn:
        call = await call_response(conn, ctx, cid)
        changed = await member_rows(conn, cid, len(upserts) + 1, added + updated) if upserts else []
        out = await members_response(conn, ctx, changed)
    by_id = {m["user_id"]: m for m in out}
    tx = services(ctx).tx
    changes = Outbox()
    for kind, ids in ((events.CALL_MEMBER_ADDED, added), (events.CALL_MEMBER_UPDATED, updated)):
        if ids:
            members = [by_id[i] for i in ids if i in by_id]
            changes.add(kind, cid, with_call=False, call=call, members=members, created_at=now)
    await tx.send(changes)
    if removed and ctx.ringer is not None:
        await ctx.ringer.members_removed(cid, removed)
    if removed:
        gone = Outbox()
        gone.add(
            events.CALL_MEMBER_REMOVED,
            cid,
            target=Target(call_cid=cid, user_ids=tuple(removed)),
            with_call=False,
            call=call,
            members=removed,
            created_at=now,
        )
        await tx.send(gone)
    return reply(request, {"members": out})
