"""Server-authoritative ringing: every path of the ringing rules in docs/architecture.md, timers on a ManualClock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from appliance.clock import ManualClock
from tests.server.wsclient import QUIET, WsClient, call_post, create_call, join
from tests.support.server import ServerHandle, running_server

USERS = ["alice", "bob", "carol", "dave"]
CID = "default:door-1"
# Per-callee timeout 10 s, whole attempt 30 s (tests that need other values override them).
RING = {"ring": {"incoming_call_timeout_ms": 10_000, "auto_cancel_timeout_ms": 30_000}}


@pytest_asyncio.fixture
async def srv(tmp_path) -> AsyncIterator[ServerHandle]:
    async with running_server(
        tmp_path, users=USERS, clock=ManualClock(), ws_health_seconds=QUIET
    ) as handle:
        await create_call(handle, CID, ["alice", "bob", "carol"], settings_override=RING)
        yield handle


async def _get(srv: ServerHandle, cid: str = CID) -> dict:
    ctype, cid_id = cid.split(":")
    async with srv.client() as http:
        r = await http.get(f"/api/v2/video/call/{ctype}/{cid_id}")
    assert r.status_code == 200, r.text
    return r.json()["call"]


def _advance(srv: ServerHandle, seconds: float) -> None:
    clock = srv.clock
    assert isinstance(clock, ManualClock)
    clock.advance(seconds)


async def _ring(srv: ServerHandle, caller: str = "alice", **body: object) -> list[str]:
    r = await call_post(srv, caller, CID, "ring", body)
    assert r.status_code == 200, r.text
    return r.json()["members_ids"]


async def test_ring_reaches_every_connection_of_every_ringed_user(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    bob_phone = await WsClient.open(srv, "bob")
    bob_laptop = await WsClient.open(srv, "bob")
    carol = await WsClient.open(srv, "carol")
    dave = await WsClient.open(srv, "dave")
    assert await _ring(srv, video=True) == ["bob", "carol"]
    rings = [await c.next("call.ring") for c in (bob_phone, bob_laptop, carol)]
    for ring in rings:
        assert ring["call_cid"] == CID
        assert ring["user"]["id"] == "alice"
        assert ring["video"] is True
        assert ring["created_at"] == int(srv.clock.time() * 1e9)
        assert {m["user_id"] for m in ring["members"]} == {"bob", "carol"}
        assert ring["call"]["cid"] == CID
        assert ring["session_id"] == ring["call"]["current_session_id"]
        assert sorted(ring["call"]["session"]["ringing"]) == ["bob", "carol"]
        assert ring["call"]["session"]["rung_by"] == "alice"
    assert len({r["session_id"] for r in rings}) == 1
    assert "call.ring" not in await alice.types()
    assert "call.ring" not in await dave.types()


async def test_accept_on_one_connection_stops_every_other(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    bob_phone = await WsClient.open(srv, "bob")
    bob_laptop = await WsClient.open(srv, "bob")
    carol = await WsClient.open(srv, "carol")
    await _ring(srv)
    for c in (bob_phone, bob_laptop, carol):
        await c.next("call.ring")
    r = await call_post(srv, "bob", CID, "accept")
    assert r.status_code == 200, r.text
    for c in (alice, bob_phone, bob_laptop, carol):
        accepted = await c.next("call.accepted")
        assert accepted["user"]["id"] == "bob"
        assert accepted["call"]["session"]["ringing"] == []
        assert "bob" in accepted["call"]["session"]["accepted_by"]
    # Carol stopped ringing for good: no missed call, no end, when the timers pass.
    _advance(srv, 31)
    assert await carol.settle() == []
    call = await _get(srv)
    assert call["ended_at"] is None
    assert call["session"]["missed_by"] == {}
    assert list(call["session"]["accepted_by"]) == ["bob"]


async def test_reject_by_everyone_ends_the_call(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    await _ring(srv)
    r = await call_post(srv, "bob", CID, "reject", {"reason": "decline"})
    assert r.status_code == 200, r.text
    rejected = await alice.next("call.rejected")
    assert rejected["user"]["id"] == "bob" and rejected["reason"] == "decline"
    assert "call.ended" not in await alice.types()
    r = await call_post(srv, "carol", CID, "reject", {"reason": "busy"})
    assert r.status_code == 200, r.text
    rejected = await alice.next("call.rejected")
    assert rejected["user"]["id"] == "carol" and rejected["reason"] == "busy"
    ended = await alice.next("call.ended")
    assert ended["reason"] == "rejected"
    assert ended["call"]["ended_at"] is not None
    assert set(ended["call"]["session"]["rejected_by"]) == {"bob", "carol"}


async def test_caller_cancels_with_reject(srv: ServerHandle) -> None:
    bob = await WsClient.open(srv, "bob")
    await _ring(srv)
    await bob.next("call.ring")
    r = await call_post(srv, "alice", CID, "reject", {"reason": "cancel"})
    assert r.status_code == 200, r.text
    rejected = await bob.next("call.rejected")
    assert rejected["user"]["id"] == "alice" and rejected["reason"] == "cancel"
    ended = await bob.next("call.ended")
    assert ended["reason"] == "cancelled"
    assert ended["call"]["session"]["ringing"] == []


async def test_caller_leaving_before_an_accept_cancels(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    bob = await WsClient.open(srv, "bob")
    joined = await join(srv, alice, CID, ring=True)
    await bob.next("call.ring")
    r = await call_post(srv, "alice", CID, "leave", {"session_id": joined["session_id"]})
    assert r.status_code == 200, r.text
    assert r.json()["left"] == [joined["session_id"]]
    types = [
        f["type"] for f in [await bob.next("call.session_participant_left"), *await bob.settle()]
    ]
    assert types[:2] == ["call.session_participant_left", "call.rejected"]
    assert "call.ended" in types
    call = await _get(srv)
    assert call["ended_at"] is not None
    assert call["session"]["end_reason"] == "cancelled"


async def test_caller_websocket_drop_cancels_after_the_grace_period(srv: ServerHandle) -> None:
    cid = "default:door-2"
    slow = {"ring": {"incoming_call_timeout_ms": 60_000, "auto_cancel_timeout_ms": 60_000}}
    await create_call(srv, cid, ["alice", "bob"], settings_override=slow)
    alice = await WsClient.open(srv, "alice")
    bob = await WsClient.open(srv, "bob")
    await join(srv, alice, cid, ring=True)
    await bob.next("call.ring")
    await alice.close_and_wait(srv)
    _advance(srv, 5)  # within the 20 s grace: still ringing
    assert "call.rejected" not in await bob.types()
    _advance(srv, 16)  # grace over, ring timeouts (60 s) not reached
    rejected = await bob.next("call.rejected")
    assert rejected["user"]["id"] == "alice" and rejected["reason"] == "cancel"
    assert (await bob.next("call.ended"))["reason"] == "cancelled"


async def test_per_callee_timeout_is_a_missed_call(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    carol = await WsClient.open(srv, "carol")
    await _ring(srv, members_ids=["bob"])
    _advance(srv, 5)
    await _ring(srv, members_ids=["carol"])
    await carol.next("call.ring")
    _advance(srv, 5.5)  # bob's 10 s are over, carol's are not
    missed = await alice.next("call.missed")
    assert missed["user"]["id"] == "bob"
    assert missed["caller"]["id"] == "alice"
    assert "bob" in missed["call"]["session"]["missed_by"]
    assert missed["call"]["session"]["ringing"] == ["carol"]
    assert "call.ended" not in await alice.types()
    r = await call_post(srv, "carol", CID, "accept")
    assert r.status_code == 200, r.text
    assert (await alice.next("call.accepted"))["user"]["id"] == "carol"


async def test_everyone_missing_ends_the_call_with_timeout(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    await _ring(srv)
    _advance(srv, 10.5)
    missed = {(await alice.next("call.missed"))["user"]["id"] for _ in range(2)}
    assert missed == {"bob", "carol"}
    ended = await alice.next("call.ended")
    assert ended["reason"] == "timeout"


async def test_auto_cancel_misses_everyone_still_ringing_then_ends(tmp_path) -> None:
    ring = {"ring": {"incoming_call_timeout_ms": 60_000, "auto_cancel_timeout_ms": 20_000}}
    async with running_server(
        tmp_path, users=USERS, clock=ManualClock(), ws_health_seconds=QUIET
    ) as srv:
        await create_call(srv, CID, ["alice", "bob", "carol", "dave"], settings_override=ring)
        alice = await WsClient.open(srv, "alice")
        await _ring(srv)
        r = await call_post(srv, "dave", CID, "reject", {"reason": "decline"})
        assert r.status_code == 200
        _advance(srv, 19)
        assert "call.missed" not in await alice.types()
        _advance(srv, 1.5)
        frames = [await alice.next("call.missed"), await alice.next("call.missed")]
        assert {f["user"]["id"] for f in frames} == {"bob", "carol"}
        ended = await alice.next("call.ended")
        assert ended["reason"] == "timeout"
        session = ended["call"]["session"]
        assert set(session["missed_by"]) == {"bob", "carol"}
        assert set(session["rejected_by"]) == {"dave"}


async def test_restart_during_ringing_keeps_the_deadlines(srv: ServerHandle) -> None:
    await _ring(srv)
    first = await _get(srv)
    await srv.restart()
    # A connection opened after the restart rings again (the ring is still on) ...
    bob = await WsClient.open(srv, "bob")
    ring = await bob.next("call.ring")
    assert ring["session_id"] == first["current_session_id"]
    assert ring["user"]["id"] == "alice"
    # ... and the stored deadlines fire on the new server.
    _advance(srv, 10.5)
    assert (await bob.next("call.missed"))["user"]["id"] == "bob"
    assert (await bob.next("call.ended"))["reason"] == "timeout"


async def test_each_ring_after_an_end_starts_a_new_session(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    await _ring(srv)
    r = await call_post(srv, "alice", CID, "reject", {"reason": "cancel"})
    assert r.status_code == 200
    await alice.next("call.ended")
    old = await _get(srv)
    assert old["ended_at"] is not None
    await _ring(srv)
    started = await alice.next("call.session_started")
    new = await _get(srv)
    assert new["ended_at"] is None
    assert new["current_session_id"] == started["session_id"] != old["current_session_id"]
    assert sorted(new["session"]["ringing"]) == ["bob", "carol"]
    assert new["session"]["rejected_by"] == {}


async def test_ring_with_create_goes_through_the_ring_engine(srv: ServerHandle) -> None:
    bob = await WsClient.open(srv, "bob")
    async with srv.client("carol") as http:
        r = await http.post(
            "/api/v2/video/call/default/new-1",
            json={"ring": True, "data": {"members": [{"user_id": "bob"}, {"user_id": "carol"}]}},
        )
    assert r.status_code in (200, 201), r.text
    ring = await bob.next("call.ring")
    assert ring["call_cid"] == "default:new-1"
    assert ring["user"]["id"] == "carol"


async def test_ring_mistakes_are_4xx(srv: ServerHandle) -> None:
    r = await call_post(srv, "alice", CID, "ring", {"members_ids": ["dave"]})
    assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "members_ids"
    r = await call_post(srv, "alice", CID, "ring", {"members_ids": ["alice"]})
    assert r.status_code == 400 and "nobody to ring" in r.json()["message"]
    r = await call_post(srv, "bob", CID, "accept")
    assert r.status_code == 409  # nothing live to accept
    r = await call_post(srv, None, CID, "accept")
    assert r.status_code == 403  # accept needs a user token
    await _ring(srv)
    r = await call_post(srv, "bob", CID, "reject", {"reason": "x" * 33})  # any text, bounded
    assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "reason"
    r = await call_post(srv, "bob", CID, "reject", {"reason": "cancel"})
    assert r.status_code == 400
    r = await call_post(srv, "dave", CID, "accept")
    assert r.status_code == 403  # not a member, default type is members-only for join
    r = await call_post(srv, "alice", "default:nope", "ring")
    assert r.status_code == 404


async def test_a_caller_who_is_not_a_member_hears_every_outcome(srv: ServerHandle) -> None:
    dave = await WsClient.open(srv, "dave")  # a door device ringing residents it is not one of
    async with srv.client("dave") as http:
        r = await http.post(
            "/api/v2/video/call/default/door-9",
            json={"ring": True, "data": {"members": [{"user_id": "bob"}]}},
        )
    assert r.status_code in (200, 201), r.text
    r = await call_post(srv, "bob", "default:door-9", "reject", {"reason": "busy"})
    assert r.status_code == 200, r.text
    rejected = await dave.next("call.rejected")
    assert rejected["user"]["id"] == "bob" and rejected["reason"] == "busy"
    assert (await dave.next("call.ended"))["reason"] == "rejected"


async def test_a_ringed_user_who_joins_has_answered(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    bob = await WsClient.open(srv, "bob")
    carol = await WsClient.open(srv, "carol")
    await join(srv, alice, CID, ring=True)
    await bob.next("call.ring")
    await join(srv, bob, CID)  # no accept first
    accepted = await carol.next("call.accepted")
    assert accepted["user"]["id"] == "bob"
    assert accepted["call"]["session"]["ringing"] == []
    _advance(srv, 31)  # past every ring deadline: nobody is missed, nothing ends
    assert [
        f["type"] for f in await carol.settle() if f["type"] in ("call.missed", "call.ended")
    ] == []
    assert (await _get(srv))["ended_at"] is None
