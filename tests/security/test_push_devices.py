"""Push subscriptions: an endpoint is an untrusted URL the server would POST to, and one user's
subscriptions are nobody else's business. The route matrix (``test_routes.py``) has each
route's decision per role; these are the bounds and the isolation behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from appliance.server.wire.redact import redact
from tests.server.test_push_devices import device_body
from tests.support.pushservice import PushService
from tests.support.server import ServerHandle, running_server


@pytest_asyncio.fixture
async def srv(tmp_path: Path, push: PushService) -> AsyncIterator[ServerHandle]:
    async with running_server(
        tmp_path,
        users=["alice", "bob"],
        push={"allowed_hosts": [push.origin], "max_devices_per_user": 2},
        limits={"max_body_bytes": 16_384},
    ) as s:
        yield s


async def _post(srv: ServerHandle, user: str, body: Any) -> Any:
    async with srv.client(user) as http:
        return await http.post("/api/v2/devices", json=body)


async def test_no_request_reaches_a_host_off_the_list(srv: ServerHandle, push: PushService) -> None:
    """A listener on loopback, not on the allow-list: registering it fails and a ring never
    connects to it."""
    hits: list[bytes] = []

    async def listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(listener, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sub, _ = push.make_subscription("alice")
        for url in (f"http://127.0.0.1:{port}/push/x", f"https://127.0.0.1:{port}/push/x"):
            sub["endpoint"] = url
            r = await _post(srv, "alice", device_body(sub))
            assert r.status_code == 400, r.text
            assert r.json()["exception_fields"]["field"] == "web_push_subscription.endpoint"
        async with srv.client("alice") as http:
            assert (await http.get("/api/v2/devices")).json()["devices"] == []
    finally:
        server.close()
        await server.wait_closed()
    assert hits == []


async def test_a_user_sees_and_removes_only_its_own(srv: ServerHandle, push: PushService) -> None:
    alices, _ = push.make_subscription("alice")
    assert (await _post(srv, "alice", device_body(alices))).status_code == 201
    async with srv.client("bob") as http:
        assert (await http.get("/api/v2/devices")).json()["devices"] == []
        r = await http.get("/api/v2/devices", params={"user_id": "alice"})
        assert r.status_code == 403
        r = await http.delete("/api/v2/devices", params={"id": alices["endpoint"]})
        assert r.status_code == 404
        r = await http.delete(
            "/api/v2/devices", params={"id": alices["endpoint"], "user_id": "alice"}
        )
        assert r.status_code == 403
    async with srv.client("alice") as http:
        assert len((await http.get("/api/v2/devices")).json()["devices"]) == 1


async def test_bounds(srv: ServerHandle, push: PushService) -> None:
    sub, _ = push.make_subscription("alice")
    # body over the server's limit: 413 before anything is parsed
    big = device_body(sub, padding="x" * 20_000)
    assert (await _post(srv, "alice", big)).status_code == 413
    # endpoint length
    sub["endpoint"] = f"{push.origin}/push/{'x' * 2100}"
    r = await _post(srv, "alice", device_body(sub))
    assert r.status_code == 400
    assert r.json()["exception_fields"]["field"] == "web_push_subscription.endpoint"
    # count: at most max_devices_per_user (2) are kept
    for _ in range(5):
        fresh, _ = push.make_subscription("alice")
        assert (await _post(srv, "alice", device_body(fresh))).status_code == 201
    async with srv.client("alice") as http:
        assert len((await http.get("/api/v2/devices")).json()["devices"]) == 2
        # id length on delete
        r = await http.delete("/api/v2/devices", params={"id": "x" * 3000})
        assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "id"
        # a NUL (PostgreSQL cannot store one) or a control character in a query
        for params in ({"id": "https://x/\x00"}, {"id": "https://x/\n"}):
            r = await http.delete("/api/v2/devices", params=params)
            assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "id"
    async with srv.client() as http:
        r = await http.get("/api/v2/devices", params={"user_id": "alice\x00"})
        assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "user_id"
    # a body that is not an object, keys of the wrong type
    assert (await _post(srv, "alice", ["x"])).status_code == 400
    body = device_body(fresh)
    body["web_push_subscription"]["keys"] = {"p256dh": 7, "auth": None}
    r = await _post(srv, "alice", body)
    assert r.status_code == 400 and "keys" in r.json()["exception_fields"]["field"]


def test_a_push_url_in_a_request_line_is_redacted() -> None:
    line = '"DELETE /api/v2/devices?api_key=k&id=https%3A%2F%2Ffcm.googleapis.com%2Fx%2Fsecret HTTP/1.1"'
    assert "secret" not in redact(line) and "api_key=k" in redact(line)
