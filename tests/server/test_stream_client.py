"""What Stream's client SDKs need from the server, checked frame by frame and field by field.

The whole flow with the real JavaScript SDK is ``test_stream_js_sdk.py``; these in-process
tests pin each piece (and its bound) on its own: the WebSocket path, RFC 3339 times for Stream
SDKs and integers for everyone else, the SDK's array ping, who gets unprompted health checks and
how silent sockets are closed, token expiry as code 40, ``connection.error``'s shape,
``user_details`` saved on connect, ``connection_id`` in the join query, the refused media join,
reject reasons, ``ring_state``, ``call_client_event`` and CORS.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets
from pydantic import ValidationError
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from appliance.clock import ManualClock
from appliance.server.lifecycle.services import services
from appliance.server.settings import ServerSettings
from appliance.server.store.schema import participants
from tests.server.wsclient import QUIET, WsClient, call_post, create_call
from tests.support.server import ServerHandle, running_server

USERS = ["alice", "bob", "carol"]
CID = "default:ward-3"
JS = "stream-video-plain_javascript-v1.60.0|client_bundle=node-cjs"
PYTHON = "stream-python-client-0.0.1"
TIMEOUT = 10.0
RING = {"ring": {"incoming_call_timeout_ms": 10_000, "auto_cancel_timeout_ms": 30_000}}


@pytest_asyncio.fixture
async def srv(tmp_path) -> AsyncIterator[ServerHandle]:
    async with running_server(
        tmp_path, users=USERS, clock=ManualClock(), ws_health_seconds=QUIET
    ) as handle:
        await create_call(handle, CID, USERS, settings_override=RING)
        yield handle


def _url(srv: ServerHandle, path: str = "/api/v2/video/connect", client: str | None = JS) -> str:
    url = f"ws://127.0.0.1:{srv.port}{path}?api_key={srv.api_key}&stream-auth-type=jwt"
    return url + (f"&X-Stream-Client={client}" if client else "")


async def _open(
    srv: ServerHandle, user: str, *, url: str | None = None, **details: Any
) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await websockets.connect(url or _url(srv), open_timeout=TIMEOUT)
    token = details.pop("token", None) or srv.user_token(user)
    await ws.send(json.dumps({"token": token, "user_details": {"id": user, **details}}))
    return ws, json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return frame


async def _get_call(srv: ServerHandle, client: str | None) -> dict[str, Any]:
    headers = {"X-Stream-Client": client} if client else {}
    async with srv.client("alice") as http:
        r = await http.get("/api/v2/video/call/default/ward-3", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# -- WebSocket path and health checks -------------------------------------------------------


async def test_the_sdk_path_connects_and_its_array_ping_is_answered(srv: ServerHandle) -> None:
    ws, hello = await _open(srv, "alice")
    assert hello["type"] == "connection.ok", hello
    await ws.send(json.dumps([{"type": "health.check", "client_id": "c-1"}]))
    answer = await _recv(ws)
    assert answer["type"] == "health.check", answer
    assert answer["connection_id"] == hello["connection_id"]
    # Not any array: only the SDK's one-element ping.
    await ws.send(json.dumps([{"type": "signal"}, {"type": "signal"}]))
    assert (await _recv(ws))["type"] == "error"
    await ws.close()


async def test_health_checks_are_paced_by_the_sdk_and_silence_closes_with_4008(
    tmp_path,
) -> None:
    async with running_server(tmp_path, users=USERS, ws_health_seconds=0.2) as srv:
        sdk, _ = await _open(srv, "alice")
        ours, _ = await _open(srv, "bob", url=_url(srv, "/api/v2/connect", client=None))
        # Ours: unprompted health checks, and closed (4008, not 1000) once silent 3 intervals.
        assert (await _recv(ours))["type"] == "health.check"
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await _recv(ours)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
        # The SDK's socket heard nothing meanwhile (its own 25 s ping timer runs) and is open:
        # it may stay silent for its ping period and two intervals.
        # (Anything the server had sent unprompted would arrive before the answer.)
        await sdk.send(json.dumps([{"type": "health.check", "client_id": "c", "id": "p1"}]))
        answer = await _recv(sdk)
        assert answer["type"] == "health.check" and answer.get("reply_to") == "p1", answer
        hub = services(srv.ctx).hub
        (conn,) = hub.connections.values()
        assert conn.stream_sdk and hub.silence_limit(conn) == pytest.approx(25.4)
        await sdk.close()


# -- times ----------------------------------------------------------------------------------


async def test_times_are_rfc3339_for_stream_client_sdks_and_integers_for_others(
    srv: ServerHandle,
) -> None:
    async with srv.client("alice") as http:
        r = await http.patch(
            "/api/v2/video/call/default/ward-3", json={"custom": {"visit_at": 1234}}
        )
    assert r.status_code == 200, r.text
    for client in (None, PYTHON):
        call = (await _get_call(srv, client))["call"]
        assert isinstance(call["created_at"], int) and call["created_at"] > 0
    js = await _get_call(srv, JS)
    call = js["call"]
    assert call["created_at"].endswith("Z") and call["created_at"][:2] == "20"
    assert isinstance(call["updated_at"], str) and call["ended_at"] is None
    assert all(isinstance(m["created_at"], str) for m in js["members"])
    assert call["custom"] == {"visit_at": 1234}  # a client's own data is left alone
    as_int = (await _get_call(srv, None))["call"]["created_at"]
    rest = as_int % 1_000_000_000
    assert call["created_at"].endswith(f".{rest:09d}Z")


async def test_events_reach_an_sdk_socket_with_rfc3339_times(srv: ServerHandle) -> None:
    sdk, _ = await _open(srv, "bob")
    ours = await WsClient.open(srv, "carol")
    r = await call_post(srv, "alice", CID, "event", {"custom": {"type": "hello"}})
    assert r.status_code == 200, r.text
    seen = await _recv(sdk)
    while seen["type"] != "custom":  # carol's presence came first
        assert isinstance(seen["created_at"], str), seen
        seen = await _recv(sdk)
    assert isinstance(seen["created_at"], str) and seen["call_cid"] == CID
    plain = await ours.next("custom")
    assert isinstance(plain["created_at"], int)
    await sdk.close()
    await ours.close()


# -- tokens and connection.error ------------------------------------------------------------


async def test_an_expired_token_is_code_40_on_rest_and_on_the_socket(srv: ServerHandle) -> None:
    expired = srv.user_token("alice", exp=int(srv.clock.time()) - 3600)
    async with srv.client(token=expired) as http:
        r = await http.get("/api/v2/video/call/default/ward-3")
    assert r.status_code == 401 and r.json()["code"] == 40, r.text
    ws, refusal = await _open(srv, "alice", token=expired)
    assert refusal["type"] == "connection.error"
    assert refusal["error"]["code"] == 40 and refusal["error"]["StatusCode"] == 401
    assert "code" not in refusal  # the SDK reads a top-level code as a close event
    await ws.close()
    # Other refusals keep their own code.
    ws, refusal = await _open(srv, "alice", token="garbage")
    assert refusal["error"]["code"] == 5 and "code" not in refusal
    await ws.close()


# -- user_details ---------------------------------------------------------------------------


async def _user(srv: ServerHandle, user_id: str) -> dict[str, Any]:
    async with srv.client() as http:
        r = await http.get(
            "/api/v2/users",
            params={"payload": json.dumps({"filter_conditions": {"id": user_id}})},
        )
    assert r.status_code == 200, r.text
    (user,) = r.json()["users"]
    assert isinstance(user, dict)
    return user


async def test_user_details_on_connect_are_saved_but_never_role_or_teams(
    srv: ServerHandle,
) -> None:
    ws, hello = await _open(
        srv, "bob", name="Bob B.", custom={"ward": 3}, role="admin", teams=["t1"]
    )
    assert hello["type"] == "connection.ok", hello
    assert hello["me"]["name"] == "Bob B."
    user = await _user(srv, "bob")
    assert user["name"] == "Bob B." and user["custom"] == {"ward": 3}
    assert user["role"] == "user" and user["teams"] == []
    await ws.close()
    ws, refusal = await _open(srv, "bob", name="x" * 256)
    assert refusal["type"] == "connection.error" and refusal["error"]["StatusCode"] == 400
    assert "user_details.name" in refusal["error"]["message"]
    await ws.close()
    ws, refusal = await _open(srv, "bob", custom={"blob": "x" * 6000})
    assert refusal["field"] == "user_details.custom" and "5120" in refusal["error"]["message"]
    await ws.close()
    assert (await _user(srv, "bob"))["name"] == "Bob B."


# -- join -----------------------------------------------------------------------------------


async def test_join_reads_connection_id_from_the_query(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    bob = await WsClient.open(srv, "bob")
    async with srv.client("bob") as http:
        r = await http.post(
            "/api/v2/video/call/default/ward-3/join",
            params={"connection_id": alice.connection_id},
            json={},
        )
        assert r.status_code == 400, r.text  # another user's connection: the query was read
        assert "belongs to another user" in r.json()["message"]
        r = await http.post(
            "/api/v2/video/call/default/ward-3/join",
            params={"connection_id": bob.connection_id},
            json={"connection_id": alice.connection_id},
        )
        assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "connection_id"
        r = await http.post(
            "/api/v2/video/call/default/ward-3/join",
            params={"connection_id": bob.connection_id},
            json={},
        )
    assert r.status_code == 200, r.text
    hub = services(srv.ctx).hub
    async with srv.ctx.store.connect() as db:
        rows = (await db.execute(select(participants.c.connection_id))).scalars().all()
    assert rows == [bob.connection_id] and bob.connection_id in hub.connections
    await alice.close()
    await bob.close()


async def test_a_media_join_from_a_stream_sdk_is_refused_clearly_and_changes_nothing(
    srv: ServerHandle,
) -> None:
    async with srv.client("bob") as http:
        r = await http.post(
            "/api/v2/video/call/default/ward-3/join",
            headers={"X-Stream-Client": JS},
            json={"create": True},
        )
    assert r.status_code == 501, r.text
    body = r.json()
    assert body["unrecoverable"] is True and "SFU" in body["message"]
    assert "docs/stream-sdk.md" in body["message"]
    assert (await _get_call(srv, None))["call"]["session"] is None


# -- ringing --------------------------------------------------------------------------------


async def test_any_short_reject_reason_is_kept(srv: ServerHandle) -> None:
    alice = await WsClient.open(srv, "alice")
    assert (await call_post(srv, "alice", CID, "ring", {})).status_code == 200
    r = await call_post(srv, "bob", CID, "reject", {"reason": "on a care round"})
    assert r.status_code == 200, r.text
    rejected = await alice.next("call.rejected")
    assert rejected["reason"] == "on a care round"
    r = await call_post(srv, "carol", CID, "reject", {"reason": "x" * 33})
    assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "reason"
    await alice.close()


async def test_a_callee_timeout_reject_is_a_miss_and_a_caller_timeout_ends_the_ring(
    srv: ServerHandle,
) -> None:
    alice = await WsClient.open(srv, "alice")
    assert (await call_post(srv, "alice", CID, "ring", {})).status_code == 200
    r = await call_post(srv, "bob", CID, "reject", {"reason": "timeout"})
    assert r.status_code == 200, r.text
    assert (await alice.next("call.missed"))["user"]["id"] == "bob"
    r = await call_post(srv, "alice", CID, "reject", {"reason": "timeout"})
    assert r.status_code == 200, r.text
    assert (await alice.next("call.missed"))["user"]["id"] == "carol"
    assert (await alice.next("call.ended"))["reason"] == "timeout"
    session = (await _get_call(srv, None))["call"]["session"]
    assert set(session["missed_by"]) == {"bob", "carol"} and session["rejected_by"] == {}
    # The SDKs' own timers may fire after ours: rejecting an ended ring is not an error.
    for who in ("bob", "alice"):
        r = await call_post(srv, who, CID, "reject", {"reason": "timeout"})
        assert r.status_code == 200, r.text
    assert await alice.types() == []
    await alice.close()


async def test_ring_state_answers_who_accepted_rejected_and_missed(srv: ServerHandle) -> None:
    async with srv.client("alice") as http:
        r = await http.get("/api/v2/video/call/default/ward-3/ring_state")
        assert r.status_code == 404, r.text  # no session yet
    assert (await call_post(srv, "alice", CID, "ring", {})).status_code == 200
    assert (await call_post(srv, "bob", CID, "reject", {"reason": "busy"})).status_code == 200
    sid = (await _get_call(srv, None))["call"]["session"]["id"]
    assert (await call_post(srv, "carol", CID, "accept")).status_code == 200
    await create_call(srv, "default:other", ["alice"])
    async with srv.client("alice") as http:
        r = await http.get(
            "/api/v2/video/call/default/ward-3/ring_state",
            params={"call_session_id": sid},
            headers={"X-Stream-Client": JS},
        )
        state = r.json()
        assert r.status_code == 200, r.text
        r = await http.get(
            "/api/v2/video/call/default/other/ring_state", params={"call_session_id": sid}
        )
        assert r.status_code == 404, r.text  # a session of another call
    assert state["session_id"] == sid and state["call_cid"] == CID
    assert state["created_by_user_id"] == "alice"
    assert list(state["rejected_by"]) == ["bob"] and list(state["accepted_by"]) == ["carol"]
    assert isinstance(state["accepted_by"]["carol"], str) and state["missed_by"] == {}
    assert state["session_ended_at"] is None and state["call_ended_at"] is None


# -- client events and CORS ------------------------------------------------------------------


async def test_call_client_event_is_accepted_counted_and_bounded(srv: ServerHandle) -> None:
    url = f"{srv.base_url}/api/v2/video/call_client_event"
    async with httpx.AsyncClient() as http:
        # The SDK sends it without a token while it connects (stream-auth-type: anonymous).
        r = await http.post(
            url,
            params={"api_key": srv.api_key},
            headers={"stream-auth-type": "anonymous", "X-Stream-Client": JS},
            json={"events": [{"type": "CoordinatorJoin"}] * 3},
        )
        assert r.status_code == 200, r.text
        token = srv.headers(srv.user_token("alice"))
        r = await http.post(
            url, params={"api_key": srv.api_key}, headers=token, json={"events": [{}] * 101}
        )
        assert r.status_code == 400, r.text
    assert srv.ctx.client_events == 3


@pytest.mark.parametrize("origins", [[], ["https://app.example.org"]])
async def test_cors_allows_only_the_configured_origins(tmp_path, origins: list[str]) -> None:
    async with (
        running_server(tmp_path, users=USERS, cors={"allowed_origins": origins}) as srv,
        httpx.AsyncClient(base_url=srv.base_url) as http,
    ):
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, x-stream-client",
        }
        path = "/api/v2/video/calls"
        good = await http.options(path, headers={"Origin": "https://app.example.org", **preflight})
        bad = await http.options(path, headers={"Origin": "https://evil.example", **preflight})
        get = await http.post(
            path,
            params={"api_key": srv.api_key},
            headers={"Origin": "https://app.example.org", **srv.headers(srv.user_token("alice"))},
            json={},
        )
    if not origins:  # nothing configured: as before
        assert good.status_code == 405 and bad.status_code == 405
        assert "access-control-allow-origin" not in get.headers
        return
    assert good.status_code == 204, good.text
    assert good.headers["access-control-allow-origin"] == "https://app.example.org"
    allowed = good.headers["access-control-allow-headers"]
    for header in ("authorization", "content-type", "stream-auth-type", "x-stream-client"):
        assert header in allowed
    assert bad.status_code == 403 and "cors.allowed_origins" in bad.json()["message"]
    assert "access-control-allow-origin" not in bad.headers
    assert get.status_code == 200 and get.headers["access-control-allow-origin"] == (
        "https://app.example.org"
    )


def test_cors_settings_refuse_a_wildcard() -> None:
    with pytest.raises(ValidationError, match="'\\*' is not allowed"):
        ServerSettings.model_validate({"cors": {"allowed_origins": ["*"]}})
    with pytest.raises(ValidationError, match="not an origin"):
        ServerSettings.model_validate({"cors": {"allowed_origins": ["https://a.org/app"]}})
