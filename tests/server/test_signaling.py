"""The signaling relay: addressee only, same live session only, ``from`` stamped by the server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from appliance.clock import ManualClock
from tests.server.wsclient import QUIET, WsClient, call_post, create_call, join
from tests.support.server import ServerHandle, running_server

USERS = ["alice", "bob", "carol", "dave"]
ROOM = "default:room"
OTHER = "default:other"


@pytest_asyncio.fixture
async def srv(tmp_path) -> AsyncIterator[ServerHandle]:
    async with running_server(
        tmp_path, users=USERS, clock=ManualClock(), ws_health_seconds=QUIET
    ) as handle:
        await create_call(handle, ROOM, ["alice", "bob", "carol", "dave"])
        await create_call(handle, OTHER, ["alice", "bob", "carol", "dave"])
        yield handle


def _signal(cid: str, to: str, kind: str = "offer", **extra: object) -> dict:
    return {"type": "signal", "call_cid": cid, "to": to, "signal": {"kind": kind, **extra}}


async def test_signal_reaches_the_addressee_only(srv: ServerHandle) -> None:
    alice, bob, carol = [await WsClient.open(srv, u) for u in ("alice", "bob", "carol")]
    bob_other_device = await WsClient.open(srv, "bob")
    ja = await join(srv, alice, ROOM)
    jb = await join(srv, bob, ROOM)
    jc = await join(srv, carol, ROOM)
    for c in (alice, bob, carol, bob_other_device):
        await c.settle()
    sdp = "v=0\r\n" + "a=x\r\n" * 2000  # a real offer's size, and then some
    await carol.send(_signal(ROOM, jb["session_id"], sdp=sdp, generation=0))
    got = await bob.next("call.signal")
    assert got == {
        "type": "call.signal",
        "call_cid": ROOM,
        "session_id": jc["call_session_id"],
        "from": jc["session_id"],
        "from_user_id": "carol",
        "to": jb["session_id"],
        "signal": {"kind": "offer", "sdp": sdp, "generation": 0},
        "created_at": got["created_at"],
    }
    assert await alice.settle() == []
    assert await bob_other_device.settle() == []  # the participant's connection, not the user's
    assert await carol.settle() == []
    for kind in ("answer", "candidate", "restart"):
        await bob.send(_signal(ROOM, ja["session_id"], kind, candidate={"candidate": "c"}))
        assert (await alice.next("call.signal"))["signal"]["kind"] == kind
    assert await carol.settle() == []


async def test_from_cannot_be_forged(srv: ServerHandle) -> None:
    alice, bob = [await WsClient.open(srv, u) for u in ("alice", "bob")]
    ja = await join(srv, alice, ROOM)
    jb = await join(srv, bob, ROOM)
    frame = _signal(ROOM, jb["session_id"])
    frame["from"] = "somebody-else"
    await alice.send(frame)
    assert (await bob.next("call.signal"))["from"] == ja["session_id"]


async def test_non_participant_cannot_signal_or_be_signalled(srv: ServerHandle) -> None:
    alice, bob, dave = [await WsClient.open(srv, u) for u in ("alice", "bob", "dave")]
    ja = await join(srv, alice, ROOM)
    jb = await join(srv, bob, ROOM)
    # dave is a member and connected, but has not joined
    await dave.send(_signal(ROOM, ja["session_id"]) | {"id": "d1"})
    err = await dave.next("error")
    assert err["StatusCode"] == 409 and err["field"] == "call_cid" and err["reply_to"] == "d1"
    assert err["frame_type"] == "signal"
    await alice.send(_signal(ROOM, dave.connection_id))
    err = await alice.next("error")
    assert err["StatusCode"] == 404 and err["field"] == "to"
    # bob joined on one connection; his second connection is not the participant
    bob2 = await WsClient.open(srv, "bob")
    await bob2.send(_signal(ROOM, ja["session_id"]))
    assert (await bob2.next("error"))["StatusCode"] == 409
    assert await alice.settle() == []
    assert [f for f in await bob.settle() if f["type"] == "call.signal"] == []
    assert jb["session_id"]


async def test_signal_across_calls_is_refused(srv: ServerHandle) -> None:
    alice, bob = [await WsClient.open(srv, u) for u in ("alice", "bob")]
    await join(srv, alice, ROOM)
    jb_other = await join(srv, bob, OTHER)
    await alice.send(_signal(ROOM, jb_other["session_id"]))
    err = await alice.next("error")
    assert err["StatusCode"] == 404 and err["field"] == "to"
    await alice.send(_signal(OTHER, jb_other["session_id"]))
    err = await alice.next("error")
    assert err["StatusCode"] == 409 and err["field"] == "call_cid"
    assert [f for f in await bob.settle() if f["type"] == "call.signal"] == []


async def test_signal_across_sessions_is_refused(srv: ServerHandle) -> None:
    alice, bob = [await WsClient.open(srv, u) for u in ("alice", "bob")]
    await join(srv, alice, ROOM)
    old_bob = await join(srv, bob, ROOM)
    r = await call_post(srv, "alice", ROOM, "mark_ended")
    assert r.status_code == 200
    await alice.send(_signal(ROOM, old_bob["session_id"]))
    err = await alice.next("error")
    assert err["StatusCode"] == 404 and "no live session" in err["message"]
    await join(srv, alice, ROOM)  # a new session
    await alice.send(_signal(ROOM, old_bob["session_id"]))
    err = await alice.next("error")
    assert err["StatusCode"] == 404 and err["field"] == "to"
    assert [f for f in await bob.settle() if f["type"] == "call.signal"] == []


async def test_malformed_signals_and_absent_addressees(srv: ServerHandle) -> None:
    alice, bob = [await WsClient.open(srv, u) for u in ("alice", "bob")]
    ja = await join(srv, alice, ROOM)
    jb = await join(srv, bob, ROOM)
    cases = [
        ({"type": "signal", "to": jb["session_id"], "signal": {"kind": "offer"}}, "call_cid"),
        ({"type": "signal", "call_cid": ROOM, "signal": {"kind": "offer"}}, "to"),
        ({"type": "signal", "call_cid": ROOM, "to": jb["session_id"], "signal": "x"}, "signal"),
        (_signal(ROOM, jb["session_id"], "bye"), "signal.kind"),
        (_signal(ROOM, ja["session_id"]), "to"),
    ]
    for frame, field in cases:
        await alice.send(frame)
        err = await alice.next("error")
        assert err["field"] == field, (frame, err)
        assert err["StatusCode"] == 400
    await bob.close_and_wait(srv)  # bob is in his grace period: not reachable right now
    await alice.send(_signal(ROOM, jb["session_id"]))
    err = await alice.next("error")
    assert err["StatusCode"] == 409 and "not connected" in err["message"]
