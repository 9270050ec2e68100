"""``column IN (values)`` as each database runs it best.

SQLAlchemy expands ``column.in_(values)`` into one bound parameter per value. On PostgreSQL a
list of 100 user ids became a statement of 100 ``%(id_1_N)s::VARCHAR`` parameters: compiled
anew for each length, too long for psycopg's query cache (parsed again on every execution)
and never a prepared statement. ``column = ANY(%(ids)s)`` takes the list as one array
parameter: the same text whatever the length, cached and prepared like any other statement,
and PostgreSQL probes the same index. SQLite has no arrays and keeps the ``IN`` list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection


def one_of(conn: AsyncConnection, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column`` is one of ``values``, for a statement run on ``conn``."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(values)  # type: ignore[no-any-return]
