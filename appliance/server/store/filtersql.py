"""Parsed filters (``appliance.calls.filters``) → SQLAlchemy Core conditions, per entity.

One code path for SQLite and PostgreSQL. Custom fields of members are looked up in the indexed
side tables (``customindex.py``) with a correlated ``EXISTS`` on the member's own rows: one index
seek per member, so a walk along the sort index stops when the page is full. For a value almost
nobody has, ``queries.rare_drivers`` replaces the condition by the few matching user ids. Users'
custom fields use ``id IN (SELECT user_id FROM user_custom_index WHERE …)``. Negative operators
(``$ne``, ``$nin``, ``$exists: false``) negate the positive form, so a row without the field
matches ``$ne`` as in MongoDB. ``calls.custom`` and ``users.teams`` are read from the JSON
columns through the typed accessors of ``jsonsql.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    and_,
    case,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)

from appliance.calls.filters import Condition, Group, Node
from appliance.server.store.customindex import encode_text
from appliance.server.store.jsonsql import (
    JsonArrayHasAny,
    JsonIsNull,
    JsonNumber,
    JsonPresent,
    JsonText,
)
from appliance.server.store.schema import (
    call_member_custom_index,
    call_members,
    call_sessions,
    calls,
    user_custom_index,
    users,
)

Compiler = Callable[[Condition], ColumnElement[bool]]
_NEGATIVE = frozenset({"$ne", "$nin"})
_CMP = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def compile_node(
    node: Node,
    compile_condition: Compiler,
    resolved: Mapping[Node, Collection[str]] | None = None,
) -> ColumnElement[bool]:
    """``node`` as SQL; a node in ``resolved`` becomes ``user_id IN (its few user ids)``."""
    if resolved and node in resolved:
        return call_members.c.user_id.in_(sorted(resolved[node]))
    if isinstance(node, Condition):
        return compile_condition(node)
    parts = [compile_node(item, compile_condition, resolved) for item in node.items]
    if node.op == "$and":
        return and_(true(), *parts)
    if node.op == "$or":
        return or_(false(), *parts)
    return not_(or_(false(), *parts))


def _definitely(expr: ColumnElement[Any]) -> ColumnElement[bool]:
    """``expr`` with SQL's unknown (NULL) read as false, so that ``NOT`` inverts it cleanly."""
    return case((expr, true()), else_=false())


def column_condition(
    col: ColumnElement[Any], cond: Condition, nullable: bool
) -> ColumnElement[bool]:
    """A condition on a plain column, with MongoDB's meaning for missing (NULL) values."""
    op, value = cond.op, cond.value
    if op == "$exists":
        if not nullable:
            return true() if value else false()
        return col.is_not(None) if value else col.is_(None)
    if op in ("$eq", "$ne"):
        values: tuple[Any, ...] = (value,)
    elif op in ("$in", "$nin"):
        values = value
    else:
        return _CMP[op](col, value)  # type: ignore[no-any-return]
    present = [v for v in values if v is not None]
    matches = or_(false(), col.in_(present) if present else false())
    if None in values:
        matches = or_(matches, col.is_(None))
    if op in _NEGATIVE:
        return not_(_definitely(matches)) if nullable else not_(matches)
    return matches


def unindexed(col: ColumnElement[Any]) -> ColumnElement[Any]:
    """``col`` as an expression no index matches (``x + 0``, ``x || ''``), the same on SQLite
    and PostgreSQL: it steers the planner to another index without changing any value."""
    if isinstance(col.type, String):
        return col.concat("")
    return col + 0


def index_match(t: Table, cond: Condition, *, seek: bool = True) -> ColumnElement[bool]:
    """Rows of a custom index table (``path``, ``value_text``, ``value_num``) that ``cond``'s
    positive form matches. With ``seek=False`` (a correlated lookup of one member's rows) the
    path range and value range are kept off the index, so that the planner seeks the member's
    rows by ``(call_cid, user_id)`` rather than scanning a value range once per member."""
    path = cond.path or ""
    if cond.op == "$exists":
        col = t.c.path if seek else unindexed(t.c.path)
        # Range first (one index range); the substring keeps out siblings such as "a-b" of "a".
        return and_(
            col >= path,
            col < path + "/",
            or_(col == path, func.substr(t.c.path, len(path) + 1, 1) == "."),
        )
    if cond.op in _CMP:
        at = t.c.path == path if seek else unindexed(t.c.path) == path
        if isinstance(cond.value, str):
            text = t.c.value_text if seek else unindexed(t.c.value_text)
            return and_(at, _CMP[cond.op](text, encode_text(cond.value)))
        num = t.c.value_num if seek else unindexed(t.c.value_num)
        return and_(at, _CMP[cond.op](num, float(cond.value)))
    values = (cond.value,) if cond.op in ("$eq", "$ne") else cond.value
    texts = [encode_text(v) for v in values if isinstance(v, str)]
    nums = [float(v) for v in values if v is not None and not isinstance(v, str)]
    alternatives: list[ColumnElement[bool]] = []
    if texts:
        alternatives.append(t.c.value_text.in_(texts))
    if nums:
        alternatives.append(t.c.value_num.in_(nums))
    if None in values:
        alternatives.append(and_(t.c.value_text.is_(None), t.c.value_num.is_(None)))
    if not alternatives:
        return false()
    return and_(t.c.path == path, or_(*alternatives))


def _via_index(
    owner: ColumnElement[Any], t: Table, scope: ColumnElement[bool], cond: Condition
) -> ColumnElement[bool]:
    """``owner IN (SELECT user_id FROM t WHERE …)``: driven by the index table's rows."""
    sub = select(t.c.user_id).where(scope, index_match(t, cond))
    return owner.not_in(sub) if is_negative(cond) else owner.in_(sub)


def _member_custom(t: Table, scope: ColumnElement[bool], cond: Condition) -> ColumnElement[bool]:
    """A correlated ``EXISTS`` on the member's own index rows: one index seek per member row,
    so a walk along the sort index stops as soon as the page is full. For a value that almost
    no member has, ``queries.py`` swaps this for a list of the few matching user ids."""
    match = index_match(t, cond, seek=False)
    found = exists().where(scope, t.c.user_id == call_members.c.user_id, match)
    return not_(found) if is_negative(cond) else found


def is_negative(cond: Condition) -> bool:
    return cond.op in _NEGATIVE or (cond.op == "$exists" and not cond.value)


def _via_json(col: ColumnElement[Any], cond: Condition) -> ColumnElement[bool]:
    """A condition on a path inside a JSON column (calls' ``custom``)."""
    path = (cond.path or "").split(".")
    if cond.op == "$exists":
        return JsonPresent(col, path) if cond.value else not_(JsonPresent(col, path))
    if cond.op in _CMP:
        typed = JsonText(col, path) if isinstance(cond.value, str) else JsonNumber(col, path)
        value = cond.value if isinstance(cond.value, str) else float(cond.value)
        return _CMP[cond.op](typed, value)  # type: ignore[no-any-return]
    values = (cond.value,) if cond.op in ("$eq", "$ne") else cond.value
    texts = [v for v in values if isinstance(v, str)]
    nums = [float(v) for v in values if v is not None and not isinstance(v, str)]
    alternatives: list[ColumnElement[bool]] = []
    if texts:
        alternatives.append(JsonText(col, path).in_(texts))
    if nums:
        alternatives.append(JsonNumber(col, path).in_(nums))
    if None in values:
        alternatives.append(JsonIsNull(col, path))
    matches = or_(false(), *alternatives)
    return not_(_definitely(matches)) if cond.op in _NEGATIVE else matches


def member_compiler(call_cid: str) -> Compiler:
    """Conditions on ``call_members`` rows of one call."""
    m = call_members
    columns = {"user_id": m.c.user_id, "role": m.c.role}
    columns |= {"created_at": m.c.created_at, "updated_at": m.c.updated_at}

    def compile_condition(cond: Condition) -> ColumnElement[bool]:
        if cond.field == "custom":
            t = call_member_custom_index
            return _member_custom(t, t.c.call_cid == call_cid, cond)
        if cond.field == "user.custom":
            t = user_custom_index
            return _member_custom(t, true(), cond)
        return column_condition(columns[cond.field], cond, nullable=False)

    return compile_condition


def call_compiler() -> Compiler:
    c = calls
    columns: dict[str, ColumnElement[Any]] = {
        "created_by_user_id": c.c.created_by_id,
        "ended_at": c.c.ended_at,
        "starts_at": c.c.starts_at,
        "team": c.c.team,
        "type": c.c.type,
        "id": c.c.id,
        "cid": c.c.cid,
        "created_at": c.c.created_at,
        "updated_at": c.c.updated_at,
    }
    nullable = {"ended_at", "starts_at", "team"}

    def compile_condition(cond: Condition) -> ColumnElement[bool]:
        if cond.field == "custom":
            return _via_json(c.c.custom, cond)
        if cond.field == "members":
            return _members_condition(cond)
        if cond.field == "ongoing":
            live = exists().where(
                call_sessions.c.id == c.c.current_session_id,
                call_sessions.c.started_at.is_not(None),
                call_sessions.c.ended_at.is_(None),
            )
            wanted = cond.value if cond.op == "$eq" else not cond.value
            return live if wanted else not_(live)
        return column_condition(columns[cond.field], cond, nullable=cond.field in nullable)

    return compile_condition


def _members_condition(cond: Condition) -> ColumnElement[bool]:
    m = call_members
    if cond.op == "$exists":
        any_member = exists().where(m.c.call_cid == calls.c.cid)
        return any_member if cond.value else not_(any_member)
    values = (cond.value,) if cond.op in ("$eq", "$ne") else cond.value
    has = exists().where(m.c.call_cid == calls.c.cid, m.c.user_id.in_(list(values)))
    return not_(has) if cond.op in _NEGATIVE else has


def user_compiler(online_ids: Callable[[], Collection[str]]) -> Compiler:
    u = users
    columns: dict[str, ColumnElement[Any]] = {
        "id": u.c.id,
        "role": u.c.role,
        "name": u.c.name,
        "created_at": u.c.created_at,
        "updated_at": u.c.updated_at,
        "last_active": u.c.last_active,
    }
    nullable = {"name", "last_active"}

    def compile_condition(cond: Condition) -> ColumnElement[bool]:
        if cond.field == "custom":
            return _via_index(u.c.id, user_custom_index, true(), cond)
        if cond.field == "online":
            online = sorted(online_ids())
            wanted = cond.value if cond.op == "$eq" else not cond.value
            return u.c.id.in_(online) if wanted else u.c.id.not_in(online)
        if cond.field == "teams":
            if cond.op == "$exists":
                some = func.json_array_length(u.c.teams) > 0
                return some if cond.value else not_(some)
            values = (cond.value,) if cond.op in ("$eq", "$ne") else cond.value
            has = JsonArrayHasAny(u.c.teams, list(values))
            return not_(has) if cond.op in _NEGATIVE else has
        return column_condition(columns[cond.field], cond, nullable=cond.field in nullable)

    return compile_condition


__all__ = [
    "Compiler",
    "Group",
    "call_compiler",
    "column_condition",
    "compile_node",
    "member_compiler",
    "user_compiler",
]
