"""Query members, calls and users: parsed filters compiled to SQL, one page at a time.

Members and calls are paged by keyset (``keyset.py``); users by ``offset`` (and
``id_gt``/``id_lt``…) as Stream's query users is.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls.filters import CALLS, MEMBERS, USERS, Condition, Group, Node, Query, SortKey
from appliance.errors import InvalidRequest
from appliance.server.store.filtersql import (
    call_compiler,
    column_condition,
    compile_node,
    index_match,
    is_negative,
    member_compiler,
    user_compiler,
)
from appliance.server.store.keyset import (
    Keyset,
    Page,
    decode_cursor,
    encode_cursor,
    explain,
    keyset_for,
    page_by_keyset,
    page_statement,
)
from appliance.server.store.schema import (
    call_member_custom_index,
    call_members,
    calls,
    user_custom_index,
    users,
)

__all__ = [
    "Keyset",
    "Page",
    "decode_cursor",
    "encode_cursor",
    "explain",
    "explain_members",
    "query_calls",
    "query_members",
    "query_users",
    "visible_calls",
]

log = logging.getLogger(__name__)

MEMBERS_DEFAULT_SORT = (SortKey("created_at", 1),)
CALLS_DEFAULT_SORT = (SortKey("created_at", -1),)
USERS_DEFAULT_SORT = (SortKey("id", 1),)
MAX_USERS_OFFSET = 10_000
READ_CAPABILITIES = frozenset({"read-call", "join-call"})


# -- members ------------------------------------------------------------------------------


RARE_MATCHES = 500
"""A member condition matching at most this many rows drives the query by user id."""


def _probe(call_cid: str, cond: Condition) -> Select[Any] | None:
    """The user ids a positive, indexed member condition matches (``None``: not probeable)."""
    if is_negative(cond) or (cond.op == "$exists" and cond.field not in ("custom", "user.custom")):
        return None
    if cond.field == "custom":
        t = call_member_custom_index
        return select(t.c.user_id).where(t.c.call_cid == call_cid, index_match(t, cond))
    if cond.field == "user.custom":
        t = user_custom_index
        return select(t.c.user_id).where(index_match(t, cond))
    if cond.field in ("role", "user_id") and cond.op in ("$eq", "$in"):
        m = call_members
        col = m.c.role if cond.field == "role" else m.c.user_id
        return select(m.c.user_id).where(
            m.c.call_cid == call_cid, column_condition(col, cond, False)
        )
    return None


def _counted(probe: Select[Any]) -> Select[Any]:
    """``(n, user_id)`` rows: ``n`` the distinct ids ``probe`` matches, counted up to
    ``RARE_MATCHES + 1``; with them the ids when they are at most ``RARE_MATCHES``, else one row
    ``(n, NULL)`` (also for none). A common value (``role = call_member`` matches nearly every
    member) thus answers one row, not the 501 ids that were fetched, turned into Python rows
    and thrown away on every page of the indexed query; a rare one still costs one statement."""
    first = probe.distinct().limit(RARE_MATCHES + 1)
    counted = select(func.count().label("n")).select_from(first.subquery("probed")).subquery("c")
    ids = first.subquery("ids")
    joined = counted.outerjoin(ids, counted.c.n <= RARE_MATCHES)
    return select(counted.c.n, ids.c.user_id).select_from(joined)


COMMON_FOR_SECONDS = 5.0
"""How long a condition found to match more than ``RARE_MATCHES`` members is not probed again."""
COMMON_KEPT = 256
"""At most this many such verdicts are kept per database."""

# Conditions lately found common, per engine: key → monotonic time the verdict expires. Only
# "common" is kept: it chooses the plan without the probe's ids (the sort index walk), which
# returns the same rows whatever the data is by now, so a stale verdict costs at most a slower
# plan for a few seconds. A "rare" verdict hands the planner ids, which must be fresh.
_common: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], float]] = weakref.WeakKeyDictionary()


def _common_key(call_cid: str, cond: Condition) -> tuple[str, ...]:
    # repr, not the value: 1, 1.0 and True are equal (and hash alike) in Python; kept apart.
    return (call_cid, cond.field, cond.path or "", cond.op, repr(cond.value))


async def _resolve(conn: AsyncConnection, call_cid: str, node: Node) -> set[str] | None:
    """The user ids ``node`` matches if they are few and cheap to find, else ``None``. A
    condition found common is taken as common for ``COMMON_FOR_SECONDS`` (a client paging
    through a call's members asks the same filter on every page)."""
    if isinstance(node, Condition):
        verdicts = _common.setdefault(conn.sync_engine, {})
        key = _common_key(call_cid, node)
        now = time.monotonic()
        if verdicts.get(key, 0.0) > now:  # only probeable conditions get here
            return None
        probe = _probe(call_cid, node)
        if probe is None:
            return None
        result = await conn.execute(_counted(probe))
        rows = result.all()
        if not rows or rows[0][0] > RARE_MATCHES:
            if rows:
                if len(verdicts) >= COMMON_KEPT:
                    verdicts.clear()
                verdicts[key] = now + COMMON_FOR_SECONDS
            return None
        verdicts.pop(key, None)
        return {row[1] for row in rows if row[1] is not None}
    if node.op != "$or":
        return None
    union: set[str] = set()
    for item in node.items:
        ids = await _resolve(conn, call_cid, item)
        if ids is None:
            return None
        union |= ids
        if len(union) > RARE_MATCHES:
            return None
    return union


async def rare_drivers(
    conn: AsyncConnection, call_cid: str, node: Node | None
) -> dict[Node, Collection[str]]:
    """Resolve the rarest top-level condition to its user ids when it matches few members.

    Planners cannot know that ``custom.badge = 'rare'`` matches 1 row of 100,000 (SQLite keeps
    no per-value statistics), so they walk the sort index and test every member. Probing the
    index first (at most ``RARE_MATCHES + 1`` entries) and handing the planner the ids turns
    that walk into a handful of primary-key seeks. Common values keep the walk, which stops
    after one page.
    """
    if node is None:
        return {}
    candidates = list(node.items) if isinstance(node, Group) and node.op == "$and" else [node]
    best: tuple[Node, set[str]] | None = None
    for candidate in candidates:
        ids = await _resolve(conn, call_cid, candidate)
        if ids is not None and (best is None or len(ids) < len(best[1])):
            best = (candidate, ids)
    if best is None:
        return {}
    log.debug(
        "Call(%s) query members: %d members match %r, paged by id", call_cid, len(best[1]), best[0]
    )
    return {best[0]: best[1]}


USER_PREFIX = "user__"
"""Prefix of the ``users`` columns joined to each member row (``with_users=True``)."""


def members_statement(
    call_cid: str,
    query: Query,
    drivers: Mapping[Node, Collection[str]] | None = None,
    *,
    with_users: bool = False,
) -> tuple[Select[Any], Keyset]:
    m = call_members
    if with_users:
        user_columns = [c.label(USER_PREFIX + c.name) for c in users.c]
        joined = m.outerjoin(users, users.c.id == m.c.user_id)
        stmt = select(m, *user_columns).select_from(joined).where(m.c.call_cid == call_cid)
    else:
        stmt = select(m).where(m.c.call_cid == call_cid)
    if query.filter is not None:
        stmt = stmt.where(compile_node(query.filter, member_compiler(call_cid), drivers))
    columns = {"user_id": m.c.user_id, "role": m.c.role}
    columns |= {"created_at": m.c.created_at, "updated_at": m.c.updated_at}
    keyset = keyset_for(query.sort or MEMBERS_DEFAULT_SORT, columns, "user_id")
    return stmt, keyset


async def query_members(
    conn: AsyncConnection,
    call_cid: str,
    query: Query,
    *,
    next: str | None = None,
    prev: str | None = None,
    with_users: bool = False,
) -> Page:
    """Members of ``call_cid`` (``call_members`` rows) matching ``query``, one page. With
    ``with_users`` each row also carries its user's columns, prefixed ``user__`` (one query
    instead of two; see ``split_user``)."""
    if query.entity is not MEMBERS:
        raise TypeError(f"not a members query: {query.entity.name}")
    drivers = await rare_drivers(conn, call_cid, query.filter)
    stmt, keyset = members_statement(call_cid, query, drivers, with_users=with_users)
    return await page_by_keyset(
        conn, stmt, keyset, query.limit, next, prev, sort_in_memory=bool(drivers)
    )


def split_user(row: dict[str, Any]) -> dict[str, Any] | None:
    """Take the joined ``user__*`` columns out of a member row: the user row, or ``None``."""
    user = {k[len(USER_PREFIX) :]: row.pop(k) for k in list(row) if k.startswith(USER_PREFIX)}
    return user if user.get("id") is not None else None


async def explain_members(conn: AsyncConnection, call_cid: str, query: Query) -> list[str]:
    """The plan of the first page ``query_members`` runs for ``query`` (probe included, users
    joined as the route asks for them)."""
    drivers = await rare_drivers(conn, call_cid, query.filter)
    stmt, keyset = members_statement(call_cid, query, drivers, with_users=True)
    page = page_statement(stmt, keyset, query.limit, sort_in_memory=bool(drivers))
    return await explain(conn, page)


# -- calls --------------------------------------------------------------------------------


class Viewer(Protocol):
    """Who is asking, as far as visibility goes (``auth.py``'s ``Principal``)."""

    @property
    def user_id(self) -> str | None: ...
    @property
    def role(self) -> str: ...
    @property
    def teams(self) -> tuple[str, ...]: ...
    @property
    def call_cids(self) -> tuple[str, ...] | None: ...
    @property
    def is_server(self) -> bool: ...


def visible_calls(
    who: Viewer, grants_by_type: Mapping[str, Mapping[str, Iterable[str]]]
) -> ColumnElement[bool]:
    """The calls ``who`` may read, as a condition (see ``permissions.py`` for the rules)."""
    if who.is_server:
        return true()
    c, m = calls, call_members
    fences: list[ColumnElement[bool]] = []
    if who.call_cids is not None:
        fences.append(c.c.cid.in_(list(who.call_cids)))
    fences.append(c.c.team.in_(list(who.teams)) if who.teams else c.c.team.is_(None))
    mine = and_(m.c.call_cid == c.c.cid, m.c.user_id == who.user_id)
    per_type: list[ColumnElement[bool]] = []
    for name, grants in grants_by_type.items():
        readable = sorted(r for r, caps in grants.items() if READ_CAPABILITIES & set(caps))
        if who.role == "admin" and "admin" in readable:
            per_type.append(c.c.type == name)
            continue
        ways: list[ColumnElement[bool]] = []
        if readable:
            ways.append(exists().where(mine, m.c.role.in_(readable)))
        if "user" in readable:
            ways.append(not_(exists().where(mine)))
        if ways:
            per_type.append(and_(c.c.type == name, or_(*ways)))
    return and_(*fences, or_(false(), *per_type))


def calls_statement(
    query: Query, visible: ColumnElement[bool] | None = None
) -> tuple[Select[Any], Keyset]:
    c = calls
    stmt = select(c)
    if visible is not None:
        stmt = stmt.where(visible)
    if query.filter is not None:
        stmt = stmt.where(compile_node(query.filter, call_compiler()))
    columns: dict[str, ColumnElement[Any]] = {
        "created_at": c.c.created_at,
        "updated_at": c.c.updated_at,
        # Calls without a start or an end sort first (ascending), as if at time -1.
        "starts_at": func.coalesce(c.c.starts_at, -1),
        "ended_at": func.coalesce(c.c.ended_at, -1),
        "cid": c.c.cid,
        "type": c.c.type,
        "id": c.c.id,
    }
    keyset = keyset_for(query.sort or CALLS_DEFAULT_SORT, columns, "cid")
    return stmt, keyset


async def query_calls(
    conn: AsyncConnection,
    query: Query,
    *,
    visible: ColumnElement[bool] | None = None,
    next: str | None = None,
    prev: str | None = None,
) -> Page:
    """Calls (``calls`` rows) matching ``query`` among those ``visible``, one page."""
    if query.entity is not CALLS:
        raise TypeError(f"not a calls query: {query.entity.name}")
    stmt, keyset = calls_statement(query, visible)
    return await page_by_keyset(conn, stmt, keyset, query.limit, next, prev)


# -- users --------------------------------------------------------------------------------


def users_statement(
    query: Query,
    online_ids: Callable[[], Collection[str]],
    id_range: Mapping[str, str | None] | None = None,
) -> Select[Any]:
    u = users
    stmt = select(u)
    if query.filter is not None:
        stmt = stmt.where(compile_node(query.filter, user_compiler(online_ids)))
    ops = {"id_gt": u.c.id.__gt__, "id_gte": u.c.id.__ge__, "id_lt": u.c.id.__lt__}
    ops["id_lte"] = u.c.id.__le__
    for name, value in (id_range or {}).items():
        if value is not None:
            stmt = stmt.where(ops[name](value))
    columns: dict[str, ColumnElement[Any]] = {
        "id": u.c.id,
        "name": func.coalesce(u.c.name, ""),
        "role": u.c.role,
        "created_at": u.c.created_at,
        "updated_at": u.c.updated_at,
        "last_active": func.coalesce(u.c.last_active, -1),
    }
    keyset = keyset_for(query.sort or USERS_DEFAULT_SORT, columns, "id")
    order = [
        c.asc() if d == 1 else c.desc()
        for c, d in zip(keyset.columns, keyset.directions, strict=True)
    ]
    return stmt.order_by(*order)


async def query_users(
    conn: AsyncConnection,
    query: Query,
    *,
    online_ids: Callable[[], Collection[str]] = frozenset,
    offset: int = 0,
    id_range: Mapping[str, str | None] | None = None,
    extra: ColumnElement[bool] | None = None,
) -> list[dict[str, Any]]:
    """Users (``users`` rows) matching ``query``; ``online_ids`` answers the ``online`` filter."""
    if query.entity is not USERS:
        raise TypeError(f"not a users query: {query.entity.name}")
    if offset < 0 or offset > MAX_USERS_OFFSET:
        raise InvalidRequest(f"offset: must be between 0 and {MAX_USERS_OFFSET}", field="offset")
    stmt = users_statement(query, online_ids, id_range)
    if extra is not None:
        stmt = stmt.where(extra)
    stmt = stmt.offset(offset).limit(query.limit)
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]
