"""Shared fixtures. Areas add their own in ``tests/<area>/conftest.py``."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.pgcluster import PostgresCluster
from tests.support.pushservice import PushService
from tests.support.server import ServerHandle, running_server

# tests/field boots a Debian root under systemd-nspawn: `make test-field` (APPLIANCE_FIELD=1).
collect_ignore = [] if os.environ.get("APPLIANCE_FIELD") else ["field"]

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


@pytest_asyncio.fixture
async def push() -> AsyncIterator[PushService]:
    """A push-service stand-in on loopback (``tests/support/pushservice.py``); a server sends
    to it when started with ``push={"allowed_hosts": [push.origin]}``."""
    async with PushService() as service:
        yield service


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for a module's tests (skipped without the binaries)."""
    found = PostgresCluster.find()
    if found is None:
        pytest.skip("PostgreSQL binaries are not installed")
    found.start()
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture(autouse=True)
def _aiortc_hooks_do_not_outlive_a_test() -> Iterator[None]:
    """An AudioPlayback a test never stopped must not change how later tests receive audio."""
    yield
    compat = sys.modules.get("appliance.media.aiortc_compat")
    if compat is not None:
        compat.uninstall_audio_jitter_buffer()
