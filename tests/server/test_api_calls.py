"""Calls over the REST API against a real server: create, get, update, members, delete, events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from tests.support.server import ServerHandle

CALL = "/api/v2/video/call/default/door-1"


async def _create(srv: ServerHandle, body: dict[str, Any], path: str = CALL) -> dict[str, Any]:
    async with srv.client() as http:
        r = await http.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def test_create_with_members_custom_settings_starts_at_team(server: ServerHandle) -> None:
    body = {
        "data": {
            "created_by_id": "alice",
            "members": [
                {"user_id": "alice", "role": "host"},
                {"user_id": "bob", "custom": {"flat": 12, "tags": ["night"]}},
            ],
            "custom": {"site": "north", "floor": 3},
            "settings_override": {
                "ring": {"auto_cancel_timeout_ms": 5000},
                "video": {"enabled": False},
            },
            "starts_at": "2026-01-02T03:04:05.123456Z",
            "team": "blue",
        }
    }
    out = await _create(server, body)
    call = out["call"]
    assert out["created"] is True
    assert call["cid"] == "default:door-1" and call["type"] == "default" and call["id"] == "door-1"
    assert call["created_by"]["id"] == "alice" and call["created_by"]["name"] == "Alice"
    assert call["custom"] == {"site": "north", "floor": 3}
    assert call["team"] == "blue"
    assert call["starts_at"] == 1767323045_123456000
    assert call["settings"]["ring"]["auto_cancel_timeout_ms"] == 5000
    assert call["settings"]["ring"]["incoming_call_timeout_ms"] == 30000
    assert call["settings"]["video"]["enabled"] is False
    assert call["settings"]["recording"]["mode"] == "disabled"
    assert call["recording"] is False and call["egress"]["broadcasting"] is False
    assert isinstance(call["created_at"], int) and call["created_at"] > 1_600_000_000 * 10**9
    roles = {m["user_id"]: (m["role"], m["custom"]) for m in out["members"]}
    assert roles == {
        "alice": ("host", {}),
        "bob": ("call_member", {"flat": 12, "tags": ["night"]}),
    }
    assert out["membership"] is None  # the server token is no member
    assert "join-call" in out["own_capabilities"]


async def test_existing_call_ignores_data(server: ServerHandle) -> None:
    await _create(server, {"data": {"created_by_id": "alice", "custom": {"v": 1}}})
    again = await _create(
        server,
        {"data": {"created_by_id": "bob", "custom": {"v": 2}, "members": [{"user_id": "bob"}]}},
    )
    assert again["created"] is False
    assert again["call"]["custom"] == {"v": 1}
    assert again["call"]["created_by"]["id"] == "alice"
    assert again["members"] == []


async def test_get_and_members_limit_and_membership(server: ServerHandle) -> None:
    members = [{"user_id": u} for u in ("alice", "bob", "carol")]
    await _create(server, {"data": {"created_by_id": "alice", "members": members}})
    async with server.client("carol") as http:
        r = await http.get(CALL, params={"members_limit": 1})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["members"]) == 1
    assert out["membership"]["user_id"] == "carol"
    assert out["membership"]["role"] == "call_member"
    assert "update-call" in out["own_capabilities"]


async def test_update_call(server: ServerHandle) -> None:
    await _create(server, {"data": {"created_by_id": "alice", "custom": {"a": 1}}})
    async with server.client() as http:
        r = await http.patch(
            CALL,
            json={
                "custom": {"b": 2},
                "settings_override": {"limits": {"max_participants": 3}},
                "starts_at": 1_800_000_000_000_000_000,
            },
        )
        assert r.status_code == 200, r.text
        call = r.json()["call"]
        assert call["custom"] == {"b": 2}
        assert call["settings"]["limits"]["max_participants"] == 3
        assert call["starts_at"] == 1_800_000_000_000_000_000
        assert call["updated_at"] >= call["created_at"]
        r = await http.patch(CALL, json={"starts_at": None})
        assert r.json()["call"]["starts_at"] is None
        assert r.json()["call"]["custom"] == {"b": 2}


async def test_times_have_one_rule_integer_nanoseconds_or_rfc3339(server: ServerHandle) -> None:
    """``1700000000.5`` and ``"1700000000"`` were read as seconds while 1700000000 meant
    nanoseconds; a number is nanoseconds, text is RFC 3339, anything else is a 400."""
    await _create(server, {"data": {"created_by_id": "alice"}})
    async with server.client() as http:
        for value in (1700000000.5, "1700000000", "soon", True, [1]):
            r = await http.patch(CALL, json={"starts_at": value})
            assert r.status_code == 400, (value, r.text)
            assert r.json()["exception_fields"]["field"] == "starts_at", r.text
            r = await http.post(
                "/api/v2/video/call/default/other",
                json={"data": {"created_by_id": "alice", "starts_at": value}},
            )
            assert r.status_code == 400, (value, r.text)
            assert r.json()["exception_fields"]["field"] == "data.starts_at", r.text
            r = await http.post(
                "/api/v2/users/revoke_tokens",
                json={"user_ids": ["bob"], "revoke_tokens_issued_before": value},
            )
            assert r.status_code == 400, (value, r.text)
        for value, ns in (
            (1_700_000_000, 1_700_000_000),
            (1.8e18, 1_800_000_000_000_000_000),
            ("2030-01-02T09:00:00.5Z", 1_893_574_800_500_000_000),
        ):
            r = await http.patch(CALL, json={"starts_at": value})
            assert r.status_code == 200, r.text
            assert r.json()["call"]["starts_at"] == ns


async def test_update_and_remove_members(server: ServerHandle) -> None:
    await _create(server, {"data": {"created_by_id": "alice", "members": [{"user_id": "alice"}]}})
    async with server.client() as http:
        r = await http.post(
            CALL + "/members",
            json={
                "update_members": [
                    {"user_id": "bob", "role": "moderator", "custom": {"k": "v"}},
                    {"user_id": "alice", "custom": {"x": True}},
                ]
            },
        )
        assert r.status_code == 200, r.text
        got = {m["user_id"]: m for m in r.json()["members"]}
        assert got["bob"]["role"] == "moderator" and got["bob"]["custom"] == {"k": "v"}
        assert got["alice"]["role"] == "call_member" and got["alice"]["custom"] == {"x": True}
        r = await http.post(CALL + "/members", json={"remove_members": ["alice"]})
        assert r.status_code == 200, r.text
        r = await http.get(CALL)
        assert [m["user_id"] for m in r.json()["members"]] == ["bob"]


async def test_members_must_be_existing_users(server: ServerHandle) -> None:
    async with server.client() as http:
        r = await http.post(
            CALL, json={"data": {"created_by_id": "alice", "members": [{"user_id": "nobody"}]}}
        )
        assert r.status_code == 400
        assert "nobody" in r.json()["message"]
        assert r.json()["exception_fields"]["field"] == "data.members"
        # nothing was created
        assert (await http.get(CALL)).status_code == 404


async def test_settings_override_is_validated(server: ServerHandle) -> None:
    async with server.client() as http:
        r = await http.post(
            CALL,
            json={
                "data": {
                    "created_by_id": "alice",
                    "settings_override": {"ring": {"auto_cancel_timeout_ms": "soon"}},
                }
            },
        )
    assert r.status_code == 400
    assert (
        r.json()["exception_fields"]["field"]
        == "data.settings_override.ring.auto_cancel_timeout_ms"
    )


async def test_delete_call(server: ServerHandle) -> None:
    await _create(server, {"data": {"created_by_id": "alice", "members": [{"user_id": "bob"}]}})
    async with server.client() as http:
        r = await http.post(CALL + "/delete", json={"hard": True})
        assert r.status_code == 200, r.text
        assert r.json()["call"]["cid"] == "default:door-1"
        assert (await http.get(CALL)).status_code == 404
        # the id can be used again
        r = await http.post(CALL, json={"data": {"created_by_id": "bob"}})
        assert r.json()["created"] is True and r.json()["members"] == []


async def _ws(srv: ServerHandle, user: str) -> Any:
    ws = await websockets.connect(srv.ws_url)
    await ws.send(json.dumps({"token": srv.user_token(user), "user_details": {"id": user}}))
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg.get("type") == "connection.ok":
            return ws


async def _next_event(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg.get("type") == kind:
            return msg


async def test_events_reach_members(server: ServerHandle) -> None:
    bob = await _ws(server, "bob")
    try:
        await _create(server, {"data": {"created_by_id": "alice", "members": [{"user_id": "bob"}]}})
        created = await _next_event(bob, "call.created")
        assert created["call"]["cid"] == "default:door-1"
        assert [m["user_id"] for m in created["members"]] == ["bob"]
        async with server.client() as http:
            await http.patch(CALL, json={"custom": {"n": 1}})
            updated = await _next_event(bob, "call.updated")
            assert updated["call"]["custom"] == {"n": 1}
            await http.post(CALL + "/members", json={"update_members": [{"user_id": "carol"}]})
            added = await _next_event(bob, "call.member_added")
            assert [m["user_id"] for m in added["members"]] == ["carol"]
            await http.post(
                CALL + "/event", json={"user_id": "alice", "custom": {"type": "unlock"}}
            )
            custom = await _next_event(bob, "custom")
            assert custom["custom"] == {"type": "unlock"} and custom["user"]["id"] == "alice"
            await http.post(CALL + "/members", json={"remove_members": ["bob"]})
            removed = await _next_event(bob, "call.member_removed")
            assert removed["members"] == ["bob"]
    finally:
        await bob.close()


async def test_concurrent_get_or_create_creates_once(server: ServerHandle) -> None:
    body = {"data": {"created_by_id": "alice", "members": [{"user_id": "bob"}]}}
    async with server.client() as http:
        answers = await asyncio.gather(*(http.post(CALL, json=body) for _ in range(8)))
    assert [r.status_code for r in answers] == [200] * 8
    assert sorted(r.json()["created"] for r in answers) == [False] * 7 + [True]
    assert {r.json()["call"]["created_at"] for r in answers} == {
        answers[0].json()["call"]["created_at"]
    }
