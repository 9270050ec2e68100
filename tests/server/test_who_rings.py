"""Who may ring a call and speak in its custom events: a GET never rings; ringing needs
``ring-call`` (members of ``default``, not any passer-by); only members send custom events."""

from __future__ import annotations

import pytest

from tests.server.wsclient import QUIET, WsClient, call_post, create_call
from tests.support.server import ServerHandle, running_server

USERS = ["alice", "bob", "carol", {"id": "root", "role": "admin"}]
CID = "default:door-1"
CALL = "/api/v2/video/call/default/door-1"


@pytest.fixture
async def srv(tmp_path):
    async with running_server(tmp_path, users=USERS, ws_health_seconds=QUIET) as s:
        yield s


async def test_a_get_never_rings(srv: ServerHandle) -> None:
    await create_call(srv, CID, ["alice", "bob"])
    bob = await WsClient.open(srv, "bob")
    async with srv.client("alice") as http:
        r = await http.get(CALL, params={"ring": "true"})
        assert r.status_code == 400, r.text
        assert r.json()["exception_fields"]["field"] == "ring"
        assert (await http.get(CALL, params={"ring": "false"})).status_code == 200
    assert await bob.types() == []
    # The same member rings with a POST.
    assert (await call_post(srv, "alice", CID, "ring")).status_code == 200
    assert (await bob.next("call.ring"))["user"]["id"] == "alice"
    await bob.close()


async def test_a_non_member_cannot_ring_a_default_call(srv: ServerHandle) -> None:
    await create_call(srv, CID, ["alice", "bob"])
    bob = await WsClient.open(srv, "bob")
    r = await call_post(srv, "carol", CID, "ring")
    assert r.status_code == 403 and "ring-call" in r.json()["message"], r.text
    r = await call_post(srv, "carol", CID, "join", {"ring": True})
    assert r.status_code == 403 and "ring-call" in r.json()["message"], r.text
    async with srv.client("carol") as http:
        r = await http.post(CALL, json={"ring": True})
    assert r.status_code == 403, r.text
    assert await bob.types() == []
    # carol still reads and joins it (default lets anyone join), without ringing anybody.
    async with srv.client("carol") as http:
        assert (await http.get(CALL)).status_code == 200
    # A global admin and a server token ring.
    assert (await call_post(srv, "root", CID, "ring")).status_code == 200
    assert (await bob.next("call.ring"))["user"]["id"] == "root"
    await bob.close()


async def test_own_capabilities_say_who_rings(srv: ServerHandle) -> None:
    await create_call(srv, CID, ["alice"])
    async with srv.client("alice") as http:
        assert "ring-call" in (await http.get(CALL)).json()["own_capabilities"]
    async with srv.client("carol") as http:
        assert "ring-call" not in (await http.get(CALL)).json()["own_capabilities"]
        # development lets anyone do anything, ringing included.
        r = await http.post(
            "/api/v2/video/call/development/dev-1",
            json={"data": {"members": [{"user_id": "alice"}]}, "ring": True},
        )
        assert r.status_code == 200, r.text


async def test_only_members_send_custom_events(srv: ServerHandle) -> None:
    """A non-member spoofed the door's answer (``unlock.result``) to every member."""
    await create_call(srv, CID, ["alice", "bob"])
    bob = await WsClient.open(srv, "bob")
    spoof = {"custom": {"type": "unlock.result", "ok": True}}
    r = await call_post(srv, "carol", CID, "event", spoof)
    assert r.status_code == 403 and "not a member" in r.json()["message"], r.text
    assert await bob.types() == []
    assert (
        await call_post(srv, "alice", CID, "event", {"custom": {"type": "unlock"}})
    ).status_code == 200
    event = await bob.next("custom")
    assert event["user"]["id"] == "alice" and event["custom"] == {"type": "unlock"}
    # A server token speaks for the user it names; a global admin for himself.
    r = await call_post(srv, None, CID, "event", {"custom": {"n": 1}, "user_id": "bob"})
    assert r.status_code == 200, r.text
    assert (await bob.next("custom"))["user"]["id"] == "bob"
    assert (await call_post(srv, "root", CID, "event", {"custom": {"n": 2}})).status_code == 200
    assert (await bob.next("custom"))["user"]["id"] == "root"
    await bob.close()
