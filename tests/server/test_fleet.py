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

from appliance.client.backoff import Backoff
from tests.support.fleet import Devices, Fleet, RingKey, ring_body, start_ring
from tests.support.pgcluster import PostgresCluster
from tests.support.pushservice import until

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

DEVICES = 48
GROUP = 8  # callees per ring
USERS = [{"id": "caller"}] + [{"id": f"d{i:02d}"} for i in range(DEVICES)]
DRAIN_S = 3.0
AWAY_S = 15.0  # a held-off device's first reconnect delay (the ring is over long before)


class HeldOff(Backoff):
    """The client's backoff, but the first attempt after a drop waits ``AWAY_S``: a device
    away for a whole ring (a phone on a train)."""

    def next_delay(self) -> float:
        if self.attempt == 0:
            self.attempt += 1
            return AWAY_S
        return super().next_delay()


@pytest_asyncio.fixture
async def fleet(tmp_path: Path, postgres: PostgresCluster) -> AsyncIterator[Fleet]:
    url = postgres.create_database("f" + uuid.uuid4().hex[:10])
    # A short drain (SIGTERM → sockets closed over 3 s): the tests wait it out each stop.
    async with Fleet(tmp_path, url, users=USERS, ws_drain_seconds=DRAIN_S) as running:
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


async def test_a_ring_missed_while_away_is_told_once_after_reconnect(fleet: Fleet) -> None:
    """A ring that began and ended while the device was away: after reconnecting it learns
    that it missed it (``call.missed``, once), and it never rang there."""
    devices = await Devices.connect(fleet, [f"d{i:02d}" for i in range(12)])
    try:
        for d in devices.all:
            d.client.connection.backoff = HeldOff()
        killed_at = time.monotonic()
        await fleet.replicas[0].kill()
        await until(lambda: bool(devices.cut_off(killed_at)), within=10)
        away = [d.user_id for d in devices.cut_off(killed_at)]
        here = next(d.user_id for d in devices.all if d.user_id not in away)
        key = await ring(fleet, [*away, here], 2_000)
        cid_type, cid_id = key[0].split(":", 1)

        async def missed_by() -> set[str]:
            async with fleet.http() as http:
                got = await http.get(f"/api/v2/video/call/{cid_type}/{cid_id}")
            return set(got.json()["call"]["session"]["missed_by"])

        deadline = time.monotonic() + 20
        while not set(away) <= await missed_by():
            assert time.monotonic() < deadline, "the ring's deadline never fired"
            await asyncio.sleep(0.2)
        # The whole ring happened while they were away (else this test proves nothing).
        assert not any(devices.by_user[u].connected for u in away), away
        await until(lambda: devices.all_back(killed_at), within=30)
        await until(lambda: all(devices.by_user[u].missed[key] for u in away), within=20)
        await asyncio.sleep(1.0)  # a second one would come now (live and resync both)
        for u in away:
            d = devices.by_user[u]
            assert (u, d.rings[key], d.missed[key]) == (u, 0, 1), devices.story(u, key[0])
        # The device that was there rang and missed it live, once each.
        d = devices.by_user[here]
        assert (d.rings[key], d.missed[key]) == (1, 1), devices.story(here, key[0])
    finally:
        await devices.aclose()


async def test_a_stopping_replica_drains_its_devices(fleet: Fleet) -> None:
    """SIGTERM: the replica stops taking connections at once (a device connecting meanwhile
    lands on another one and stays), and closes its own devices' sockets spread over
    ``ws_drain_seconds``, not all in the same instant (they would all queue at one replica)."""
    devices = await Devices.connect(fleet, [f"d{i:02d}" for i in range(30)])
    try:
        stopped_at = time.monotonic()
        stopping = asyncio.create_task(fleet.replicas[0].stop())
        await asyncio.sleep(0.5)
        late = await Devices.connect(fleet, ["d40"])
        devices.absorb(late)
        await stopping
        cut = devices.cut_off(stopped_at)
        assert len(cut) >= 4, len(cut)
        assert "d40" not in {d.user_id for d in cut}
        firsts = sorted(next(t for t in d.lost_at if t > stopped_at) for d in cut)
        # Evenly over 3 s: the first and the last close at least half of that apart.
        assert firsts[-1] - firsts[0] >= DRAIN_S / 2, [round(t - firsts[0], 2) for t in firsts]
        await until(lambda: devices.all_back(stopped_at), within=30)
        assert not devices.by_user["d40"].lost_at
    finally:
        await devices.aclose()
