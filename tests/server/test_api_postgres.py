"""The call and user API flows of ``test_api_calls.py`` / ``test_api_users.py`` on PostgreSQL.

Same tests, a server whose store is a fresh PostgreSQL database (Debian's binaries, a throwaway
cluster); concurrent get-or-create there takes the unique-key path that SQLite's single writer
never reaches.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import DEFAULT_USERS
from tests.server.test_api_calls import (
    test_concurrent_get_or_create_creates_once,
    test_create_with_members_custom_settings_starts_at_team,
    test_delete_call,
    test_events_reach_members,
    test_existing_call_ignores_data,
    test_members_must_be_existing_users,
    test_update_and_remove_members,
    test_update_call,
)
from tests.server.test_api_users import test_upsert_creates_and_updates
from tests.server.test_schemathesis import fuzz_server
from tests.support.pgcluster import PostgresCluster
from tests.support.server import ServerHandle, running_server

pytestmark = pytest.mark.postgres

__all__ = [
    "test_concurrent_get_or_create_creates_once",
    "test_create_with_members_custom_settings_starts_at_team",
    "test_delete_call",
    "test_events_reach_members",
    "test_existing_call_ignores_data",
    "test_members_must_be_existing_users",
    "test_update_and_remove_members",
    "test_update_call",
    "test_upsert_creates_and_updates",
]

_names = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    found = PostgresCluster.find()
    if found is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    found.start()
    try:
        yield found
    finally:
        found.stop()


@pytest_asyncio.fixture
async def server(tmp_path: Path, cluster: PostgresCluster) -> AsyncIterator[ServerHandle]:
    """Overrides the SQLite ``server`` fixture for the imported tests."""
    name = f"api{next(_names)}"
    url = cluster.create_database(name)
    try:
        async with running_server(tmp_path, users=DEFAULT_USERS, database=url) as srv:
            assert srv.ctx.store.engine.dialect.name == "postgresql"
            yield srv
    finally:
        cluster.drop_database(name)


async def test_no_server_errors_on_postgres(tmp_path: Path, cluster: PostgresCluster) -> None:
    """schemathesis on PostgreSQL: it refuses what SQLite takes (NUL characters, long keys)."""
    name = f"fuzz{next(_names)}"
    url = cluster.create_database(name)
    try:
        async with running_server(tmp_path, users=["alice", "bob"], database=url) as srv:
            await fuzz_server(srv, examples=6)
    finally:
        cluster.drop_database(name)
