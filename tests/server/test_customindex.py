"""The custom-field side tables: flattening, limits, replace and remove on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import insert, select

from appliance.errors import InvalidRequest
from appliance.server.store.customindex import (
    MAX_LEAVES,
    encode_text,
    flatten_custom,
    index_member_custom,
    index_user_custom,
    remove_call_custom,
    remove_member_custom,
)
from appliance.server.store.engine import Store
from appliance.server.store.schema import call_member_custom_index, user_custom_index, users


def test_flatten_leaves_lists_nulls_and_types() -> None:
    rows = flatten_custom(
        {
            "floor": 3,
            "tags": ["a", ["b"]],
            "unit": {"id": "x", "ok": True},
            "n": None,
            "e": {},
            "l": [],
        }
    )
    assert rows == [
        ("floor", None, 3.0),
        ("tags", "a", None),
        ("tags", "b", None),
        ("unit.id", "x", None),
        ("unit.ok", None, 1.0),
        ("n", None, None),
    ]
    assert flatten_custom(None) == [] and flatten_custom({}) == []


def test_long_strings_keep_exact_equality() -> None:
    a, b = "x" * 600, "x" * 599 + "y"
    assert len(encode_text(a)) <= 512 and encode_text(a) != encode_text(b)
    assert encode_text("short") == "short"


def test_limits_name_the_field() -> None:
    with pytest.raises(InvalidRequest) as info:
        flatten_custom({"k": list(range(MAX_LEAVES + 1))}, field="members[bob].custom")
    assert info.value.field == "members[bob].custom"
    deep: dict[str, object] = {"v": 1}
    for _ in range(10):
        deep = {"d": deep}
    with pytest.raises(InvalidRequest, match="nested deeper"):
        flatten_custom(deep)
    with pytest.raises(InvalidRequest, match="longer than 255"):
        flatten_custom({"k" * 300: 1})
    with pytest.raises(InvalidRequest, match="must be an object"):
        flatten_custom([1], field="custom")  # type: ignore[arg-type]


async def test_replace_and_remove(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'i.db'}")
    await store.open()
    t = call_member_custom_index
    try:
        async with store.begin() as conn:
            await index_member_custom(conn, "default:a", "bob", {"x": 1, "y": "z"})
            await index_member_custom(conn, "default:a", "ann", {"x": 2})
            await index_member_custom(conn, "default:b", "bob", {"x": 3})
            await index_member_custom(conn, "default:a", "bob", {"y": "w"})
            rows = await conn.execute(
                select(t.c.call_cid, t.c.user_id, t.c.path, t.c.value_text, t.c.value_num).order_by(
                    t.c.call_cid, t.c.user_id
                )
            )
            assert [tuple(r) for r in rows] == [
                ("default:a", "ann", "x", None, 2.0),
                ("default:a", "bob", "y", "w", None),
                ("default:b", "bob", "x", None, 3.0),
            ]
            await remove_member_custom(conn, "default:a", ["bob"])
            await remove_call_custom(conn, "default:b")
            left = await conn.execute(select(t.c.user_id))
            assert [r[0] for r in left] == ["ann"]

            await conn.execute(
                insert(users).values(
                    id="ann", role="user", teams=[], custom={}, created_at=1, updated_at=1
                )
            )
            await index_user_custom(conn, "ann", {"device": {"relay": True}})
            await index_user_custom(conn, "ann", {"device": {"model": "pi"}})
            u = user_custom_index
            got = await conn.execute(select(u.c.path, u.c.value_text))
            assert [tuple(r) for r in got] == [("device.model", "pi")]
    finally:
        await store.close()
