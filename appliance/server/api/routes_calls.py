"""Call routes: get-or-create, get, update, update members, delete, custom events.

Get-or-create on an existing call ignores ``data`` (members change through update members) but
honours ``ring``. Events go out after the transaction commits; a get-or-create that rings does
it in its own transaction (``RingEngine.ring_in``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls import events
from appliance.calls.capabilities import Capability
from appliance.calls.settings import merge
from appliance.errors import APIError, InvalidRequest, NotFound, PermissionDenied
from appliance.server.api.callrequests import (
    CallId,
    CallRequest,
    CallTypeName,
    DeleteCallRequest,
    GetOrCreateCallRequest,
    SendCallEventRequest,
    UpdateCallRequest,
    all_member_ids,
    check_settings,
)
from appliance.server.api.replies import ctx_of, reply, to_ns
from appliance.server.auth import Principal, principal
from appliance.server.context import ServerContext, now_ns
from appliance.server.lifecycle.callstate import (
    DEFAULT_MEMBERS_LIMIT,
    access_to,
    call_state,
    load_access,
)
from appliance.server.lifecycle.outbox import Outbox
from appliance.server.lifecycle.permissions import check_create
from appliance.server.lifecycle.ringer import nobody_to_ring
from appliance.server.lifecycle.services import services
from appliance.server.lifecycle.sessions import call_for_update
from appliance.server.realtime.hub import Target
from appliance.server.store import calltypes
from appliance.server.store.customindex import remove_call_custom
from appliance.server.store.members import (
    FirstMembers,
    check_members,
    first_members,
    member_role,
    upsert_members,
)
from appliance.server.store.schema import calls
from appliance.server.store.users import KnownUsers, upsert_user, user_rows
from appliance.server.wire.serialize import (
    OpenedSessions,
    call_response,
    call_row,
    members_response,
    user_response,
)
from appliance.server.wire.wirejson import check_custom

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v2/video", tags=["calls"])


@dataclass
class _Answer:
    """What the transaction of a get-or-create decided: the state answered, or an error to
    answer once the call it created has committed."""

    created: bool = False
    state: dict[str, Any] | None = None
    error: APIError | None = None


@router.post("/call/{type}/{id}")
async def get_or_create_call(
    type: CallTypeName,
    id: CallId,
    request: Request,
    body: GetOrCreateCallRequest | None = None,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Read or create a call, and ring its members with ``ring``: one transaction reads the call
    once (or creates it), checks access, rings and reads the answer; ``call.created`` and the
    ring's events go out in that order after it commits. A check that fails after the call was
    created (reading it, ringing it) is answered as before: the call stays created."""
    ctx = ctx_of(request)
    body = body or GetOrCreateCallRequest()
    data = body.data or CallRequest()
    cid = f"{type}:{id}"
    svc = services(ctx)

    async def run(db: AsyncConnection, out: Outbox, may_create: bool) -> _Answer:
        ctype = await calltypes.get_row(db, type)
        if body.ring:  # the ring below holds the row's lock (call_for_update) to its end
            row = await call_for_update(db, cid)
        else:
            found = (await db.execute(select(calls).where(calls.c.cid == cid))).mappings().first()
            row = dict(found) if found is not None else None
        created = False
        # Users and members this transaction reads once, for the event, the ring and the answer.
        known: KnownUsers = {}
        first: FirstMembers | None = None
        opened: OpenedSessions = {}
        if row is None and may_create:
            row = await _create(ctx, db, who, type, id, ctype, data, known)
            created = True
        if row is None:
            raise NotFound(f"call {cid} not found", cid=cid)
        caller = (
            who.user_id
            or data.created_by_id
            or (data.created_by.id if data.created_by else None)
            or row["created_by_id"]
        )
        acc = await access_to(db, who, row, ctype)
        try:
            acc.require_read()
        except APIError as err:
            if not created:
                raise
            return _Answer(created, error=err)  # created, and nobody told (as before)
        if created:
            # Its members are everyone the call's events are for (nobody has joined it yet).
            out.audiences[cid] = tuple(m.user_id for m in data.members or [])
            # One member more than listed: a ring lists 25 members other than the caller.
            first = await first_members(db, cid, DEFAULT_MEMBERS_LIMIT + 1)
            listed = first.rows[:DEFAULT_MEMBERS_LIMIT]
            shown = [row["created_by_id"], *(r["user_id"] for r in first.rows)]
            await user_rows(db, [*shown, caller] if body.ring else shown, known)
            out.add(
                events.CALL_CREATED,
                cid,
                target=Target(call_cid=cid, user_ids=tuple(m.user_id for m in data.members or [])),
                with_call=False,
                call=await call_response(db, ctx, cid, row, ctype, known),
                members=await members_response(db, ctx, listed, known),
                created_at=row["created_at"],
            )
        if body.ring:
            try:
                acc.require_ring(row["created_by_id"])
                if created and all(m.user_id == caller for m in data.members or []):
                    raise nobody_to_ring(cid, caller)
            except APIError as err:
                if not created:
                    raise
                return _Answer(created, error=err)  # created and announced, not rung
            await svc.ringer.ring_in(
                db, out, row, caller, None, body.video, ctype, known, first, opened
            )
        state = await call_state(
            db, ctx, who, row, acc, body.members_limit, ctype, known, first, opened
        )
        if body.ring:  # the ring's events carry the call as answered here
            out.calls[cid] = state["call"]
        return _Answer(created, state)

    try:
        answer = await svc.tx(lambda db, out: run(db, out, True))
    except IntegrityError:
        log.info("Call(%s) created concurrently; answering the existing call", cid)
        answer = await svc.tx(lambda db, out: run(db, out, False))
    if answer.error is not None:
        raise answer.error
    assert answer.state is not None
    answer.state["created"] = answer.created
    return reply(request, answer.state)


async def _create(
    ctx: ServerContext,
    conn: Any,
    who: Principal,
    type: str,
    id: str,
    ctype: dict[str, Any],
    data: CallRequest,
    known: KnownUsers,
) -> dict[str, Any]:
    """Insert call ``type:id`` with its members; the new row. ``known`` gets the user rows
    read on the way."""
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
        elif not await user_rows(conn, [creator], known):
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
    inserted = await conn.execute(
        calls.insert()
        .values(
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
        .returning(*calls.c)
    )
    row = dict(inserted.mappings().one())
    await upsert_members(conn, cid, members, now, "data.members", new_call=True, known=known)
    log.info("Call(%s) created by %s with %d members", cid, creator, len(members))
    return row


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
    cid = f"{type}:{id}"
    async with ctx.store.connect() as conn:
        row = await call_row(conn, cid)
        ctype = await calltypes.get_row(conn, type)
        acc = await access_to(conn, who, row, ctype)
    acc.require_read()
    if ring:
        raise InvalidRequest(
            f"a GET never rings: POST /api/v2/video/call/{type}/{id}/ring", field="ring", cid=cid
        )
    async with ctx.store.connect() as conn:
        row = await call_row(conn, cid)
        state = await call_state(conn, ctx, who, row, acc, members_limit, ctype)
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
    out = Outbox()
    out.add(
        events.CALL_UPDATED,
        cid,
        with_call=False,
        call=state["call"],
        capabilities_by_role=roles["grants"],
        created_at=row["updated_at"],
    )
    await services(ctx).tx.send(out)
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
    out = Outbox()
    out.add(
        events.CALL_DELETED,
        cid,
        target=Target(call_cid=cid, user_ids=tuple(member_ids)),
        with_call=False,
        call=call,
        created_at=now,
    )
    await services(ctx).tx.send(out)
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
    out = Outbox()
    out.add(
        events.CUSTOM,
        cid,
        with_call=False,
        custom=body.custom or {},
        user=user_response(user, sender),
        created_at=now,
    )
    await services(ctx).tx.send(out)
    return reply(request, {})
