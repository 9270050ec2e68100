"""``join-ongoing-call``: joining a session in which two other users already talk (issue #11).

A call type decides it per role. The built-ins grant it wherever they grant ``join-call`` (as
Stream lets anyone who may join join); ``duo`` here, like ``intercom`` in
``config/call-types.yaml``, keeps a conversation between two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from appliance.clock import ManualClock
from tests.server.wsclient import QUIET, WsClient, call_post, create_call, join
from tests.support.server import ServerHandle, running_server

USERS = ["alice", "bob", "carol", "door"]
DUO = "duo:door-1"
OPEN = "default:door-2"
CALL_TYPES = """
call_types:
  - name: duo
    grants:
      user: [read-call, create-call]
      call_member: [read-call, join-call, ring-call, send-audio, send-video, end-call]
"""


@pytest_asyncio.fixture
async def srv(tmp_path) -> AsyncIterator[ServerHandle]:
    async with running_server(
        tmp_path,
        users=USERS,
        clock=ManualClock(),
        ws_health_seconds=QUIET,
        call_types_yaml=CALL_TYPES,
    ) as handle:
        for cid in (DUO, OPEN):
            await create_call(handle, cid, ["alice", "bob", "carol", "door"], by="door")
        yield handle


async def _participants(srv: ServerHandle, cid: str) -> list[str]:
    async with srv.client() as http:
        r = await http.get(f"/api/v2/video/call/{cid.replace(':', '/')}")
    assert r.status_code == 200, r.text
    session = r.json()["call"]["session"] or {}
    return sorted(p["user"]["id"] for p in session.get("participants", []))


async def test_a_third_user_is_refused_on_a_type_without_the_capability(
    srv: ServerHandle,
) -> None:
    door, alice, bob, carol = [
        await WsClient.open(srv, u) for u in ("door", "alice", "bob", "carol")
    ]
    await join(srv, door, DUO)
    await join(srv, alice, DUO)  # the second user: an answer, not a barge-in
    await carol.settle()
    r = await call_post(srv, "bob", DUO, "join", {"connection_id": bob.connection_id})
    assert r.status_code == 403, r.text
    message = r.json()["message"]
    assert "join-ongoing-call" in message and "alice and door" in message, message
    # Refused before anything changed: no participant, nothing announced.
    assert await _participants(srv, DUO) == ["alice", "door"]
    assert "call.session_participant_joined" not in await carol.types()
    # The capability shows in own_capabilities (and is absent here).
    async with srv.client("bob") as http:
        caps = (await http.get("/api/v2/video/call/duo/door-1")).json()["own_capabilities"]
    assert "join-call" in caps and "join-ongoing-call" not in caps


async def test_what_is_not_a_further_user_still_joins(srv: ServerHandle) -> None:
    door, alice, bob = [await WsClient.open(srv, u) for u in ("door", "alice", "bob")]
    await join(srv, door, DUO)
    await join(srv, alice, DUO)
    # The same user again (a second tab) is no further user.
    alice_2 = await WsClient.open(srv, "alice")
    await join(srv, alice_2, DUO)
    # A participant whose WebSocket dropped (grace period) no longer counts as talking.
    await alice.close_and_wait(srv)
    await alice_2.close_and_wait(srv)
    r = await call_post(srv, "bob", DUO, "join", {"connection_id": bob.connection_id})
    assert r.status_code == 200, r.text


async def test_the_built_in_default_type_lets_a_third_user_join(srv: ServerHandle) -> None:
    door, alice, bob = [await WsClient.open(srv, u) for u in ("door", "alice", "bob")]
    await join(srv, door, OPEN)
    await join(srv, alice, OPEN)
    joined = await join(srv, bob, OPEN)
    assert sorted(p["user_id"] for p in joined["participants"]) == ["alice", "door"]
    assert "join-ongoing-call" in joined["own_capabilities"]
    assert await _participants(srv, OPEN) == ["alice", "bob", "door"]


async def test_a_server_token_joins_anyone_into_an_ongoing_call(srv: ServerHandle) -> None:
    door, alice = [await WsClient.open(srv, u) for u in ("door", "alice")]
    await join(srv, door, DUO)
    await join(srv, alice, DUO)
    r = await call_post(srv, None, DUO, "join", {"user_id": "bob"})
    assert r.status_code == 200, r.text
