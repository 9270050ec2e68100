"""The WebSocket: auth frame, connection.ok, health checks, bad frames, size limit, presence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import websockets
from websockets.exceptions import ConnectionClosed

from appliance.clock import ManualClock
from appliance.server.lifecycle.services import services
from tests.server.wsclient import QUIET, WsClient, call_post, create_call
from tests.support.poll import until
from tests.support.server import ServerHandle, running_server

USERS = [
    {"id": "alice", "name": "Alice"},
    {"id": "bob", "name": "Bob"},
    {"id": "carol", "name": "Carol"},
    {"id": "dave", "name": "Dave"},
]


@pytest_asyncio.fixture
async def srv(tmp_path) -> AsyncIterator[ServerHandle]:
    async with running_server(
        tmp_path, users=USERS, clock=ManualClock(), ws_health_seconds=QUIET
    ) as handle:
        yield handle


async def _refused(srv: ServerHandle, first: str | bytes, url: str | None = None) -> dict:
    async with websockets.connect(url or srv.ws_url) as ws:
        await ws.send(first)
        frame = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        frame["close_code"] = closed.value.rcvd.code if closed.value.rcvd else None
        return frame


async def test_connection_ok_carries_connection_id_and_me(srv: ServerHandle) -> None:
    async with await WsClient.open(srv, "alice") as ws:
        hello = ws.hello
        assert hello["type"] == "connection.ok"
        assert len(hello["connection_id"]) >= 32
        assert hello["me"]["id"] == "alice"
        assert hello["me"]["name"] == "Alice"
        assert hello["me"]["online"] is True
        assert hello["created_at"] == int(srv.clock.time() * 1e9)
        assert srv.ctx.presence.is_online("alice")


async def test_two_connections_of_one_user_have_distinct_ids(srv: ServerHandle) -> None:
    a1 = await WsClient.open(srv, "alice")
    a2 = await WsClient.open(srv, "alice")
    assert a1.connection_id != a2.connection_id
    await a1.close()
    await a2.close()


async def test_bad_token_is_refused_with_connection_error(srv: ServerHandle) -> None:
    frame = await _refused(srv, json.dumps({"token": "not-a-jwt", "user_details": {"id": "alice"}}))
    assert frame["type"] == "connection.error"
    assert frame["StatusCode"] == 401
    assert frame["error"]["StatusCode"] == 401
    assert frame["close_code"] == 1008


async def test_wrong_api_key_is_refused(srv: ServerHandle) -> None:
    url = srv.ws_url.replace(f"api_key={srv.api_key}", "api_key=nope")
    frame = await _refused(
        srv, json.dumps({"token": srv.user_token("alice"), "user_details": {"id": "alice"}}), url
    )
    assert frame["StatusCode"] == 401
    assert "api_key" in frame["message"]


async def test_user_details_must_match_the_token(srv: ServerHandle) -> None:
    frame = await _refused(
        srv, json.dumps({"token": srv.user_token("alice"), "user_details": {"id": "bob"}})
    )
    assert frame["StatusCode"] == 401
    assert frame["field"] == "user_details.id"


async def test_first_frame_without_token_or_json_is_refused(srv: ServerHandle) -> None:
    frame = await _refused(srv, json.dumps({"user_details": {"id": "alice"}}))
    assert frame["field"] == "token"
    frame = await _refused(srv, "{not json")
    assert frame["StatusCode"] == 400


async def test_server_token_connects_for_an_existing_user_only(srv: ServerHandle) -> None:
    ws = await WsClient.open(srv, "bob", token=srv.server_token())
    assert ws.hello["me"]["id"] == "bob"
    await ws.close()
    frame = await _refused(
        srv, json.dumps({"token": srv.server_token(), "user_details": {"id": "nobody"}})
    )
    assert frame["StatusCode"] == 400


async def test_health_check_is_answered_with_reply_to(srv: ServerHandle) -> None:
    async with await WsClient.open(srv, "alice") as ws:
        await ws.send({"type": "health.check", "id": "h1", "client_id": "x"})
        frame = await ws.next("health.check")
        assert frame["reply_to"] == "h1"
        assert frame["connection_id"] == ws.connection_id


async def test_bad_frames_get_error_frames_and_the_connection_stays(srv: ServerHandle) -> None:
    async with await WsClient.open(srv, "alice") as ws:
        await ws.ws.send("{oops")
        err = await ws.next("error")
        assert err["StatusCode"] == 400 and "JSON" in err["message"]
        await ws.send({"type": "teleport", "id": 7})  # type: ignore[dict-item]
        err = await ws.next("error")
        assert err["field"] == "type" and err["reply_to"] == 7 and "teleport" in err["message"]
        await ws.ws.send(json.dumps([1, 2]))
        err = await ws.next("error")
        assert "object" in err["message"]
        await ws.ws.send(b"\x00\x01")
        err = await ws.next("error")
        assert "binary" in err["message"]
        assert await ws.settle() == []


async def test_lone_surrogates_and_deep_nesting_are_400_error_frames(srv: ServerHandle) -> None:
    """JSON may spell a lone UTF-16 surrogate ("\\ud800"): no character, the database refuses
    it. Such frames, and frames nested past the parser's depth, are 400s, never 500s."""
    frame = await _refused(
        srv, json.dumps({"token": srv.server_token(), "user_details": {"id": "\ud800"}})
    )
    assert frame["StatusCode"] == 400 and "surrogates" in frame["message"]
    async with await WsClient.open(srv, "alice") as ws:
        for text in (
            '{"type": "participant.attach", "call_cid": "default:a", "session_id": "\\ud800"}',
            '{"type": "signal", "call_cid": "default:\\udfff", "to": "x", "signal": {}}',
        ):
            await ws.ws.send(text)
            err = await ws.next("error")
            assert err["StatusCode"] == 400 and "surrogates" in err["message"]
        await ws.ws.send("[" * 5000 + "]" * 5000)
        err = await ws.next("error")
        assert err["StatusCode"] == 400 and err["message"] == "frame is nested too deeply"
        await ws.send({"type": "health.check", "id": "still-here"})
        assert (await ws.next("health.check"))["reply_to"] == "still-here"


async def test_oversized_frame_is_closed_1009(srv: ServerHandle) -> None:
    ws = await WsClient.open(srv, "alice")
    await ws.send({"type": "signal", "blob": "x" * 200_000})
    with pytest.raises(ConnectionClosed) as closed:
        await ws.next()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_huge_frame_is_refused_from_its_header_not_buffered(srv: ServerHandle) -> None:
    """A frame announcing 10 MB is closed 1009 at once: the server does not wait for (and
    buffer) the 10 MB before checking the size. Only 1 kB of it is ever sent here."""
    ws = await WsClient.open(srv, "alice")
    transport = ws.ws.transport
    size = 10 * 1024 * 1024
    mask = b"\x01\x02\x03\x04"
    # FIN + text, masked, 64-bit length; then the first kilobyte of the payload.
    transport.write(b"\x81\xff" + size.to_bytes(8, "big") + mask + b"x" * 1024)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.next()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_events_reach_members_without_a_watch(srv: ServerHandle) -> None:
    await create_call(srv, "default:room", ["alice", "bob"])
    bob = await WsClient.open(srv, "bob")
    dave = await WsClient.open(srv, "dave")
    r = await call_post(srv, "alice", "default:room", "mark_ended")
    assert r.status_code == 200, r.text
    ended = await bob.next("call.ended")
    assert ended["call_cid"] == "default:room"
    assert ended["reason"] == "ended"
    assert ended["user"]["id"] == "alice"
    assert ended["call"]["cid"] == "default:room"
    assert ended["call"]["ended_at"] is not None
    assert await dave.settle() == []
    await bob.close()
    await dave.close()


async def test_presence_changes_go_to_users_sharing_a_call(srv: ServerHandle) -> None:
    await create_call(srv, "default:p", ["alice", "bob"])
    bob = await WsClient.open(srv, "bob")
    dave = await WsClient.open(srv, "dave")
    presence = srv.ctx.presence
    assert not presence.is_online("alice")
    a1 = await WsClient.open(srv, "alice")
    changed = await bob.next("user.presence.changed")
    assert changed["user"]["id"] == "alice" and changed["user"]["online"] is True
    assert presence.is_online("alice") and "alice" in presence.online_user_ids()
    a2 = await WsClient.open(srv, "alice")  # a second connection changes nothing
    await a1.close_and_wait(srv)
    assert await bob.settle() == []  # still online through a2
    assert presence.is_online("alice")
    await a2.close()
    changed = await bob.next("user.presence.changed")
    assert changed["user"]["id"] == "alice" and changed["user"]["online"] is False
    assert not presence.is_online("alice")
    assert [f for f in await dave.settle() if f["type"] == "user.presence.changed"] == []
    await bob.close()
    await dave.close()


async def test_server_health_checks_and_closes_silent_clients(tmp_path) -> None:
    # Transport liveness runs on the event loop's clock (not the injected one): a short
    # interval here, and the test waits for frames, not for time.
    async with running_server(tmp_path, users=USERS, ws_health_seconds=0.05) as srv:
        ws = await WsClient.open(srv, "alice")
        ping = json.loads(await ws.ws.recv())
        assert ping["type"] == "health.check" and ping["connection_id"] == ws.connection_id
        with pytest.raises(ConnectionClosed):
            while True:  # we never answer: after three silent intervals the server hangs up
                await ws.ws.recv()
        presence = srv.ctx.presence
        for _ in range(500):  # the hub forgets the connection right after closing it
            if not presence.is_online("alice"):
                break
            await asyncio.sleep(0.01)
        assert not presence.is_online("alice")


async def test_a_token_pinned_to_calls_hears_only_those_calls(srv: ServerHandle) -> None:
    await create_call(srv, "default:mine", ["alice", "bob"])
    await create_call(srv, "default:other", ["alice", "bob"])
    device = await WsClient.open(
        srv, "bob", token=srv.user_token("bob", call_cids=["default:mine"])
    )
    for cid in ("default:other", "default:mine"):
        r = await call_post(srv, "alice", cid, "mark_ended")
        assert r.status_code == 200
    ended = await device.next("call.ended")
    assert ended["call_cid"] == "default:mine"
    assert [f["call_cid"] for f in await device.settle() if "call_cid" in f] == []


def _hello(srv: ServerHandle, user: str) -> str:
    return json.dumps({"token": srv.user_token(user), "user_details": {"id": user}})


async def test_a_handshake_without_a_turn_is_told_to_try_again_later(
    srv: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every handshake turn taken, a newcomer waits ``ADMIT_WAIT_SECONDS`` and is refused
    with 503 and close 1013 (clients back off, jittered), not left to time out; once a turn is
    free it connects."""
    from appliance.server.realtime import connection

    monkeypatch.setattr(connection, "ADMIT_WAIT_SECONDS", 0.3)
    endpoint = services(srv.ctx).hub.endpoint
    taken = [await endpoint._admission.acquire() for _ in range(connection.ADMIT_CONCURRENT)]
    try:
        frame = await asyncio.wait_for(_refused(srv, _hello(srv, "alice")), 10.0)
        assert frame["type"] == "connection.error", frame
        assert frame["error"]["StatusCode"] == 503
        assert frame["close_code"] == 1013
        assert endpoint.turned_away == 1
    finally:
        for _ in taken:
            endpoint._admission.release()
    async with await WsClient.open(srv, "alice") as ws:
        assert ws.hello["type"] == "connection.ok"
        # Every turn comes back (the refused one's, and this one's once registered).
        await until(
            lambda: endpoint._admission._value == connection.ADMIT_CONCURRENT,
            what="every handshake turn free",
        )


async def test_a_database_too_busy_for_a_handshake_is_try_again_later(
    srv: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool that hands out no connection in time (a reconnect storm) refuses the handshake
    with 503 and 1013; it was an exception in the ASGI application."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from appliance.server.realtime import connection

    async def no_connection(*_args: object) -> None:
        raise PoolTimeout("QueuePool limit of size 10 overflow 20 reached")

    monkeypatch.setattr(connection, "authenticate", no_connection)
    frame = await _refused(srv, _hello(srv, "alice"))
    assert frame["error"]["StatusCode"] == 503, frame
    assert frame["close_code"] == 1013
    assert "QueuePool" not in frame["error"]["message"]
