"""Who knocks: the roles every route is tried with, and the credentials it must refuse.

Each role acts on its own call ``default:sec-<role>`` (created fresh by ``prepare``), so a route
that changes or deletes a call cannot spoil another role's case. The members of every such call:
``alice`` (its creator, call role ``admin``) and ``bob`` (``call_member``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import jwt

from appliance.server.auth import create_token
from tests.support.server import ServerHandle

USERS: list[Any] = [
    "alice",
    "bob",
    "carol",
    "erin",
    {"id": "root", "role": "admin"},
    {"id": "dan", "teams": ["blue"]},
]

# role -> (user id or None for a server token, call_cids pin: None, "own" or "other")
ROLES: dict[str, tuple[str | None, str | None]] = {
    "server": (None, None),
    "global_admin": ("root", None),
    "call_admin": ("alice", None),
    "member": ("bob", None),
    "non_member": ("carol", None),
    "other_team": ("dan", None),
    "pinned_other": ("bob", "other"),
    "pinned_own": ("bob", "own"),
}
OTHER_CID = "default:other"


def call_id(role: str) -> str:
    return f"sec-{role.replace('_', '-')}"


def cid_of(role: str) -> str:
    return f"default:{call_id(role)}"


def token_for(srv: ServerHandle, role: str) -> str:
    user, pin = ROLES[role]
    if user is None:
        return srv.server_token()
    if pin is None:
        return srv.user_token(user)
    return srv.user_token(user, call_cids=[cid_of(role) if pin == "own" else OTHER_CID])


async def prepare(srv: ServerHandle, role: str) -> None:
    """The role's call (fresh), and the other call a pinned token may reach instead."""
    async with srv.client() as http:
        for cid in (cid_of(role), OTHER_CID):
            type_, id_ = cid.split(":")
            r = await http.post(
                f"/api/v2/video/call/{type_}/{id_}",
                json={
                    "data": {
                        "created_by_id": "alice",
                        "members": [
                            {"user_id": "alice", "role": "admin"},
                            {"user_id": "bob", "role": "call_member"},
                        ],
                    }
                },
            )
            assert r.status_code == 200, r.text


# --- credentials that must be refused (401) ------------------------------------------------


def _claims_token(secret: str, **claims: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def bad_credentials(srv: ServerHandle) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """case -> (query params, headers). ``erin``'s tokens were revoked by ``revoke_erin``."""
    secret = srv.api_secret
    now = int(time.time())
    good_key = {"api_key": srv.api_key}

    def auth(token: str, **extra: str) -> dict[str, str]:
        return {"Authorization": token, "stream-auth-type": "jwt", **extra}

    bob = srv.user_token("bob")
    with warnings.catch_warnings():  # PyJWT warns about the short keys some cases use
        warnings.simplefilter("ignore")
        return _cases(srv, secret, now, good_key, auth, bob)


def _cases(
    srv: ServerHandle,
    secret: str,
    now: int,
    good_key: dict[str, str],
    auth: Callable[..., dict[str, str]],
    bob: str,
) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    cases: dict[str, tuple[dict[str, str], dict[str, str]]] = {
        "no api_key": ({}, auth(bob)),
        "wrong api_key": ({"api_key": "not-this-server"}, auth(bob)),
        "no token": (good_key, {}),
        "garbage token": (good_key, auth("not-a-jwt")),
        "wrong secret": (good_key, auth(create_token("another-secret-of-32-bytes-or-more", "bob"))),
        "signed with the api key": (good_key, auth(create_token(srv.api_key, "bob"))),
        "alg none": (good_key, auth(jwt.encode({"user_id": "bob"}, None, algorithm="none"))),
        "alg HS512": (good_key, auth(jwt.encode({"user_id": "bob"}, secret, algorithm="HS512"))),
        "expired": (good_key, auth(_claims_token(secret, user_id="bob", exp=now - 3600))),
        "issued in the future": (
            good_key,
            auth(_claims_token(secret, user_id="bob", iat=now + 3600)),
        ),
        "not valid yet": (good_key, auth(_claims_token(secret, user_id="bob", nbf=now + 3600))),
        "revoked": (good_key, auth(_claims_token(secret, user_id="erin", iat=now - 3600))),
        "unknown user": (good_key, auth(srv.user_token("mallory"))),
        "user_id not a string": (good_key, auth(_claims_token(secret, user_id=7))),
        "call_cids not a list": (
            good_key,
            auth(_claims_token(secret, user_id="bob", call_cids="x")),
        ),
        "anonymous auth type": (good_key, auth(bob, **{"stream-auth-type": "anonymous"})),
        "tampered payload": (good_key, auth(_tampered(bob))),
    }
    return cases


def _tampered(token: str) -> str:
    """bob's token with its payload swapped for a server token's ``{}``, signature kept."""
    head, _, sig = token.split(".")
    return f"{head}.e30.{sig}"


async def revoke_erin(srv: ServerHandle) -> None:
    async with srv.client() as http:
        r = await http.post("/api/v2/users/revoke_tokens", json={"user_ids": ["erin"]})
    assert r.status_code == 200, r.text
