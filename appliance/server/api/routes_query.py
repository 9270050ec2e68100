"""The query endpoints: ``POST /api/v2/video/call/members``, ``POST /api/v2/video/calls`` and
``GET /api/v2/users?payload=…``.

Filters and sort are parsed by ``appliance.calls.filters`` (400 naming the bad field or
operator) and run by ``queries.py``. A user token sees the members of calls it may read, the
calls it may read (grants, teams, ``call_cids``), and the users of its own teams.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import ColumnElement, func, not_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls import filters
from appliance.errors import InvalidRequest, NotFound
from appliance.server.api.replies import ctx_of, reply
from appliance.server.auth import Principal, principal
from appliance.server.context import ServerContext
from appliance.server.lifecycle.callstate import access_to, call_state, load_access
from appliance.server.store import queries
from appliance.server.store.jsonsql import JsonArrayHasAny
from appliance.server.store.schema import call_types, calls, users
from appliance.server.wire import wirejson
from appliance.server.wire.serialize import (
    full_user_response,
    is_online,
    member_response,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["query"])

CURSOR_MAX = 4096


NO_NUL = r"^[^\x00]*$"


class QueryMembersRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    id: str = Field(min_length=1, max_length=255, pattern=NO_NUL)
    filter_conditions: dict[str, Any] | None = None
    sort: list[Any] | None = None
    limit: int | None = None
    next: str | None = Field(None, max_length=CURSOR_MAX)
    prev: str | None = Field(None, max_length=CURSOR_MAX)


class QueryCallsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    filter_conditions: dict[str, Any] | None = None
    sort: list[Any] | None = None
    limit: int | None = None
    next: str | None = Field(None, max_length=CURSOR_MAX)
    prev: str | None = Field(None, max_length=CURSOR_MAX)
    members_limit: int | None = Field(None, ge=0, le=100)


class QueryUsersPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    filter_conditions: dict[str, Any] | None = None
    sort: list[Any] | None = None
    limit: int | None = None
    offset: int | None = Field(None, ge=0, le=queries.MAX_USERS_OFFSET)
    id_gt: str | None = Field(None, max_length=255, pattern=NO_NUL)
    id_gte: str | None = Field(None, max_length=255, pattern=NO_NUL)
    id_lt: str | None = Field(None, max_length=255, pattern=NO_NUL)
    id_lte: str | None = Field(None, max_length=255, pattern=NO_NUL)
    presence: bool | None = None
    include_deactivated_users: bool | None = None


def _online_ids(ctx: ServerContext) -> frozenset[str]:
    presence = ctx.presence
    return frozenset() if presence is None else frozenset(presence.online_user_ids())


@router.post("/api/v2/video/call/members")
async def query_call_members(
    body: QueryMembersRequest, request: Request, who: Principal = Depends(principal)
) -> wirejson.StrictJSONResponse:
    """Members of one call, filtered and sorted, one page (``next``/``prev`` cursors).

    The body is plain JSON data already: answered as is, without FastAPI's
    ``jsonable_encoder`` walk over every member (the same bytes, less time)."""
    ctx = ctx_of(request)
    query = filters.parse_query(filters.MEMBERS, body.filter_conditions, body.sort, body.limit)
    cid = f"{body.type}:{body.id}"
    async with ctx.store.connect() as conn:
        if who.is_server:
            page = await _server_members_page(conn, cid, query, body)
        else:
            _, acc = await load_access(conn, who, cid)
            acc.require_read()
            page = await queries.query_members(
                conn, cid, query, next=body.next, prev=body.prev, with_users=True
            )
    members = []
    for row in page.rows:
        user = queries.split_user(row)
        members.append(member_response(row, user, is_online(ctx, row["user_id"])))
    log.debug("Call(%s) query members: %d rows", cid, len(members))
    return wirejson.StrictJSONResponse(
        reply(request, {"members": members, "next": page.next, "prev": page.prev})
    )


async def _server_members_page(
    conn: AsyncConnection, cid: str, query: filters.Query, body: QueryMembersRequest
) -> queries.Page:
    """A server token may read anything: only "does the call exist" is left, and a page with
    rows answers it (a member row names its call, whose delete takes its members along), so
    the call is looked up only when the page is empty or the request is refused: a missing
    call is a 404 before any other complaint, as when it was looked up first."""
    try:
        page = await queries.query_members(
            conn, cid, query, next=body.next, prev=body.prev, with_users=True
        )
    except InvalidRequest:
        await _require_call(conn, cid)
        raise
    if not page.rows:
        await _require_call(conn, cid)
    return page


async def _require_call(conn: AsyncConnection, cid: str) -> None:
    if (await conn.execute(select(calls.c.cid).where(calls.c.cid == cid))).first() is None:
        raise NotFound(f"call {cid} not found", cid=cid)


async def _grants_by_type(conn: AsyncConnection) -> dict[str, dict[str, list[str]]]:
    rows = await conn.execute(select(call_types.c.name, call_types.c.grants))
    return {name: dict(grants or {}) for name, grants in rows}


@router.post("/api/v2/video/calls")
async def query_calls(
    body: QueryCallsRequest, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """Calls the caller may read, filtered and sorted, one page, each as a call state."""
    ctx = ctx_of(request)
    query = filters.parse_query(filters.CALLS, body.filter_conditions, body.sort, body.limit)
    async with ctx.store.connect() as conn:
        visible = None
        if not who.is_server:
            visible = queries.visible_calls(who, await _grants_by_type(conn))
        page = await queries.query_calls(
            conn, query, visible=visible, next=body.next, prev=body.prev
        )
        states = []
        for row in page.rows:
            acc = await access_to(conn, who, row)
            states.append(await call_state(conn, ctx, who, row, acc, body.members_limit))
    return reply(request, {"calls": states, "next": page.next, "prev": page.prev})


def _visible_users(who: Principal) -> ColumnElement[bool] | None:
    """Team isolation for users: a user of teams sees the users sharing one of them; a user of
    no team sees the users of no team (as with calls, see ``permissions.py``)."""
    if who.is_server:
        return None
    if who.teams:
        return JsonArrayHasAny(users.c.teams, list(who.teams))
    return not_(func.json_array_length(users.c.teams) > 0)


@router.get("/api/v2/users")
async def query_users(
    request: Request,
    payload: str = Query(..., max_length=65_536, description="QueryUsersPayload as JSON"),
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Users filtered on id, role, teams, name, ``custom.*`` and ``online``; offset paging."""
    ctx = ctx_of(request)
    raw = wirejson.loads(payload, "payload")
    if not isinstance(raw, dict):
        raise InvalidRequest("payload: must be a JSON object", field="payload")
    body = _validate_payload(raw)
    query = filters.parse_query(filters.USERS, body.filter_conditions, body.sort, body.limit)
    online = _online_ids(ctx)
    id_range = {"id_gt": body.id_gt, "id_gte": body.id_gte}
    id_range |= {"id_lt": body.id_lt, "id_lte": body.id_lte}
    async with ctx.store.connect() as conn:
        rows = await queries.query_users(
            conn,
            query,
            online_ids=lambda: online,
            offset=body.offset or 0,
            id_range=id_range,
            extra=_visible_users(who),
        )
    out = [full_user_response(row, row["id"] in online) for row in rows]
    return reply(request, {"users": out})


def _validate_payload(raw: dict[str, Any]) -> QueryUsersPayload:
    try:
        return QueryUsersPayload.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in ("payload", *first["loc"]))
        raise InvalidRequest(f"{where}: {first['msg']}", field=where) from None
