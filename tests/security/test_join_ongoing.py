"""Who may join a conversation already under way between two others (``join-ongoing-call``).

On a call type whose ``user`` and ``call_member`` roles lack the capability, every principal of
``principals.ROLES`` tries to join as the third user while ``erin`` and the door talk. Only a
server token and the roles that carry ``admin`` (a call admin, a global admin) get in; the
fences (other team, token pinned to another call) still answer 404 first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from tests.security.principals import ROLES, USERS
from tests.server.wsclient import WsClient, join
from tests.support.server import ServerHandle, running_server

CALL_TYPES = """
call_types:
  - name: duo
    grants:
      user: [read-call, join-call]
      call_member: [read-call, join-call, send-audio, send-video]
"""
EXPECT = {
    "server": 200,
    "global_admin": 200,
    "call_admin": 200,
    "member": 403,
    "non_member": 403,
    "other_team": 404,
    "pinned_other": 404,
    "pinned_own": 403,
}


@pytest_asyncio.fixture
async def srv(tmp_path) -> AsyncIterator[ServerHandle]:
    async with running_server(
        tmp_path, users=[*USERS, "door"], call_types_yaml=CALL_TYPES
    ) as handle:
        yield handle


async def _ongoing(srv: ServerHandle, role: str) -> str:
    """A duo call of this role's own, with erin and the door talking in it."""
    call_id = f"talk-{role.replace('_', '-')}"
    async with srv.client() as http:
        r = await http.post(
            f"/api/v2/video/call/duo/{call_id}",
            json={
                "data": {
                    "created_by_id": "door",
                    "members": [
                        {"user_id": "alice", "role": "admin"},
                        {"user_id": "bob", "role": "call_member"},
                        {"user_id": "erin"},
                        {"user_id": "door"},
                    ],
                }
            },
        )
        assert r.status_code in (200, 201), r.text
    for user in ("door", "erin"):
        await join(srv, await WsClient.open(srv, user), f"duo:{call_id}")
    return call_id


def _token(srv: ServerHandle, role: str, call_id: str) -> str:
    user, pin = ROLES[role]
    if user is None:
        return srv.server_token()
    if pin is None:
        return srv.user_token(user)
    return srv.user_token(user, call_cids=[f"duo:{call_id}" if pin == "own" else "duo:other"])


async def test_only_server_tokens_and_admins_join_an_ongoing_call_without_the_grant(
    srv: ServerHandle,
) -> None:
    got: dict[str, int] = {}
    for role in ROLES:
        call_id = await _ongoing(srv, role)
        body = {"user_id": "bob"} if role == "server" else {}
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=15.0) as http:
            r = await http.post(
                f"/api/v2/video/call/duo/{call_id}/join",
                params={"api_key": srv.api_key},
                headers={"Authorization": _token(srv, role, call_id), "stream-auth-type": "jwt"},
                json=body,
            )
        got[role] = r.status_code
        if r.status_code == 403:
            assert "join-ongoing-call" in r.json()["message"], r.text
    assert got == EXPECT
