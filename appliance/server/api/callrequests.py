"""Request bodies of the call routes, and the checks shared by them (custom size, settings).

Every body is a pydantic model, so ``/openapi.json`` describes it (and schemathesis fuzzes it).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls.settings import effective_settings
from appliance.errors import InvalidRequest
from appliance.server.api.replies import RequestTime
from appliance.server.store.members import MemberRequest
from appliance.server.store.schema import call_members
from appliance.server.store.users import UserRequest

CallTypeName = Annotated[str, Path(pattern=r"^[a-z0-9_-]{1,64}$")]
CallId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class CallRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    created_by_id: str | None = Field(default=None, max_length=255)
    created_by: UserRequest | None = None
    members: list[MemberRequest] | None = None
    custom: dict[str, Any] | None = None
    settings_override: dict[str, Any] | None = None
    starts_at: RequestTime = None
    team: str | None = Field(default=None, max_length=255)
    video: bool | None = None


class GetOrCreateCallRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    data: CallRequest | None = None
    ring: bool | None = None
    notify: bool | None = None
    video: bool | None = None
    members_limit: int | None = Field(default=None, ge=0, le=100)


class UpdateCallRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    custom: dict[str, Any] | None = None
    settings_override: dict[str, Any] | None = None
    starts_at: RequestTime = None


class UpdateCallMembersRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    update_members: list[MemberRequest] | None = None
    remove_members: list[str] | None = None


class DeleteCallRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hard: bool | None = None


class SendCallEventRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    custom: dict[str, Any] | None = None
    user_id: str | None = None
    user: UserRequest | None = None


def check_settings(
    type_settings: dict[str, Any], override: dict[str, Any] | None, field: str
) -> None:
    try:
        effective_settings(type_settings, override)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{field}.{where}: {first['msg']}", field=f"{field}.{where}") from None


async def all_member_ids(conn: AsyncConnection, cid: str) -> list[str]:
    q = select(call_members.c.user_id).where(call_members.c.call_cid == cid)
    return list((await conn.execute(q)).scalars())
