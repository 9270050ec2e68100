"""The fleet store: the query and migration tests again, on a real PostgreSQL 15 cluster, and a
create/query flow through the real app with PostgreSQL as its database.

The cluster is started once per session from Debian's binaries (``tests/support/pgcluster.py``);
every test gets a database of its own. Skipped only when PostgreSQL is not installed.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, text

from appliance.server.store.engine import Store
from appliance.server.store.schema import metadata, schema_info, users
from tests.server.test_migrations import (  # noqa: F401  (collected here with a PostgreSQL store)
    test_a_v1_database_gets_the_web_push_tables,
    test_empty_database_gets_the_current_schema,
    test_failed_step_rolls_back,
    test_refusals,
    test_v1_moves_to_v2_keeping_its_data,
)
from tests.server.test_queries import (  # noqa: F401
    members_call,
    some_calls,
    test_a_common_value_is_counted_not_fetched,
    test_a_common_verdict_is_kept_briefly_and_never_changes_the_rows,
    test_call_filters,
    test_call_sorts_with_missing_values_and_pages,
    test_cursor_is_stable_under_inserts,
    test_cursor_mistakes_name_the_field,
    test_member_filters,
    test_page_edges_say_what_lies_beyond,
    test_plans_use_indexes_at_scale,
    test_sort_both_directions_and_page_forward_and_back,
    test_user_filters_sort_and_offset,
    test_visible_calls_follow_grants_teams_and_pins,
)
from tests.support.pgcluster import PostgresCluster
from tests.support.server import running_server

pytestmark = pytest.mark.postgres

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster.find()
    if cluster is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_database(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database; its SQLAlchemy URL."""
    name = f"t{next(_names)}"
    pg_cluster.create_database(name)
    try:
        yield pg_cluster.sqlalchemy_url(name)
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture(scope="session")
def pg_query_database(pg_cluster: PostgresCluster) -> str:
    """One database with the current schema for the query tests, emptied before each test
    (``TRUNCATE`` is much cheaper than ``CREATE DATABASE`` per test)."""
    name = "queries"
    pg_cluster.create_database(name)
    return pg_cluster.sqlalchemy_url(name)


@pytest_asyncio.fixture
async def qstore(pg_query_database: str) -> AsyncIterator[Store]:
    store = Store(pg_query_database)
    await store.open()
    tables = ", ".join(t.name for t in metadata.sorted_tables if t is not schema_info)
    async with store.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    try:
        yield store
    finally:
        await store.close()


@pytest_asyncio.fixture
async def mstore(pg_database: str) -> AsyncIterator[Store]:
    store = Store(pg_database)
    try:
        yield store
    finally:
        await store.close()


async def test_app_creates_and_queries_on_postgres(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    name = f"app{next(_names)}"
    url = pg_cluster.create_database(name)
    users: list[Any] = ["alice", "bob", {"id": "door-1", "custom": {"device": {"relay": True}}}]
    try:
        async with running_server(tmp_path, users=users, database=url) as srv:
            assert srv.ctx.store.engine.dialect.name == "postgresql"
            async with srv.client() as http:
                body = {
                    "data": {
                        "created_by_id": "alice",
                        "members": [
                            {"user_id": "alice", "role": "host"},
                            {"user_id": "bob", "custom": {"flat": 12}},
                            {"user_id": "door-1"},
                        ],
                        "custom": {"site": "north"},
                    }
                }
                r = await http.post("/api/v2/video/call/default/door-1", json=body)
                assert r.status_code == 200, r.text
                r = await http.post(
                    "/api/v2/video/call/members",
                    json={
                        "type": "default",
                        "id": "door-1",
                        "filter_conditions": {"custom.flat": {"$gte": 10}},
                    },
                )
                assert r.status_code == 200, r.text
                assert [m["user_id"] for m in r.json()["members"]] == ["bob"]
                r = await http.post(
                    "/api/v2/video/calls",
                    json={
                        "filter_conditions": {
                            "custom.site": "north",
                            "members": {"$in": ["door-1"]},
                        }
                    },
                )
                assert [c["call"]["cid"] for c in r.json()["calls"]] == ["default:door-1"]
                r = await http.get(
                    "/api/v2/users",
                    params={"payload": '{"filter_conditions": {"custom.device.relay": true}}'},
                )
                assert [u["id"] for u in r.json()["users"]] == ["door-1"]
                r = await http.post(
                    "/api/v2/video/call/members",
                    json={"type": "default", "id": "door-1", "filter_conditions": {"size": 1}},
                )
                assert r.status_code == 400 and "filter_conditions.size" in r.json()["message"]
            # The data is in PostgreSQL: a restart finds it.
            await srv.restart()
            async with srv.client("bob") as http:
                r = await http.post("/api/v2/video/calls", json={})
                assert [c["call"]["cid"] for c in r.json()["calls"]] == ["default:door-1"]
    finally:
        pg_cluster.drop_database(name)


async def test_reads_keep_their_prepared_statements(qstore: Store) -> None:
    """A read block (``Store.connect``) runs outside a transaction on PostgreSQL: its end sends no
    ``ROLLBACK``, on which psycopg forgot every statement prepared on the connection (and sent
    ``DEALLOCATE ALL``), so a statement read once per block was never prepared. The same read in
    five blocks on one pooled connection: prepared there from its second execution, and kept."""
    read = select(users.c.id).where(users.c.id == "nobody")
    backends = set()
    for _ in range(5):
        async with qstore.connect() as conn:
            assert (await conn.execute(read)).first() is None
            backends.add((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            xids = [
                (await conn.execute(text("SELECT pg_current_xact_id()::text"))).scalar()
                for _ in range(2)
            ]
    assert len(backends) == 1  # one pooled connection served every block
    assert xids[0] != xids[1]  # no transaction open: each statement is its own
    async with qstore.connect() as conn:
        prepared = (
            (await conn.execute(text("SELECT statement FROM pg_prepared_statements")))
            .scalars()
            .all()
        )
    assert any("FROM users" in s for s in prepared), prepared
    async with qstore.begin() as conn:  # a transaction is still one
        xids = [
            (await conn.execute(text("SELECT pg_current_xact_id()::text"))).scalar()
            for _ in range(2)
        ]
    assert xids[0] == xids[1]
