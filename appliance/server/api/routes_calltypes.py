"""Call types over the API: ``GET/POST /api/v2/video/calltypes``, ``GET/PUT/DELETE /calltypes/{name}``.

Reading is open to every authenticated caller; changing call types needs a server token.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import delete, func, select

from appliance.calls.types import BUILTIN_CALL_TYPES
from appliance.errors import Conflict, InvalidRequest
from appliance.server.api.replies import ctx_of, reply
from appliance.server.auth import Principal, principal, require_server
from appliance.server.context import now_ns
from appliance.server.store import calltypes
from appliance.server.store.calltypes import CallTypeSpec, build, to_call_type
from appliance.server.store.schema import call_types, calls
from appliance.server.wire.serialize import call_type_response

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v2/video", tags=["call types"])

Name = Annotated[str, Path(pattern=r"^[a-z0-9_-]{1,64}$")]


class CreateCallTypeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    settings: dict[str, Any] | None = None
    grants: dict[str, list[str]] | None = None
    notification_settings: dict[str, Any] | None = None
    external_storage: str | None = None


class UpdateCallTypeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    settings: dict[str, Any] | None = None
    grants: dict[str, list[str]] | None = None
    notification_settings: dict[str, Any] | None = None
    external_storage: str | None = None


def _spec(name: str, body: CreateCallTypeRequest | UpdateCallTypeRequest) -> CallTypeSpec:
    try:
        return CallTypeSpec(
            name=name,
            settings=body.settings or {},
            grants=body.grants,
            notification_settings=body.notification_settings,
        )
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", field=where) from None


@router.get("/calltypes")
async def list_call_types(request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    ctx = ctx_of(request)
    async with ctx.store.connect() as conn:
        rows = await calltypes.all_rows(conn)
    return reply(request, {"call_types": {r["name"]: call_type_response(r) for r in rows}})


@router.post("/calltypes", status_code=201)
async def create_call_type(
    body: CreateCallTypeRequest, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    require_server(who, "creating a call type")
    ctx = ctx_of(request)
    spec = _spec(body.name, body)
    t = build(spec, BUILTIN_CALL_TYPES["default"])
    now = now_ns(ctx.clock)
    async with ctx.store.begin() as conn:
        if (
            await conn.execute(select(call_types.c.name).where(call_types.c.name == t.name))
        ).first():
            raise Conflict(f"call type {t.name!r} already exists", field="name")
        await calltypes.save(conn, t, now, create=True)
        row = await calltypes.get_row(conn, t.name)
    log.info("call type %s created", t.name)
    return reply(request, call_type_response(row))


@router.get("/calltypes/{name}")
async def get_call_type(
    name: Name, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    ctx = ctx_of(request)
    async with ctx.store.connect() as conn:
        row = await calltypes.get_row(conn, name)
    return reply(request, call_type_response(row))


@router.put("/calltypes/{name}")
async def update_call_type(
    name: Name, body: UpdateCallTypeRequest, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """Change a call type: ``settings`` merge onto the current ones, ``grants`` replace per role."""
    require_server(who, "updating a call type")
    ctx = ctx_of(request)
    spec = _spec(name, body)
    async with ctx.store.begin() as conn:
        current = to_call_type(await calltypes.get_row(conn, name))
        t = build(spec, current)
        await calltypes.save(conn, t, now_ns(ctx.clock), create=False)
        row = await calltypes.get_row(conn, name)
    log.info("call type %s updated", name)
    return reply(request, call_type_response(row))


@router.delete("/calltypes/{name}")
async def delete_call_type(
    name: Name, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    require_server(who, "deleting a call type")
    ctx = ctx_of(request)
    async with ctx.store.begin() as conn:
        await calltypes.get_row(conn, name)
        in_use = (
            await conn.execute(select(func.count()).where(calls.c.type == name))
        ).scalar() or 0
        if in_use:
            raise Conflict(f"call type {name!r} is used by {in_use} calls", field="name")
        await conn.execute(delete(call_types).where(call_types.c.name == name))
    log.info("call type %s deleted", name)
    return reply(request, {})
