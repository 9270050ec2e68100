"""Sessions and participants: join, leave, grace period, re-attach, limits, history."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy import select, update

from appliance.clock import ManualClock
from appliance.server.store.schema import call_sessions, participants
from tests.server.wsclient import QUIET, WsClient, call_post, create_call, join
from tests.support.server import ServerHandle, running_server

USERS = ["alice", "bob", "carol", "dave"]
CID = "default:room-1"
TURN_SECRET = "turn-shared-secret"
ICE = [
    {"urls": ["stun:stun.example.org:3478"]},
    {
        "urls": ["turn:turn.example.org:3478?transport=udp"],
        "secret": TURN_SECRET,
        "ttl_seconds": 600,
    },
]


@pytest_asyncio.fixture
async def srv(tmp_path) -> AsyncIterator[ServerHandle]:
    async with running_server(
        tmp_path, users=USERS, clock=ManualClock(), ice_servers=ICE, ws_health_seconds=QUIET
    ) as handle:
        await create_call(handle, CID, ["alice", "bob", "carol"])
        yield handle


def _advance(srv: ServerHandle, seconds: float) -> None:
    assert isinstance(srv.clock, ManualClock)
    srv.clock.advance(seconds)


async def _sessions(srv: ServerHandle) -> list[dict]:
    async with srv.ctx.store.connect() as db:
        rows = await db.execute(
            select(call_sessions)
            .where(call_sessions.c.call_cid == CID)
            .order_by(call_sessions.c.created_at)
        )
        return [dict(r) for r in rows.mappings()]


async def test_join_answers_participant_session_participants_and_ice(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    bob = await WsClient.open(srv, "bob")
    ja = await join(srv, alice, CID)
    assert ja["session_id"] == ja["user_session_id"]
    assert ja["participants"] == []
    assert ja["call"]["cid"] == CID
    assert ja["call_session_id"] == ja["call"]["current_session_id"]
    stun, turn = ja["ice_servers"]
    assert stun == {"urls": ["stun:stun.example.org:3478"], "username": "", "password": ""}
    expiry, user = turn["username"].split(":")
    assert user == "alice" and int(expiry) == int(srv.clock.time()) + 600
    digest = hmac.new(TURN_SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
    assert turn["password"] == base64.b64encode(digest).decode()
    assert ja["credentials"]["ice_servers"] == ja["ice_servers"]
    jb = await join(srv, bob, CID)
    assert jb["call_session_id"] == ja["call_session_id"]
    assert [p["user_session_id"] for p in jb["participants"]] == [ja["session_id"]]
    assert jb["participants"][0]["user"]["id"] == "alice"
    assert jb["participants"][0]["connected"] is True
    own = await alice.next("call.session_participant_joined")  # her own join comes first
    assert own["participant"]["user_session_id"] == ja["session_id"]
    joined = await alice.next("call.session_participant_joined")
    assert joined["participant"]["user_session_id"] == jb["session_id"]
    assert joined["participant"]["user"]["id"] == "bob"
    assert joined["session_id"] == ja["call_session_id"]
    assert {p["user_session_id"] for p in joined["call"]["session"]["participants"]} == {
        ja["session_id"],
        jb["session_id"],
    }
    assert joined["call"]["session"]["started_at"] is not None


async def test_last_participant_leaving_ends_the_session(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    bob = await WsClient.open(srv, "bob")
    carol = await WsClient.open(srv, "carol")
    ja = await join(srv, alice, CID)
    jb = await join(srv, bob, CID)
    r = await call_post(srv, "bob", CID, "leave", {"session_id": jb["session_id"]})
    assert r.json()["left"] == [jb["session_id"]]
    left = await carol.next("call.session_participant_left")
    assert left["participant"]["user_session_id"] == jb["session_id"]
    assert "call.ended" not in await carol.types()
    r = await call_post(srv, "alice", CID, "leave")
    assert r.json()["left"] == [ja["session_id"]]
    assert (await carol.next("call.session_participant_left"))["participant"]["user_id"] == "alice"
    ended_session = await carol.next("call.session_ended")
    assert ended_session["session_id"] == ja["call_session_id"]
    ended = await carol.next("call.ended")
    assert ended["reason"] == "last_participant_left"
    assert ended["call"]["ended_at"] is not None
    assert ended["call"]["session"]["ended_at"] is not None
    r = await call_post(srv, "alice", CID, "leave")
    assert r.status_code == 200 and r.json()["left"] == []


async def test_dropped_websocket_leaves_after_the_grace_period_not_before(
    srv: ServerHandle,
) -> None:
    alice = await WsClient.open(srv, "alice")
    bob = await WsClient.open(srv, "bob")
    await join(srv, alice, CID)
    jb = await join(srv, bob, CID)
    await alice.next("call.session_participant_joined")
    await bob.close_and_wait(srv)
    _advance(srv, 19.5)
    assert "call.session_participant_left" not in await alice.types()
    r = await call_post(srv, "alice", CID, "join", {"connection_id": alice.connection_id})
    gone = [p for p in r.json()["participants"] if p["user_session_id"] == jb["session_id"]]
    assert gone and gone[0]["connected"] is False  # a ghost in its grace period
    _advance(srv, 1)
    left = await alice.next("call.session_participant_left")
    assert left["participant"]["user_session_id"] == jb["session_id"]


async def test_reattach_within_the_grace_period_keeps_the_participant(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    bob = await WsClient.open(srv, "bob")
    await join(srv, alice, CID)
    jb = await join(srv, bob, CID)
    await bob.close_and_wait(srv)
    _advance(srv, 10)
    bob2 = await WsClient.open(srv, "bob")
    await bob2.send(
        {"type": "participant.attach", "call_cid": CID, "session_id": jb["session_id"], "id": 1}
    )
    attached = await bob2.next("participant.attached")
    assert attached["session_id"] == jb["session_id"] and attached["reply_to"] == 1
    assert attached["connection_id"] == bob2.connection_id
    _advance(srv, 60)
    assert "call.session_participant_left" not in await alice.types()
    # ... and the re-attached participant is reachable by signaling again.
    ja = await join(srv, alice, CID)
    await alice.send(
        {"type": "signal", "call_cid": CID, "to": jb["session_id"], "signal": {"kind": "offer"}}
    )
    assert (await bob2.next("call.signal"))["from"] == ja["session_id"]


async def test_attach_after_the_grace_period_is_refused(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    bob = await WsClient.open(srv, "bob")
    await join(srv, alice, CID)
    jb = await join(srv, bob, CID)
    await bob.close_and_wait(srv)
    _advance(srv, 21)
    await alice.next("call.session_participant_left")
    bob2 = await WsClient.open(srv, "bob")
    await bob2.send({"type": "participant.attach", "call_cid": CID, "session_id": jb["session_id"]})
    err = await bob2.next("error")
    assert err["StatusCode"] == 409 and "join again" in err["message"]
    await bob2.send({"type": "participant.attach", "call_cid": CID, "session_id": "nope"})
    assert (await bob2.next("error"))["StatusCode"] == 409
    carol = await WsClient.open(srv, "carol")
    ja = await join(srv, alice, CID)
    await carol.send(
        {"type": "participant.attach", "call_cid": CID, "session_id": ja["session_id"]}
    )
    assert "not one of yours" in (await carol.next("error"))["message"]


async def test_rejoin_with_session_id_reattaches(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    ja = await join(srv, alice, CID)
    await alice.close_and_wait(srv)
    alice2 = await WsClient.open(srv, "alice")
    again = await join(srv, alice2, CID, session_id=ja["session_id"])
    assert again["session_id"] == ja["session_id"] and again["reattached"] is True
    _advance(srv, 30)
    assert "call.session_participant_left" not in await alice2.types()


async def test_join_without_connection_must_attach_within_grace(srv: ServerHandle) -> None:
    carol = await WsClient.open(srv, "carol")
    r = await call_post(srv, "bob", CID, "join")
    assert r.status_code == 200, r.text
    pid = r.json()["session_id"]
    await carol.next("call.session_participant_joined")
    _advance(srv, 21)
    left = await carol.next("call.session_participant_left")
    assert left["participant"]["user_session_id"] == pid


async def test_join_with_a_foreign_or_unknown_connection_id_is_400(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    r = await call_post(srv, "bob", CID, "join", {"connection_id": alice.connection_id})
    assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "connection_id"
    r = await call_post(srv, "bob", CID, "join", {"connection_id": "not-open"})
    assert r.status_code == 400


async def test_max_participants_and_ghosts(tmp_path) -> None:
    async with running_server(
        tmp_path, users=USERS, clock=ManualClock(), ws_health_seconds=QUIET
    ) as srv:
        limits = {"limits": {"max_participants": 2}}
        await create_call(srv, CID, ["alice", "bob", "carol"], settings_override=limits)
        alice = await WsClient.open(srv, "alice")
        bob = await WsClient.open(srv, "bob")
        carol = await WsClient.open(srv, "carol")
        await join(srv, alice, CID)
        await join(srv, bob, CID)
        r = await call_post(srv, "carol", CID, "join", {"connection_id": carol.connection_id})
        assert r.status_code == 409 and "full" in r.json()["message"]
        await bob.close_and_wait(srv)  # bob is a ghost now: he no longer fills a place
        r = await call_post(srv, "carol", CID, "join", {"connection_id": carol.connection_id})
        assert r.status_code == 200, r.text


async def test_max_duration_ends_the_session(tmp_path) -> None:
    async with running_server(
        tmp_path, users=USERS, clock=ManualClock(), ws_health_seconds=QUIET
    ) as srv:
        limits = {"limits": {"max_duration_seconds": 60}}
        await create_call(srv, CID, ["alice", "bob"], settings_override=limits)
        alice = await WsClient.open(srv, "alice")
        ja = await join(srv, alice, CID)
        assert ja["call"]["session"]["timer_ends_at"] == int((srv.clock.time() + 60) * 1e9)
        srv.clock.advance(59)  # type: ignore[attr-defined]
        assert "call.ended" not in await alice.types()
        srv.clock.advance(2)  # type: ignore[attr-defined]
        ended = await alice.next("call.ended")
        assert ended["reason"] == "max_duration"
        assert ended["call"]["session"]["participants"] == []


async def test_a_join_after_the_end_starts_a_new_session_and_keeps_history(
    srv: ServerHandle,
) -> None:
    alice = await WsClient.open(srv, "alice")
    first = await join(srv, alice, CID)
    r = await call_post(srv, "alice", CID, "mark_ended")
    assert r.status_code == 200
    ended = await alice.next("call.ended")
    assert ended["reason"] == "ended" and ended["call"]["ended_at"] is not None
    second = await join(srv, alice, CID)
    assert second["call_session_id"] != first["call_session_id"]
    assert second["call"]["ended_at"] is None
    history = await _sessions(srv)
    assert [s["id"] for s in history] == [first["call_session_id"], second["call_session_id"]]
    assert history[0]["ended_at"] is not None and history[0]["end_reason"] == "ended"
    assert history[1]["ended_at"] is None


async def test_mark_ended_needs_end_call(srv: ServerHandle) -> None:
    r = await call_post(srv, "dave", CID, "mark_ended")
    assert r.status_code == 403
    r = await call_post(srv, None, "default:nope", "join", {"user_id": "alice"})
    assert r.status_code == 404
    r = await call_post(srv, None, CID, "join")
    assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "user_id"


async def test_participants_of_a_crashed_server_get_the_grace_period(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    ja = await join(srv, alice, CID)
    await alice.close()
    await srv.stop()
    # A crash (kill -9) never runs the close hooks: the participant stays bound to a dead
    # connection. That is the state a restarted server finds.
    async with srv.ctx.store.begin() as db:
        await db.execute(
            update(participants)
            .where(participants.c.id == ja["session_id"])
            .values(gone_at=None, connection_id="dead-connection")
        )
    await srv.start()
    carol = await WsClient.open(srv, "carol")
    _advance(srv, 19)
    assert "call.session_participant_left" not in await carol.types()
    _advance(srv, 2)
    left = await carol.next("call.session_participant_left")
    assert left["participant"]["user_session_id"] == ja["session_id"]
    assert (await carol.next("call.ended"))["reason"] == "last_participant_left"


async def test_join_with_ring_reports_who_was_rung(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    joined = await join(srv, alice, CID, ring=True)
    assert joined["ringed"] == ["bob", "carol"]
    await create_call(srv, "default:solo", ["alice"])
    solo = await join(srv, alice, "default:solo", ring=True)
    assert solo["ringed"] == []  # nobody else to ring: the join stands
    r = await call_post(srv, None, CID, "join", {"user_id": "ghost"})
    assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "user_id"


async def test_two_joins_at_once_never_both_offer(srv: ServerHandle) -> None:
    # The newcomer offers to the participants its join lists; two joins racing each other
    # must not list each other, or both would offer (glare).
    for n in range(5):
        cid = f"default:race-{n}"
        await create_call(srv, cid, ["alice", "bob"])
        alice = await WsClient.open(srv, "alice")
        bob = await WsClient.open(srv, "bob")
        ja, jb = await asyncio.gather(join(srv, alice, cid), join(srv, bob, cid))
        assert ja["call_session_id"] == jb["call_session_id"]
        listed = [p["user_session_id"] for p in ja["participants"] + jb["participants"]]
        assert listed in ([ja["session_id"]], [jb["session_id"]])
        await alice.close()
        await bob.close()
