"""The WebSocket (``/api/v2/connect``, also at ``/api/v2/video/connect`` for Stream's client SDKs):
the same bad credentials are refused in the first frame,
each role connects and hears exactly the calls it should, and every frame type a client may send
has an authorization decision (a new frame type without one fails ``test_every_frame_type…``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from appliance.server.lifecycle.services import services
from tests.security.principals import (
    ROLES,
    USERS,
    bad_credentials,
    cid_of,
    prepare,
    revoke_erin,
    token_for,
)
from tests.server.wsclient import QUIET, WsClient, call_post
from tests.support.server import ServerHandle, running_server

TIMEOUT = 10.0

# Frame type -> who may send it (beyond being connected). Checked against the server's handlers.
FRAME_DECISIONS = {
    "health.check": "anyone connected",
    "signal": "a participant of the call's live session bound to this socket, to another one; "
    "a socket pinned to other calls may not",
    "participant.attach": "the participant's own user; a socket pinned to other calls may not",
}

# Does the role's socket hear the events of its call? (A server token connects as bob.)
HEARS = {
    "server": True,
    "global_admin": False,  # not a member: events go to members and participants
    "call_admin": True,
    "member": True,
    "non_member": False,
    "other_team": False,
    "pinned_other": False,
    "pinned_own": True,
}


@pytest.fixture
async def srv(tmp_path):
    async with running_server(tmp_path, users=USERS, ws_health_seconds=QUIET) as s:
        yield s


async def _first_frame(srv: ServerHandle, url: str, token: str | None, user: str) -> Any:
    ws = await websockets.connect(url, open_timeout=TIMEOUT)
    frame: dict[str, Any] = {"user_details": {"id": user}}
    if token is not None:
        frame["token"] = token
    await ws.send(json.dumps(frame))
    return ws, json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


@pytest.mark.parametrize("path", ["/api/v2/connect", "/api/v2/video/connect"])
async def test_bad_credentials_are_refused_in_the_first_frame(srv: ServerHandle, path: str) -> None:
    await revoke_erin(srv)
    base = f"ws://127.0.0.1:{srv.port}{path}"
    results = {}
    for case, (params, headers) in bad_credentials(srv).items():
        if "stream-auth-type" in headers and headers["stream-auth-type"] != "jwt":
            continue  # a REST header; the socket has only the token
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"{base}?{query}" if query else base
        token = headers.get("Authorization")
        user = {"revoked": "erin", "unknown user": "mallory"}.get(case, "bob")
        ws, hello = await _first_frame(srv, url, token, user)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        results[case] = (hello["type"], hello.get("StatusCode"), closed.value.rcvd.code)  # type: ignore[union-attr]
    assert results == dict.fromkeys(results, ("connection.error", 401, 1008)), results
    assert len(results) >= 15


async def test_each_role_connects_and_hears_only_its_calls(srv: ServerHandle) -> None:
    heard = {}
    for role in ROLES:
        await prepare(srv, role)
        user = ROLES[role][0] or "bob"
        ws = await WsClient.open(srv, user, token=token_for(srv, role))
        assert (
            await call_post(
                srv, None, cid_of(role), "event", {"custom": {"n": 1}, "user_id": "alice"}
            )
        ).status_code == 200
        heard[role] = "custom" in await ws.types()
        await ws.close()
    assert heard == HEARS


async def test_every_frame_type_has_a_decision(srv: ServerHandle) -> None:
    handlers = set(services(srv.ctx).hub.handlers) | {"health.check"}
    assert handlers == set(FRAME_DECISIONS), (
        f"frame types without an authorization decision in {__name__}: "
        f"{sorted(handlers - set(FRAME_DECISIONS))}"
    )


async def test_frames_outside_ones_rights_are_refused(srv: ServerHandle) -> None:
    await prepare(srv, "member")
    await prepare(srv, "non_member")
    carol = await WsClient.open(srv, "carol")
    # Not a participant of the live session: no signal reaches anyone.
    assert (await call_post(srv, "alice", cid_of("member"), "join", {})).status_code == 200
    await carol.send(
        {"type": "signal", "call_cid": cid_of("member"), "to": "x", "signal": {"kind": "offer"}}
    )
    assert (await carol.next("error"))["StatusCode"] in (404, 409)
    # Someone else's participant cannot be attached.
    joined = await call_post(srv, "bob", cid_of("member"), "join", {})
    pid = joined.json()["session_id"]
    await carol.send(
        {"type": "participant.attach", "call_cid": cid_of("member"), "session_id": pid}
    )
    assert (await carol.next("error"))["StatusCode"] == 409
    # A pinned socket cannot act on another call.
    pinned = await WsClient.open(srv, "bob", token=token_for(srv, "pinned_other"))
    await pinned.send(
        {"type": "participant.attach", "call_cid": cid_of("member"), "session_id": pid}
    )
    assert (await pinned.next("error"))["StatusCode"] == 403
    await carol.close()
    await pinned.close()
