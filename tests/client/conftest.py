"""Fixtures of the client tests: a real call server on loopback and clients bound to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

from appliance.client import Client, Event, Subscription
from tests.support.server import ServerHandle, running_server

USERS = [
    {"id": "door", "name": "Front door", "custom": {"device": {"relay": True}}},
    {"id": "alice", "name": "Alice", "custom": {"floor": 2}},
    {"id": "bob", "name": "Bob"},
    {"id": "carol", "name": "Carol"},
    {"id": "nurse", "name": "Nurse", "teams": ["ward-a"]},
]

MakeClient = Callable[..., Client]


@pytest_asyncio.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with running_server(tmp_path, users=USERS) as handle:
        yield handle


@pytest_asyncio.fixture
async def make_client(srv: ServerHandle) -> AsyncIterator[MakeClient]:
    """``make_client("alice")`` (user token) or ``make_client()`` (server token); closed at the end."""
    clients: list[Client] = []

    def make(user_id: str | None = None, **options: Any) -> Client:
        token = srv.user_token(user_id) if user_id else srv.server_token()
        client = Client(srv.base_url, srv.api_key, token, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def next_event(sub: Subscription, within: float = 10.0) -> Event:
    """The next event of ``sub``; fails the test (instead of hanging) when none comes."""
    return await asyncio.wait_for(sub.get(), within)
