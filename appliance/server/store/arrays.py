"""Lists as one array parameter on PostgreSQL: ``IN`` lists and many-row inserts.

SQLAlchemy expands ``column.in_(values)`` into one bound parameter per value. On PostgreSQL a
list of 100 user ids became a statement of 100 ``%(id_1_N)s::VARCHAR`` parameters: compiled
anew for each length, too long for psycopg's query cache (parsed again on every execution)
and never a prepared statement. ``column = ANY(%(ids)s)`` takes the list as one array
parameter: the same text whatever the length, cached and prepared like any other statement,
and PostgreSQL probes the same index.

An insert of many rows was an ``executemany``: one execution per row in the server (a ring's
100 ``session_ring`` rows, a create's 100 members). ``INSERT … SELECT … FROM unnest(%(col1)s,
%(col2)s, …)`` inserts them all in one statement, one array per column.

SQLite has no arrays: it keeps the ``IN`` list and the ``executemany`` (both in-process there).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, any_, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection


def one_of(conn: AsyncConnection, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column`` is one of ``values``, for a statement run on ``conn``."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(values)  # type: ignore[no-any-return]


async def insert_rows(
    conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert ``rows`` (each with the same keys, in the same order) into ``table``."""
    if not rows:
        return
    if conn.dialect.name != "postgresql" or len(rows) == 1:
        await conn.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    arrays = [
        bindparam(None, [r[name] for r in rows], type_=ARRAY(table.c[name].type)) for name in names
    ]
    source = func.unnest(*arrays).table_valued(*names).render_derived()
    await conn.execute(insert(table).from_select(names, select(*(source.c[n] for n in names))))
