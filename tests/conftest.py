"""Shared fixtures. Areas add their own in ``tests/<area>/conftest.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.support.server import ServerHandle, running_server

DEFAULT_USERS = [
    {"id": "alice", "name": "Alice"},
    {"id": "bob", "name": "Bob"},
    {"id": "carol", "name": "Carol"},
    {"id": "door-1", "name": "Front door", "custom": {"device": {"relay": True}}},
]


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    """An in-process call server with users alice, bob, carol and door-1."""
    async with running_server(tmp_path, users=DEFAULT_USERS) as srv:
        yield srv
