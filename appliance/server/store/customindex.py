"""The custom-field index: ``custom`` JSON flattened into rows that a filter finds by index.

A member's (or user's) ``custom`` object is stored whole in its JSON column and, flattened, in
``call_member_custom_index`` / ``user_custom_index``: one row per scalar leaf,
``(path, value_text, value_num)``. ``{"floor": 3, "tags": ["a", "b"], "unit": {"id": "x"}}``
becomes ``floor → num 3``, ``tags → text a``, ``tags → text b``, ``unit.id → text x``.

Encoding (the query compiler in ``queries.py`` uses the same functions):

- strings go to ``value_text``; a string longer than the column keeps a prefix plus a digest,
  so equality stays exact while ranges compare the prefix;
- numbers go to ``value_num``; booleans too, as 1 and 0 (so ``true`` equals ``1``, as in JSON
  comparisons of most databases);
- ``null`` is a row with both columns NULL (so ``$exists`` sees it and ``$eq: null`` finds it);
- list elements are indexed under the list's own path (``$eq`` on a list means "contains");
- empty objects and empty lists leave no row.

Writers call ``index_*`` inside the transaction that writes the JSON column, so the two never
disagree. Limits keep one object from flooding the table: a ``custom`` that is too deep or has
too many leaves is refused with ``InvalidRequest`` naming the field.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.errors import InvalidRequest
from appliance.server.store.schema import call_member_custom_index, user_custom_index

log = logging.getLogger(__name__)

MAX_DEPTH = 8
MAX_LEAVES = 256
PATH_MAX = 255
TEXT_MAX = 512
# Long strings keep this many characters, then a separator and a digest.
_TEXT_PREFIX = TEXT_MAX - 42

IndexRow = tuple[str, str | None, float | None]


def encode_text(value: str) -> str:
    """The ``value_text`` stored for a string (and compared against by filters)."""
    if len(value) <= TEXT_MAX:
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:40]
    return f"{value[:_TEXT_PREFIX]}\x1f{digest}"


def encode_scalar(value: Any) -> tuple[str | None, float | None]:
    """``(value_text, value_num)`` for a JSON scalar; ``(None, None)`` for ``null``."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return None, 1.0 if value else 0.0
    if isinstance(value, int | float):
        return None, float(value)
    if isinstance(value, str):
        return encode_text(value), None
    raise TypeError(f"not a JSON scalar: {type(value).__name__}")


def flatten_custom(custom: Mapping[str, Any] | None, *, field: str = "custom") -> list[IndexRow]:
    """Flatten a ``custom`` object into index rows; ``field`` names it in errors."""
    rows: list[IndexRow] = []
    if not custom:
        return rows
    if not isinstance(custom, Mapping):
        raise InvalidRequest(f"{field}: must be an object", field=field)
    _walk(custom, "", 0, rows, field)
    return rows


def _walk(value: Any, path: str, depth: int, rows: list[IndexRow], field: str) -> None:
    if isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            raise InvalidRequest(
                f"{field}.{path}: nested deeper than {MAX_DEPTH} levels", field=f"{field}.{path}"
            )
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else str(key)
            if len(child_path) > PATH_MAX:
                raise InvalidRequest(
                    f"{field}: key path longer than {PATH_MAX} characters", field=field
                )
            _walk(child, child_path, depth + 1, rows, field)
        return
    if isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, list | tuple):
                # A list inside a list has no path of its own to be found by; index its leaves.
                _walk(item, path, depth + 1, rows, field)
            else:
                _walk(item, path, depth, rows, field)
        return
    try:
        text, num = encode_scalar(value)
    except TypeError as err:
        raise InvalidRequest(f"{field}.{path}: {err}", field=f"{field}.{path}") from err
    rows.append((path, text, num))
    if len(rows) > MAX_LEAVES:
        raise InvalidRequest(
            f"{field}: more than {MAX_LEAVES} values to index; keep custom data small",
            field=field,
        )


async def index_member_custom(
    conn: AsyncConnection, call_cid: str, user_id: str, custom: Mapping[str, Any] | None
) -> None:
    """Replace the index rows of one member with those of ``custom``."""
    await index_members_custom(conn, call_cid, [(user_id, custom)])


async def index_members_custom(
    conn: AsyncConnection,
    call_cid: str,
    members: Iterable[tuple[str, Mapping[str, Any] | None]],
    *,
    replace: bool = True,
) -> None:
    """Replace the index rows of several members of one call (one DELETE, one INSERT batch);
    ``replace=False``: they have none yet (members of a call this transaction inserted)."""
    members = list(members)
    if not members:
        return
    values = [
        {"call_cid": call_cid, "user_id": user_id, "path": p, "value_text": t, "value_num": n}
        for user_id, custom in members
        for p, t, n in flatten_custom(custom, field=f"members[{user_id}].custom")
    ]
    if replace:
        await remove_member_custom(conn, call_cid, [user_id for user_id, _ in members])
    if values:
        await conn.execute(insert(call_member_custom_index), values)
    log.debug(
        "Call(%s) indexed %d custom values of %d members", call_cid, len(values), len(members)
    )


async def remove_member_custom(
    conn: AsyncConnection, call_cid: str, user_ids: Iterable[str]
) -> None:
    """Drop the index rows of members removed from a call (the table has no cascade)."""
    ids = list(user_ids)
    t = call_member_custom_index
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        await conn.execute(delete(t).where(t.c.call_cid == call_cid, t.c.user_id.in_(chunk)))


async def remove_call_custom(conn: AsyncConnection, call_cid: str) -> None:
    """Drop every member index row of a call (hard delete of the call)."""
    t = call_member_custom_index
    await conn.execute(delete(t).where(t.c.call_cid == call_cid))


async def index_user_custom(
    conn: AsyncConnection, user_id: str, custom: Mapping[str, Any] | None
) -> None:
    """Replace the index rows of one user with those of ``custom``."""
    rows = flatten_custom(custom, field=f"users[{user_id}].custom")
    t = user_custom_index
    await conn.execute(delete(t).where(t.c.user_id == user_id))
    if rows:
        await conn.execute(
            insert(t),
            [{"user_id": user_id, "path": p, "value_text": x, "value_num": n} for p, x, n in rows],
        )
    log.debug("User(%s) indexed %d custom values", user_id, len(rows))
