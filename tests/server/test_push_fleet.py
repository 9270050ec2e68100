"""Web Push with two server replicas sharing one PostgreSQL database: one VAPID key for both,
and each push sent once, whichever replica decided it and however many tried."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio

from appliance.clock import ManualClock
from appliance.server.lifecycle.services import services
from appliance.server.outbound.pushsender import PushSender
from appliance.server.outbound.ringpush import RingPush
from tests.server.test_push import RING, USERS, rings, stops
from tests.server.test_push_devices import device_body, race_for_the_key
from tests.server.wsclient import QUIET, call_post, create_call
from tests.support.pgcluster import PostgresCluster
from tests.support.pushservice import PushService
from tests.support.server import ServerHandle, running_server

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

CID = "default:front"


@pytest_asyncio.fixture
async def fleet(
    tmp_path: Path, postgres: PostgresCluster
) -> AsyncIterator[tuple[ServerHandle, ServerHandle, PushService]]:
    url = postgres.create_database("p" + uuid.uuid4().hex[:10])
    async with PushService() as push, AsyncExitStack() as stack:
        common = {
            "users": USERS,
            "clock": ManualClock(),
            "database": url,
            "api_secret": "fleet-secret-of-at-least-32-bytes-long",
            "ws_health_seconds": QUIET,
            "push": {"allowed_hosts": [push.origin]},
        }
        a = await stack.enter_async_context(running_server(tmp_path / "a", **common))  # type: ignore[arg-type]
        b = await stack.enter_async_context(running_server(tmp_path / "b", **common))  # type: ignore[arg-type]
        await create_call(a, CID, ["door-1", "alice", "bob"], by="door-1", settings_override=RING)
        yield a, b, push


async def test_replicas_racing_make_one_key(postgres: PostgresCluster) -> None:
    name = "k" + uuid.uuid4().hex[:10]
    postgres.create_database(name)
    assert len(await race_for_the_key(postgres.sqlalchemy_url(name))) == 1


def sender(srv: ServerHandle) -> PushSender:
    found = services(srv.ctx).push
    assert isinstance(found, PushSender)
    return found


async def quiet(*servers: ServerHandle) -> None:
    for srv in servers:
        await sender(srv).idle()


async def test_one_key_and_each_push_once(
    fleet: tuple[ServerHandle, ServerHandle, PushService],
) -> None:
    a, b, push = fleet
    keys = set()
    for srv in (a, b):
        async with srv.client("alice") as http:
            keys.add((await http.get("/api/v2/app")).json()["app"]["web_push"]["vapid_public_key"])
    assert len(keys) == 1
    push.vapid_public_key = keys.pop()
    for user, srv in (("alice", a), ("bob", b)):
        sub, _ = push.make_subscription(user)
        async with srv.client(user) as http:
            assert (await http.post("/api/v2/devices", json=device_body(sub))).status_code == 201
    r = await call_post(a, "door-1", CID, "ring")
    assert r.status_code == 200, r.text
    await push.wait_count(rings, 2)
    r = await call_post(b, "bob", CID, "accept")  # decided on the other replica
    assert r.status_code == 200, r.text
    await push.wait_count(stops, 2)
    await quiet(a, b)
    assert sorted((m.user, m.payload["type"]) for m in push.received) == [
        ("alice", "call.ring"),
        ("alice", "call.ring_stopped"),
        ("bob", "call.ring"),
        ("bob", "call.ring_stopped"),
    ]
    # The same decision handed to both replicas (what the claim guards): sent once.
    session_id = push.received[0].payload["session_id"]
    note = RingPush("stopped", CID, session_id, 42, ("alice", "bob"), reason="ended")
    sender(a).submit([note])
    sender(b).submit([note])
    await push.wait_count(lambda m: stops(m) and m.payload["reason"] == "ended", 2)
    await quiet(a, b)
    assert len(push.received) == 6
    assert sender(a).skipped + sender(b).skipped == 2  # one replica lost both claims


async def test_a_missed_ring_is_pushed_once_by_two_schedulers(
    fleet: tuple[ServerHandle, ServerHandle, PushService],
) -> None:
    a, b, push = fleet
    sub, _ = push.make_subscription("alice")
    async with a.client("alice") as http:
        assert (await http.post("/api/v2/devices", json=device_body(sub))).status_code == 201
    r = await call_post(b, "door-1", CID, "ring", {"members_ids": ["alice"]})
    assert r.status_code == 200, r.text
    await push.wait_for(rings)
    clock = a.clock
    assert isinstance(clock, ManualClock) and clock is b.clock
    clock.advance(11)  # both replicas' schedulers wake for the same deadline
    missed = await push.wait_for(stops)
    assert missed.payload["reason"] == "missed"
    await quiet(a, b)
    assert [m.payload["type"] for m in push.received] == ["call.ring", "call.ring_stopped"]
