"""Keyset pagination: pages cut by the sort key of their edge rows, not by offset.

The ``next`` cursor holds the sort key (plus a unique tiebreaker) of the last row returned,
``prev`` that of the first; the next page is "rows strictly after that key in this order".
Rows inserted meanwhile never shift a page or repeat a row, and every page is an index range
scan, however deep. A cursor is opaque to clients (URL-safe base64 of JSON) and carries the sort
it was made for, so a cursor reused with another sort is refused rather than silently misread;
its values are checked against the column types, so a forged cursor never reaches the database.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, String, and_, bindparam, or_, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls.filters import SortKey
from appliance.errors import InvalidRequest
from appliance.server.store.filtersql import unindexed


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next: str | None = None
    prev: str | None = None


@dataclass(frozen=True)
class Keyset:
    """The ordering of a query: sort expressions, directions, and their names for cursors."""

    columns: tuple[ColumnElement[Any], ...]
    directions: tuple[int, ...]
    names: tuple[str, ...]
    signature: str = field(init=False)

    def __post_init__(self) -> None:
        sig = ",".join(f"{n}:{d}" for n, d in zip(self.names, self.directions, strict=True))
        object.__setattr__(self, "signature", sig)


def keyset_for(
    sort: Sequence[SortKey], columns: Mapping[str, ColumnElement[Any]], tiebreaker: str
) -> Keyset:
    names = [k.field for k in sort]
    directions = [k.direction for k in sort]
    if tiebreaker not in names:
        # The tiebreaker follows the last key's direction: one row-value comparison then
        # covers the whole key, which the planner turns into a single index range.
        names.append(tiebreaker)
        directions.append(directions[-1] if directions else 1)
    return Keyset(tuple(columns[n] for n in names), tuple(directions), tuple(names))


def encode_cursor(keyset: Keyset, values: Sequence[Any]) -> str:
    raw = json.dumps({"s": keyset.signature, "k": list(values)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(keyset: Keyset, cursor: str, where: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error) as err:
        raise InvalidRequest(f"{where}: not a cursor of this server", field=where) from err
    if not isinstance(data, dict) or not isinstance(data.get("k"), list):
        raise InvalidRequest(f"{where}: not a cursor of this server", field=where)
    if data.get("s") != keyset.signature:
        raise InvalidRequest(f"{where}: cursor was made for a different sort", field=where)
    values = data["k"]
    if len(values) != len(keyset.columns) or not all(
        _fits(col, v) for col, v in zip(keyset.columns, values, strict=False)
    ):
        raise InvalidRequest(f"{where}: cursor does not fit this query", field=where)
    return values


def _fits(column: ColumnElement[Any], value: Any) -> bool:
    """A cursor value of the column's type (a forged cursor must not reach the database)."""
    if isinstance(column.type, String):
        return isinstance(value, str) and "\x00" not in value
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def beyond(
    keyset: Keyset,
    values: Sequence[Any],
    forward: bool,
    *,
    plain: bool = False,
    inclusive: bool = False,
) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the keyset's order (before, when not ``forward``);
    with ``inclusive`` the row at ``values`` too. ``plain`` compares expressions no index
    matches (see ``page_statement``)."""
    sign = 1 if forward else -1
    binds = [bindparam(None, v, type_=c.type) for c, v in zip(keyset.columns, values, strict=True)]
    dirs = [d * sign for d in keyset.directions]
    if plain:
        keyset = Keyset(
            tuple(unindexed(c) for c in keyset.columns), keyset.directions, keyset.names
        )
    if len(set(dirs)) == 1:
        left: ColumnElement[Any] = tuple_(*keyset.columns) if len(binds) > 1 else keyset.columns[0]
        right: Any = tuple_(*binds) if len(binds) > 1 else binds[0]
        if inclusive:
            return left >= right if dirs[0] == 1 else left <= right
        return left > right if dirs[0] == 1 else left < right
    alternatives = []
    last = len(binds) - 1
    for i, (col, bind, d) in enumerate(zip(keyset.columns, binds, dirs, strict=True)):
        equal = [keyset.columns[j] == binds[j] for j in range(i)]
        if inclusive and i == last:  # equal on every key but the last, and that one not beyond
            alternatives.append(and_(*equal, col >= bind if d == 1 else col <= bind))
        else:
            alternatives.append(and_(*equal, col > bind if d == 1 else col < bind))
    return or_(*alternatives)


def page_statement(
    base: Select[Any],
    keyset: Keyset,
    limit: int,
    cursor: Sequence[Any] | None = None,
    *,
    forward: bool = True,
    sort_in_memory: bool = False,
    inclusive: bool = False,
) -> Select[Any]:
    """The SELECT of one page: ``limit + 1`` rows beyond ``cursor`` (or at it too, with
    ``inclusive``), with the key columns labelled ``_k0…`` (the extra row tells whether there
    is more).

    ``sort_in_memory`` orders by expressions no index provides: for a query known to match
    few rows, it stops the planner from walking a whole sort index to skip the sort.
    """
    stmt = base
    if cursor is not None:
        stmt = stmt.where(
            beyond(keyset, cursor, forward, plain=sort_in_memory, inclusive=inclusive)
        )
    keys = [c.label(f"_k{i}") for i, c in enumerate(keyset.columns)]
    sort_by = [unindexed(c) for c in keyset.columns] if sort_in_memory else keyset.columns
    order = [
        c.asc() if d * (1 if forward else -1) == 1 else c.desc()
        for c, d in zip(sort_by, keyset.directions, strict=True)
    ]
    return stmt.add_columns(*keys).order_by(*order).limit(limit + 1)


BEHIND = "_behind"
"""Label of the column that tells whether a row lies on the cursor's other side."""


async def page_by_keyset(
    conn: AsyncConnection,
    base: Select[Any],
    keyset: Keyset,
    limit: int,
    next_cursor: str | None = None,
    prev_cursor: str | None = None,
    *,
    sort_in_memory: bool = False,
) -> Page:
    """Run ``base`` (already filtered) for one page in ``keyset`` order, with cursors.

    A page cut at a cursor has a ``prev`` (a ``next``, going back) when some row lies before
    its first row (after its last): as no row lies between the cursor and that edge row, that
    is "a row at or before the cursor", which the page's own statement asks with ``EXISTS``
    (one statement in one snapshot, not a second round trip per page)."""
    if next_cursor and prev_cursor:
        raise InvalidRequest("next, prev: give one cursor, not both", field="next")
    forward = not prev_cursor
    cursor = next_cursor or prev_cursor
    values = decode_cursor(keyset, cursor, "next" if forward else "prev") if cursor else None
    stmt = page_statement(
        base, keyset, limit, values, forward=forward, sort_in_memory=sort_in_memory
    )
    if values is not None:
        behind = page_statement(
            base,
            keyset,
            0,
            values,
            forward=not forward,
            sort_in_memory=sort_in_memory,
            inclusive=True,
        )
        # Not correlated: the same tables in the outer query are another scan, not this row.
        stmt = stmt.add_columns(behind.correlate(None).exists().label(BEHIND))
    found = [dict(r) for r in (await conn.execute(stmt)).mappings()]
    more = len(found) > limit
    found = found[:limit]
    if not forward:
        found.reverse()
    width = len(keyset.columns)
    key_values = [[row.pop(f"_k{i}") for i in range(width)] for row in found]
    others = [bool(row.pop(BEHIND, False)) for row in found]
    page = Page(found)
    if not found:
        return page
    first, last = key_values[0], key_values[-1]
    if forward:
        page.next = encode_cursor(keyset, last) if more else None
        if cursor and others[0]:
            page.prev = encode_cursor(keyset, first)
    else:
        page.prev = encode_cursor(keyset, first) if more else None
        if others[0]:
            page.next = encode_cursor(keyset, last)
    return page


async def explain(conn: AsyncConnection, stmt: Select[Any]) -> list[str]:
    """The database's plan for ``stmt``, one line a step (for tests that check index use)."""
    sql = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    if conn.dialect.name == "sqlite":
        rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
        return [str(tuple(r)[-1]) for r in rows]
    rows = await conn.exec_driver_sql(f"EXPLAIN {sql}")
    return [str(r[0]) for r in rows]
