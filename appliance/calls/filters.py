"""Filters and sort of the query endpoints (members, calls, users), parsed and validated.

The request syntax is Stream's, a MongoDB-like subset::

    {"role": "admin"}                                   implicit $eq
    {"custom.floor": {"$gte": 2, "$lt": 5}}             several operators on one field: all hold
    {"$or": [{"user_id": "a"}, {"user.custom.shift": {"$in": ["night", "day"]}}]}

Operators ``$eq $ne $in $nin $gt $gte $lt $lte $exists``; groups ``$and $or $nor``. Sort is
``[{"field": "created_at", "direction": -1}]``. Anything unknown is refused with
``InvalidRequest`` whose ``.field`` says where (``filter_conditions.$or[1].colour``).

Parsing is pure (no database): ``queries.py`` compiles the result to SQL. Values are normalised
here: timestamps (RFC 3339 strings or integer nanoseconds) become integer nanoseconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from appliance.errors import InvalidRequest

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
OPERATORS = frozenset({*COMPARISONS, "$in", "$nin", "$exists"})
GROUPS = frozenset({"$and", "$or", "$nor"})

MAX_LIMIT = 100
DEFAULT_LIMIT = 25
MAX_IN_VALUES = 1000
MAX_CONDITIONS = 100
MAX_DEPTH = 8
MAX_TEXT = 4096
INT64 = 2**63


class Kind(Enum):
    TEXT = "text"  # a string column
    TIME = "time"  # integer nanoseconds; requests may say RFC 3339
    BOOL = "bool"  # a derived true/false (online, ongoing)
    LIST = "list"  # a set of strings (teams, members): $eq/$in mean "contains"
    CUSTOM = "custom"  # a path into a JSON object: any scalar


_RANGE = frozenset({"$gt", "$gte", "$lt", "$lte"})
_ALLOWED: dict[Kind, frozenset[str]] = {
    Kind.TEXT: OPERATORS,
    Kind.TIME: OPERATORS,
    Kind.BOOL: frozenset({"$eq", "$ne"}),
    Kind.LIST: frozenset({"$eq", "$ne", "$in", "$nin", "$exists"}),
    Kind.CUSTOM: OPERATORS,
}


@dataclass(frozen=True)
class Entity:
    """What can be filtered and sorted on for one query endpoint."""

    name: str
    fields: Mapping[str, Kind]
    # Field prefixes that take a JSON path: "custom." → field "custom", path "floor".
    prefixes: tuple[str, ...]
    sortable: frozenset[str]
    nullable: frozenset[str] = frozenset()


MEMBERS = Entity(
    "members",
    {"user_id": Kind.TEXT, "role": Kind.TEXT, "created_at": Kind.TIME, "updated_at": Kind.TIME},
    ("user.custom.", "custom."),
    frozenset({"user_id", "role", "created_at", "updated_at"}),
)
CALLS = Entity(
    "calls",
    {
        "members": Kind.LIST,
        "created_by_user_id": Kind.TEXT,
        "ongoing": Kind.BOOL,
        "ended_at": Kind.TIME,
        "starts_at": Kind.TIME,
        "team": Kind.TEXT,
        "type": Kind.TEXT,
        "id": Kind.TEXT,
        "cid": Kind.TEXT,
        "created_at": Kind.TIME,
        "updated_at": Kind.TIME,
    },
    ("custom.",),
    frozenset({"created_at", "updated_at", "starts_at", "ended_at", "cid", "type", "id"}),
    frozenset({"ended_at", "starts_at", "team"}),
)
USERS = Entity(
    "users",
    {
        "id": Kind.TEXT,
        "role": Kind.TEXT,
        "teams": Kind.LIST,
        "online": Kind.BOOL,
        "name": Kind.TEXT,
        "created_at": Kind.TIME,
        "updated_at": Kind.TIME,
        "last_active": Kind.TIME,
    },
    ("custom.",),
    frozenset({"id", "name", "role", "created_at", "updated_at", "last_active"}),
    frozenset({"name", "last_active"}),
)

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Condition:
    """One ``field op value``. ``field`` is the entity field (``custom``, ``user.custom`` for
    JSON paths, with ``path`` set); ``where`` is the request location used in errors."""

    field: str
    op: str
    value: Any
    kind: Kind
    path: str | None = None
    where: str = ""


@dataclass(frozen=True)
class Group:
    op: Literal["$and", "$or", "$nor"]
    items: tuple[Node, ...]


Node = Condition | Group


@dataclass(frozen=True)
class SortKey:
    field: str
    direction: int  # 1 ascending, -1 descending


@dataclass(frozen=True)
class Query:
    entity: Entity
    filter: Node | None
    sort: tuple[SortKey, ...]
    limit: int


def _bad(where: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {problem}", field=where)


def parse_query(
    entity: Entity,
    filter_conditions: Any,
    sort: Any = None,
    limit: Any = None,
    *,
    default_sort: tuple[SortKey, ...] = (),
) -> Query:
    """Parse a whole request's ``filter_conditions``, ``sort`` and ``limit``."""
    return Query(
        entity,
        parse_filter(entity, filter_conditions),
        parse_sort(entity, sort) or default_sort,
        parse_limit(limit),
    )


def parse_filter(entity: Entity, filter_conditions: Any) -> Node | None:
    if filter_conditions is None:
        return None
    counter = [0]
    node = _parse_object(entity, filter_conditions, "filter_conditions", 0, counter)
    if isinstance(node, Group) and node.op == "$and" and not node.items:
        return None
    return node


def _parse_object(entity: Entity, obj: Any, where: str, depth: int, counter: list[int]) -> Node:
    if not isinstance(obj, Mapping):
        raise _bad(where, "must be an object")
    if depth > MAX_DEPTH:
        raise _bad(where, f"nested deeper than {MAX_DEPTH} levels")
    items: list[Node] = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _bad(where, "keys must be strings")
        if "\x00" in key:
            raise _bad(where, "field names may not contain NUL characters")
        here = f"{where}.{key}"
        if key in GROUPS:
            if not isinstance(value, list) or not value:
                raise _bad(here, "must be a non-empty list of conditions")
            group = tuple(
                _parse_object(entity, item, f"{here}[{i}]", depth + 1, counter)
                for i, item in enumerate(value)
            )
            items.append(Group(key, group))  # type: ignore[arg-type]
        elif key.startswith("$"):
            raise _bad(here, "unknown operator")
        else:
            items.extend(_parse_field(entity, key, value, here, counter))
    return items[0] if len(items) == 1 else Group("$and", tuple(items))


def resolve_field(entity: Entity, name: str, where: str) -> tuple[str, str | None, Kind]:
    """``(field, json_path, kind)`` for a request's field name, or ``InvalidRequest``."""
    if name in entity.fields:
        return name, None, entity.fields[name]
    for prefix in entity.prefixes:
        if name.startswith(prefix):
            path = name[len(prefix) :]
            if not path or path.startswith(".") or path.endswith(".") or ".." in path:
                raise _bad(where, "empty part in custom field path")
            if len(path) > 255:
                raise _bad(where, "custom field path longer than 255 characters")
            return prefix[:-1], path, Kind.CUSTOM
    raise _bad(where, "unknown field")


def _parse_field(
    entity: Entity, name: str, value: Any, where: str, counter: list[int]
) -> list[Condition]:
    field, path, kind = resolve_field(entity, name, where)
    if isinstance(value, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in value):
        ops = list(value.items())
    elif isinstance(value, Mapping):
        raise _bad(where, 'expected a value or an operator object such as {"$eq": ...}')
    else:
        ops = [("$eq", value)]
    if not ops:
        raise _bad(where, "empty operator object")
    out: list[Condition] = []
    for op, operand in ops:
        here = f"{where}.{op}"
        if op not in OPERATORS:
            raise _bad(here, "unknown operator")
        if op not in _ALLOWED[kind]:
            allowed = " ".join(sorted(_ALLOWED[kind]))
            raise _bad(here, f"operator not supported on {name} (use one of {allowed})")
        counter[0] += 1
        if counter[0] > MAX_CONDITIONS:
            raise _bad("filter_conditions", f"more than {MAX_CONDITIONS} conditions")
        nullable = kind is Kind.CUSTOM or field in entity.nullable
        normalised = _operand(kind, op, operand, here, nullable)
        out.append(Condition(field, op, normalised, kind, path, where))
    return out


def _operand(kind: Kind, op: str, operand: Any, where: str, nullable: bool) -> Any:
    if op == "$exists":
        if not isinstance(operand, bool):
            raise _bad(where, "must be true or false")
        return operand
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise _bad(where, "must be a list")
        if len(operand) > MAX_IN_VALUES:
            raise _bad(where, f"more than {MAX_IN_VALUES} values")
        return tuple(
            _value(kind, "$eq", v, f"{where}[{i}]", nullable) for i, v in enumerate(operand)
        )
    return _value(kind, op, operand, where, nullable)


def _value(kind: Kind, op: str, value: Any, where: str, nullable: bool) -> Scalar:
    if value is None:
        if op in ("$eq", "$ne") and nullable:
            return None
        raise _bad(where, "null is not a valid value here")
    if kind is Kind.BOOL:
        if not isinstance(value, bool):
            raise _bad(where, "must be true or false")
        return value
    if kind is Kind.TIME:
        return parse_time_ns(value, where)
    if kind in (Kind.TEXT, Kind.LIST):
        if not isinstance(value, str):
            raise _bad(where, "must be a string")
        return _text(value, where)
    # CUSTOM: any JSON scalar; a range needs something ordered.
    if isinstance(value, str):
        return _text(value, where)
    if isinstance(value, bool):
        if op in _RANGE:
            raise _bad(where, "a range needs a string or a number")
        return value
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise _bad(where, "number out of range") from None
        if not math.isfinite(number):
            raise _bad(where, "number must be finite")
        return value
    raise _bad(where, "must be a string, number, boolean or null")


def _text(value: str, where: str) -> str:
    if "\x00" in value:
        raise _bad(where, "text may not contain NUL characters")
    if len(value) > MAX_TEXT:
        raise _bad(where, f"text longer than {MAX_TEXT} characters")
    return value


_FRACTION = re.compile(r"\.(\d+)")


def parse_time_ns(value: Any, where: str) -> int:
    """RFC 3339 text or integer nanoseconds since the epoch → integer nanoseconds."""
    if isinstance(value, bool):
        raise _bad(where, "must be an RFC 3339 time or integer nanoseconds")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise _bad(where, "time out of range (integer nanoseconds since the epoch)")
        return value
    if not isinstance(value, str):
        raise _bad(where, "must be an RFC 3339 time or integer nanoseconds")
    text = value.strip()
    fraction_ns = 0
    match = _FRACTION.search(text)
    if match:
        digits = match.group(1)
        fraction_ns = int((digits + "000000000")[:9])
        text = text[: match.start()] + text[match.end() :]
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as err:
        raise _bad(where, f"not an RFC 3339 time: {value!r}") from err
    if moment.tzinfo is None:
        raise _bad(where, f"RFC 3339 time needs a zone offset (e.g. Z): {value!r}")
    ns = int(moment.timestamp()) * 1_000_000_000 + fraction_ns
    if not -INT64 <= ns < INT64:
        raise _bad(where, "time out of range (1677..2262)")
    return ns


def parse_sort(entity: Entity, sort: Any) -> tuple[SortKey, ...]:
    if sort is None:
        return ()
    if not isinstance(sort, list):
        raise _bad("sort", "must be a list of {field, direction}")
    keys: list[SortKey] = []
    seen: set[str] = set()
    for i, item in enumerate(sort):
        where = f"sort[{i}]"
        if not isinstance(item, Mapping):
            raise _bad(where, "must be an object {field, direction}")
        unknown = set(item) - {"field", "direction", "type"}
        if unknown:
            raise _bad(f"{where}.{sorted(unknown)[0]}", "unknown key")
        field = item.get("field")
        if not isinstance(field, str) or not field:
            raise _bad(f"{where}.field", "must name a field")
        if field not in entity.sortable:
            allowed = ", ".join(sorted(entity.sortable))
            raise _bad(f"{where}.field", f"cannot sort on {field!r} (sortable: {allowed})")
        direction = item.get("direction")
        if direction is None:
            direction = 1
        if isinstance(direction, bool) or direction not in (1, -1):
            raise _bad(f"{where}.direction", "must be 1 or -1")
        if field in seen:
            raise _bad(f"{where}.field", f"{field!r} given twice")
        seen.add(field)
        keys.append(SortKey(field, int(direction)))
    return tuple(keys)


def parse_limit(limit: Any, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if limit is None:
        return default
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise _bad("limit", "must be an integer")
    if limit < 0 or limit > maximum:
        raise _bad("limit", f"must be between 0 and {maximum}")
    return limit or default
