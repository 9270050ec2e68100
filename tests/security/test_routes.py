"""Every route of ``/openapi.json`` has an authorization decision, and the server keeps it.

``DECISIONS`` says, per route, what each role gets (status code) on a call of its own; the
first test fails when a route of ``/openapi.json`` has no entry (or an entry names a route that
is gone): a new route cannot ship without its decision. Each route is then tried with every
role and with every bad credential of ``principals.bad_credentials`` (all 401, before the body
is even looked at). The authorization model these numbers encode is written down in the README
("Who may do what").
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.security.principals import (
    ROLES,
    USERS,
    bad_credentials,
    call_id,
    cid_of,
    prepare,
    revoke_erin,
    token_for,
)
from tests.server.wsclient import call_post
from tests.support.server import ServerHandle, running_server

Setup = Callable[[ServerHandle, str], Awaitable[None]]


def every(status: int, **but: int) -> dict[str, int]:
    out = dict.fromkeys(ROLES, status)
    out.update(but)
    return out


# Reaching a call: other teams and tokens pinned to other calls find nothing (404).
FENCED = {"other_team": 404, "pinned_other": 404}
READ = every(200, **FENCED)
SERVER_ONLY = every(403, server=200)


async def _ring_bob(srv: ServerHandle, role: str) -> None:
    r = await call_post(srv, "alice", cid_of(role), "ring", {"members_ids": ["bob"]})
    assert r.status_code == 200, r.text


# A subscription on a push service of the default allow-list, one endpoint per role.
_PUSH_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()
_P256DH = (
    base64.urlsafe_b64encode(
        _PUSH_KEY.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    .rstrip(b"=")
    .decode()
)


def _device(role: str) -> dict[str, Any]:
    endpoint = f"https://fcm.googleapis.com/fcm/send/{call_id(role)}"
    body: dict[str, Any] = {
        "id": endpoint,
        "push_provider": "web_push",
        "web_push_subscription": {
            "endpoint": endpoint,
            "keys": {"p256dh": _P256DH, "auth": "AAAAAAAAAAAAAAAAAAAAAA"},
        },
    }
    if role == "server":
        body["user_id"] = "bob"
    return body


def _own_user(role: str) -> dict[str, str]:
    return {"user_id": "bob"} if role == "server" else {}


async def _register_device(srv: ServerHandle, role: str) -> None:
    user = ROLES[role][0] or "bob"
    async with srv.client() as http:
        r = await http.post("/api/v2/devices", json={**_device(role), "user_id": user})
    assert r.status_code == 201, r.text


async def _make_type(srv: ServerHandle, role: str) -> None:
    async with srv.client() as http:
        r = await http.post("/api/v2/video/calltypes", json={"name": f"t-{call_id(role)}"})
    assert r.status_code == 201, r.text


@dataclass(frozen=True)
class Decision:
    expect: dict[str, int]
    body: Callable[[str], Any] | None = None
    query: Callable[[str], dict[str, str]] = field(default=lambda role: {})
    setup: Setup | None = None
    public: bool = False
    why: str = ""
    # What bad API credentials get when the route does not read them (else 401, or 200 public).
    bad_credentials: int | None = None


DECISIONS: dict[tuple[str, str], Decision] = {
    ("GET", "/healthz"): Decision(every(200), public=True, why="liveness, no data"),
    ("GET", "/metrics"): Decision(
        every(403),
        bad_credentials=403,
        why="no API token opens it: metrics.allow_from addresses (loopback by default; none "
        "here) or the metrics bearer token (test_metrics_token_opens_it)",
    ),
    # --- users ---------------------------------------------------------------------------
    ("POST", "/api/v2/users"): Decision(
        every(403, server=200, global_admin=200, member=200, pinned_own=200, pinned_other=200),
        body=lambda role: {"users": {"bob": {"id": "bob", "name": "Bob"}}},
        why="a user updates only herself (name, image, custom); admins anyone",
    ),
    ("GET", "/api/v2/users"): Decision(
        every(200),
        query=lambda role: {"payload": '{"filter_conditions": {}}'},
        why="everyone sees the users of their own teams (teamless: the teamless)",
    ),
    ("POST", "/api/v2/users/revoke_tokens"): Decision(
        every(403, server=200, global_admin=200),
        body=lambda role: {"user_ids": ["erin"]},
        why="revoking is an admin's act",
    ),
    # --- push subscriptions (Stream's device API) -----------------------------------------
    ("POST", "/api/v2/devices"): Decision(
        every(201),
        body=_device,
        why="everyone registers their own push subscriptions; a server token names user_id",
    ),
    ("GET", "/api/v2/devices"): Decision(
        every(200), query=_own_user, why="one's own subscriptions; a server token names user_id"
    ),
    ("DELETE", "/api/v2/devices"): Decision(
        every(200),
        query=lambda role: {"id": _device(role)["id"], **_own_user(role)},
        setup=_register_device,
        why="one's own subscriptions only (another's is 404); a server token names user_id",
    ),
    ("GET", "/api/v2/app"): Decision(
        every(200), why="the VAPID public key a browser subscribes with: any valid token"
    ),
    # --- calls ---------------------------------------------------------------------------
    ("POST", "/api/v2/video/call/{type}/{id}"): Decision(READ, body=lambda role: {}),
    ("GET", "/api/v2/video/call/{type}/{id}"): Decision(READ),
    ("PATCH", "/api/v2/video/call/{type}/{id}"): Decision(
        every(200, non_member=403, **FENCED),
        body=lambda role: {"custom": {"floor": 2}},
        why="update-call: members of default",
    ),
    ("POST", "/api/v2/video/call/{type}/{id}/delete"): Decision(
        every(403, server=200, global_admin=200, call_admin=200, **FENCED),
        body=lambda role: {},
        why="a server token, a global admin, or the creator",
    ),
    ("POST", "/api/v2/video/call/{type}/{id}/event"): Decision(
        every(200, non_member=403, **FENCED),
        body=lambda role: {"custom": {"type": "hello"}, "user_id": "bob"},
        why="only members speak in custom events",
    ),
    ("POST", "/api/v2/video/call/{type}/{id}/members"): Decision(
        every(200, non_member=403, **FENCED),
        body=lambda role: {"update_members": [{"user_id": "erin"}]},
        why="update-call-member, granting only roles one has (tests/server/test_member_roles.py)",
    ),
    # --- call types ----------------------------------------------------------------------
    ("GET", "/api/v2/video/calltypes"): Decision(every(200)),
    ("POST", "/api/v2/video/calltypes"): Decision(
        every(403, server=201), body=lambda role: {"name": f"new-{call_id(role)}"}
    ),
    ("GET", "/api/v2/video/calltypes/{name}"): Decision(every(200)),
    ("PUT", "/api/v2/video/calltypes/{name}"): Decision(
        SERVER_ONLY, body=lambda role: {"grants": {"user": []}}, setup=_make_type
    ),
    ("DELETE", "/api/v2/video/calltypes/{name}"): Decision(SERVER_ONLY, setup=_make_type),
    # --- queries -------------------------------------------------------------------------
    ("POST", "/api/v2/video/call/members"): Decision(
        READ, body=lambda role: {"type": "default", "id": call_id(role)}
    ),
    ("POST", "/api/v2/video/calls"): Decision(
        every(200), body=lambda role: {}, why="answers only the calls the caller may read"
    ),
    # --- sessions and ringing ------------------------------------------------------------
    ("POST", "/api/v2/video/call/{type}/{id}/join"): Decision(
        READ,
        body=lambda role: {"user_id": "bob"} if role == "server" else {},
        why="join-call: anyone on default",
    ),
    ("POST", "/api/v2/video/call/{type}/{id}/leave"): Decision(
        READ, body=lambda role: {"user_id": "bob"}
    ),
    ("POST", "/api/v2/video/call/{type}/{id}/ring"): Decision(
        every(200, non_member=403, **FENCED),
        body=lambda role: {},
        why="ring-call: members of default, admins; or the call's creator",
    ),
    ("POST", "/api/v2/video/call/{type}/{id}/accept"): Decision(
        every(403, call_admin=200, member=200, pinned_own=200, **FENCED),
        setup=_ring_bob,
        why="a member with a user token (the first answer stops the ringing)",
    ),
    ("POST", "/api/v2/video/call/{type}/{id}/reject"): Decision(
        every(403, call_admin=200, member=200, pinned_own=200, **FENCED),
        body=lambda role: {"reason": "decline"},
        setup=_ring_bob,
        why="a ringed member, or the caller (cancels)",
    ),
    ("GET", "/api/v2/video/call/{type}/{id}/ring_state"): Decision(
        READ, setup=_ring_bob, why="read-call: the ring outcome of a session"
    ),
    ("POST", "/api/v2/video/call_client_event"): Decision(
        every(200),
        body=lambda role: {"events": [{"type": "call.joined", "call_cid": "default:x"}]},
        public=True,
        why="a Stream SDK's telemetry (sent without a token): counted, not stored, reads nothing",
    ),
    ("POST", "/api/v2/video/call/{type}/{id}/mark_ended"): Decision(
        every(200, non_member=403, **FENCED), body=lambda role: {}, why="end-call: members"
    ),
}


def _path(template: str, role: str) -> str:
    name = "default" if "{name}" in template else ""
    return (
        template.replace("{type}", "default").replace("{id}", call_id(role)).replace("{name}", name)
    )


def _path_for(method: str, template: str, role: str) -> str:
    if "{name}" in template and method in ("PUT", "DELETE"):
        return template.replace("{name}", f"t-{call_id(role)}")
    return _path(template, role)


async def _request(
    srv: ServerHandle,
    method: str,
    template: str,
    role: str,
    decision: Decision,
    params: dict[str, str],
    headers: dict[str, str],
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=15.0) as http:
        return await http.request(
            method,
            _path_for(method, template, role),
            params={**decision.query(role), **params},
            headers=headers,
            json=decision.body(role) if decision.body is not None else None,
        )


METRICS_TOKEN = "security-metrics-token-0123"


@pytest.fixture
async def srv(tmp_path):
    # /metrics as behind a proxy: no address allowed, only its own token.
    metrics = {"allow_from": [], "token": METRICS_TOKEN}
    async with running_server(tmp_path, users=USERS, metrics=metrics) as s:
        yield s


async def test_metrics_token_opens_it(srv: ServerHandle) -> None:
    """The matrix refuses every API credential; the metrics token is what reads it."""
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=15.0) as http:
        r = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert r.status_code == 200
        assert "appliance_http_request_duration_seconds" in r.text
        odd: list[dict[str, str | bytes]] = [
            {"Authorization": "Bearer " + "x" * 10_000},
            {"Authorization": b"Bearer \xff\xfe"},
            {"Authorization": "Basic Zm9vOmJhcg=="},
            {"X-Forwarded-For": "127.0.0.1"},
        ]
        for headers in odd:
            r = await http.get("/metrics", headers=headers)
            assert r.status_code == 403, r.text


async def test_every_route_has_a_decision(srv: ServerHandle) -> None:
    async with srv.client() as http:
        spec = (await http.get("/openapi.json")).json()
    routes = {(m.upper(), p) for p, methods in spec["paths"].items() for m in methods}
    missing = sorted(routes - set(DECISIONS))
    stale = sorted(set(DECISIONS) - routes)
    assert not missing, f"routes without an authorization decision in {__name__}: {missing}"
    assert not stale, f"decisions for routes that no longer exist: {stale}"
    for key, decision in DECISIONS.items():
        assert set(decision.expect) == set(ROLES), f"{key}: a decision for every role"


@pytest.mark.parametrize(("method", "template"), sorted(DECISIONS), ids=lambda v: v)
async def test_each_role_gets_what_the_decision_says(
    srv: ServerHandle, method: str, template: str
) -> None:
    decision = DECISIONS[(method, template)]
    got: dict[str, int] = {}
    for role in ROLES:
        await prepare(srv, role)
        if decision.setup is not None:
            await decision.setup(srv, role)
        headers = srv.headers(token_for(srv, role))
        r = await _request(srv, method, template, role, decision, {"api_key": srv.api_key}, headers)
        assert r.headers["content-type"].startswith("application/json"), r.text
        assert r.status_code < 500, r.text
        got[role] = r.status_code
    assert got == decision.expect


@pytest.mark.parametrize(("method", "template"), sorted(DECISIONS), ids=lambda v: v)
async def test_bad_credentials_are_401_on_every_route(
    srv: ServerHandle, method: str, template: str
) -> None:
    decision = DECISIONS[(method, template)]
    await revoke_erin(srv)
    await prepare(srv, "member")
    if decision.setup is not None:
        await decision.setup(srv, "member")
    got = {}
    for case, (params, headers) in bad_credentials(srv).items():
        r = await _request(srv, method, template, "member", decision, params, headers)
        got[case] = r.status_code
        if r.status_code == 401:
            assert r.json()["StatusCode"] == 401, r.text
    expected = decision.bad_credentials or (200 if decision.public else 401)
    assert got == dict.fromkeys(got, expected)
