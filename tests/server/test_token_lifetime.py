"""A WebSocket ends with its token: at ``exp`` + leeway and on revocation it gets an error frame
naming the reason, then close 1008. A token pinned to calls acts on those only, on its socket
too; a token for a user nobody created is refused; a client that stops reading is told why."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from appliance.clock import ManualClock
from appliance.server.lifecycle.services import services
from tests.server.wsclient import QUIET, TIMEOUT, WsClient, call_post, create_call, join
from tests.support.server import ServerHandle, running_server

USERS = ["alice", "bob", "carol"]
CID = "default:door-1"


@pytest.fixture
async def srv(tmp_path):
    clock = ManualClock(1_790_000_000.0)
    async with running_server(tmp_path, users=USERS, clock=clock, ws_health_seconds=QUIET) as s:
        s.manual_clock = clock  # type: ignore[attr-defined]
        yield s


async def ended(ws: WsClient) -> tuple[list[dict[str, Any]], Any]:
    """Every frame until the server closes the socket, and the close frame it sent."""
    frames: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.ws.recv(), TIMEOUT)))
    return frames, closed.value.rcvd


def refusal(frames: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [f for f in frames if f["type"] == "connection.error"]
    assert len(errors) == 1, frames
    return errors[0]


async def test_a_socket_closes_when_its_token_expires(srv: ServerHandle) -> None:
    clock: ManualClock = srv.manual_clock  # type: ignore[attr-defined]
    short = await WsClient.open(srv, "alice", token=srv.user_token("alice", ttl=60))
    forever = await WsClient.open(srv, "bob")
    clock.advance(60 + 300 - 1)  # within the leeway: still open
    assert await short.types() == []
    clock.advance(2)
    frames, close = await ended(short)
    error = refusal(frames)
    assert error["StatusCode"] == 401 and error["message"] == "token has expired"
    assert close is not None and close.code == 1008 and "expired" in close.reason
    assert await forever.types() == []  # a token without exp keeps its socket
    await forever.close()


async def test_a_socket_closes_when_its_tokens_are_revoked(srv: ServerHandle) -> None:
    """The lost phone: REST refused its token, but its socket kept hearing rings."""
    clock: ManualClock = srv.manual_clock  # type: ignore[attr-defined]
    await create_call(srv, CID, USERS)
    phone = await WsClient.open(srv, "bob")
    carol = await WsClient.open(srv, "carol")
    async with srv.client() as admin:
        r = await admin.post("/api/v2/users/revoke_tokens", json={"user_ids": ["bob"]})
    assert r.status_code == 200, r.text
    frames, close = await ended(phone)
    assert refusal(frames)["message"] == "token of user bob has been revoked"
    assert close is not None and close.code == 1008 and "revoked" in close.reason
    # Other users' sockets stay (and hear that bob went offline).
    assert set(await carol.types()) <= {"user.presence.changed"}
    # A token issued after the revocation works, and hears the next ring.
    clock.advance(1)
    again = await WsClient.open(srv, "bob")
    assert (await call_post(srv, "alice", CID, "ring")).status_code == 200
    assert (await again.next("call.ring"))["user"]["id"] == "alice"
    await again.close()
    await carol.close()


async def test_a_revocation_dated_later_covers_tokens_issued_until_then(
    srv: ServerHandle,
) -> None:
    clock: ManualClock = srv.manual_clock  # type: ignore[attr-defined]
    old = await WsClient.open(srv, "bob")
    async with srv.client() as admin:
        later = int((clock.time() + 5) * 1e9)
        r = await admin.post(
            "/api/v2/users/revoke_tokens",
            json={"user_ids": ["bob"], "revoke_tokens_issued_before": later},
        )
    assert r.status_code == 200, r.text
    await ended(old)
    # A socket opened meanwhile with a token the revocation covers is refused at once.
    refused = await WsClient.open(srv, "bob", expect_ok=False)
    assert refused.hello["type"] == "connection.error"


async def test_a_pinned_socket_acts_on_its_own_calls_only(srv: ServerHandle) -> None:
    """A device token pinned to door-1 attached its socket to the same user's participant
    of another call (and could then signal in it)."""
    await create_call(srv, CID, USERS)
    await create_call(srv, "default:other", USERS)
    pinned = await WsClient.open(srv, "bob", token=srv.user_token("bob", call_cids=[CID]))
    free = await WsClient.open(srv, "bob")
    other = await join(srv, free, "default:other")
    await pinned.send(
        {
            "type": "participant.attach",
            "call_cid": "default:other",
            "session_id": other["session_id"],
            "id": 1,
        }
    )
    err = await pinned.next("error")
    assert err["StatusCode"] == 403 and err["field"] == "call_cid", err
    assert "limited to calls default:door-1" in err["message"]
    await pinned.send(
        {"type": "signal", "call_cid": "default:other", "to": "x", "signal": {"kind": "offer"}}
    )
    assert (await pinned.next("error"))["StatusCode"] == 403
    # Nor can an unpinned token bind the pinned socket to the other call.
    r = await call_post(
        srv, "bob", "default:other", "join", {"connection_id": pinned.connection_id}
    )
    assert r.status_code == 403 and r.json()["exception_fields"]["field"] == "connection_id"
    # Its own call works.
    assert (await join(srv, pinned, CID))["session_id"]
    await pinned.close()
    await free.close()


async def test_a_token_for_a_user_nobody_created_is_refused(srv: ServerHandle) -> None:
    token = srv.user_token("mallory")
    async with srv.client(token=token) as http:
        r = await http.get("/api/v2/video/calltypes")
    assert r.status_code == 401 and "mallory does not exist" in r.json()["message"]
    refused = await WsClient.open(srv, "mallory", token=token, expect_ok=False)
    assert refused.hello["type"] == "connection.error"
    async with srv.client() as admin:  # nothing was created on the way
        r = await admin.get("/api/v2/users", params={"payload": '{"filter_conditions": {}}'})
    assert "mallory" not in {u["id"] for u in r.json()["users"]}


async def test_a_client_that_stops_reading_gets_a_reason_and_a_close_frame(
    srv: ServerHandle,
) -> None:
    """A client flooding health.check without reading fell 1000 frames behind and was cut off
    with no close frame; now it finds the reason and close 1013 once it reads again."""
    ws = await websockets.connect(srv.ws_url, max_queue=4)  # stops reading when 4 are waiting
    await ws.send(json.dumps({"token": srv.user_token("alice"), "user_details": {"id": "alice"}}))
    hello = json.loads(await ws.recv())
    conn = services(srv.ctx).hub.connections[hello["connection_id"]]
    frame = json.dumps({"type": "health.check"})

    async def flood() -> None:
        while True:
            await ws.send(frame)

    flooding = asyncio.create_task(flood())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not conn.closed:
        assert loop.time() < deadline and not flooding.done(), "the server never gave up"
        await asyncio.sleep(0.05)
    flooding.cancel()
    frames: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))
    error = refusal(frames)
    assert error["StatusCode"] == 429 and "frames behind" in error["message"]
    assert frames[-1] is error  # nothing after the reason
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
