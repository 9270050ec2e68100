"""Roles cannot be self-granted: a caller grants only roles whose capabilities she has on the call,
changes or removes only members whose role she could grant, and never removes the creator."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.server import ServerHandle, running_server

# A ward where roles really differ: a moderator has less than an admin.
TYPES = """\
call_types:
  - name: ward
    grants:
      user: []
      call_member: [read-call, join-call, update-call-member]
      moderator: [read-call, join-call, update-call-member, remove-call-member]
      admin: [read-call, join-call, update-call, update-call-settings, update-call-member,
              remove-call-member, end-call]
"""
USERS = ["alice", "bob", "carol", "dave", "eve", {"id": "root", "role": "admin"}]
DEFAULT = "/api/v2/video/call/default/flat-1"
WARD = "/api/v2/video/call/ward/room-1"


@pytest.fixture
async def srv(tmp_path):
    async with running_server(tmp_path, users=USERS, call_types_yaml=TYPES) as s:
        yield s


async def _create(s: ServerHandle, path: str, members: dict[str, str]) -> None:
    data = {
        "created_by_id": "alice",
        "members": [{"user_id": u, "role": r} for u, r in members.items()],
    }
    async with s.client() as http:
        r = await http.post(path, json={"data": data})
    assert r.status_code == 200, r.text


async def _members(s: ServerHandle, path: str, user: str | None, **body: Any) -> Any:
    async with s.client(user) as http:
        return await http.post(f"{path}/members", json=body)


async def _roles(s: ServerHandle, path: str) -> dict[str, str]:
    async with s.client() as http:
        r = await http.get(path)
    return {m["user_id"]: m["role"] for m in r.json()["members"]}


def _refused(r: Any, field: str, *words: str) -> None:
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["exception_fields"]["field"] == field, body
    for word in words:
        assert word in body["message"], body


async def test_a_member_cannot_make_herself_admin(srv: ServerHandle) -> None:
    """The attack of the issue: bob (call_member of a default call) promotes himself, then
    changes the settings, removes the creator and seats a friend as host."""
    await _create(srv, DEFAULT, {"alice": "admin", "bob": "call_member"})
    r = await _members(srv, DEFAULT, "bob", update_members=[{"user_id": "bob", "role": "admin"}])
    _refused(r, "update_members[0].role", "may not grant role admin", "update-call-settings")
    r = await _members(srv, DEFAULT, "bob", update_members=[{"user_id": "eve", "role": "host"}])
    _refused(r, "update_members[0].role", "may not grant role host")
    async with srv.client("bob") as http:
        r = await http.patch(
            DEFAULT, json={"settings_override": {"ring": {"auto_cancel_timeout_ms": 1}}}
        )
    assert r.status_code == 403, r.text
    r = await _members(srv, DEFAULT, "bob", remove_members=["alice"])
    assert r.status_code == 403, r.text
    # bob still does what his role allows: seat a member with a role he has himself.
    r = await _members(srv, DEFAULT, "bob", update_members=[{"user_id": "eve"}])
    assert r.status_code == 200, r.text
    assert await _roles(srv, DEFAULT) == {
        "alice": "admin",
        "bob": "call_member",
        "eve": "call_member",
    }


async def test_a_moderator_cannot_touch_an_admin(srv: ServerHandle) -> None:
    await _create(srv, WARD, {"bob": "admin", "carol": "moderator", "dave": "call_member"})
    r = await _members(
        srv, WARD, "carol", update_members=[{"user_id": "bob", "role": "call_member"}]
    )
    _refused(r, "update_members[0].user_id", "may not change member bob", "update-call-settings")
    r = await _members(srv, WARD, "carol", update_members=[{"user_id": "bob", "custom": {"x": 1}}])
    _refused(r, "update_members[0].user_id", "may not change member bob")
    r = await _members(srv, WARD, "carol", remove_members=["bob"])
    _refused(r, "remove_members[0]", "may not remove member bob")
    r = await _members(srv, WARD, "carol", update_members=[{"user_id": "carol", "role": "admin"}])
    _refused(r, "update_members[0].role", "may not grant role admin")
    # Within her own capabilities: grant moderator, change and remove members below her.
    r = await _members(srv, WARD, "carol", update_members=[{"user_id": "eve", "role": "moderator"}])
    assert r.status_code == 200, r.text
    r = await _members(srv, WARD, "carol", remove_members=["dave"])
    assert r.status_code == 200, r.text
    # She may step down herself.
    r = await _members(
        srv, WARD, "carol", update_members=[{"user_id": "carol", "role": "call_member"}]
    )
    assert r.status_code == 200, r.text
    assert await _roles(srv, WARD) == {"bob": "admin", "carol": "call_member", "eve": "moderator"}
    # An admin of the call does all of it.
    r = await _members(srv, WARD, "bob", update_members=[{"user_id": "eve", "role": "admin"}])
    assert r.status_code == 200, r.text


async def test_nobody_but_a_global_admin_or_the_server_removes_the_creator(
    srv: ServerHandle,
) -> None:
    await _create(srv, WARD, {"alice": "call_member", "bob": "admin"})
    r = await _members(srv, WARD, "bob", remove_members=["alice"])
    _refused(r, "remove_members[0]", "created the call")
    assert (await _members(srv, WARD, "root", remove_members=["alice"])).status_code == 200
    assert (
        await _members(srv, WARD, None, update_members=[{"user_id": "alice"}])
    ).status_code == 200
    assert (await _members(srv, WARD, None, remove_members=["alice"])).status_code == 200
    assert "alice" not in await _roles(srv, WARD)


async def test_server_tokens_and_call_creation_seat_any_role(srv: ServerHandle) -> None:
    """The creator of a NEW call seats its first members as she likes: nobody else's standing
    is at stake. A server token may do anything."""
    async with srv.client("eve") as http:
        r = await http.post(
            "/api/v2/video/call/default/eves",
            json={
                "data": {
                    "members": [
                        {"user_id": "eve", "role": "admin"},
                        {"user_id": "bob", "role": "host"},
                    ]
                }
            },
        )
    assert r.status_code == 200, r.text
    await _create(srv, DEFAULT, {"bob": "call_member"})
    r = await _members(srv, DEFAULT, None, update_members=[{"user_id": "bob", "role": "admin"}])
    assert r.status_code == 200, r.text
    assert (await _roles(srv, DEFAULT))["bob"] == "admin"
