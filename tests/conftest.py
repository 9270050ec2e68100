"""Shared fixtures. Areas add their own in ``tests/<area>/conftest.py``."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

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


@pytest.fixture(autouse=True)
def _aiortc_hooks_do_not_outlive_a_test() -> Iterator[None]:
    """An AudioPlayback a test never stopped must not change how later tests receive audio."""
    yield
    compat = sys.modules.get("appliance.media.aiortc_compat")
    if compat is not None:
        compat.uninstall_audio_jitter_buffer()
