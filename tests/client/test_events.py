"""The one WebSocket of a client against a real server: sharing, signaling, restart mid-ring."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from appliance.client import Backoff, Client, Event, MemberRequest
from appliance.clock import ManualClock
from appliance.server.lifecycle.services import services
from tests.client.conftest import USERS, MakeClient, next_event
from tests.support.poll import until
from tests.support.server import ServerHandle, running_server

DOOR_ADMIN = MemberRequest(user_id="door", role="admin")


class FixedRandom:
    def random(self) -> float:
        return 1.0


def connections_of(srv: ServerHandle, user_id: str) -> int:
    hub = services(srv.ctx).hub
    return sum(1 for conn in hub.connections.values() if conn.user_id == user_id)


def drain(sub: Any) -> list[Event]:
    events = []
    while not sub._queue.empty():
        item = sub._queue.get_nowait()
        if item is not None:
            events.append(item)
    return events


async def test_two_consumers_share_one_connection(
    srv: ServerHandle, make_client: MakeClient
) -> None:
    alice = make_client("alice")
    state_machine = alice.events({"call.ring"})
    media = alice.events({"call.ring"})
    seen_by_callback: list[str] = []
    alice.on("call.ring", lambda event: seen_by_callback.append(event.cid or ""))
    await alice.connect()
    await alice.connect()
    await make_client("door").call("default", "door-1").create(member_ids=["alice"], ring=True)
    first = await next_event(state_machine)
    second = await next_event(media)
    assert first is second
    assert first.cid == "default:door-1"
    assert seen_by_callback == ["default:door-1"]
    assert connections_of(srv, "alice") == 1
    assert alice.connection.connects == 1


async def test_call_events_only_see_their_call(make_client: MakeClient) -> None:
    alice = make_client("alice")
    one = alice.call("default", "one").events({"call.ring"})
    await alice.connect()
    door = make_client("door")
    await door.call("default", "two").create(member_ids=["alice"], ring=True)
    await door.call("default", "one").create(member_ids=["alice"], ring=True)
    assert (await next_event(one)).cid == "default:one"


async def test_signal_reaches_the_addressed_participant(make_client: MakeClient) -> None:
    door, alice = make_client("door"), make_client("alice")
    door_call = door.call("default", "door-1")
    await door_call.create(member_ids=["alice"], members=[DOOR_ADMIN])
    door_join = await door_call.join()
    door_signals = door.events({"call.signal"})
    alice_signals = alice.events({"call.signal"})
    alice_join = await alice.call("default", "door-1").join()
    assert door_join.session_id in {p.session_id for p in alice_join.participants}
    # The newcomer offers; the one already there answers.
    await alice.call("default", "door-1").send_signal(
        door_join.session_id, {"kind": "offer", "sdp": "v=0 fake"}
    )
    offer = await next_event(door_signals)
    assert (offer.from_, offer.signal) == (
        alice_join.session_id,
        {"kind": "offer", "sdp": "v=0 fake"},
    )
    await door.send_signal(
        "default:door-1", alice_join.session_id, {"kind": "answer", "sdp": "v=0 back"}
    )
    answer = await next_event(alice_signals)
    assert (answer.from_, answer.signal) == (
        door_join.session_id,
        {"kind": "answer", "sdp": "v=0 back"},
    )
    assert answer.cid == "default:door-1"
    assert drain(door_signals) == [] and drain(alice_signals) == []


@pytest.mark.parametrize(
    "crash", [False, pytest.param(True, marks=pytest.mark.e2e, id="kill-9")], ids=["restart", None]
)
async def test_restart_mid_ring_delivers_each_ring_exactly_once(
    tmp_path: Path, crash: bool
) -> None:
    async with running_server(tmp_path, users=USERS, subprocess=crash) as srv:
        clock = ManualClock()
        device = Client(
            srv.base_url,
            srv.api_key,
            srv.user_token("alice"),
            clock=clock,
            backoff=Backoff(base=1.0, cap=1.0, random=FixedRandom()),
        )
        caller = Client(srv.base_url, srv.api_key, srv.user_token("door"))
        rings = device.events({"call.ring"})
        outcomes = device.events({"call.accepted", "call.missed", "call.ended"})
        link = device.events({"connection.ok", "connection.lost"})
        try:
            await device.connect()
            assert (await next_event(link)).type == "connection.ok"
            await until(lambda: device.resync.passes == 1)

            # Ringing when the server goes away: delivered once, live.
            await caller.call("default", "door-1").create(
                member_ids=["alice", "bob"], members=[DOOR_ADMIN], ring=True
            )
            assert (await next_event(rings)).cid == "default:door-1"
            # Answered elsewhere while the device is away.
            await caller.call("default", "door-2").create(
                member_ids=["alice", "bob"], members=[DOOR_ADMIN], ring=True
            )
            assert (await next_event(rings)).cid == "default:door-2"

            if crash:
                await srv.kill()
                await srv.start()
            else:
                await srv.restart()
            assert (await next_event(link)).type == "connection.lost"
            # The server is back; the device waits on its (manual) backoff clock meanwhile.
            await caller.call("default", "never-seen").create(member_ids=["alice"], ring=True)
            await (
                Client(srv.base_url, srv.api_key, srv.user_token("bob"))
                .call("default", "door-2")
                .accept()
            )
            assert rings._queue.empty()

            clock.advance(1.0)
            assert (await next_event(link)).type == "connection.ok"
            await until(lambda: device.resync.passes == 2)
            new_ring = await next_event(rings)
            assert new_ring.cid == "default:never-seen"
            assert new_ring.user is not None and new_ring.user.id == "door"
            accepted = await next_event(outcomes)
            assert (accepted.type, accepted.cid) == ("call.accepted", "default:door-2")
            assert accepted.user is not None and accepted.user.id == "bob"
            assert accepted.resynced

            # Nothing replayed: another pass finds nothing new, and no ring is queued.
            assert await device.resync.run() == 0
            assert drain(rings) == []
            assert device.connection.connects == 2
        finally:
            await caller.aclose()
            await device.aclose()


async def test_joined_participant_is_reattached_after_a_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path, users=USERS) as srv:
        clock = ManualClock()
        door = Client(
            srv.base_url,
            srv.api_key,
            srv.user_token("door"),
            clock=clock,
            backoff=Backoff(base=1.0, cap=1.0, random=FixedRandom()),
        )
        alice = Client(srv.base_url, srv.api_key, srv.user_token("alice"))
        try:
            call = door.call("default", "door-1")
            await call.create(member_ids=["alice"], members=[DOOR_ADMIN])
            joined = await call.join()
            link = door.events({"connection.lost", "connection.ok", "participant.attached"})
            signals = door.events({"call.signal"})
            await srv.restart()
            assert (await next_event(link)).type == "connection.lost"
            clock.advance(1.0)
            assert (await next_event(link)).type == "connection.ok"
            attached = await next_event(link)
            assert (attached.type, attached.session_id) == (
                "participant.attached",
                joined.session_id,
            )
            assert attached.connection_id == door.connection.connection_id

            alice_join = await alice.call("default", "door-1").join()
            assert joined.session_id in {p.session_id for p in alice_join.participants}
            await alice.send_signal(
                "default:door-1", joined.session_id, {"kind": "offer", "sdp": "x"}
            )
            offer = await next_event(signals)
            assert offer.from_ == alice_join.session_id
        finally:
            await alice.aclose()
            await door.aclose()


async def test_participant_gone_while_away_is_not_reattached_and_resync_says_so(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, users=USERS, ws_grace_seconds=0.0) as srv:
        clock = ManualClock()
        door = Client(
            srv.base_url,
            srv.api_key,
            srv.user_token("door"),
            clock=clock,
            backoff=Backoff(base=1.0, cap=1.0, random=FixedRandom()),
        )
        try:
            call = door.call("default", "door-1")
            await call.create(member_ids=["alice"], members=[DOOR_ADMIN])
            await call.join()
            events = door.events({"connection.ok", "call.ended", "error"})
            await srv.restart()
            await until(lambda: not door.connection.connected)
            # No grace: the server ends the session of its only, disconnected participant.
            async with Client(srv.base_url, srv.api_key, srv.server_token()) as admin:
                for _ in range(200):
                    if (await admin.call("default", "door-1").get()).call.ended_at:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the server did not end the abandoned session")
            clock.advance(1.0)
            assert (await next_event(events)).type == "connection.ok"
            refusal = await next_event(events)
            assert refusal.type == "error"
            ended = await next_event(events)
            assert (ended.type, ended.cid, ended.resynced) == ("call.ended", "default:door-1", True)
            assert call.session_id is None
        finally:
            await door.aclose()


async def test_ring_that_times_out_while_away_is_reported_not_replayed(tmp_path: Path) -> None:
    server_clock = ManualClock()
    async with running_server(tmp_path, users=USERS, clock=server_clock) as srv:
        clock = ManualClock()
        device = Client(
            srv.base_url,
            srv.api_key,
            srv.user_token("alice"),
            clock=clock,
            backoff=Backoff(base=1.0, cap=1.0, random=FixedRandom()),
        )
        caller = Client(srv.base_url, srv.api_key, srv.user_token("door"))
        rings = device.events({"call.ring"})
        outcomes = device.events({"call.missed", "call.ended"})
        link = device.events({"connection.ok", "connection.lost"})
        try:
            await device.connect()
            await until(lambda: device.resync.passes == 1)
            await caller.call("default", "door-1").create(
                member_ids=["alice"],
                members=[DOOR_ADMIN],
                settings={
                    "ring": {"incoming_call_timeout_ms": 5000, "auto_cancel_timeout_ms": 8000}
                },
                ring=True,
            )
            assert (await next_event(rings)).cid == "default:door-1"
            await srv.restart()
            assert (await next_event(link)).type == "connection.ok"
            assert (await next_event(link)).type == "connection.lost"
            server_clock.advance(9.0)
            for _ in range(200):
                if (await caller.call("default", "door-1").get()).call.ended_at:
                    break
                await asyncio.sleep(0.05)
            clock.advance(1.0)
            assert (await next_event(link)).type == "connection.ok"
            missed = await next_event(outcomes)
            assert (missed.type, missed.user.id if missed.user else None) == (
                "call.missed",
                "alice",
            )
            ended = await next_event(outcomes)
            assert (ended.type, ended.reason, ended.resynced) == ("call.ended", "timeout", True)
            assert "default:door-1" not in device.snapshots  # nothing left to resync there
            await until(lambda: device.resync.passes == 2)
            assert drain(rings) == [] and drain(outcomes) == []
        finally:
            await caller.aclose()
            await device.aclose()
