"""``POST /api/v2/users`` (upsert) and ``POST /api/v2/users/revoke_tokens``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from appliance.errors import InvalidRequest, PermissionDenied
from appliance.server.api.replies import RequestTime, ctx_of, reply, to_ns
from appliance.server.auth import Principal, principal
from appliance.server.context import now_ns
from appliance.server.lifecycle.services import Services
from appliance.server.outbound import pushdevices
from appliance.server.store.users import UserRequest, revoke_tokens, upsert_user, user_rows
from appliance.server.wire.serialize import full_user_response, is_online
from appliance.server.wire.wirejson import check_custom

router = APIRouter(prefix="/api/v2", tags=["users"])


class UpsertUsersRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    users: dict[str, UserRequest] = Field(max_length=100)


class RevokeTokensRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_ids: list[str] = Field(min_length=1, max_length=100)
    revoke_tokens_issued_before: RequestTime = None


@router.post("/users")
async def upsert_users(
    body: UpsertUsersRequest, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """Create or update users. A user token may update only itself, and not its role or teams."""
    ctx = ctx_of(request)
    for key, user in body.users.items():
        # Users travel in events to everyone who shares a call with them: bounded like call data.
        check_custom(ctx, user.custom, f"users.{key}.custom")
        if key != user.id:
            raise InvalidRequest(
                f"key {key!r} differs from the user's id {user.id!r}", field=f"users.{key}.id"
            )
        if not who.is_admin:
            if user.id != who.user_id:
                raise PermissionDenied(
                    f"user {who.user_id} may update only itself", field=f"users.{key}"
                )
            if user.role is not None or user.teams is not None:
                raise PermissionDenied("role and teams need a server token", field=f"users.{key}")
    now = now_ns(ctx.clock)
    async with ctx.store.begin() as conn:
        for user in body.users.values():
            await upsert_user(conn, user, now)
        rows = await user_rows(conn, body.users)
    out = {uid: full_user_response(row, is_online(ctx, uid)) for uid, row in rows.items()}
    return reply(request, {"users": out, "membership_deletion_task_id": ""})


@router.post("/users/revoke_tokens")
async def revoke_users_tokens(
    body: RevokeTokensRequest, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """Refuse tokens of these users issued before the given instant (default: now)."""
    if not who.is_admin:
        raise PermissionDenied("revoking tokens needs a server token")
    ctx = ctx_of(request)
    before = to_ns(body.revoke_tokens_issued_before, "revoke_tokens_issued_before")
    if before is None:
        before = now_ns(ctx.clock)
    async with ctx.store.begin() as conn:
        await revoke_tokens(conn, body.user_ids, before)
        # A revoked phone must stop hearing the door: its push subscriptions go too.
        await pushdevices.drop_revoked(conn, body.user_ids, before)
    svc = ctx.realtime
    if isinstance(svc, Services):  # open sockets end with their tokens, on every replica
        await svc.hub.tokens.revoke(body.user_ids, before)
    return reply(request, {})
