"""Every permission rule: tokens (server/user, api key, signature, skew, revoked), members-only
call types, teams, ``call_cids`` pins, and capabilities per call role."""

from __future__ import annotations

import jwt
import pytest

from appliance.clock import ManualClock
from appliance.server.auth import Principal
from appliance.server.lifecycle.permissions import access
from tests.support.server import ServerHandle, running_server

CALL = "/api/v2/video/call/default/door-1"
TYPES = """\
call_types:
  - name: intercom
    grants:
      user: [read-call]
      call_member: [read-call, join-call, send-audio, send-video]
  - name: private
    grants:
      user: []
"""
USERS = [
    "alice",
    "bob",
    "carol",
    {"id": "root", "role": "admin"},
    {"id": "blue-1", "teams": ["blue"]},
    {"id": "red-1", "teams": ["red"]},
]


@pytest.fixture
async def srv(tmp_path):
    clock = ManualClock(1_790_000_000.0)
    async with running_server(tmp_path, users=USERS, call_types_yaml=TYPES, clock=clock) as s:
        s.manual_clock = clock  # type: ignore[attr-defined]
        yield s


async def _status(s: ServerHandle, method: str, path: str, *, user=None, token=None, **kw) -> int:
    async with s.client(user, token=token) as http:
        r = await http.request(method, path, **kw)
    assert r.headers["content-type"].startswith("application/json"), r.text
    return r.status_code


async def _make(s: ServerHandle, path: str, members=(), **data) -> None:
    body = {
        "data": {"created_by_id": "alice", "members": [{"user_id": m} for m in members], **data}
    }
    async with s.client() as http:
        r = await http.post(path, json=body)
    assert r.status_code == 200, r.text


# --- tokens -----------------------------------------------------------------------------


async def test_server_token_may_do_anything_user_token_is_limited(srv: ServerHandle) -> None:
    await _make(srv, "/api/v2/video/call/private/p1", members=["bob"])
    assert await _status(srv, "GET", "/api/v2/video/call/private/p1") == 200
    assert await _status(srv, "GET", "/api/v2/video/call/private/p1", user="carol") == 403
    # bob is a member: `private` replaces only the grants of `user`
    assert await _status(srv, "GET", "/api/v2/video/call/private/p1", user="bob") == 200


async def test_api_key_and_signature_and_header_forms(srv: ServerHandle) -> None:
    import httpx

    tok = srv.user_token("alice")
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        path = "/api/v2/video/calltypes"
        r = await http.get(path, params={"api_key": "wrong"}, headers={"Authorization": tok})
        assert r.status_code == 401 and r.json()["exception_fields"]["field"] == "api_key"
        r = await http.get(path, headers={"Authorization": tok})
        assert r.status_code == 401
        r = await http.get(path, params={"api_key": srv.api_key})
        assert r.status_code == 401 and "Authorization" in r.json()["message"]
        forged = jwt.encode(
            {"user_id": "alice"}, "not-the-secret-but-long-enough-for-hs256", algorithm="HS256"
        )
        r = await http.get(path, params={"api_key": srv.api_key}, headers={"Authorization": forged})
        assert r.status_code == 401 and "signature" in r.json()["message"]
        r = await http.get(
            path, params={"api_key": srv.api_key}, headers={"Authorization": "Bearer " + tok}
        )
        assert r.status_code == 200
        r = await http.get(
            path,
            params={"api_key": srv.api_key},
            headers={"Authorization": tok, "stream-auth-type": "anonymous"},
        )
        assert r.status_code == 401


async def test_clock_skew_leeway(srv: ServerHandle) -> None:
    now = int(srv.manual_clock.time())  # type: ignore[attr-defined]
    path = "/api/v2/video/calltypes"
    # a device whose clock runs 2 minutes ahead: within the 300 s leeway
    ahead = srv.user_token("alice", iat=now + 120)
    assert await _status(srv, "GET", path, token=ahead) == 200
    far_ahead = srv.user_token("alice", iat=now + 900)
    assert await _status(srv, "GET", path, token=far_ahead) == 401
    just_expired = srv.user_token("alice", iat=False, exp=now - 60)
    assert await _status(srv, "GET", path, token=just_expired) == 200
    expired = srv.user_token("alice", iat=False, exp=now - 600)
    assert await _status(srv, "GET", path, token=expired) == 401
    ttl = srv.user_token("alice", ttl=60)
    assert await _status(srv, "GET", path, token=ttl) == 200
    srv.manual_clock.advance(60 + 301)  # type: ignore[attr-defined]
    assert await _status(srv, "GET", path, token=ttl) == 401


async def test_revoked_token_and_token_without_iat(srv: ServerHandle) -> None:
    path = "/api/v2/video/calltypes"
    no_iat = srv.user_token("bob", iat=False)
    with_iat = srv.user_token("bob")
    assert await _status(srv, "GET", path, token=no_iat) == 200
    async with srv.client() as http:
        await http.post("/api/v2/users/revoke_tokens", json={"user_ids": ["bob"]})
    assert await _status(srv, "GET", path, token=no_iat) == 401
    assert await _status(srv, "GET", path, token=with_iat) == 401
    srv.manual_clock.advance(1)  # type: ignore[attr-defined]
    assert await _status(srv, "GET", path, token=srv.user_token("bob")) == 200


# --- members-only, teams, pins ------------------------------------------------------------


async def test_members_only_call_type(srv: ServerHandle) -> None:
    path = "/api/v2/video/call/intercom/door-1"
    await _make(srv, path, members=["bob"])
    async with srv.client("carol") as http:  # not a member: may read, may not join or ring
        r = await http.get(path)
        assert r.status_code == 200
        assert r.json()["own_capabilities"] == ["read-call"]
        assert (await http.post(f"{path}/ring", json={})).status_code == 403
        assert (await http.get(path, params={"ring": "true"})).status_code == 400  # GET never rings
    async with srv.client("bob") as http:
        caps = (await http.get(path)).json()["own_capabilities"]
        assert "join-call" in caps and "send-video" in caps
    # a non-member without create-call cannot create one either
    assert (
        await _status(srv, "POST", "/api/v2/video/call/intercom/door-2", user="carol", json={})
        == 403
    )


async def test_team_isolation(srv: ServerHandle) -> None:
    path = "/api/v2/video/call/default/blue-room"
    await _make(srv, path, team="blue")
    assert await _status(srv, "GET", path, user="blue-1") == 200
    assert await _status(srv, "GET", path, user="red-1") == 404
    assert await _status(srv, "GET", path, user="carol") == 404  # no teams: no team calls
    await _make(srv, CALL)
    assert await _status(srv, "GET", CALL, user="blue-1") == 404  # team users: team calls only
    # create: only for one's own team
    body = {"data": {"team": "red"}}
    assert (
        await _status(srv, "POST", "/api/v2/video/call/default/x", user="blue-1", json=body) == 403
    )
    body = {"data": {"team": "blue"}}
    assert (
        await _status(srv, "POST", "/api/v2/video/call/default/x", user="blue-1", json=body) == 200
    )


async def test_call_cids_pin(srv: ServerHandle) -> None:
    await _make(srv, CALL, members=["bob"])
    await _make(srv, "/api/v2/video/call/default/door-2", members=["bob"])
    pinned = srv.user_token("bob", call_cids=["default:door-1"])
    assert await _status(srv, "GET", CALL, token=pinned) == 200
    assert await _status(srv, "GET", "/api/v2/video/call/default/door-2", token=pinned) == 404
    new = "/api/v2/video/call/default/door-3"
    assert await _status(srv, "POST", new, token=pinned, json={}) == 403


# --- capabilities per role ----------------------------------------------------------------


async def test_capabilities_per_role(srv: ServerHandle) -> None:
    await _make(srv, CALL, members=["bob"])
    async with srv.client() as http:
        await http.post(
            CALL + "/members", json={"update_members": [{"user_id": "alice", "role": "host"}]}
        )
    patch = {"json": {"custom": {"x": 1}}}
    add = {"json": {"update_members": [{"user_id": "carol"}]}}
    remove = {"json": {"remove_members": ["carol"]}}
    # user (no member): reads and joins a default call, changes nothing
    assert await _status(srv, "PATCH", CALL, user="carol", **patch) == 403
    assert await _status(srv, "POST", CALL + "/members", user="carol", **add) == 403
    # call_member: updates the call and its members, removes nobody
    assert await _status(srv, "PATCH", CALL, user="bob", **patch) == 200
    settings = {"json": {"settings_override": {"limits": {"max_participants": 2}}}}
    assert await _status(srv, "PATCH", CALL, user="bob", **settings) == 403
    assert await _status(srv, "POST", CALL + "/members", user="bob", **add) == 200
    assert await _status(srv, "POST", CALL + "/members", user="bob", **remove) == 403
    # host: everything
    assert await _status(srv, "PATCH", CALL, user="alice", **settings) == 200
    assert await _status(srv, "POST", CALL + "/members", user="alice", **remove) == 200
    # a global admin has the admin grants on any call
    assert await _status(srv, "PATCH", CALL, user="root", **settings) == 200
    # delete: server, admin or the creator
    assert await _status(srv, "POST", CALL + "/delete", user="bob", json={}) == 403
    assert await _status(srv, "POST", CALL + "/delete", user="root", json={}) == 200


def test_access_rules_unit() -> None:
    grants = {
        "user": ["read-call"],
        "call_member": ["join-call", "read-call"],
        "admin": ["end-call"],
    }
    user = Principal("u", role="user")
    assert access(user, "t:1", None, grants, None).own_capabilities() == ["read-call"]
    assert access(user, "t:1", None, grants, "call_member").own_capabilities() == [
        "join-call",
        "read-call",
    ]
    admin = Principal("a", role="admin")
    assert access(admin, "t:1", None, grants, None).own_capabilities() == ["end-call", "read-call"]
    assert access(Principal("p", call_cids=("t:2",)), "t:1", None, grants, None).blocked
    assert access(Principal("b", teams=("blue",)), "t:1", "blue", grants, None).blocked is None
    assert access(Principal("b", teams=("blue",)), "t:1", "red", grants, None).blocked
    assert "update-call" in access(Principal(None), "t:1", "red", {}, None).capabilities
