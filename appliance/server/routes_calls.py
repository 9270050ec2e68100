"""Call routes: get-or-create, get, update, update members, delete, custom events.

Get-or-create on an existing call ignores ``data`` (members change through update members) but
honours ``ring``. Events go out after the transaction commits; rings go to ``ctx.ringer``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from appliance.calls import events
from appliance.calls.capabilities import Capability
from appliance.calls.settings import merge
from appliance.errors import InvalidRequest, PermissionDenied, ServerUnavailable
from appliance.server import calltypes
from appliance.server.auth import Principal, principal
from appliance.server.callrequests import (
    CallId,
    CallRequest,
    CallTypeName,
    DeleteCallRequest,
    GetOrCreateCallRequest,
    SendCallEventRequest,
    UpdateCallRequest,
    all_member_ids,
    check_custom,
    check_settings,
)
from appliance.server.callstate import call_state, load_access
from appliance.server.context import ServerContext, now_ns
from appliance.server.customindex import remove_call_custom
from appliance.server.members import (
    check_members,
    member_role,
    upsert_members,
)
from appliance.server.permissions import check_create
from appliance.server.replies import ctx_of, publish, reply, to_ns
from appliance.server.schema import calls
from appliance.server.serialize import call_response, call_row, user_response
from appliance.server.users import upsert_user, user_rows

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v2/video", tags=["calls"])


async def _ring(ctx: ServerContext, cid: str, caller: str, video: bool | None) -> None:
    if ctx.ringer is None:
        raise ServerUnavailable("ringing is not available on this server", cid=cid)
    await ctx.ringer.ring(cid, caller, None, video)


@router.post("/call/{type}/{id}")
async def get_or_create_call(
    type: CallTypeName,
    id: CallId,
    request: Request,
    body: GetOrCreateCallRequest | None = None,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    ctx = ctx_of(request)
    calltypes.read_once_per_request()
    body = body or GetOrCreateCallRequest()
    data = body.data or CallRequest()
    cid = f"{type}:{id}"
    created = False
    try:
        async with ctx.store.begin() as conn:
            ctype = await calltypes.get_row(conn, type)
            existing = (await conn.execute(select(calls.c.cid).where(calls.c.cid == cid))).first()
            if existing is None:
                await _create(ctx, conn, who, type, id, ctype, data)
                created = True
    except IntegrityError:
        log.info("Call(%s) created concurrently; answering the existing call", cid)
    async with ctx.store.connect() as conn:
        row, acc = await load_access(conn, who, cid)
        acc.require_read()
        if created:  # one connection for the access check and the event's body
            state = await call_state(conn, ctx, who, row, acc)
            member_ids = await all_member_ids(conn, cid)
    if created:
        await publish(
            ctx,
            {
                "type": events.CALL_CREATED,
                "call_cid": cid,
                "call": state["call"],
                "members": state["members"],
                "created_at": row["created_at"],
            },
            call_cid=cid,
            user_ids=member_ids,
        )
    if body.ring:
        acc.require_ring(row["created_by_id"])
        caller = (
            who.user_id or data.created_by_id or (data.created_by.id if data.created_by else None)
        )
        await _ring(ctx, cid, caller or row["created_by_id"], body.video)
    async with ctx.store.connect() as conn:
        state = await call_state(conn, ctx, who, await call_row(conn, cid), acc, body.members_limit)
    state["created"] = created
    return reply(request, state)


async def _create(
    ctx: ServerContext,
    conn: Any,
    who: Principal,
    type: str,
    id: str,
    ctype: dict[str, Any],
    data: CallRequest,
) -> str:
    cid = f"{type}:{id}"
    now = now_ns(ctx.clock)
    if who.user_id is not None:
        creator = who.user_id
    else:
        creator = data.created_by_id or (data.created_by.id if data.created_by else "")
        if not creator:
            raise InvalidRequest(
                "data.created_by_id is required with a server token",
                field="data.created_by_id",
                cid=cid,
            )
        if data.created_by is not None and data.created_by.id == creator:
            check_custom(ctx, data.created_by.custom, "data.created_by.custom")
            await upsert_user(conn, data.created_by, now)
        elif not await user_rows(conn, [creator]):
            raise InvalidRequest(
                f"user {creator} does not exist", field="data.created_by_id", cid=cid
            )
    check_create(who, cid, data.team, ctype["grants"])
    check_custom(ctx, data.custom, "data.custom")
    check_settings(ctype["settings"], data.settings_override, "data.settings_override")
    members = data.members or []
    check_members(members, "data.members", ctx.settings.limits.max_members_per_request)
    for m in members:
        check_custom(ctx, m.custom, f"data.members[{m.user_id}].custom")
    await conn.execute(
        calls.insert().values(
            cid=cid,
            type=type,
            id=id,
            created_by_id=creator,
            team=data.team,
            custom=data.custom or {},
            settings_override=data.settings_override or {},
            starts_at=to_ns(data.starts_at, "data.starts_at"),
            created_at=now,
            updated_at=now,
        )
    )
    await upsert_members(conn, cid, members, now, "data.members")
    log.info("Call(%s) created by %s with %d members", cid, creator, len(members))
    return creator


@router.get("/call/{type}/{id}")
async def get_call(
    type: CallTypeName,
    id: CallId,
    request: Request,
    members_limit: Annotated[int | None, Query(ge=0, le=100)] = None,
    ring: Annotated[
        bool | None, Query(description="refused when true: a GET never rings (POST …/ring)")
    ] = None,
    notify: bool | None = None,
    video: bool | None = None,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Read a call. A GET changes nothing: ``ring=true`` is a 400 (ring with ``POST …/ring``)."""
    ctx = ctx_of(request)
    calltypes.read_once_per_request()
    cid = f"{type}:{id}"
    async with ctx.store.connect() as conn:
        _, acc = await load_access(conn, who, cid)
    acc.require_read()
    if ring:
        raise InvalidRequest(
            f"a GET never rings: POST /api/v2/video/call/{type}/{id}/ring", field="ring", cid=cid
        )
    async with ctx.store.connect() as conn:
        state = await call_state(conn, ctx, who, await call_row(conn, cid), acc, members_limit)
    return reply(request, state)


@router.patch("/call/{type}/{id}")
async def update_call(
    type: CallTypeName,
    id: CallId,
    body: UpdateCallRequest,
    request: Request,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    ctx = ctx_of(request)
    cid = f"{type}:{id}"
    async with ctx.store.begin() as conn:
        row, acc = await load_access(conn, who, cid)
        acc.require_read()
        acc.require(Capability.UPDATE_CALL)
        values: dict[str, Any] = {"updated_at": now_ns(ctx.clock)}
        if body.custom is not None:
            check_custom(ctx, body.custom, "custom")
            values["custom"] = body.custom
        if body.settings_override is not None:
            acc.require(Capability.UPDATE_CALL_SETTINGS)
            ctype = await calltypes.get_row(conn, type)
            # A partial override merges onto the call's earlier one (Stream's update semantics).
            override = merge(row["settings_override"] or {}, body.settings_override)
            check_settings(ctype["settings"], override, "settings_override")
            values["settings_override"] = override
        if "starts_at" in body.model_fields_set:
            values["starts_at"] = to_ns(body.starts_at, "starts_at")
        await conn.execute(update(calls).where(calls.c.cid == cid).values(**values))
    async with ctx.store.connect() as conn:
        row = await call_row(conn, cid)
        state = await call_state(conn, ctx, who, row, acc)
        roles = await calltypes.get_row(conn, type)
    await publish(
        ctx,
        {
            "type": events.CALL_UPDATED,
            "call_cid": cid,
            "call": state["call"],
            "capabilities_by_role": roles["grants"],
            "created_at": row["updated_at"],
        },
        call_cid=cid,
    )
    return reply(request, state)


@router.post("/call/{type}/{id}/delete")
async def delete_call(
    type: CallTypeName,
    id: CallId,
    request: Request,
    body: DeleteCallRequest | None = None,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Delete a call with its members and session history (``hard`` is accepted; every delete is hard)."""
    ctx = ctx_of(request)
    cid = f"{type}:{id}"
    async with ctx.store.connect() as conn:
        row, acc = await load_access(conn, who, cid)
        acc.require_read()
        if not (
            who.is_admin or (acc.can(Capability.END_CALL) and row["created_by_id"] == who.user_id)
        ):
            raise PermissionDenied(
                "deleting a call needs a server token, an admin or its creator", cid=cid
            )
        call = await call_response(conn, ctx, cid, row)
        member_ids = await all_member_ids(conn, cid)
    now = now_ns(ctx.clock)
    async with ctx.store.begin() as conn:
        await remove_call_custom(conn, cid)
        await conn.execute(delete(calls).where(calls.c.cid == cid))
    log.info("Call(%s) deleted by %r", cid, who)
    call["ended_at"] = call["ended_at"] or now
    await publish(
        ctx,
        {"type": events.CALL_DELETED, "call_cid": cid, "call": call, "created_at": now},
        call_cid=cid,
        user_ids=member_ids,
    )
    return reply(request, {"call": call, "task_id": None})


@router.post("/call/{type}/{id}/event")
async def send_call_event(
    type: CallTypeName,
    id: CallId,
    body: SendCallEventRequest,
    request: Request,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """A custom event to everyone watching the call (e.g. ``{"type": "unlock"}``)."""
    ctx = ctx_of(request)
    cid = f"{type}:{id}"
    check_custom(ctx, body.custom, "custom")
    sender = who.user_id or body.user_id or (body.user.id if body.user else None)
    if sender is None:
        raise InvalidRequest("user_id is required with a server token", field="user_id", cid=cid)
    async with ctx.store.connect() as conn:
        _, acc = await load_access(conn, who, cid)
        acc.require_read()
        # Members hear custom events, and members act on them (a door unlocks for one): only a
        # member speaks in them, so nobody outside a call can spoof a device's answer.
        if not who.is_admin and await member_role(conn, cid, sender) is None:
            raise PermissionDenied(
                f"user {sender} is not a member of call {cid}: cannot send events to it", cid=cid
            )
        user = (await user_rows(conn, [sender])).get(sender)
    now = now_ns(ctx.clock)
    await publish(
        ctx,
        {
            "type": events.CUSTOM,
            "call_cid": cid,
            "custom": body.custom or {},
            "user": user_response(user, sender),
            "created_at": now,
        },
        call_cid=cid,
    )
    return reply(request, {})
