"""Schema migrations on a real database: fresh create, v1 → fake v2, refusals, rollback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import Connection, insert, inspect, select, text

from appliance.errors import StoreError
from appliance.server.store import migrations
from appliance.server.store.engine import Store
from appliance.server.store.migrations import Migration, upgrade
from appliance.server.store.schema import SCHEMA_VERSION, call_types, calls, metadata, schema_info


@pytest_asyncio.fixture
async def mstore(tmp_path: Path) -> AsyncIterator[Store]:
    """A store whose database is still empty (``open`` not called)."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        yield store
    finally:
        await store.close()


def _add_note(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE calls ADD COLUMN note VARCHAR(64)"))
    conn.execute(text("CREATE INDEX ix_calls_note ON calls (note)"))
    conn.execute(text("UPDATE calls SET note = 'migrated'"))


def _broken(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE calls ADD COLUMN half_done INTEGER"))
    conn.execute(text("SELECT * FROM no_such_table"))


V2 = Migration(2, "calls.note", _add_note)


async def _version(store: Store) -> int | None:
    async with store.engine.connect() as conn:
        return await conn.run_sync(migrations.database_version)


async def _columns(store: Store) -> set[str]:
    async with store.engine.connect() as conn:
        cols = await conn.run_sync(lambda c: inspect(c).get_columns("calls"))
    return {c["name"] for c in cols}


async def test_empty_database_gets_the_current_schema(mstore: Store) -> None:
    assert await _version(mstore) is None
    assert await upgrade(mstore.engine) == SCHEMA_VERSION
    assert await _version(mstore) == SCHEMA_VERSION
    assert await upgrade(mstore.engine) == SCHEMA_VERSION  # idempotent
    await mstore.open()  # the store accepts what migrations made


async def test_v1_moves_to_v2_keeping_its_data(mstore: Store) -> None:
    await upgrade(mstore.engine, target=1)
    async with mstore.begin() as conn:
        await conn.execute(
            insert(calls).values(
                cid="default:door-1",
                type="default",
                id="door-1",
                created_by_id="alice",
                custom={"site": "north"},
                settings_override={},
                created_at=1,
                updated_at=1,
            )
        )
    assert await upgrade(mstore.engine, target=2, steps=[V2]) == 1
    assert await _version(mstore) == 2
    assert "note" in await _columns(mstore)
    async with mstore.connect() as conn:
        row = (await conn.execute(text("SELECT cid, custom, note FROM calls"))).one()
    assert row[0] == "default:door-1" and "north" in str(row[1]) and row[2] == "migrated"
    assert await upgrade(mstore.engine, target=2, steps=[V2]) == 2  # nothing left to do


async def test_refusals(mstore: Store) -> None:
    await upgrade(mstore.engine, target=1)
    with pytest.raises(StoreError, match="no migration to schema version 2"):
        await upgrade(mstore.engine, target=3, steps=[Migration(3, "x", _add_note)])
    async with mstore.begin() as conn:
        await conn.execute(schema_info.update().values(version=7))
    with pytest.raises(StoreError, match="newer than this program"):
        await upgrade(mstore.engine, target=2, steps=[V2])


async def test_foreign_database_is_refused(mstore: Store) -> None:
    async with mstore.begin() as conn:
        await conn.execute(text("CREATE TABLE calls (x INTEGER)"))
    with pytest.raises(StoreError, match="not an appliance database"):
        await upgrade(mstore.engine)


async def test_failed_step_rolls_back(mstore: Store) -> None:
    await upgrade(mstore.engine, target=1)
    with pytest.raises(StoreError, match="schema migration failed"):
        await upgrade(mstore.engine, target=2, steps=[Migration(2, "broken", _broken)])
    assert await _version(mstore) == 1
    assert "half_done" not in await _columns(mstore)
    async with mstore.connect() as conn:
        assert (await conn.execute(select(schema_info.c.version))).scalar_one() == 1


async def test_a_v1_database_gets_the_web_push_tables(mstore: Store) -> None:
    """A database made by the version-1 program (no push tables) moves to the current version:
    the Web Push tables (v2) and webhook_claims (v3)."""
    v1_tables = [t for t in metadata.sorted_tables if t.name not in (*PUSH_TABLES, *V3_TABLES)]

    def make_v1(conn: Connection) -> None:
        metadata.create_all(conn, tables=v1_tables)
        conn.execute(insert(schema_info).values(id=1, version=1))

    async with mstore.begin() as conn:
        await conn.run_sync(make_v1)
    assert not await _has_tables(mstore, PUSH_TABLES)
    assert await upgrade(mstore.engine) == 1
    assert await _version(mstore) == SCHEMA_VERSION == 4
    assert await _has_tables(mstore, (*PUSH_TABLES, *V3_TABLES))
    await mstore.open()


PUSH_TABLES = ("server_keys", "push_devices", "push_claims")
V3_TABLES = ("webhook_claims",)


async def _has_tables(store: Store, names: tuple[str, ...]) -> bool:
    async with store.engine.connect() as conn:
        found = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    return set(names) <= found


async def test_v3_call_types_keep_letting_joiners_join_an_ongoing_call(mstore: Store) -> None:
    """join-call used to include joining a call two others were in: an upgraded database's
    stored types keep that (join-ongoing-call added where join-call was granted, nowhere else)."""

    def make_v3(conn: Connection) -> None:
        metadata.create_all(conn)
        conn.execute(insert(schema_info).values(id=1, version=3))
        for name, grants in (
            ("default", {"user": ["read-call", "join-call"], "call_member": ["join-call"]}),
            ("watch", {"user": ["read-call"]}),
            ("both", {"admin": ["join-call", "join-ongoing-call"]}),
        ):
            conn.execute(
                insert(call_types).values(
                    name=name,
                    settings={},
                    grants=grants,
                    notification_settings={},
                    created_at=1,
                    updated_at=1,
                )
            )

    async with mstore.begin() as conn:
        await conn.run_sync(make_v3)
    assert await upgrade(mstore.engine) == 3
    assert await _version(mstore) == SCHEMA_VERSION
    async with mstore.engine.connect() as conn:
        rows = dict((await conn.execute(select(call_types.c.name, call_types.c.grants))).all())
    assert rows["default"] == {
        "user": ["read-call", "join-call", "join-ongoing-call"],
        "call_member": ["join-call", "join-ongoing-call"],
    }
    assert rows["watch"] == {"user": ["read-call"]}
    assert rows["both"] == {"admin": ["join-call", "join-ongoing-call"]}
