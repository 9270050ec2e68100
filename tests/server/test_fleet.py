"""Three replicas on PostgreSQL behind HAProxy (``deploy/haproxy.cfg``), devices that know only the
proxy: a replica killed mid-ring and a rolling restart lose no ring and no missed-call event, and
deliver none twice. Each device is a real ``appliance.client.Client`` (jittered backoff, ring
ledger, resync); what it counts is what its application would see.

The figures (reconnect p99 at 1,000 devices, 10,000 idle devices) are bench/fleet.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.fleet import Devices, Fleet, RingKey, ring_body, start_ring
from tests.support.pgcluster import PostgresCluster
from tests.support.pushservice import until

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

DEVICES = 48
GROUP = 8  # callees per ring
USERS = [{"id": "caller"}] + [{"id": f"d{i:02d}"} for i in range(DEVICES)]


@pytest_asyncio.fixture
async def fleet(tmp_path: Path, postgres: PostgresCluster) -> AsyncIterator[Fleet]:
    url = postgres.create_database("f" + uuid.uuid4().hex[:10])
    async with Fleet(tmp_path, url, users=USERS) as running:
        yield running


async def ring(fleet: Fleet, callees: list[str], callee_ms: int) -> RingKey:
    """Ring ``callees`` from ``caller`` through the proxy; the ring's (cid, session id)."""
    async with fleet.http() as http:
        return await start_ring(http, ring_body(callees, callee_ms))


def groups(devices: Devices, n: int) -> list[list[str]]:
    ids = [d.user_id for d in devices.all]
    return [ids[(i * GROUP) % len(ids) :][:GROUP] for i in range(n)]


def seen_by_all(devices: Devices, rings: dict[RingKey, list[str]], what: str) -> bool:
    return all(getattr(devices.by_user[u], what)[k] for k, cs in rings.items() for u in cs)


def missing(devices: Devices, rings: dict[RingKey, list[str]]) -> list[str]:
    """The (ring, callee) pairs without their ring or their missed call, for a failure message."""
    out = []
    for key, callees in rings.items():
        for u in callees:
            d = devices.by_user[u]
            if not d.rings[key] or not d.missed[key]:
                out.append(
                    f"{key} {u}: rings {d.rings[key]} missed {d.missed[key]} connects "
                    f"{len(d.connected_at)}\n{devices.story(u, key[0])}"
                )
    return out


def delivered(devices: Devices, rings: dict[RingKey, list[str]], what: str) -> dict[int, int]:
    """How many (ring, callee) pairs saw the event 0, 1, 2… times."""
    out: dict[int, int] = {}
    for key, callees in rings.items():
        for u in callees:
            count = getattr(devices.by_user[u], what)[key]
            out[count] = out.get(count, 0) + 1
    return out


async def each_once(devices: Devices, rings: dict[RingKey, list[str]]) -> None:
    """Every callee of every ring saw it ring once and its deadline (call.missed) once."""
    with contextlib.suppress(AssertionError):  # until() times out so
        await until(lambda: seen_by_all(devices, rings, "missed"), within=40)
    assert not missing(devices, rings)
    pairs = len(rings) * GROUP
    assert ("rings", delivered(devices, rings, "rings")) == ("rings", {1: pairs})
    assert ("missed", delivered(devices, rings, "missed")) == ("missed", {1: pairs})


async def test_kill_9_of_a_replica_mid_ring(fleet: Fleet) -> None:
    devices = await Devices.connect(fleet, [f"d{i:02d}" for i in range(DEVICES)])
    try:
        rings: dict[RingKey, list[str]] = {}
        for callees in groups(devices, 3):  # rung before the kill, delivered live
            rings[await ring(fleet, callees, 6_000)] = callees
        await until(lambda: seen_by_all(devices, rings, "rings"), within=20)
        killed_at = time.monotonic()
        await fleet.replicas[0].kill()
        # Rung while a third of the devices are away: they get it on reconnecting.
        for callees in groups(devices, 6)[3:]:
            rings[await ring(fleet, callees, 6_000)] = callees
        await until(lambda: devices.all_back(killed_at), within=30)
        times = devices.reconnect_times(killed_at)
        # The proxy had spread the devices: the kill cut some of them off, not all; every
        # one cut off is connected again through the proxy.
        cut = len(devices.cut_off(killed_at))
        assert 0 < cut < DEVICES, cut
        assert len(times) == cut
        assert all(d.connected for d in devices.all)
        await each_once(devices, rings)
    finally:
        await devices.aclose()


async def test_rolling_restart_loses_nothing(fleet: Fleet) -> None:
    devices = await Devices.connect(fleet, [f"d{i:02d}" for i in range(DEVICES)])
    rings: dict[RingKey, list[str]] = {}
    try:
        restarting = asyncio.create_task(fleet.rolling_restart())
        n = 0
        while not restarting.done():  # rings keep coming while the replicas go round
            callees = groups(devices, n + 1)[n]
            rings[await ring(fleet, callees, 4_000)] = callees
            n += 1
            await asyncio.sleep(0.3)
        await restarting
        assert n >= 3, n
        with contextlib.suppress(AssertionError):  # until() times out so
            await until(lambda: seen_by_all(devices, rings, "missed"), within=40)
        # Every ring reached every callee exactly once, and every deadline's call.missed too
        # (live, or from the resync after a reconnect), none twice.
        pairs = len(rings) * GROUP
        assert not missing(devices, rings)
        assert ("rings", delivered(devices, rings, "rings")) == ("rings", {1: pairs})
        assert ("missed", delivered(devices, rings, "missed")) == ("missed", {1: pairs})
    finally:
        await devices.aclose()
