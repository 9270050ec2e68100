"""Replicas starting at the same moment on an empty PostgreSQL database: each migrates, seeds the
call types and the configured users, and serves; none fails on a row another one inserted."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.support.pgcluster import PostgresCluster
from tests.support.server import ServerHandle, running_server

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

USERS = [{"id": "alice"}, {"id": "door-1"}]


async def test_replicas_starting_together_on_an_empty_database(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    name = "s" + uuid.uuid4().hex[:10]
    postgres.create_database(name)
    common = {
        "users": USERS,
        "database": postgres.sqlalchemy_url(name),
        "api_secret": "fleet-secret-of-at-least-32-bytes-long",
    }
    async with AsyncExitStack() as stack:

        async def one(i: int) -> ServerHandle:
            return await stack.enter_async_context(running_server(tmp_path / f"r{i}", **common))  # type: ignore[arg-type]

        replicas = await asyncio.gather(*(one(i) for i in range(4)))
        for srv in replicas:
            async with srv.client(None) as http:
                r = await http.get("/api/v2/video/calltypes")
            assert r.status_code == 200, r.text
            assert "default" in r.json()["call_types"]
