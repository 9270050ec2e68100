"""A raw WebSocket client of ``/api/v2/connect`` for the realtime tests.

``await WsClient.open(srv, "alice")`` authenticates and waits for ``connection.ok``.
``await ws.next("call.ring")`` reads until a frame of that type (other frames are kept in
``ws.seen``). ``await ws.settle()`` is a barrier: it sends ``health.check`` and returns every
frame that arrived before the answer, so "nothing was delivered" is asserted without sleeping
(the hub fills every recipient's queue before a publication returns).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from appliance.server.lifecycle.services import services
from tests.support.server import ServerHandle

TIMEOUT = 10.0
# ws_health_seconds for test servers: these raw clients send no heartbeats of their own, and a
# slow test on a loaded machine must not be hung up on for being silent.
QUIET = 3600.0


class WsClient:
    def __init__(self, ws: ClientConnection, user_id: str, hello: dict[str, Any]) -> None:
        self.ws = ws
        self.user_id = user_id
        self.hello = hello
        self.connection_id: str = hello.get("connection_id", "")
        self.seen: list[dict[str, Any]] = []
        self._backlog: list[dict[str, Any]] = []

    @classmethod
    async def open(
        cls,
        srv: ServerHandle,
        user_id: str,
        *,
        token: str | None = None,
        expect_ok: bool = True,
        wait: float = TIMEOUT,
    ) -> WsClient:
        ws = await websockets.connect(srv.ws_url, max_size=None, open_timeout=wait)
        await ws.send(
            json.dumps({"token": token or srv.user_token(user_id), "user_details": {"id": user_id}})
        )
        hello = json.loads(await asyncio.wait_for(ws.recv(), wait))
        client = cls(ws, user_id, hello)
        if expect_ok:
            assert hello["type"] == "connection.ok", hello
        return client

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def _recv(self) -> dict[str, Any]:
        if self._backlog:
            return self._backlog.pop(0)
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
        return frame

    async def next(self, kind: str | None = None) -> dict[str, Any]:
        """The next frame (of type ``kind``), skipping server health checks."""
        while True:
            frame = await self._recv()
            if frame.get("type") == "health.check" and kind != "health.check":
                continue
            if kind is None or frame.get("type") == kind:
                return frame
            self.seen.append(frame)

    async def settle(self) -> list[dict[str, Any]]:
        """Every non-health frame that arrived before a health.check round trip."""
        await self.send({"type": "health.check", "id": "settle"})
        got: list[dict[str, Any]] = []
        while True:
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            if frame.get("type") == "health.check":
                if frame.get("reply_to") == "settle":
                    break
                continue
            got.append(frame)
        return self._take_backlog() + got

    def _take_backlog(self) -> list[dict[str, Any]]:
        out, self._backlog = self._backlog, []
        return out

    async def types(self) -> list[str]:
        return [f["type"] for f in await self.settle()]

    async def close(self) -> None:
        await self.ws.close()

    async def close_and_wait(self, srv: ServerHandle) -> None:
        """Close, and return once the server has processed the close (its hooks ran)."""
        conn = services(srv.ctx).hub.connections[self.connection_id]
        await self.ws.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not conn.unregistered:
            assert loop.time() < deadline, "the server did not notice the close"
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_all(srv: ServerHandle, *user_ids: str) -> list[WsClient]:
    return [await WsClient.open(srv, u) for u in user_ids]


async def close_all(clients: list[WsClient]) -> None:
    for c in clients:
        await c.close()


async def create_call(
    srv: ServerHandle,
    cid: str,
    members: list[str],
    *,
    by: str = "alice",
    settings_override: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create call ``cid`` ("type:id") as ``by`` with ``members``; the response body."""
    ctype, cid_id = cid.split(":", 1)
    data: dict[str, Any] = {"members": [{"user_id": m} for m in members]}
    if settings_override is not None:
        data["settings_override"] = settings_override
    async with srv.client(by) as http:
        r = await http.post(f"/api/v2/video/call/{ctype}/{cid_id}", json={"data": data})
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


async def call_post(
    srv: ServerHandle, user: str | None, cid: str, verb: str, body: dict[str, Any] | None = None
) -> Any:
    """POST ``/call/{type}/{id}/{verb}`` as ``user`` (server token when None); the httpx response."""
    ctype, cid_id = cid.split(":", 1)
    async with srv.client(user) as http:
        return await http.post(f"/api/v2/video/call/{ctype}/{cid_id}/{verb}", json=body or {})


async def join(srv: ServerHandle, ws: WsClient, cid: str, **body: Any) -> dict[str, Any]:
    r = await call_post(srv, ws.user_id, cid, "join", {"connection_id": ws.connection_id, **body})
    assert r.status_code == 200, r.text
    joined: dict[str, Any] = r.json()
    return joined
