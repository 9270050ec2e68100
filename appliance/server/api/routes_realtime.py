"""Session and ring routes: join, leave, ring, accept, reject, mark_ended, ring_state.

Join binds the new participant to the caller's WebSocket: the body (or, as Stream's client
SDKs send it, the query) carries ``connection_id`` (from ``connection.ok``). Without it the
participant must be attached within the grace period (``participant.attach`` frame). A join
that names ``session_id`` (a participant session id of the same user that has not left)
re-attaches that participant instead of adding one.

A join from a Stream client SDK (``X-Stream-Client: stream-video-…``) is refused before it
changes anything: the SDK would go on to Stream's media server (SFU) protocol, which this server
does not speak (``docs/stream-sdk.md``). The error says so and carries ``unrecoverable: true``,
so the SDK gives up at once instead of retrying.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls import events as ev
from appliance.calls.capabilities import Capability
from appliance.errors import InvalidRequest, NotFound, PermissionDenied, Unsupported
from appliance.server.api import routes_calls
from appliance.server.api.callrequests import CallRequest, GetOrCreateCallRequest
from appliance.server.api.iceservers import ice_servers_for
from appliance.server.api.replies import ctx_of, reply
from appliance.server.auth import Principal, principal
from appliance.server.context import ServerContext, now_ns
from appliance.server.lifecycle.callstate import call_state, load_access
from appliance.server.lifecycle.outbox import Outbox
from appliance.server.lifecycle.participant import join, leave_participant
from appliance.server.lifecycle.ringer import REJECT_REASON_CHARS
from appliance.server.lifecycle.services import services
from appliance.server.lifecycle.sessions import (
    active_participants,
    call_for_update,
    end_session,
    live_session,
)
from appliance.server.store.members import member_role
from appliance.server.store.schema import call_sessions, calls
from appliance.server.store.users import user_rows
from appliance.server.wire.serialize import call_row, session_response, user_response
from appliance.server.wire.wiretime import wants_rfc3339

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v2/video", tags=["sessions"])

CallTypeName = Annotated[str, Path(pattern=r"^[a-z0-9_-]{1,64}$")]
CallId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class JoinCallRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    create: bool | None = None
    data: CallRequest | None = None
    ring: bool | None = None
    notify: bool | None = None
    video: bool | None = None
    location: str | None = Field(default=None, max_length=255)
    members_limit: int | None = Field(default=None, ge=0, le=100)
    connection_id: str | None = Field(
        default=None,
        max_length=64,
        description="connection_id of the caller's WebSocket (connection.ok)",
    )
    session_id: str | None = Field(
        default=None,
        max_length=64,
        description="re-attach this participant session id instead of a new one",
    )
    user_id: str | None = Field(
        default=None, max_length=255, description="the joining user (server token)"
    )


class LeaveCallRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    session_id: str | None = Field(default=None, max_length=64)
    user_id: str | None = Field(default=None, max_length=255)


class RingCallRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    members_ids: list[str] | None = Field(default=None, max_length=1000)
    video: bool | None = None
    user_id: str | None = Field(default=None, max_length=255)


class RejectCallRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reason: str | None = Field(default=None, max_length=REJECT_REASON_CHARS)


class EndCallRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")


async def _call(db: AsyncConnection, cid: str) -> dict[str, Any]:
    call = await call_for_update(db, cid)
    if call is None:  # deleted since the access check
        raise NotFound(f"call {cid} not found", cid=cid)
    return call


def _acting_user(who: Principal, given: str | None, what: str) -> str:
    if who.user_id is not None:
        if given is not None and given != who.user_id:
            raise PermissionDenied(f"a user token cannot {what} for another user", field="user_id")
        return who.user_id
    if not given:
        raise InvalidRequest(f"with a server token, {what} needs user_id", field="user_id")
    return given


@router.post("/call/{type}/{id}/join")
async def join_call(
    type: CallTypeName,
    id: CallId,
    request: Request,
    body: JoinCallRequest | None = None,
    connection_id: Annotated[str | None, Query(max_length=64)] = None,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    ctx = ctx_of(request)
    svc = services(ctx)
    body = body or JoinCallRequest()
    cid = f"{type}:{id}"
    if wants_rfc3339(request.headers.get("x-stream-client")):
        raise Unsupported(
            "joining with a Stream client SDK needs Stream's media server (SFU), which this "
            "server does not run: join with the appliance client or the web console "
            "(docs/stream-sdk.md); calls, members, ringing and events work with the SDK",
            cid=cid,
        )
    if connection_id is not None:
        if body.connection_id is not None and body.connection_id != connection_id:
            raise InvalidRequest(
                "connection_id differs between the query and the body", field="connection_id"
            )
        body.connection_id = connection_id
    user_id = _acting_user(who, body.user_id, "join")
    if body.create:
        await routes_calls.get_or_create_call(
            type, id, request, GetOrCreateCallRequest(data=body.data), who
        )
    async with ctx.store.connect() as conn:
        row, acc = await load_access(conn, who, cid)
        acc.require_read()
        acc.require(Capability.JOIN_CALL)
        if body.ring:
            acc.require_ring(row["created_by_id"])
        role = await member_role(conn, cid, user_id)
        may_join_ongoing = acc.can(Capability.JOIN_ONGOING_CALL)
        if who.is_server and not await user_rows(conn, [user_id]):
            raise InvalidRequest(f"user {user_id} does not exist", field="user_id", cid=cid)
    if body.connection_id is not None:
        svc.check_connection(body.connection_id, user_id, cid)

    async def run(db: AsyncConnection, out: Outbox) -> Any:
        call = await _call(db, cid)
        return await join(
            db,
            ctx,
            call,
            user_id,
            role,
            body.connection_id,
            body.session_id,
            out,
            may_join_ongoing=may_join_ongoing,
        )

    joined = await svc.tx(run)
    if joined.was_ringing:
        # A ringed user who joins has answered: everyone else stops ringing.
        await svc.ringer.accept(cid, user_id, only_if_ringing=True)
    ringed: list[str] = []
    if body.ring:
        try:
            ringed = await svc.ringer.ring_users(cid, user_id, None, body.video)
        except InvalidRequest as err:  # nobody else to ring: the join itself stands
            log.info("Call(%s) join of %s rang nobody: %s", cid, user_id, err)
    async with ctx.store.connect() as conn:
        state = await call_state(conn, ctx, who, await call_row(conn, cid), acc, body.members_limit)
    ice = ice_servers_for(ctx.settings.ice_servers, user_id, ctx.clock)
    state.update(
        session_id=joined.participant_id,
        user_session_id=joined.participant_id,
        call_session_id=joined.session_id,
        reattached=joined.reattached,
        ringed=ringed,
        participants=joined.others,
        ice_servers=ice,
        credentials={"ice_servers": ice, "server": None, "token": ""},
    )
    return reply(request, state)


@router.post("/call/{type}/{id}/leave")
async def leave_call(
    type: CallTypeName,
    id: CallId,
    request: Request,
    body: LeaveCallRequest | None = None,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    ctx = ctx_of(request)
    svc = services(ctx)
    body = body or LeaveCallRequest()
    cid = f"{type}:{id}"
    async with ctx.store.connect() as conn:
        _, acc = await load_access(conn, who, cid)
        acc.require_read()
    user_id = who.user_id if who.user_id is not None else body.user_id
    if user_id is None and body.session_id is None:
        raise InvalidRequest(
            "with a server token, leave needs session_id or user_id", field="session_id"
        )

    async def run(db: AsyncConnection, out: Outbox) -> list[str]:
        call = await _call(db, cid)
        session = await live_session(db, call)
        if session is None:
            return []
        now = now_ns(ctx.clock)
        left = []
        for p in await active_participants(db, session["id"]):
            if body.session_id is not None and p["id"] != body.session_id:
                continue
            if user_id is not None and p["user_id"] != user_id:
                if body.session_id is not None:
                    raise PermissionDenied(
                        f"participant {body.session_id} is not yours", field="session_id", cid=cid
                    )
                continue
            if await leave_participant(db, p, now, out, svc.ringer.caller_left):
                left.append(p["id"])
        return left

    left = await svc.tx(run)
    return reply(request, {"left": left})


@router.post("/call/{type}/{id}/ring")
async def ring_call(
    type: CallTypeName,
    id: CallId,
    request: Request,
    body: RingCallRequest | None = None,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    ctx = ctx_of(request)
    svc = services(ctx)
    body = body or RingCallRequest()
    cid = f"{type}:{id}"
    async with ctx.store.connect() as conn:
        row, acc = await load_access(conn, who, cid)
        acc.require_read()
        acc.require_ring(row["created_by_id"])
    if who.user_id is not None:
        caller = _acting_user(who, body.user_id, "ring")
    else:
        caller = body.user_id or row["created_by_id"]
    ringed = await svc.ringer.ring_users(cid, caller, body.members_ids, body.video)
    return reply(request, {"members_ids": ringed})


def _user_only(who: Principal, verb: str) -> str:
    if who.user_id is None:
        raise PermissionDenied(f"{verb} needs a user token (the user who {verb}s)")
    return who.user_id


async def _require_member(
    conn: AsyncConnection, cid: str, user_id: str, verb: str, *, allow_caller: bool = False
) -> None:
    """Only members are rung, so only members (and the caller, to cancel) accept or reject."""
    if await member_role(conn, cid, user_id) is not None:
        return
    if allow_caller:
        call = await call_for_update(conn, cid)
        session = await live_session(conn, call) if call is not None else None
        if session is not None and session["rung_by_id"] == user_id:
            return
    raise PermissionDenied(f"user {user_id} is not a member of call {cid}: cannot {verb}", cid=cid)


@router.post("/call/{type}/{id}/accept")
async def accept_call(
    type: CallTypeName,
    id: CallId,
    request: Request,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    ctx = ctx_of(request)
    user_id = _user_only(who, "accept")
    cid = f"{type}:{id}"
    async with ctx.store.connect() as conn:
        _, acc = await load_access(conn, who, cid)
        acc.require_read()
        acc.require(Capability.JOIN_CALL)
        await _require_member(conn, cid, user_id, "accept")
    await services(ctx).ringer.accept(cid, user_id)
    return reply(request, {})


@router.post("/call/{type}/{id}/reject")
async def reject_call(
    type: CallTypeName,
    id: CallId,
    request: Request,
    body: RejectCallRequest | None = None,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    ctx = ctx_of(request)
    user_id = _user_only(who, "reject")
    cid = f"{type}:{id}"
    async with ctx.store.connect() as conn:
        _, acc = await load_access(conn, who, cid)
        acc.require_read()
        await _require_member(conn, cid, user_id, "reject", allow_caller=True)
    await services(ctx).ringer.reject(cid, user_id, (body or RejectCallRequest()).reason)
    return reply(request, {})


@router.post("/call/{type}/{id}/mark_ended")
async def mark_ended(
    type: CallTypeName,
    id: CallId,
    request: Request,
    body: EndCallRequest | None = None,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    ctx = ctx_of(request)
    svc = services(ctx)
    cid = f"{type}:{id}"
    async with ctx.store.connect() as conn:
        _, acc = await load_access(conn, who, cid)
        acc.require_read()
        acc.require(Capability.END_CALL)
        ender = await _ender(conn, ctx, who)

    async def run(db: AsyncConnection, out: Outbox) -> None:
        call = await _call(db, cid)
        now = now_ns(ctx.clock)
        session = await live_session(db, call)
        if session is not None:
            await end_session(db, session, "ended", now, out, user=ender)
            return
        if call["ended_at"] is None:
            await db.execute(
                update(calls).where(calls.c.cid == cid).values(ended_at=now, updated_at=now)
            )
        fields: dict[str, Any] = {"reason": "ended", "session_id": call["current_session_id"]}
        if ender is not None:
            fields["user"] = ender
        out.add(ev.CALL_ENDED, cid, **fields)

    await svc.tx(run)
    log.info("Call(%s) ended by %r", cid, who)
    return reply(request, {})


async def _ender(
    conn: AsyncConnection, ctx: ServerContext, who: Principal
) -> dict[str, Any] | None:
    if who.user_id is None:
        return None
    row = (await user_rows(conn, [who.user_id])).get(who.user_id)
    return user_response(row, who.user_id, True)


@router.get("/call/{type}/{id}/ring_state")
async def ring_state(
    type: CallTypeName,
    id: CallId,
    request: Request,
    call_session_id: Annotated[str | None, Query(max_length=64)] = None,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Who accepted, rejected and missed the ring of a session (default: the current one).
    Stream's SDK polls it while a ring goes unanswered, to learn an outcome whose event it
    missed."""
    ctx = ctx_of(request)
    cid = f"{type}:{id}"
    async with ctx.store.connect() as conn:
        row, acc = await load_access(conn, who, cid)
        acc.require_read()
        sid = call_session_id or row["current_session_id"]
        session = None
        if sid:
            found = await conn.execute(
                select(call_sessions).where(
                    call_sessions.c.id == sid, call_sessions.c.call_cid == cid
                )
            )
            session = found.mappings().first()
        if session is None:
            raise NotFound(
                f"call {cid} has no session {sid!r}" if sid else f"call {cid} has no session",
                field="call_session_id",
                cid=cid,
            )
        detail = await session_response(conn, ctx, sid)
    assert detail is not None
    return reply(
        request,
        {
            "session_id": sid,
            "call_cid": cid,
            "created_by_user_id": session["rung_by_id"] or row["created_by_id"],
            "accepted_by": detail["accepted_by"],
            "rejected_by": detail["rejected_by"],
            "missed_by": detail["missed_by"],
            "session_started_at": session["started_at"],
            "session_ended_at": session["ended_at"],
            "call_ended_at": row["ended_at"],
        },
    )
