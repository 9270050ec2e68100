"""Call members in the store: upsert and remove, keeping the custom-field index in step."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls.capabilities import CALL_ROLES
from appliance.errors import InvalidRequest
from appliance.server.store.arrays import insert_rows, one_of
from appliance.server.store.customindex import index_members_custom, remove_member_custom
from appliance.server.store.schema import call_members
from appliance.server.store.users import KnownUsers, missing_users, user_rows

log = logging.getLogger(__name__)


class MemberRequest(BaseModel):
    """A member to add or update: ``{user_id, role, custom}``."""

    model_config = ConfigDict(extra="ignore")

    user_id: str = Field(min_length=1, max_length=255)
    role: str | None = None
    custom: dict[str, Any] | None = None


def check_members(members: list[MemberRequest], field: str, limit: int) -> None:
    if len(members) > limit:
        raise InvalidRequest(f"at most {limit} members per request", field=field)
    seen: set[str] = set()
    for i, m in enumerate(members):
        if m.user_id in seen:
            raise InvalidRequest(f"user {m.user_id} is listed twice", field=f"{field}[{i}].user_id")
        seen.add(m.user_id)
        if m.role is not None and m.role not in CALL_ROLES:
            raise InvalidRequest(
                f"role {m.role!r} is not one of {', '.join(sorted(CALL_ROLES))}",
                field=f"{field}[{i}].role",
            )


async def upsert_members(
    conn: AsyncConnection,
    cid: str,
    members: list[MemberRequest],
    now: int,
    field: str,
    *,
    new_call: bool = False,
    known: KnownUsers | None = None,
) -> tuple[list[str], list[str]]:
    """Add or update members; returns (added ids, updated ids). Members must be existing users.

    ``new_call``: the call was inserted by this transaction, so it has no members to update and
    no custom-index rows to replace (deleting a call deletes its index rows in the same
    transaction): two statements fewer on every create. ``known``: the members' user rows are
    read whole into it (the request shows them later) rather than only checked to exist."""
    if not members:
        return [], []
    if known is None:
        missing = await missing_users(conn, (m.user_id for m in members))
    else:
        found = await user_rows(conn, (m.user_id for m in members), known)
        missing = sorted({m.user_id for m in members} - found.keys())
    if missing:
        raise InvalidRequest(
            f"members must be existing users; unknown: {', '.join(missing)}", field=field, cid=cid
        )
    ids = [m.user_id for m in members]
    existing: dict[str, dict[str, Any]] = {}
    if not new_call:
        existing = {
            r["user_id"]: dict(r)
            for r in (
                await conn.execute(
                    select(call_members).where(
                        call_members.c.call_cid == cid, one_of(conn, call_members.c.user_id, ids)
                    )
                )
            ).mappings()
        }
    added: list[str] = []
    updated: list[str] = []
    new_rows: list[dict[str, Any]] = []
    reindex: list[tuple[str, dict[str, Any]]] = []
    for m in members:
        if m.user_id in existing:
            values: dict[str, Any] = {"updated_at": now}
            if m.role is not None:
                values["role"] = m.role
            if m.custom is not None:
                values["custom"] = m.custom
                reindex.append((m.user_id, m.custom))
            await conn.execute(
                update(call_members)
                .where(call_members.c.call_cid == cid, call_members.c.user_id == m.user_id)
                .values(**values)
            )
            updated.append(m.user_id)
        else:
            new_rows.append(
                {
                    "call_cid": cid,
                    "user_id": m.user_id,
                    "role": m.role or "call_member",
                    "custom": m.custom or {},
                    "created_at": now,
                    "updated_at": now,
                }
            )
            reindex.append((m.user_id, m.custom or {}))
            added.append(m.user_id)
    if new_rows:
        await insert_rows(conn, call_members, new_rows)
    await index_members_custom(conn, cid, reindex, replace=not new_call)
    log.info("Call(%s) members added %s, updated %s", cid, added, updated)
    return added, updated


async def remove_members(conn: AsyncConnection, cid: str, user_ids: Iterable[str]) -> list[str]:
    ids = sorted(set(user_ids))
    if not ids:
        return []
    present = list(
        (
            await conn.execute(
                select(call_members.c.user_id).where(
                    call_members.c.call_cid == cid, call_members.c.user_id.in_(ids)
                )
            )
        ).scalars()
    )
    await conn.execute(
        delete(call_members).where(call_members.c.call_cid == cid, call_members.c.user_id.in_(ids))
    )
    await remove_member_custom(conn, cid, ids)
    log.info("Call(%s) members removed %s", cid, present)
    return sorted(present)


@dataclass(frozen=True)
class FirstMembers:
    """``member_rows(conn, cid, limit)`` as one transaction read it: the call's first ``limit``
    members, or all of them when there are fewer (a create lists its new members once, for its
    ``call.created``, its ring and its answer)."""

    rows: list[dict[str, Any]]
    limit: int

    def covers(self, limit: int) -> bool:
        """Whether the call's first ``limit`` members are all in ``rows``."""
        return limit <= len(self.rows) or len(self.rows) < self.limit

    def of(self, user_ids: Iterable[str]) -> list[dict[str, Any]] | None:
        """``member_rows(conn, cid, n, user_ids)`` for ``n ≥ len(user_ids)`` when every one of
        them is in ``rows`` (in the same order: ``rows`` are in ``member_rows`` order)."""
        wanted = set(user_ids)
        found = [r for r in self.rows if r["user_id"] in wanted]
        return found if len(found) == len(wanted) else None


async def first_members(conn: AsyncConnection, cid: str, limit: int) -> FirstMembers:
    return FirstMembers(await member_rows(conn, cid, limit), limit)


async def member_rows(
    conn: AsyncConnection, cid: str, limit: int, user_ids: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    q = select(call_members).where(call_members.c.call_cid == cid)
    if user_ids is not None:
        q = q.where(one_of(conn, call_members.c.user_id, user_ids))
    q = q.order_by(call_members.c.created_at, call_members.c.user_id).limit(limit)
    return [dict(r) for r in (await conn.execute(q)).mappings()]


async def member_role(conn: AsyncConnection, cid: str, user_id: str | None) -> str | None:
    if user_id is None:
        return None
    return (
        await conn.execute(
            select(call_members.c.role).where(
                call_members.c.call_cid == cid, call_members.c.user_id == user_id
            )
        )
    ).scalar()
