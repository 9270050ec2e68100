"""Users in the store: upsert (with the custom-field index), read, revoke tokens."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls.capabilities import USER_ROLES
from appliance.errors import InvalidRequest
from appliance.server.store.arrays import one_of
from appliance.server.store.customindex import index_user_custom
from appliance.server.store.schema import users

log = logging.getLogger(__name__)

# User rows one transaction has read, by id (``user_rows(known=…)``): a request that shows the
# same users several times (the creator of a call in its ``call.created`` event, as the caller
# of its ring and in its answer) reads each once. Filled only after the transaction's own
# user writes (a create writes ``created_by`` first), so what it holds is what commits.
KnownUsers = dict[str, dict[str, Any]]


class UserRequest(BaseModel):
    """One user of ``POST /api/v2/users``."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9@_\-.=]+$")
    name: str | None = Field(default=None, max_length=255)
    image: str | None = Field(default=None, max_length=2048)
    role: str | None = None
    teams: list[str] | None = None
    custom: dict[str, Any] | None = None
    language: str | None = None
    invisible: bool | None = None


async def upsert_user(conn: AsyncConnection, user: UserRequest, now: int) -> None:
    """Create or update ``user``; fields left out keep their stored value."""
    if user.role is not None and user.role not in USER_ROLES:
        raise InvalidRequest(
            f"role {user.role!r} is not one of {', '.join(sorted(USER_ROLES))}",
            field=f"users[{user.id}].role",
        )
    existing = (await conn.execute(select(users.c.id).where(users.c.id == user.id))).first()
    values: dict[str, Any] = {"updated_at": now}
    for name in ("name", "image", "role", "teams", "custom"):
        value = getattr(user, name)
        if value is not None:
            values[name] = value
    if existing is None:
        values.setdefault("role", "user")
        values.setdefault("teams", [])
        values.setdefault("custom", {})
        await conn.execute(users.insert().values(id=user.id, created_at=now, **values))
    else:
        await conn.execute(update(users).where(users.c.id == user.id).values(**values))
    if user.custom is not None or existing is None:
        await index_user_custom(conn, user.id, user.custom or {})
    log.debug("User(%s) upserted", user.id)


async def user_rows(
    conn: AsyncConnection, ids: Iterable[str], known: KnownUsers | None = None
) -> dict[str, dict[str, Any]]:
    """The stored rows of ``ids`` (users that do not exist are left out); with ``known``, the
    rows it holds are not read again and those read are added to it."""
    wanted = sorted(set(ids))
    out: dict[str, dict[str, Any]] = {}
    if known is not None:
        out.update((u, known[u]) for u in wanted if u in known)
        wanted = [u for u in wanted if u not in known]
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        q = select(users).where(one_of(conn, users.c.id, chunk))
        rows = (await conn.execute(q)).mappings()
        out.update({r["id"]: dict(r) for r in rows})
    if known is not None:
        known.update(out)
    return out


async def missing_users(conn: AsyncConnection, ids: Iterable[str]) -> list[str]:
    wanted = sorted(set(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):  # ids only: no JSON columns to decode
        chunk = wanted[start : start + 500]
        found.update(
            (
                await conn.execute(select(users.c.id).where(one_of(conn, users.c.id, chunk)))
            ).scalars()
        )
    return [u for u in wanted if u not in found]


async def revoke_tokens(conn: AsyncConnection, user_ids: list[str], before_ns: int | None) -> None:
    await conn.execute(
        update(users).where(users.c.id.in_(user_ids)).values(revoke_tokens_issued_before=before_ns)
    )
    log.info("tokens of users %s revoked before %s", ",".join(user_ids), before_ns)
